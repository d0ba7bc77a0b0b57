//! `Condition`: wait, under a [`Lock`], for another process to say something changed; Python's
//! `multiprocessing.Condition`.
//!
//! A sequence word and a waiter count in shared memory. A waiter reads the sequence while it still
//! holds the lock, releases the lock, and sleeps unless the sequence moved; `notify` moves it and
//! wakes (so a notify that lands between the release and the sleep is not lost). As with every
//! condition variable, wake-ups may be spurious: wait in a loop, or with [`Condition::wait_while`].
//!
//! Time: a waiter sleeps until the sequence moves or its timeout passes, then takes the lock back,
//! waiting for it at most the same timeout again; if even that passes (a process holds the lock that
//! long, stopped perhaps), the call gives up with [`Error::Timeout`] without
//! the lock. So a timed wait returns within twice its timeout, whatever other processes do. A
//! waiter has nobody to probe while it sleeps (a notifier that dies simply never notifies), so it
//! sleeps in one piece; taking the lock back probes the holder as [`Lock`] does.

use crate::error::{Error, Result};
use crate::locks::builder::{Built, SyncBuilder};
use crate::locks::lock::{Lock, LockGuard};
use crate::segment::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::sys::futex;
use crate::wait::WaitStrategy;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
pub(crate) struct CondBlock {
    seq: AtomicU32,
    waiters: AtomicU32,
    /// Notifies owed to waiters that were registered but not asleep in the kernel when the
    /// notify came (see `Condition::sleep_interruptible`).
    owed: AtomicU32,
}
// SAFETY: repr(C), all atomics.
unsafe impl SharedBlock for CondBlock {}
// (The block's own type is its fingerprint: a layout with another size, from another build, is
// refused as Incompatible rather than read as this one.)

/// Takes one from `owed` if there is one.
fn take_one(owed: &AtomicU32) -> bool {
    owed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| o.checked_sub(1))
        .is_ok()
}

/// A condition variable shared by processes, with its [`Lock`].
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Condition, Process, Value};
/// use std::time::Duration;
/// let cond = Condition::new()?;
/// let ready = Value::new(0u32)?;
/// let (c, r) = (cond.clone(), ready.clone());
/// let p = Process::fork(move || {
///     let _g = c.acquire().unwrap();
///     r.set(1).unwrap();
///     c.notify_all().unwrap();
/// })?;
/// let g = cond.acquire()?;
/// let g = cond.wait_while(g, || ready.get().unwrap() == 0)?;
/// // Timed: the guard and whether a notify came (`false`: the timeout passed).
/// let (g, notified) = cond.wait_timeout(g, Duration::from_millis(10))?;
/// assert!(!notified);
/// drop(g);
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Condition {
    obj: Object<CondBlock>,
    lock: Lock,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .finish()
    }
}

impl Built for Condition {
    type Init = ();
}

impl SyncBuilder<Condition> {
    /// Creates the condition and its lock (named `NAME.lock` if the condition is named); the wait
    /// strategy is the lock's (a wait for a notify always sleeps: the notifier needs the lock).
    pub fn build(self) -> Result<Condition> {
        let mut lock = Lock::builder().wait_strategy(self.wait);
        lock.mode = self.mode;
        if let Some(name) = &self.name {
            lock = lock.name(&format!("{name}.lock"));
        }
        let lock = lock.build()?;
        Ok(Condition {
            obj: self.create(|name| {
                Object::create(Kind::Sync, fingerprint_of::<CondBlock>(), [0; 6], 0, name)
            })?,
            lock,
        })
    }
}

impl Condition {
    /// A condition with a lock of its own, shared with children forked later.
    pub fn new() -> Result<Condition> {
        Self::builder().build()
    }

    /// Options: a name, a wait strategy for its lock (see [`SyncBuilder`]).
    pub fn builder() -> SyncBuilder<Condition> {
        SyncBuilder::new(())
    }

