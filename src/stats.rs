//! Counters a test or a benchmark can read to check what the fast path costs.
//!
//! Together they count every system call shmwire's send, receive and wait paths make: a stream in
//! which nobody waits makes none, and a side that waits longer than its spin pays a `membarrier`
//! and a futex wait, its peer a futex wake. The stress test traces a busy stream with ptrace and
//! checks that these counters account for every system call it saw.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static OTHER: AtomicU64 = AtomicU64::new(0);

/// Notes a system call of the send, receive or wait paths other than futex and membarrier (which
/// their own modules count): a liveness probe, an affinity check, a wake-up pipe signal.
#[allow(dead_code)] // until every such call site notes itself
pub(crate) fn note_other_call() {
    OTHER.fetch_add(1, Relaxed);
}

/// Number of futex system calls (waits and wakes) this process has made through shmwire so far.
/// A busy stream should add next to none.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let (a, b) = shmwire::Pipe::new()?;
/// let before = shmwire::stats::system_calls();
/// for i in 0..1000u32 {
///     a.send(&i)?;
///     assert_eq!(b.recv::<u32>()?, i);
/// }
/// // Nobody waited: no futex, no membarrier, no probe.
/// assert_eq!(shmwire::stats::system_calls(), before);
/// # Ok(()) }
/// ```
pub fn futex_calls() -> u64 {
    crate::sys::futex::calls()
}

/// Number of `membarrier` system calls this process has made through shmwire so far: a waiter's
/// heavy barrier before it sleeps in the asymmetric mode, a switch of an eventcount back to the
/// symmetric mode, and the once-per-process registration (two calls).
pub fn membarrier_calls() -> u64 {
    crate::sys::membarrier::calls()
}

/// Every system call this process has made on shmwire's send, receive and wait paths so far:
/// [`futex_calls`], [`membarrier_calls`] and the others (liveness probes of a blocked call, the
/// adaptive wait's affinity check, wake-up pipe signals for a waiter in [`wait`](fn@crate::wait)).
pub fn system_calls() -> u64 {
    futex_calls() + membarrier_calls() + OTHER.load(Relaxed)
}
