//! Lock and wake-up workloads as [`Side`]s whose processes are started once and reused for every
//! block: strict `Lock` hand-offs between two processes, a `Lock` taken in a loop by N processes,
//! each beside a process-shared pthread mutex doing the same; `Semaphore` and `Event` wake-up round
//! trips; the uncontended `Lock`. Also compiled into `benches/queue.rs`.

use super::links::{Ref, Shared, futex, publish, wait_until};
use super::measure::{Amount, Sample, Side};
use super::prims::{Ctl, Kid, MAX_PARTIES, PMutex, join, spawn};
use shmwire::{Event, Lock, Process, Semaphore};
use std::sync::atomic::{AtomicU32, Ordering::*};
use std::time::{Duration, Instant};

/// A lock the hand-off workloads take.
pub trait Mutex: Send + Clone + 'static {
    type Guard<'a>
    where
        Self: 'a;
    fn lock(&self) -> Self::Guard<'_>;
}

/// A held [`PMutex`].
pub struct PGuard(PMutex);

impl Drop for PGuard {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the mutex (made in `lock`).
        unsafe { self.0.unlock() };
    }
}

impl Mutex for PMutex {
    type Guard<'a> = PGuard;
    fn lock(&self) -> PGuard {
        PMutex::lock(self);
        PGuard(*self)
    }
}

impl Mutex for Lock {
    type Guard<'a> = shmwire::LockGuard<'a>;
    fn lock(&self) -> shmwire::LockGuard<'_> {
        self.acquire().expect("acquire")
    }
}

/// `n` processes taking one lock.
///
/// `strict` (two processes): hand-offs. Each in turn says it wants the lock and blocks in
/// `acquire`; the holder waits until the other has said so (and has not got it yet), keeps the
/// lock [`HOLD`] longer (so that the other is inside `acquire`), then releases: the lock passes to
/// a process already waiting for it. The figure is the mean time from the release to the other's
/// return from `acquire` (one clock, CLOCK_MONOTONIC, for both). Otherwise a free-for-all whose
/// operations are acquisitions (the hand-offs among them, acquisitions by another process than the
/// last holder, are counted in [`LockSide::handoffs`]).
pub struct LockSide {
    ctl: Shared<Ctl>,
    kids: Vec<Kid>,
    blocks: u32,
    strict: bool,
    /// Hand-offs in the last block.
    pub handoffs: u64,
}

impl LockSide {
    pub fn new<M: Mutex>(m: M, n: usize, strict: bool) -> Self {
        assert!((1..=MAX_PARTIES).contains(&n) && (!strict || n == 2));
        let ctl: Shared<Ctl> = Shared::new();
        let kids = (0..n)
            .map(|k| {
                let (c, m) = (ctl.at(), m.clone());
                spawn(false, move || contend(c, m, k, strict))
            })
            .collect();
        LockSide {
            ctl,
            kids,
            blocks: 0,
            strict,
            handoffs: 0,
        }
    }
}

fn contend(c: Ref<Ctl>, m: impl Mutex, k: usize, strict: bool) {
    let mut block = 0;
    loop {
        block += 1;
        wait_until(&c.epoch, block);
        if c.exit.load(Acquire) != 0 {
            return;
        }
        let quota = c.quota.load(Acquire);
        if strict {
            handoffs(&c, &m, k, quota);
        } else {
            free_for_all(&c, &m, k as u64 + 1, quota);
        }
        c.done.fetch_add(1, AcqRel);
        futex(&c.done, libc::FUTEX_WAKE, 1);
    }
}

