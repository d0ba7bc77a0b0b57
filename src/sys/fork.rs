//! The fork generation: how many forks separate this process from the first process that loaded the
//! crate, counted by a `pthread_atfork` child handler. A handle that remembers the generation it was
//! made in knows, with one load, that it now lives in a forked child (see `segment::registry`).

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static HANDLER: Once = Once::new();

/// How many forks separate this process from the first process that loaded the crate.
#[inline]
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

extern "C" fn in_child_after_fork() {
    // Async-signal-safe: one atomic add.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Installs the child handler (once per process).
pub(crate) fn install_fork_handler() {
    HANDLER.call_once(|| {
        // SAFETY: registers a child handler that only performs an atomic add (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(in_child_after_fork)) };
    });
}
