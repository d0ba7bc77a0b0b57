//! The channel layer: rings in shared memory.
//!
//! * [`spsc`]: a bounded single-producer single-consumer ring of byte frames (one per pipe direction).
//! * [`mpmc`]: a bounded multi-producer multi-consumer ring of slots (Queue), repairable after a
//!   claimer dies.
//! * [`spill`]: the blocks where items too big for an mpmc slot wait.
//! * [`buf`]: the byte storage under a ring (raw shared memory, or loom cells under `--cfg loom`).

pub(crate) mod buf;
#[cfg(not(loom))]
pub(crate) mod mpmc;
#[cfg(not(loom))]
pub(crate) mod spill;
pub(crate) mod spsc;

#[cfg(all(test, loom))]
mod loom_tests;
