//! An eventcount: sleep only when a condition is false, and make the waker pay a system call only when
//! somebody actually sleeps, once per sleep.
//!
//! One shared 32-bit word, also the futex word: `epoch` in the high 16 bits, the `ASYM` mode bit, and
//! the `FD_WAITER` bit, and the number of registered `waiters` in the low 14 bits.
//!
//! * waiter: `prepare()` adds itself to `waiters` and remembers the state (the key); it then re-checks
//!   its condition; if still false it sleeps on the word with that key, else it `cancel()`s.
//! * waker: makes the condition true (publishes), then `notify()`: a barrier, and only if `waiters` is
//!   non-zero it swaps in `(epoch + 1, waiters = 0)` and calls `futex_wake`. Clearing the count is what
//!   keeps a busy writer from calling `futex_wake` for every message while a woken reader is still on
//!   its way back to the CPU (tens of microseconds on these machines).
//! * A waiter that leaves without being woken (its condition came true, a timeout) takes itself off the
//!   count, unless the epoch moved on, which means a waker already took everyone off.
//!
//! SYNC POINT: registration and notify form a Dekker pair: either the waker sees the waiter registered
//! (and moves the epoch, so the waiter's futex wait returns at once), or the waiter's re-check sees the
//! published condition. Two ways to pay for it:
//!
//! * symmetric (`ASYM` clear): a full fence on both sides, after registering and after publishing;
//! * asymmetric (`ASYM` set): the waiter issues a heavy barrier (`sys::membarrier`) after registering,
//!   and the waker needs only a compiler barrier, so a stream in which nobody sleeps runs without any
//!   fence at all.
//!
//! Waiters that spin first (and so rarely sleep) ask for the asymmetric mode, waiters that sleep at
//! once for the symmetric one. The mode changes only safely: to asymmetric when nobody is registered
//! (a registered symmetric waiter relies on the waker's fence), to symmetric followed by a heavy
//! barrier (so no waker still skips its fence). A waiter follows the mode it registers under.
//!
//! A waiter that dies while registered leaves the count too high; the next notify clears it (one
//! needless futex call), so nothing is ever stuck. At most 16383 waiters may sleep on one word.
//!
//! A waiter that polls a file descriptor (a pipe's wake-up pipe, for `shmwire::wait`) registers with
//! `FD_WAITER` set; a waker that clears the count returns `true`, and its caller writes that
//! descriptor.

use crate::loom::{AtomicU32, Ordering, full_fence};
use crate::sys::{futex, membarrier};
use std::time::Duration;

const WAITER: u32 = 1;
const WAITERS: u32 = 0x3fff;
/// Some waiter polls a file descriptor instead of the futex (`shmwire::wait`): the waker must also
/// signal that descriptor. Cleared, with the count, by the waker.
const FD_WAITER: u32 = 1 << 14;
const ASYM: u32 = 1 << 15;
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
    /// [`cancel`](Self::cancel). `prefer_asym`: this waiter rarely sleeps (it spun first), so the
    /// waker's side should be the cheap one.
    #[inline]
    pub(crate) fn prepare(&self, prefer_asym: bool) -> Key {
        let s = self.state.load(Ordering::Relaxed);
        if prefer_asym != (s & ASYM != 0) {
            self.switch_mode(s, prefer_asym);
        }
        // ORDERING: SeqCst RMW, then the barrier of the mode we registered under: the waiter's half
        // of the Dekker pair (module docs).
        let s = self
            .state
            .fetch_add(WAITER, Ordering::SeqCst)
            .wrapping_add(WAITER);
        if s & ASYM != 0 {
            membarrier::heavy();
        } else {
            full_fence();
        }
        Key(s)
    }

    #[cold]
    fn switch_mode(&self, s: u32, to_asym: bool) {
        if to_asym {
            if membarrier::registered() && s & WAITERS == 0 {
                let _ =
                    self.state
                        .compare_exchange(s, s | ASYM, Ordering::SeqCst, Ordering::Relaxed);
            }
        } else if self.state.fetch_and(!ASYM, Ordering::SeqCst) & ASYM != 0 {
            // Wakers that read the old mode may have skipped their fence: make what they published
            // visible before we rely on the symmetric protocol.
            membarrier::heavy();
        }
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

    /// Registers as a waiter that will poll a file descriptor rather than the futex (symmetric
    /// protocol). Follow with a re-check, then poll, then [`cancel`](Self::cancel).
    pub(crate) fn prepare_fd(&self) -> Key {
        self.state.fetch_or(FD_WAITER, Ordering::SeqCst);
        self.prepare(false)
    }

    /// Wakes every sleeper, if there is one. Call after publishing the change they wait for. Returns
    /// whether a descriptor-polling waiter must be signalled too.
    #[inline]
    #[must_use]
    pub(crate) fn notify(&self) -> bool {
        // ORDERING: the waker's half of the Dekker pair. In the asymmetric mode the waiter's heavy
        // barrier orders our publish before this load, through this light barrier (a compiler
        // barrier; the pairing itself under loom).
        membarrier::light();
        let mut s = self.state.load(Ordering::Relaxed);
        if s & ASYM == 0 || !membarrier::registered() {
            full_fence();
            s = self.state.load(Ordering::Relaxed);
        }
        if s & WAITERS != 0 {
            self.wake(s)
        } else {
            false
        }
    }

    #[cold]
    fn wake(&self, mut s: u32) -> bool {
        loop {
            if s & WAITERS == 0 {
                return false; // someone else woke them
            }
            let next = (s & !(WAITERS | FD_WAITER)).wrapping_add(EPOCH);
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        futex::wake(&self.state, u32::MAX);
        s & FD_WAITER != 0
    }

    /// Whether anyone is registered (sleeping or about to).
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.state.load(Ordering::SeqCst) & WAITERS != 0
    }

    /// Wakes every sleeper unconditionally (rare state changes: close, death). Returns whether a
    /// descriptor-polling waiter must be signalled too.
    pub(crate) fn notify_all_always(&self) -> bool {
        // ORDERING: an RMW on the word every waiter registers on: either it follows a waiter's
        // registration (and its new epoch fails that waiter's futex wait), or the waiter's registration
        // follows it and sees what was changed before this call.
        let prev = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |s| {
                Some((s & !(WAITERS | FD_WAITER)).wrapping_add(EPOCH))
            })
            .unwrap_or(0);
        futex::wake(&self.state, u32::MAX);
        prev & FD_WAITER != 0
    }
}
