//! The manager family: Python's `multiprocessing.Manager()` dicts and lists, in a shared-memory arena
//! under robust locks instead of behind a server process.
//!
//! * `arena`: the segment file that grows by appending chunks, mapped on first use, and the bounds-
//!   checked access to it (`Ref`s, never references over shared bytes).
//! * `alloc`: the allocator (two-level segregated fit, coalescing), all-or-nothing through an undo log.
//! * `slot`: each container's slot (robust mutex, seqlock, redo record) and the directory of slots.
//! * `dict`, `list`: [`SharedDict`] and [`SharedList`].
//! * `manager`: [`Manager`], its builder and its namespace of names.
//! * `handle`: handles as serde data, opened in whichever process decodes them.
//! * `bytes`: encoding, private copies, hashing.
//!
//! Failure: a process killed at any instruction of an update leaves every container as it was
//! before or after the update (the redo record of `slot`, the undo log of `alloc`); a stopped lock
//! holder makes others time out (`with_timeout`), never steal; hostile bytes in the arena give
//! [`Error::Corrupt`](crate::Error::Corrupt), never a panic, undefined behaviour or an unbounded
//! loop.

mod alloc;
mod arena;
#[cfg(feature = "test-hooks")]
mod audit;
mod bytes;
mod dict;
mod handle;
mod list;
#[allow(clippy::module_inception)]
mod manager;
mod slot;

pub use dict::SharedDict;
pub use list::SharedList;
pub use manager::{Manager, ManagerBuilder, ManagerStats};
