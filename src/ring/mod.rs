//! The channel layer: rings in shared memory.
//!
//! * [`spsc`]: a bounded single-producer single-consumer ring of byte frames (one per pipe direction).
//! * [`mpmc`]: a bounded multi-producer multi-consumer ring of slots (Queue), repairable after a
//!   claimer dies.
//! * [`spill`]: the blocks where items too big for an mpmc slot wait.
//! * [`buf`]: the byte storage under a ring (raw shared memory, or loom cells under `--cfg loom`).

pub mod buf;
pub mod mpmc;
#[cfg(not(loom))]
pub mod spill;
pub mod spsc;

/// Under loom the MPMC ring is modelled without a spill area: the types it names, never built.
#[cfg(loom)]
pub(crate) mod spill {
    use crate::error::Result;
    use std::marker::PhantomData;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Block(pub(crate) u64);

    pub(crate) enum SlotNow {
        InUse,
        Done,
    }

    /// Uninhabited: a ring under loom has no spill area.
    pub(crate) enum Spill<'a> {
        _Never(std::convert::Infallible, PhantomData<&'a ()>),
    }

    impl Spill<'_> {
        pub(crate) fn queued(&self, _: Block, _: u64, _: u32) {
            match *self {
                Spill::_Never(never, _) => match never {},
            }
        }
        pub(crate) fn take(&self, _: u32, _: u64, _: u64, _: usize, _: &mut Vec<u8>) -> Result<()> {
            match *self {
                Spill::_Never(never, _) => match never {},
            }
        }
        pub(crate) fn free(&self, _: u32, _: Block) -> Result<()> {
            match *self {
                Spill::_Never(never, _) => match never {},
            }
        }
        pub(crate) fn free_skipped(&self, _: u32, _: u64, _: u64, _: usize) -> Result<()> {
            match *self {
                Spill::_Never(never, _) => match never {},
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_mpmc;
#[cfg(all(test, loom))]
mod loom_tests;
