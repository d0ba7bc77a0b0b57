//! The channel layer: rings in shared memory.
//!
//! * [`spsc`]: a bounded single-producer single-consumer ring of byte frames (one per pipe direction).
//! * [`buf`]: the byte storage under a ring (raw shared memory, or loom cells under `--cfg loom`).

pub(crate) mod buf;
pub(crate) mod spsc;

#[cfg(all(test, loom))]
mod loom_tests;
