//! The heavy half of an asymmetric barrier: `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`.
//!
//! A Dekker pair normally needs a full fence on both sides. When one side runs on every message (a
//! writer's notify) and the other only before sleeping (a waiter), the kernel can pay for both: the
//! waiter calls `membarrier`, which runs a full barrier on every CPU currently running a thread of a
//! registered process, and the hot side needs only a compiler barrier (liburcu and folly's
//! `asymmetricHeavyBarrier` use the same idea). Every process that maps a segment registers
//! (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`), again after a fork; a process that could not register
//! keeps its fences, and the eventcount falls back to the symmetric protocol.

#[cfg(not(loom))]
use crate::segment::registry::fork_generation;
#[cfg(loom)]
fn fork_generation() -> u64 {
    0
}
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static CALLS: AtomicU64 = AtomicU64::new(0);

/// Number of `membarrier` system calls this process has made through shmwire (heavy barriers and
/// the registration's query and register).
pub(crate) fn calls() -> u64 {
    CALLS.load(Relaxed)
}

/// `fork_generation() + 1` of the last successful registration, 0 if none (a forked child sees its
/// parent's value, which no longer matches, until it registers itself).
static REGISTERED_IN: AtomicU64 = AtomicU64::new(0);

/// Registers this process as a target of others' heavy barriers. Cheap after the first call.
pub(crate) fn register() {
    if cfg!(loom) || registered() {
        return;
    }
    use rustix::thread::{MembarrierCommand, MembarrierQuery, membarrier, membarrier_query};
    CALLS.fetch_add(1, Relaxed);
    let q = membarrier_query();
    if q.contains(MembarrierQuery::REGISTER_GLOBAL_EXPEDITED)
        && q.contains(MembarrierQuery::GLOBAL_EXPEDITED)
    {
        CALLS.fetch_add(1, Relaxed);
        if membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok() {
            REGISTERED_IN.store(fork_generation() + 1, Relaxed);
        }
    }
}

/// Whether this process receives heavy barriers (so its notifies may skip their fence).
#[inline]
pub(crate) fn registered() -> bool {
    !cfg!(loom) && REGISTERED_IN.load(Relaxed) == fork_generation() + 1
}

/// A full barrier on every CPU running a registered process. Only called when [`registered`].
pub(crate) fn heavy() {
    use rustix::thread::{MembarrierCommand, membarrier};
    CALLS.fetch_add(1, Relaxed);
    if membarrier(MembarrierCommand::GlobalExpedited).is_err() {
        // Cannot happen once registered; stay correct regardless.
        crate::loom::full_fence();
    }
}
