//! loom models of the robust mutex's recovery (`wait::mutex`), on the crate's own `RawMutex`: a
//! holder dies inside its critical section (its id stays in the owner word, its RLock state says
//! it holds three levels); the others find it dead and one takes over with one CAS. What must hold
//! in every interleaving:
//!
//! * at most one process is inside at a time (the takeover never lets two in);
//! * the one that took over finds the RLock state reset, and nobody wipes it afterwards: state a
//!   later holder writes is its own until it releases ("recover under a marker, then hand over");
//! * the mutex is marked inconsistent by the takeover, and every later holder sees it.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom`

use super::mutex::RawMutex;
use crate::loom::{AtomicU32, Ordering};
use loom::sync::Arc;

/// The dead holder's id.
const DEAD: u32 = 1;

struct World {
    m: RawMutex,
    /// Processes inside the critical section now.
    inside: AtomicU32,
    /// How many critical sections completed.
    done: AtomicU32,
}

/// A mutex held by `DEAD`, which died holding it with RLock state (thread 77, three levels).
fn world() -> Arc<World> {
    let w = World {
        m: RawMutex::new(),
        inside: AtomicU32::new(0),
        done: AtomicU32::new(0),
    };
    assert!(w.m.try_lock(DEAD));
    w.m.thread.store(77, Ordering::Relaxed);
    w.m.count.store(3, Ordering::Relaxed);
    Arc::new(w)
}

/// One process `me`: tries to take the mutex (a free one, or one whose holder died), at most
/// `tries` times; inside, checks that it is alone, that the state it finds is no dead holder's,
/// writes its own RLock state and checks that nobody changed it, then releases.
fn visit(w: &World, me: u32, tries: usize) -> bool {
    for _ in 0..tries {
        let took_over = w.m.take_over_if_dead(me, |id| Ok(id != DEAD)).unwrap();
        if took_over || w.m.try_lock(me) {
            assert_eq!(
                w.inside.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            assert!(
                w.m.is_inconsistent(),
                "a holder after the death is not told"
            );
            assert_ne!(
                w.m.thread.load(Ordering::Relaxed),
                77,
                "the dead holder's RLock state survived the takeover"
            );
            w.m.thread.store(u64::from(me), Ordering::Relaxed);
            w.m.count.store(1, Ordering::Relaxed);
            loom::thread::yield_now();
            assert_eq!(
                w.m.thread.load(Ordering::Relaxed),
                u64::from(me),
                "another process wiped our state while we held the mutex"
            );
            assert_eq!(w.m.count.load(Ordering::Relaxed), 1);
            w.m.thread.store(0, Ordering::Relaxed);
            w.m.count.store(0, Ordering::Relaxed);
            w.inside.fetch_sub(1, Ordering::SeqCst);
            w.m.unlock();
            w.done.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        loom::thread::yield_now();
    }
    false
}

/// Two processes find the holder dead at once: one takes over, the other waits its turn.
#[test]
fn loom_robust_mutex_two_recoverers() {
    loom::model(|| {
        let w = world();
        let w2 = w.clone();
        let t = loom::thread::spawn(move || visit(&w2, 2, 3));
        let a = visit(&w, 3, 3);
        let b = t.join().unwrap();
        assert!(a || b, "nobody recovered the mutex");
        assert_eq!(w.inside.load(Ordering::SeqCst), 0);
        assert!(w.m.is_inconsistent());
        // Whoever is left can still take it: the recovery left it usable.
        if !(a && b) {
            assert!(visit(&w, 4, 1));
        }
        assert_eq!(w.m.holder(), 0);
    });
}

/// A recoverer and a process that took the mutex after the recovery race on the owner word: the
/// takeover's CAS from the dead id never succeeds once a live process holds it.
#[test]
fn loom_robust_mutex_recovery_then_a_new_holder() {
    loom::model(|| {
        let w = world();
        let w2 = w.clone();
        let t = loom::thread::spawn(move || {
            // A late recoverer: still sees the dead id (or not), must never take from the living.
            let took = w2.m.take_over_if_dead(5, |id| Ok(id != DEAD)).unwrap();
            if took {
                assert_eq!(
                    w2.inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                w2.inside.fetch_sub(1, Ordering::SeqCst);
                w2.m.unlock();
            }
        });
        let _ = visit(&w, 2, 3);
        t.join().unwrap();
        assert_eq!(w.m.holder(), 0);
    });
}