fn handoffs(c: &Ctl, m: &impl Mutex, k: usize, quota: u64) {
    // The other waits for the lock (or is about to) while it asked for it more often than it got
    // it. Each process changes only its own `want` and `got`.
    let waiting = || c.want[1 - k].0.load(Acquire) > c.got[1 - k].0.load(Acquire);
    loop {
        c.want[k].0.fetch_add(1, AcqRel);
        let g = m.lock();
        let t = mono_ns();
        c.got[k].0.fetch_add(1, AcqRel);
        // The counts are changed under the lock only: plain loads and stores suffice.
        let n = c.acquisitions.load(Relaxed);
        if n >= quota || c.stop.load(Relaxed) != 0 {
            return;
        }
        c.acquisitions.store(n + 1, Relaxed);
        let released = c.released_at.load(Relaxed);
        if released != 0 {
            c.handoffs.store(c.handoffs.load(Relaxed) + 1, Relaxed);
            c.handoff_ns.store(
                c.handoff_ns.load(Relaxed) + t.saturating_sub(released),
                Relaxed,
            );
        }
        let spin = Instant::now();
        while !waiting() && c.stop.load(Relaxed) == 0 {
            if spin.elapsed() < Duration::from_micros(50) {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // Give the other the time to get into `acquire`.
        let hold = Instant::now();
        while hold.elapsed() < HOLD {
            std::hint::spin_loop();
        }
        c.released_at.store(mono_ns(), Relaxed);
        drop(g);
    }
}

/// How long a holder keeps the lock after the other said it wants it, before it releases.
pub const HOLD: Duration = Duration::from_micros(2);

/// CLOCK_MONOTONIC in ns: one clock for every process.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn free_for_all(c: &Ctl, m: &impl Mutex, me: u64, quota: u64) {
    loop {
        // Under the lock, so plain loads and stores of the shared counts suffice.
        let g = m.lock();
        let a = c.acquisitions.load(Relaxed);
        if a >= quota || c.stop.load(Relaxed) != 0 {
            return;
        }
        c.acquisitions.store(a + 1, Relaxed);
        if c.last.load(Relaxed) != me {
            c.last.store(me, Relaxed);
            c.handoffs.store(c.handoffs.load(Relaxed) + 1, Relaxed);
        }
        drop(g);
    }
}

impl Side for LockSide {
    fn run(&mut self, amount: Amount) -> Sample {
        let c = &self.ctl;
        let count = |c: &Ctl| c.acquisitions.load(Acquire);
        let (base, hbase) = (count(c), c.handoffs.load(Acquire));
        let nsbase = c.handoff_ns.load(Acquire);
        c.released_at.store(0, Relaxed);
        c.stop.store(0, Relaxed);
        c.quota.store(
            match amount {
                Amount::For(_) => u64::MAX,
                Amount::Items(n) => base + n,
            },
            Release,
        );
        self.blocks += 1;
        let start = Instant::now();
        publish(&c.epoch, self.blocks);
        if let Amount::For(d) = amount {
            std::thread::sleep(d);
            c.stop.store(1, Relaxed);
        }
        wait_until(&c.done, self.blocks * self.kids.len() as u32);
        self.handoffs = c.handoffs.load(Acquire) - hbase;
        let ns = c.handoff_ns.load(Acquire) - nsbase;
        Sample {
            ops: count(c) - base,
            secs: start.elapsed().as_secs_f64(),
            // Strict: the mean time from a release to the waiter's return from `acquire`.
            batch_ns: if self.strict && self.handoffs > 0 {
                vec![ns as f64 / self.handoffs as f64]
            } else {
                Vec::new()
            },
            ..Sample::default()
        }
    }
}

impl Drop for LockSide {
    fn drop(&mut self) {
        self.ctl.exit.store(1, Release);
        publish(&self.ctl.epoch, self.blocks + 1);
        for k in self.kids.drain(..) {
            join(k);
        }
    }
}

/// Uncontended `acquire` + release of a shmwire `Lock` in one process: ns per pair.
pub fn lock_uncontended(budget: Duration) -> f64 {
    let lock = Lock::new().expect("lock");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..10_000 {
            drop(lock.acquire().unwrap());
        }
        n += 10_000;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// A wake-up round trip through two semaphores (or two events) with a child process.
pub struct Wake {
    events: bool,
    sems: (Semaphore, Semaphore),
    evs: (Event, Event),
    stop: Shared<AtomicU32>,
    child: Option<Process>,
}

impl Wake {
    pub fn new(events: bool) -> Self {
        let sems = (
            Semaphore::new(0).expect("sem"),
            Semaphore::new(0).expect("sem"),
        );
        let evs = (Event::new().expect("event"), Event::new().expect("event"));
        let stop: Shared<AtomicU32> = Shared::new();
        let (a, b, e1, e2, s) = (
            sems.0.clone(),
            sems.1.clone(),
            evs.0.clone(),
            evs.1.clone(),
            stop.at(),
        );
        let child = Process::fork(move || {
            loop {
                if events {
                    e1.wait().unwrap();
                    e1.clear().unwrap();
                } else {
                    a.acquire().unwrap();
                }
                if s.load(Acquire) != 0 {
                    break;
                }
                if events {
                    e2.set().unwrap();
                } else {
                    b.release().unwrap();
                }
            }
        })
        .expect("fork");
        Wake {
            events,
            sems,
            evs,
            stop,
            child: Some(child),
        }
    }

    fn trip(&self) {
        if self.events {
            self.evs.0.set().unwrap();
            self.evs.1.wait().unwrap();
            self.evs.1.clear().unwrap();
        } else {
            self.sems.0.release().unwrap();
            self.sems.1.acquire().unwrap();
        }
    }
}

impl Side for Wake {
    fn run(&mut self, amount: Amount) -> Sample {
        let start = Instant::now();
        let mut n = 0u64;
        match amount {
            Amount::Items(k) => (0..k).for_each(|_| self.trip()),
            Amount::For(d) => {
                while start.elapsed() < d {
                    for _ in 0..16 {
                        self.trip();
                    }
                    n += 16;
                }
            }
        }
        Sample {
            ops: if let Amount::Items(k) = amount { k } else { n },
            secs: start.elapsed().as_secs_f64(),
            ..Sample::default()
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.stop.store(1, Release);
        if self.events {
            let _ = self.evs.0.set();
        } else {
            let _ = self.sems.0.release();
        }
        if let Some(c) = self.child.take() {
            join(Kid::Proc(c));
        }
    }
}
