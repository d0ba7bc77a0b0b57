//! loom models of the eventcount's Dekker pair in each of its modes, on the crate's own
//! `EventCount`, with the futex modelled per word and `membarrier` as an ordered heavy/light pair
//! (see `sys::futex` and `sys::membarrier`). A lost wake-up is a deadlock in the model.
//!
//! * symmetric: a waiter that sleeps at once (full fences on both sides);
//! * asymmetric: a waiter that spins first, in a process that registered for membarrier, so that the
//!   writer's notify has no fence at all and only the waiter's heavy barrier orders the pair;
//! * both at once on one word: the switches between the modes;
//! * and the futex model itself: a wake reaches only the sleepers of its own word.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom`

use super::eventcount::EventCount;
use crate::loom::{AtomicU32, Ordering, wait_until};
use crate::sys::{futex, membarrier};
use loom::sync::Arc;

/// A condition (`data` reached a value) and the eventcount its waiters sleep on.
struct Cond {
    ec: EventCount,
    data: AtomicU32,
}

impl Cond {
    fn new() -> Arc<Cond> {
        Arc::new(Cond {
            ec: EventCount::new(),
            data: AtomicU32::new(0),
        })
    }

    /// The writer: publish, then notify (as a ring's commit does).
    fn publish(&self, v: u32) {
        self.data.store(v, Ordering::Release);
        let _ = self.ec.notify();
    }

    /// A waiter: until `data >= v`, spinning `spins` checks first and asking for the asymmetric mode
    /// if `asym`.
    fn await_value(&self, v: u32, spins: usize, asym: bool) {
        wait_until(&self.ec, spins, asym, || {
            (self.data.load(Ordering::Acquire) >= v).then_some(())
        });
    }
}

/// A waiter that sleeps at once: the symmetric protocol, a fence on each side.
#[test]
fn loom_eventcount_symmetric() {
    loom::model(|| {
        membarrier::model_registered(true);
        let c = Cond::new();
        let w = c.clone();
        let t = loom::thread::spawn(move || {
            w.publish(1);
            w.publish(2);
        });
        c.await_value(1, 0, false);
        c.await_value(2, 0, false);
        t.join().unwrap();
    });
}

/// A waiter that spins first: the asymmetric protocol. The writer's notify has no fence; only the
/// waiter's heavy barrier (after registering, before re-checking) orders the pair.
#[test]
fn loom_eventcount_asymmetric() {
    loom::model(|| {
        membarrier::model_registered(true);
        let c = Cond::new();
        let w = c.clone();
        let t = loom::thread::spawn(move || {
            w.publish(1);
            w.publish(2);
        });
        c.await_value(1, 1, true);
        c.await_value(2, 1, true);
        t.join().unwrap();
    });
}

/// A process that could not register keeps the symmetric protocol even when its waiters spin.
#[test]
fn loom_eventcount_unregistered_spinner() {
    loom::model(|| {
        membarrier::model_registered(false);
        let c = Cond::new();
        let w = c.clone();
        let t = loom::thread::spawn(move || w.publish(1));
        c.await_value(1, 1, true);
        t.join().unwrap();
    });
}

/// A spinning and a sleeping waiter on one word: each registration may switch the word's mode (to
/// asymmetric only when nobody is registered, back to symmetric with a heavy barrier), while the
/// writer reads the mode without a fence.
#[test]
fn loom_eventcount_switches_modes() {
    loom::model(|| {
        membarrier::model_registered(true);
        let c = Cond::new();
        let (w, s) = (c.clone(), c.clone());
        let writer = loom::thread::spawn(move || w.publish(1));
        let sleeper = loom::thread::spawn(move || s.await_value(1, 0, false));
        c.await_value(1, 1, true);
        sleeper.join().unwrap();
        writer.join().unwrap();
    });
}

/// The futex model wakes only the sleepers of the word it is given: a sleeper on one word stays
/// asleep through a wake of another (a sleep for ever in a real process), and wakes on its own.
#[test]
fn loom_futex_wake_reaches_only_its_word() {
    loom::model(|| {
        let words = Arc::new((AtomicU32::new(0), AtomicU32::new(0)));
        let w = words.clone();
        let t = loom::thread::spawn(move || {
            while futex::model_sleepers(&w.0) == 0 {
                loom::thread::yield_now();
            }
            futex::wake(&w.1, u32::MAX);
            assert_eq!(
                futex::model_sleepers(&w.0),
                1,
                "woken by another word's wake"
            );
            w.0.store(1, Ordering::SeqCst);
            futex::wake(&w.0, u32::MAX);
            assert_eq!(futex::model_sleepers(&w.0), 0);
        });
        while words.0.load(Ordering::SeqCst) == 0 {
            futex::wait(&words.0, 0, None);
        }
        t.join().unwrap();
    });
}
