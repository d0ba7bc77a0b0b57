//! The heavy half of an asymmetric barrier: `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`.
//!
//! A Dekker pair normally needs a full fence on both sides. When one side runs on every message (a
//! writer's notify) and the other only before sleeping (a waiter), the kernel can pay for both: the
//! waiter calls `membarrier`, which runs a full barrier on every CPU currently running a thread of a
//! registered process, and the hot side needs only a compiler barrier, its `light` half (liburcu
//! and folly's `asymmetricHeavyBarrier` use the same idea). Every process that maps a segment
//! registers (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`), again after a fork; a process that could
//! not register keeps its fences, and the eventcount falls back to the symmetric protocol.
//!
//! **Under loom** the pair is modelled by what it guarantees: a heavy barrier and a light one are
//! ordered, one before the other, and whatever preceded the first is visible after the second (as if
//! the light one were a full fence, but only against heavy barriers: against another thread's plain
//! fence it is nothing). Each is an `AcqRel` read-modify-write of one model-wide word (the heavy one
//! after a `SeqCst` fence, since the system call is also a full barrier for its caller). Whether the
//! process "registered" is the model's choice (`model_registered`).

#[cfg(not(loom))]
use crate::sys::fork::fork_generation;
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
    #[cfg(loom)]
    return model::REGISTERED.with(|r| r.get());
    #[cfg(not(loom))]
    return REGISTERED_IN.load(Relaxed) == fork_generation() + 1;
}

/// A full barrier on every CPU running a registered process. Only called when [`registered`].
#[cfg(not(loom))]
pub(crate) fn heavy() {
    use rustix::thread::{MembarrierCommand, membarrier};
    CALLS.fetch_add(1, Relaxed);
    if membarrier(MembarrierCommand::GlobalExpedited).is_err() {
        // Cannot happen once registered; stay correct regardless.
        crate::loom::full_fence();
    }
}

/// The hot side's half: a compiler barrier, which the heavy barriers of other threads turn into a
/// full one.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn light() {
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(loom)]
pub(crate) fn heavy() {
    CALLS.fetch_add(1, Relaxed);
    crate::loom::fence(crate::loom::Ordering::SeqCst);
    model::LINE.fetch_add(1, crate::loom::Ordering::AcqRel);
}

#[cfg(loom)]
pub(crate) fn light() {
    // A process that is not registered gets no heavy barriers: its light barrier orders nothing.
    if registered() {
        model::LINE.fetch_add(0, crate::loom::Ordering::AcqRel);
    }
}

/// Makes the model's process registered (or not) for the rest of this execution: call it first in
/// the model's closure (every thread of a loom model runs on the test's OS thread).
#[cfg(loom)]
pub(crate) fn model_registered(on: bool) {
    model::REGISTERED.with(|r| r.set(on));
}

#[cfg(loom)]
mod model {
    std::thread_local! {
        pub(super) static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    loom::lazy_static! {
        /// The word every heavy and light barrier of an execution updates.
        pub(super) static ref LINE: crate::loom::AtomicU32 = crate::loom::AtomicU32::new(0);
    }
}
