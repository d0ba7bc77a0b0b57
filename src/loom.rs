//! The one import point for the atomics, fences and ring storage that the lock-free protocols use.
//!
//! Under `--cfg loom` these are loom's model types, so `cargo test --lib --cfg loom` explores the
//! interleavings of the crate's own ring and wait/wake code (see `ring::loom_tests`). loom atomics cannot
//! live in mmap'd memory, so under loom a ring's control block and bytes live on the heap; the protocol
//! code is the same either way.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// A spin-wait hint that loom can see (a yield under loom, a `pause` otherwise).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// A full memory barrier (the `SeqCst` fence of the eventcount's Dekker pairs).
///
/// On x86-64 this is a locked add to the stack, as the Linux kernel's `smp_mb()`: the same ordering
/// guarantee as `mfence` for ordinary memory (locked instructions are full barriers, Intel SDM vol. 3
/// §9.2.2), and notably cheaper on AMD cores. The `asm!` block is also a compiler barrier. Elsewhere,
/// and under loom, it is `fence(SeqCst)`.
#[inline(always)]
pub(crate) fn full_fence() {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // SAFETY: a locked read-modify-write of the word at the stack pointer, adding zero: the stack
    // memory is ours and keeps its value; only the flags change, which the block does not promise to
    // preserve.
    unsafe {
        std::arch::asm!("lock or dword ptr [rsp], 0", options(nostack));
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    fence(Ordering::SeqCst);
}
