//! The one import point for the atomics, fences and ring storage that the lock-free protocols use.
//!
//! Under `--cfg loom` these are loom's model types, so `cargo test --lib --cfg loom` explores the
//! interleavings of the crate's own ring and wait/wake code (see `ring::loom_tests`). loom atomics cannot
//! live in mmap'd memory, so under loom a ring's control block and bytes live on the heap; the protocol
//! code is the same either way.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// A spin-wait hint that loom can see (a yield under loom, a `pause` otherwise).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
