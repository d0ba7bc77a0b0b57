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

/// Under loom: the loop of `wait::strategy::block_on` with a spinning strategy, minus its clock (loom
/// needs every execution to be deterministic, so the spin is `spins` checks, not a time budget),
/// its deadline and its probes: check; spin; then register on `ec` (asking for the asymmetric mode
/// when `prefer_asym`, as a spinning waiter does), re-check, sleep, re-check, and again.
///
/// `block_on` itself cannot run a spinning strategy under loom (its spin reads the clock and it
/// never asks for the asymmetric mode there), so the models of the spinning and asymmetric modes run
/// the eventcount through this copy of its loop.
#[cfg(loom)]
pub(crate) fn wait_until<T>(
    ec: &crate::wait::eventcount::EventCount,
    spins: usize,
    prefer_asym: bool,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    if let Some(v) = check() {
        return v;
    }
    for _ in 0..spins {
        spin_hint();
        if let Some(v) = check() {
            return v;
        }
    }
    loop {
        let key = ec.prepare(prefer_asym);
        if let Some(v) = check() {
            ec.cancel(key);
            return v;
        }
        ec.wait(key, None);
        if let Some(v) = check() {
            return v;
        }
    }
}

/// A point where a model's thread may die (an undo-logged step, see `undo`): nothing outside the
/// models. Under loom, a thread given a budget of `k` points ([`die_after`]) passes `k` of them and
/// dies at the next: it unwinds with [`Died`] (no panic hook runs), to be caught where the model
/// started the doomed operation, as a SIGKILL'd process simply stops.
#[inline(always)]
pub(crate) fn crash_point() {
    #[cfg(loom)]
    BUDGET.with(|b| match b.get() {
        Some(0) => std::panic::resume_unwind(Box::new(Died)),
        Some(k) => b.set(Some(k - 1)),
        None => {}
    });
}

/// The payload a thread dying at a [`crash_point`] unwinds with.
#[cfg(loom)]
pub(crate) struct Died;

#[cfg(loom)]
loom::thread_local! {
    static BUDGET: std::cell::Cell<Option<usize>> = std::cell::Cell::new(None);
}

/// Under loom: this thread dies at its `k + 1`th crash point from now (`None`: never).
#[cfg(loom)]
pub(crate) fn die_after(k: Option<usize>) {
    BUDGET.with(|b| b.set(k));
}
