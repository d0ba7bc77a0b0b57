//! The waiting and owning layer: the eventcount that lets a busy stream run without system calls,
//! the wait strategy (spin, then sleep in slices that probe the peer) with its deadlines, the robust
//! cross-process mutex, the claim words that say who uses one side of a ring now, and `wait()` over
//! many objects at once (`select`: any primitive that offers a pollable descriptor takes part).

pub mod claim;
pub mod eventcount;
pub mod mutex;
#[cfg(not(loom))]
pub mod select;
pub mod strategy;

pub(crate) use strategy::{Deadline, Spinner, block_on, block_on_unprobed};
pub use strategy::{PROBE_INTERVAL, WaitStrategy};

#[cfg(all(test, loom))]
mod loom_mutex;
#[cfg(all(test, loom))]
mod loom_tests;
