//! Counters a test or a benchmark can read to check what the fast path costs.

/// Number of futex system calls (waits and wakes) this process has made through shmwire so far.
/// A busy stream should add next to none.
pub fn futex_calls() -> u64 {
    crate::sync::futex::calls()
}
