//! # shmwire
//!
//! Python's `multiprocessing` toolkit for Rust, on shared memory: the fast path is loads and stores on
//! cache lines in an mmap'd segment, and a process enters the kernel only to sleep or to wake a
//! sleeper.
//!
//! ```
//! use shmwire::{Error, Pipe, Process};
//! # fn main() -> shmwire::Result<()> {
//! let (parent, child) = Pipe::new()?;
//! let mut p = Process::fork(move || {
//!     child.send(&(42, None::<u8>, "hello from child")).unwrap();
//!     let reply: String = child.recv().unwrap();
//!     assert_eq!(reply, "hello from parent");
//! })?;
//! let got: (i32, Option<u8>, String) = parent.recv()?;
//! assert_eq!(got.2, "hello from child");
//! parent.send("hello from parent")?;
//! assert!(p.join()?.success());
//! // The child exited, so its end is closed:
//! assert!(matches!(parent.recv::<String>(), Err(Error::Eof)));
//! # Ok(()) }
//! ```
//!
//! ## Layers
//!
//! * [`segment`]: shared mappings (sealed memfds, or named POSIX shared memory), a validated header, and
//!   a participant table whose slots are held through kernel-released liveness tokens (OFD locks).
//! * `sync`: futex wait/wake, an eventcount (a busy stream makes no system calls), the wait strategy.
//! * `ring`: the SPSC byte ring under each pipe direction.
//! * The API: [`Pipe`], [`Connection`], [`Process`] (fork, or [`spawn`]), [`Listener`]/[`Client`],
//!   [`wait`], [`SharedMemory`].
//!
//! ## Failure
//!
//! A peer that dies is noticed through its liveness token: a blocked call returns
//! [`Error::PeerDied`] (or [`Error::Eof`] once drained) within [`PROBE_INTERVAL`] or two, never hangs.
//! Everything read from shared memory is validated; a hostile or broken peer yields
//! [`Error::Corrupt`], never undefined behaviour or a panic.
//!
//! Linux only (futex, memfd, OFD locks, pidfd).

#![warn(missing_docs)]
#![warn(unsafe_op_in_unsafe_fn)]
// Under `--cfg loom` only the ring and sync layers are built, for their models.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "shmwire needs Linux (futex, memfd_create, OFD locks); other systems are not supported yet"
);

#[cfg(not(loom))]
mod barrier;
mod codec;
#[cfg(not(loom))]
mod condition;
#[cfg(not(loom))]
mod connection;
mod error;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
mod handle;
#[doc(hidden)]
pub mod hooks;
#[cfg(not(loom))]
mod listener;
#[cfg(not(loom))]
mod lock;
pub(crate) mod loom;
#[cfg(not(loom))]
mod object;
#[cfg(not(loom))]
mod pipe;
#[cfg(not(loom))]
mod process;
#[cfg(not(loom))]
mod queue;
mod ring;
#[cfg(not(loom))]
pub mod segment;
#[cfg(not(loom))]
mod select;
#[cfg(not(loom))]
mod semaphore;
#[cfg(not(loom))]
mod shared_memory;
#[cfg(not(loom))]
pub mod spawn;
pub mod stats;
mod sync;
mod timeout;
#[cfg(not(loom))]
mod value;

#[cfg(not(loom))]
pub use connection::Connection;
pub use error::{Error, Result};
#[cfg(not(loom))]
pub use handle::ConnectionHandle;
#[cfg(not(loom))]
pub use listener::{Client, Listener};
#[cfg(not(loom))]
pub use pipe::{DEFAULT_CAPACITY, Pipe, PipeBuilder};
#[cfg(not(loom))]
pub use process::{ChildOutcome, ExitStatus, Process};
#[cfg(not(loom))]
pub use segment::cleanup;
#[cfg(not(loom))]
pub use select::{Waitable, wait};
#[cfg(not(loom))]
pub use shared_memory::SharedMemory;
pub use sync::{PROBE_INTERVAL, WaitStrategy};
pub use timeout::Timeout;
#[cfg(not(loom))]
pub use {
    barrier::Barrier,
    condition::Condition,
    event::Event,
    lock::{Lock, LockGuard, RLock, RLockGuard},
    queue::{
        DEFAULT_ITEM_SIZE, DEFAULT_SPILL_SIZE, JoinableQueue, Queue, QueueBuilder, SimpleQueue,
        UNBOUNDED_CAPACITY,
    },
    semaphore::{BoundedSemaphore, Semaphore},
    value::{Array, AtomicInt, Value, ValueGuard},
};
