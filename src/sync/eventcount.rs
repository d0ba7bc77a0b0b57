//! An eventcount: sleep only when a condition is false, and make the waker pay a system call only when
//! somebody actually sleeps.
//!
//! Protocol (the classic eventcount, as in Dmitry Vyukov's and folly's):
//!
//! * waiter: `prepare()` registers in `waiters` and reads `epoch` (the key); it then re-checks its
//!   condition; if still false it sleeps on `epoch` with that key, else it `cancel()`s.
//! * waker: makes the condition true (publishes), then `notify()`: a full fence, and only if `waiters`
//!   is non-zero it bumps `epoch` and calls `futex_wake`.
//!
//! SYNC POINT: the waiter's `fetch_add` on `waiters` and the waker's fence form a Dekker pair: either the
//! waker sees the waiter registered (and bumps the epoch, so the waiter's sleep returns at once), or the
//! waiter's re-check sees the published condition. So no wake-up is lost, and a stream where nobody
//! sleeps makes no system call.
//!
//! Both words live in shared memory; a waiter that dies while registered leaves `waiters` too high,
//! which costs later wakers a harmless futex call, never a lost wake-up.

use super::futex;
use crate::loom::{AtomicU32, Ordering, fence};
use std::time::Duration;

/// Two shared words: the futex `epoch` and the count of registered `waiters`.
#[repr(C)]
pub(crate) struct EventCount {
    epoch: AtomicU32,
    waiters: AtomicU32,
}

impl EventCount {
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        EventCount { epoch: AtomicU32::new(0), waiters: AtomicU32::new(0) }
    }

    /// Registers as a waiter and returns the key to sleep with. Follow with a re-check of the condition,
    /// then [`wait`](Self::wait) or [`cancel`](Self::cancel).
    #[inline]
    pub(crate) fn prepare(&self) -> u32 {
        // ORDERING: SeqCst RMW, the waiter's half of the Dekker pair (see module docs).
        self.waiters.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.epoch.load(Ordering::SeqCst)
    }

    /// Unregisters without sleeping.
    #[inline]
    pub(crate) fn cancel(&self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sleeps until notified (or `timeout`, or spuriously), then unregisters.
    pub(crate) fn wait(&self, key: u32, timeout: Option<Duration>) {
        futex::wait(&self.epoch, key, timeout);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Wakes every sleeper, if there is one. Call after publishing the change they wait for.
    #[inline]
    pub(crate) fn notify(&self) {
        // ORDERING: the waker's half of the Dekker pair: the publish before this fence is visible to any
        // waiter whose registration this load does not see.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            futex::wake(&self.epoch, u32::MAX);
        }
    }

    /// Whether anyone is registered (sleeping or about to).
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) != 0
    }

    /// Wakes every sleeper unconditionally (state changes that are rare: close, death).
    pub(crate) fn notify_all_always(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        futex::wake(&self.epoch, u32::MAX);
    }
}
