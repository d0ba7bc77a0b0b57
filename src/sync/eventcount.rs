//! An eventcount: sleep only when a condition is false, and make the waker pay a system call only when
//! somebody actually sleeps, once per sleep.
//!
//! One shared 32-bit word, also the futex word: `epoch` in the high 16 bits, the number of registered
//! `waiters` in the low 16 bits.
//!
//! * waiter: `prepare()` adds itself to `waiters` and remembers the state (the key); it then re-checks
//!   its condition; if still false it sleeps on the word with that key, else it `cancel()`s.
//! * waker: makes the condition true (publishes), then `notify()`: a full fence, and only if `waiters`
//!   is non-zero it swaps in `(epoch + 1, waiters = 0)` and calls `futex_wake`. Clearing the count is
//!   what keeps a busy writer from calling `futex_wake` for every message while a woken reader is still
//!   on its way back to the CPU (tens of microseconds on these machines).
//! * A waiter that leaves without being woken (its condition came true, a timeout) takes itself off the
//!   count, unless the epoch moved on, which means a waker already took everyone off.
//!
//! SYNC POINT: the waiter's registration (a SeqCst RMW and fence) and the waker's fence form a Dekker
//! pair: either the waker sees the waiter registered (and moves the epoch, so the waiter's futex wait
//! returns at once), or the waiter's re-check sees the published condition. No wake-up is lost, and a
//! stream in which nobody sleeps makes no system call.
//!
//! A waiter that dies while registered leaves the count too high; the next notify clears it (one
//! needless futex call), so nothing is ever stuck. At most 65535 waiters may sleep on one word.

use super::futex;
use crate::loom::{AtomicU32, Ordering, full_fence};
use std::time::Duration;

const WAITER: u32 = 1;
const WAITERS: u32 = 0xffff;
const EPOCH: u32 = 1 << 16;

/// The shared word (see the module docs).
#[repr(C)]
pub(crate) struct EventCount {
    state: AtomicU32,
}

/// What a waiter registered with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key(u32);

#[inline]
fn epoch(s: u32) -> u32 {
    s >> 16
}

impl EventCount {
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        EventCount {
            state: AtomicU32::new(0),
        }
    }

    /// Registers as a waiter. Follow with a re-check of the condition, then [`wait`](Self::wait) or
    /// [`cancel`](Self::cancel).
    #[inline]
    pub(crate) fn prepare(&self) -> Key {
        // ORDERING: SeqCst RMW and fence: the waiter's half of the Dekker pair (module docs).
        let s = self
            .state
            .fetch_add(WAITER, Ordering::SeqCst)
            .wrapping_add(WAITER);
        full_fence();
        Key(s)
    }

    /// Unregisters without sleeping (a no-op if a waker already took everyone off).
    #[inline]
    pub(crate) fn cancel(&self, key: Key) {
        let mut s = self.state.load(Ordering::Relaxed);
        while epoch(s) == epoch(key.0) && s & WAITERS != 0 {
            match self.state.compare_exchange_weak(
                s,
                s - WAITER,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
    }

    /// Sleeps until notified (or `timeout`, or spuriously), then unregisters.
    pub(crate) fn wait(&self, key: Key, timeout: Option<Duration>) {
        let s = self.state.load(Ordering::SeqCst);
        if epoch(s) == epoch(key.0) {
            // Sleeps only if the word is unchanged; another waiter arriving changes it too, which
            // costs a spurious return and another round, never a lost wake-up.
            futex::wait(&self.state, s, timeout);
        }
        self.cancel(key);
    }

    /// Wakes every sleeper, if there is one. Call after publishing the change they wait for.
    #[inline]
    pub(crate) fn notify(&self) {
        // ORDERING: the waker's half of the Dekker pair: the publish before this fence is visible to any
        // waiter whose registration this load does not see.
        full_fence();
        let s = self.state.load(Ordering::Relaxed);
        if s & WAITERS != 0 {
            self.wake(s);
        }
    }

    #[cold]
    fn wake(&self, mut s: u32) {
        loop {
            if s & WAITERS == 0 {
                return; // someone else woke them
            }
            let next = (s & !WAITERS).wrapping_add(EPOCH);
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        futex::wake(&self.state, u32::MAX);
    }

    /// Whether anyone is registered (sleeping or about to).
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.state.load(Ordering::SeqCst) & WAITERS != 0
    }

    /// Wakes every sleeper unconditionally (rare state changes: close, death).
    pub(crate) fn notify_all_always(&self) {
        // ORDERING: an RMW on the word every waiter registers on: either it follows a waiter's
        // registration (and its new epoch fails that waiter's futex wait), or the waiter's registration
        // follows it and sees what was changed before this call.
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |s| {
                Some((s & !WAITERS).wrapping_add(EPOCH))
            });
        futex::wake(&self.state, u32::MAX);
    }
}
