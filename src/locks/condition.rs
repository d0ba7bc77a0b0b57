//! `Condition`: wait, under a [`Lock`], for another process to say something changed; Python's
//! `multiprocessing.Condition`.
//!
//! A sequence word and a waiter count in shared memory. A waiter reads the sequence while it still
//! holds the lock, releases the lock, and sleeps unless the sequence moved; `notify` moves it and
//! wakes (so a notify that lands between the release and the sleep is not lost). As with every
//! condition variable, wake-ups may be spurious: wait in a loop, or with [`Condition::wait_while`].

use crate::error::Result;
use crate::locks::lock::{Lock, LockGuard};
use crate::segment::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::sys::futex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
pub(crate) struct CondBlock {
    seq: AtomicU32,
    waiters: AtomicU32,
}
// SAFETY: repr(C), all atomics.
unsafe impl SharedBlock for CondBlock {}

struct CondTag;

/// A condition variable shared by processes, with its [`Lock`].
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Condition, Process, Value};
/// let cond = Condition::new()?;
/// let ready = Value::new(0u32)?;
/// let (c, r) = (cond.clone(), ready.clone());
/// let mut p = Process::fork(move || {
///     let _g = c.acquire().unwrap();
///     r.set(1).unwrap();
///     c.notify_all().unwrap();
/// })?;
/// let g = cond.acquire()?;
/// let g = cond.wait_while(g, || ready.get().unwrap() == 0)?;
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

impl Condition {
    /// A condition with a lock of its own, shared with children forked later.
    pub fn new() -> Result<Condition> {
        Self::with_lock(Lock::new()?)
    }

    /// A condition over an existing lock.
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        Ok(Condition {
            obj: Object::create(Kind::Sync, fingerprint_of::<CondTag>(), [0; 6], 0, None)?,
            lock,
        })
    }

    /// A named condition (its lock is named `NAME.lock`).
    pub fn create(name: &str) -> Result<Condition> {
        let lock = Lock::create(&format!("{name}.lock"))?;
        Ok(Condition {
            obj: Object::create(
                Kind::Sync,
                fingerprint_of::<CondTag>(),
                [0; 6],
                0,
                Some(name),
            )?,
            lock,
        })
    }

    /// Opens the named condition and its lock.
    pub fn open(name: &str) -> Result<Condition> {
        let lock = Lock::open(&format!("{name}.lock"))?;
        Ok(Condition {
            obj: Object::open(Kind::Sync, fingerprint_of::<CondTag>(), name)?,
            lock,
        })
    }

    /// The lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Acquires the lock (as `with cond:` does).
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.lock.acquire()
    }

    /// Releases the lock held by `guard`, sleeps until notified, and takes the lock again.
    pub fn wait<'a>(&'a self, guard: LockGuard<'a>) -> Result<LockGuard<'a>> {
        Ok(self.wait_for(guard, None)?.0)
    }

    /// [`wait`](Self::wait) for at most `timeout`: the guard, and `false` if it timed out (Python's
    /// return value).
    pub fn wait_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> Result<(LockGuard<'a>, bool)> {
        // A timeout past the end of time is none.
        self.wait_for(guard, Instant::now().checked_add(timeout))
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

    fn wait_for<'a>(
        &'a self,
        guard: LockGuard<'a>,
        until: Option<Instant>,
    ) -> Result<(LockGuard<'a>, bool)> {
        let b = self.obj.block();
        b.waiters.fetch_add(1, Ordering::SeqCst);
        let seq = b.seq.load(Ordering::SeqCst);
        drop(guard);
        let left = until.map(|u| u.saturating_duration_since(Instant::now()));
        let notified = if left.is_some_and(|l| l.is_zero()) {
            false
        } else {
            futex::wait(&b.seq, seq, left);
            b.seq.load(Ordering::SeqCst) != seq || until.is_none_or(|u| Instant::now() < u)
        };
        b.waiters.fetch_sub(1, Ordering::SeqCst);
        let g = self.lock.acquire()?;
        Ok((g, notified))
    }

    /// Wakes one waiter (call with the lock held).
    pub fn notify(&self) -> Result<()> {
        self.notify_n(1)
    }

    /// Wakes up to `n` waiters.
    pub fn notify_n(&self, n: u32) -> Result<()> {
        self.obj.me()?;
        let b = self.obj.block();
        if b.waiters.load(Ordering::SeqCst) != 0 {
            b.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake(&b.seq, n);
        }
        Ok(())
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) -> Result<()> {
        self.notify_n(u32::MAX)
    }
}
