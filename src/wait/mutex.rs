//! A robust cross-process mutex on one futex word: the holder's identity (its participant slot and
//! the slot's generation, see `Segment::claim_id`) or 0.
//!
//! Acquire is one CAS from 0 and release one store of 0; a waiter spins briefly, then sleeps on an
//! eventcount, and between sleeps of at most `PROBE_INTERVAL` it asks the kernel whether the holder's
//! claim token is still held (a stopped holder keeps it). A dead holder's id is replaced by the
//! waiter's own in one CAS (the only CAS besides acquire's): the waiter holds the mutex from that
//! instant, so nobody can slip in while it resets the RLock state and marks the mutex *inconsistent*.
//! Every later acquirer is told `owner_died` (as `EOWNERDEAD` does) until one calls
//! `mark_consistent`. Nothing is ever taken from a live holder, and a dead one makes no more stores.

use super::eventcount::EventCount;
#[cfg(not(loom))]
use super::strategy::{Deadline, Spinner, WaitStrategy, block_on};
use crate::error::Result;
use crate::loom::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
use crate::segment::Segment;
#[cfg(not(loom))]
use std::cell::Cell;

/// The shared words of a mutex (plus the owner-thread and count an `RLock` keeps).
#[repr(C)]
pub(crate) struct RawMutex {
    owner: AtomicU32,
    inconsistent: AtomicU32,
    ec: EventCount,
    /// `RLock`: the holder's thread token within the holder process.
    pub(crate) thread: AtomicU64,
    /// `RLock`: the recursion count.
    pub(crate) count: AtomicU32,
}

impl RawMutex {
    /// A free mutex on the heap (the models; in shared memory a zeroed one is free).
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        RawMutex {
            owner: AtomicU32::new(0),
            inconsistent: AtomicU32::new(0),
            ec: EventCount::new(),
            thread: AtomicU64::new(0),
            count: AtomicU32::new(0),
        }
    }

    /// One attempt.
    #[inline]
    pub(crate) fn try_lock(&self, me: u32) -> bool {
        // ORDERING: Acquire: what the previous holder did before releasing is visible to us.
        self.owner
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[cfg(not(loom))]
    /// Acquires, waiting until `deadline` (`Error::Timeout`). Takes over from a dead holder.
    pub(crate) fn lock(&self, seg: &Segment, me: u32, deadline: Deadline) -> Result<()> {
        self.lock_with(seg, me, deadline, WaitStrategy::Adaptive)
    }

    #[cfg(not(loom))]
    /// [`lock`](Self::lock), waiting as `wait` says (spin, then sleep in probing slices).
    #[inline]
    pub(crate) fn lock_with(
        &self,
        seg: &Segment,
        me: u32,
        deadline: Deadline,
        wait: WaitStrategy,
    ) -> Result<()> {
        if self.try_lock(me) {
            return Ok(());
        }
        self.lock_slow(seg, me, deadline, wait)
    }

    #[cfg(not(loom))]
    #[cold]
    fn lock_slow(
        &self,
        seg: &Segment,
        me: u32,
        deadline: Deadline,
        wait: WaitStrategy,
    ) -> Result<()> {
        let mut spinner = Spinner::new(wait);
        let took_over = Cell::new(false);
        block_on(
            &mut spinner,
            false,
            &self.ec,
            deadline,
            || Ok((took_over.get() || self.try_lock(me)).then_some(())),
            || {
                if self.take_over_if_holder_died(seg, me)? {
                    took_over.set(true);
                }
                Ok(())
            },
        )
    }

    /// If the holder is dead, takes the mutex from it for `me` and marks it inconsistent.
    /// `Ok(true)`: `me` holds it now.
    #[cfg(not(loom))]
    pub(crate) fn take_over_if_holder_died(&self, seg: &Segment, me: u32) -> Result<bool> {
        self.take_over_if_dead(me, |id| seg.claim_alive(id))
    }

    /// [`take_over_if_holder_died`](Self::take_over_if_holder_died), with `alive(id)` saying
    /// whether the holder `id` lives (the kernel's answer, or the model's).
    pub(crate) fn take_over_if_dead(
        &self,
        me: u32,
        alive: impl FnOnce(u32) -> Result<bool>,
    ) -> Result<bool> {
        let cur = self.owner.load(Ordering::Acquire);
        if cur == 0 || cur == me || alive(cur)? {
            return Ok(false);
        }
        // SYNC POINT: from the dead id straight to ours; a plain store by the dead holder cannot
        // follow (the kernel released its token: it is gone).
        if self
            .owner
            .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Ok(false);
        }
        self.thread.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.inconsistent.store(1, Ordering::Release);
        Ok(true)
    }

    /// Releases (the caller is the holder).
    #[inline]
    pub(crate) fn unlock(&self) {
        // ORDERING: Release publishes the critical section to the next holder.
        self.owner.store(0, Ordering::Release);
        let _ = self.ec.notify();
    }

    /// Makes releases cheap while nobody waits: switches the eventcount to its asymmetric mode (a
    /// waiter pays a heavy barrier, the releaser none), as the first waiter that spins would. For
    /// mutexes mostly taken without contention (a manager's containers).
    pub(crate) fn prefer_cheap_release(&self) {
        let k = self.ec.prepare(true);
        self.ec.cancel(k);
    }

    /// The holder's identity, 0 if free.
    pub(crate) fn holder(&self) -> u32 {
        self.owner.load(Ordering::Acquire)
    }

    /// Whether a holder died since the last `mark_consistent`.
    pub(crate) fn is_inconsistent(&self) -> bool {
        self.inconsistent.load(Ordering::Acquire) != 0
    }

    pub(crate) fn mark_consistent(&self) {
        self.inconsistent.store(0, Ordering::Release);
    }
}
