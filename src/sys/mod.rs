//! The kernel calls the shared-memory protocols rest on, each in a file of its own: futex wait and
//! wake on words in shared memory, the `membarrier` heavy barrier, liveness tokens (open-file-
//! description locks that the kernel drops when a process dies), and the fork generation (a
//! `pthread_atfork` counter by which a handle learns that it now lives in a forked child), and the
//! reaping of children whose `Process` was dropped while they ran.

#[cfg(not(loom))]
pub mod fork;
pub mod futex;
pub mod membarrier;
#[cfg(not(loom))]
pub mod reap;
#[cfg(not(loom))]
pub mod token;