    /// A condition over an existing lock.
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        Ok(Condition {
            obj: Object::create(Kind::Sync, fingerprint_of::<CondBlock>(), [0; 6], 0, None)?,
            lock,
        })
    }

    /// A named condition (its lock is named `NAME.lock`).
    pub fn create(name: &str) -> Result<Condition> {
        Self::builder().name(name).build()
    }

    /// Opens the named condition and its lock, with the default wait strategy.
    pub fn open(name: &str) -> Result<Condition> {
        let lock = Lock::open(&format!("{name}.lock"))?;
        Ok(Condition {
            obj: Object::open(Kind::Sync, fingerprint_of::<CondBlock>(), name)?,
            lock,
        })
    }

    /// The lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// How the lock's blocked calls wait (through this handle).
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.lock.wait_strategy()
    }

    /// Changes how this handle's lock waits (its clones keep theirs).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.lock.set_wait_strategy(wait);
    }

    /// Acquires the lock (as `with cond:` does).
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.lock.acquire()
    }

    /// [`acquire`](Self::acquire), giving up with [`Error::Timeout`] after `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock.acquire_timeout(timeout)
    }

    /// Releases the lock held by `guard`, sleeps until notified, and takes the lock again.
    pub fn wait<'a>(&'a self, guard: LockGuard<'a>) -> Result<LockGuard<'a>> {
        let notified = self.sleep(guard, None)?;
        debug_assert!(notified);
        self.lock.acquire()
    }

    /// [`wait`](Self::wait) for at most `timeout`: the guard, and whether a notify came (`false`:
    /// the timeout passed; Python's return value). The lock is then taken back, waiting at most
    /// `timeout` again for it; if a process holds it longer, [`Error::Timeout`] (the lock is not
    /// held then).
    pub fn wait_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> Result<(LockGuard<'a>, bool)> {
        // A timeout past the end of time is none.
        let notified = self.sleep(guard, Instant::now().checked_add(timeout))?;
        Ok((self.lock.acquire_timeout(timeout)?, notified))
    }

    /// Waits while `condition()` is true (checked under the lock), then returns the guard.
    pub fn wait_while<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        mut condition: impl FnMut() -> bool,
    ) -> Result<LockGuard<'a>> {
        while condition() {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// [`wait_while`](Self::wait_while) for at most `timeout`: [`Error::Timeout`] if `condition()`
    /// still holds then (the lock is not held then). Taking the lock back after the last wake-up
    /// may add up to `timeout` again (see [`wait_timeout`](Self::wait_timeout)).
    pub fn wait_while_timeout<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        mut condition: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<LockGuard<'a>> {
        let until = Instant::now().checked_add(timeout);
        while condition() {
            let left = until.map_or(Duration::MAX, |u| {
                u.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Err(Error::Timeout); // the guard drops: the lock is released
            }
            guard = self.wait_timeout(guard, left)?.0;
        }
        Ok(guard)
    }

    /// Releases the lock held by `guard` and sleeps until a notify comes or `until` passes
    /// (`None`: never); whether a notify came before `until` (see
    /// [`sleep_interruptible`](Self::sleep_interruptible)).
    fn sleep(&self, guard: LockGuard<'_>, until: Option<Instant>) -> Result<bool> {
        self.sleep_interruptible(guard, until, || Ok::<(), ()>(()))
            .map(|r| r.unwrap_or(false))
    }

    /// Releases the lock held by `guard` and sleeps until a notify comes or `until` passes
    /// (`None`: never), as [`wait_timeout`](Self::wait_timeout) does, calling `between()` each
    /// time the sleep ends early for another reason (a signal: a Python caller checks for Ctrl-C
    /// there); an error from it ends the wait with that error. Returns whether a notify came; the
    /// lock is NOT held on return: take it back with [`acquire`](Self::acquire). Unregistering
    /// needs no lock, so a wait ends at `until` whatever other processes do.
    ///
    /// Which notify is whose: the wait stays registered from start to end and sleeps in one piece
    /// (a notify landing between two slices of a sleep would wake nobody). A sleep ended by the
    /// kernel's wake is a notify. A notify that moves the sequence while a waiter is registered
    /// but not asleep in the kernel (about to sleep, or back from a signal handler) is counted in
    /// `owed` by the notifier: as many as it meant to wake (`n`, at most the registered waiters)
    /// less the sleepers the kernel woke. Such a waiter, seeing the sequence moved, takes one of
    /// those (a notify) or, if none is left, the moved sequence was for sleepers the kernel woke:
    /// it sleeps on from there, to its deadline. The deadline is checked before anything else,
    /// so a wait whose deadline passed answers `false`. Limits: which of several waiters that
    /// were not asleep takes an owed notify is not defined; a waiter that times out (or is
    /// interrupted) after the sequence moved gives up one owed notify, which may have been
    /// another's (as a CPython waiter notified while timing out wastes that notify); and the
    /// kernel may, rarely, end a sleep spuriously, which reads as a notify (a caller of
    /// `wait_for`/`wait_while` re-checks, as with every condition variable).
    pub fn sleep_interruptible<E>(
        &self,
        guard: LockGuard<'_>,
        until: Option<Instant>,
        mut between: impl FnMut() -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<bool, E>> {
        self.obj.me()?;
        let b = self.obj.block();
        b.waiters.fetch_add(1, Ordering::SeqCst);
        let mut seq = b.seq.load(Ordering::SeqCst);
        drop(guard);
        let passed = || until.is_some_and(|u| Instant::now() >= u);
        let out = loop {
            // One look at the clock a round: the time left, also what the futex sleeps for.
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                break Ok(false);
            }
            // ORDERING: SeqCst, against the notifier's SeqCst read of `waiters`: either it sees us
            // registered (and moves `seq`, failing or ending our futex wait), or we see it moved.
            let now = b.seq.load(Ordering::SeqCst);
            if now != seq {
                if take_one(&b.owed) {
                    break Ok(true);
                }
                seq = now; // the kernel woke the sleepers those notifies were for
                continue;
            }
            // Returns on a wake, a change of `seq`, a signal or the timeout.
            if futex::wait_woken(&b.seq, seq, left) {
                break Ok(true);
            }
            if passed() {
                break Ok(false);
            }
            if let Err(e) = between() {
                break Err(e);
            }
        };
        if !matches!(out, Ok(true)) && b.seq.load(Ordering::SeqCst) != seq {
            // Leaving without a notify after the sequence moved: a notify owed to a waiter that
            // was not asleep may have been ours; give it up (so none stays owed to nobody).
            take_one(&b.owed);
        }
        b.waiters.fetch_sub(1, Ordering::SeqCst);
        Ok(out)
    }

    /// Wakes one waiter (call with the lock held).
    pub fn notify(&self) -> Result<()> {
        self.notify_n(1)
    }

    /// Wakes up to `n` waiters.
    pub fn notify_n(&self, n: u32) -> Result<()> {
        self.obj.me()?;
        let b = self.obj.block();
        let waiters = b.waiters.load(Ordering::SeqCst);
        if waiters != 0 {
            // ORDERING: the notifies owed go in BEFORE `seq` moves (SeqCst both): a waiter that
            // sees the move sees them too. (Recorded after the wake, a waiter between its futex
            // calls saw `seq` move with nothing owed yet, slept on from the new value, and was
            // never woken.) Never more owed in all than there are waiters.
            let share = n.min(waiters);
            let _ = b
                .owed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                    Some(o.saturating_add(share).min(waiters))
                });
            b.seq.fetch_add(1, Ordering::SeqCst);
            let woken = futex::wake_count(&b.seq, n);
            // The kernel woke `woken` sleepers, who need no token: take as many back (those not
            // already taken by waiters that were not asleep: then one more waiter than asked
            // returns `true`, a spurious wake-up the docs allow).
            if woken != 0 {
                let _ = b
                    .owed
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                        Some(o.saturating_sub(woken))
                    });
            }
        }
        Ok(())
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) -> Result<()> {
        self.notify_n(u32::MAX)
    }
}
