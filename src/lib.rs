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
//! let p = Process::fork(move || {
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
//! From the bottom up (each module uses only those above it in this list):
//!
//! * `sys`: the kernel calls the protocols rest on: futex wait/wake, `membarrier`, liveness tokens
//!   (open-file-description locks), the fork generation.
//! * [`segment`]: shared mappings (sealed memfds, or named POSIX shared memory), a validated header, a
//!   participant table whose slots are held through kernel-released liveness tokens, and the typed
//!   objects (a control block and data) the primitives live in.
//! * `wait`: the eventcount (a busy stream makes no system calls), the wait strategy and deadlines,
//!   the robust mutex, the claim words, and [`wait()`](fn@wait) over many objects.
//! * `ring`: the SPSC byte ring under each pipe direction, the MPMC slot ring under each queue, and
//!   the spill area for items larger than a slot.
//! * The primitives, one folder per family: `pipe` ([`Pipe`], [`Connection`],
//!   [`Listener`]/[`Client`], [`ConnectionHandle`]), `queue` ([`Queue`], [`JoinableQueue`],
//!   [`SimpleQueue`]), `locks` ([`Lock`], [`RLock`], [`Semaphore`], [`Event`], [`Condition`],
//!   [`Barrier`], [`Value`], [`Array`], [`SharedMemory`]), `manager` ([`Manager`], [`SharedDict`],
//!   [`SharedList`]), `process` ([`Process`], [`spawn`]), `pool` ([`Pool`], [`AsyncResult`]); and [`wait()`](fn@wait) over any of them.
//! * [`transport`]: `Connection`s over Unix and TCP sockets speaking Python's
//!   `multiprocessing.connection` wire (framing, authkey handshake, pickled objects with the
//!   `pickle` feature), chosen by address (`unix:/path`, `tcp://host:port`), and objects served to
//!   other hosts ([`Server`], [`Remote`]).
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
// Under `--cfg loom` only the sys, wait and ring layers are built, for their models.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "shmwire needs Linux (futex, memfd_create, OFD locks); other systems are not supported yet"
);

// Cross-cutting: errors, time, encoding, counters, test hooks, the loom shim.
mod codec;
mod error;
/// Kill and stop points for the fault tests: public only with the cargo feature `test-hooks`.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod hooks;
#[cfg(not(feature = "test-hooks"))]
pub(crate) mod hooks;
pub(crate) mod loom;
pub mod stats;
mod timeout;
pub(crate) mod undo;

// The layers, bottom up.
pub mod ring;
#[cfg(not(loom))]
pub mod segment;
pub mod sys;
pub mod wait;

// The primitives.
#[cfg(not(loom))]
pub mod locks;
#[cfg(not(loom))]
pub mod manager;
#[cfg(not(loom))]
pub mod pipe;
#[cfg(not(loom))]
pub mod pool;
#[cfg(not(loom))]
pub mod process;
#[cfg(not(loom))]
pub mod queue;
#[cfg(not(loom))]
pub mod transport;

/// Fuzz entry points over the parsers of shared and received bytes (feature `test-hooks`).
#[cfg(all(feature = "test-hooks", not(loom)))]
#[doc(hidden)]
pub mod fuzz;

pub use error::{Error, Result};

/// The README's code, compiled and run as doctests (so the tour cannot go stale).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
#[cfg(not(loom))]
pub use manager::{Manager, ManagerBuilder, ManagerStats, SharedDict, SharedList};
#[cfg(not(loom))]
pub use pipe::{
    Client, Connection, ConnectionHandle, ConnectionIter, DEFAULT_CAPACITY, Incoming, Listener,
    ListenerBuilder, Pipe, PipeBuilder, Transport,
};
#[cfg(not(loom))]
pub use pool::{
    AsyncResult, DEFAULT_ARENA, DEFAULT_RESULT_RING, DEFAULT_TASK_SLOTS, Imap, Pool, PoolBuilder,
    StartMethod, TaskValue,
};
#[cfg(not(loom))]
pub use process::{ChildOutcome, ExitStatus, Process, spawn};
#[cfg(not(loom))]
pub use segment::cleanup;
pub use timeout::Timeout;
#[cfg(not(loom))]
pub use transport::{
    DEAD_PEER_TIMEOUT, DEFAULT_MAX_MESSAGE, HANDSHAKE_TIMEOUT, Remote, RemoteDict, RemoteList,
    RemoteQueue, Server, ServerThread,
};
#[cfg(not(loom))]
pub use wait::select::{Waitable, wait};
pub use wait::{PROBE_INTERVAL, WaitStrategy};
#[cfg(not(loom))]
pub use {
    locks::{
        Array, AtomicInt, Barrier, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock,
        RLockGuard, Semaphore, SemaphorePermit, SharedMemory, SharedMemoryBuilder, SyncBuilder,
        Value, ValueGuard,
    },
    queue::{
        DEFAULT_ITEM_SIZE, DEFAULT_SPILL_SIZE, JoinableQueue, Queue, QueueBuilder, QueueIter,
        SimpleQueue, UNBOUNDED_CAPACITY,
    },
};
