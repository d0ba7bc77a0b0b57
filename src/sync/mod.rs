//! The sync layer: futex wait/wake on words in shared memory, the eventcount that lets a busy stream
//! run without system calls, and the wait strategy (spin, then sleep in slices that probe the peer).

pub(crate) mod claim;
pub(crate) mod eventcount;
pub(crate) mod futex;
pub(crate) mod membarrier;
#[cfg(not(loom))]
pub(crate) mod mutex;
pub(crate) mod wait;

pub use wait::{PROBE_INTERVAL, WaitStrategy};

#[cfg(all(test, loom))]
mod loom_tests;
