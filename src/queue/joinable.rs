//! `JoinableQueue` and `SimpleQueue`: the two other queues of Python's `multiprocessing`, over [`Queue`].

use super::Queue;
use crate::error::{Error, Result};
use crate::sync::wait::{Deadline, Spinner, WaitStrategy, block_on};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A [`Queue`] whose consumers mark items done and whose producers can wait until all are:
/// Python's `multiprocessing.JoinableQueue`.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{JoinableQueue, Process};
/// let q = JoinableQueue::<u32>::new(0)?;
/// let worker = q.clone();
/// let mut p = Process::fork(move || {
///     while let Ok(_job) = worker.get() {
///         worker.task_done().unwrap();
///     }
/// })?;
/// for i in 0..10 {
///     q.put(&i)?;
/// }
/// q.join()?; // every item was taken and marked done
/// q.close()?;
/// p.join()?;
/// # Ok(()) }
/// ```
pub struct JoinableQueue<T> {
    q: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { q: self.q.clone() }
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("queue", &self.q)
            .finish()
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.q
    }
}

impl<T> JoinableQueue<T> {
    /// A joinable queue of at most `maxsize` items (0: unbounded, see [`Queue::new`]).
    pub fn new(maxsize: usize) -> Result<Self> {
        Ok(JoinableQueue {
            q: Queue::new(maxsize)?,
        })
    }

    /// Wraps a queue made with [`Queue::builder`] (or opened by name).
    pub fn from_queue(q: Queue<T>) -> Self {
        JoinableQueue { q }
    }

    /// Marks one item taken by `get` as done; more calls than items is [`Error::Misuse`].
    pub fn task_done(&self) -> Result<()> {
        self.q.obj.me()?;
        let b = self.q.obj.block();
        let mut cur = b.unfinished.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return Err(Error::Misuse); // task_done() called too many times
            }
            match b.unfinished.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur == 1 {
            let _ = b.joined.notify();
        }
        Ok(())
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.join_at(Deadline::NEVER)
    }

    /// [`join`](Self::join), giving up with [`Error::Timeout`] after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_at(Deadline::after(Some(timeout)))
    }

    fn join_at(&self, deadline: Deadline) -> Result<()> {
        self.q.obj.me()?;
        let b = self.q.obj.block();
        let mut spinner = Spinner::new(WaitStrategy::Adaptive);
        block_on(
            &mut spinner,
            false,
            &b.joined,
            deadline,
            || Ok((b.unfinished.load(Ordering::Acquire) == 0).then_some(())),
            || Ok(()),
        )
    }

    /// Items put and not yet marked done.
    pub fn unfinished(&self) -> u64 {
        self.q.obj.block().unfinished.load(Ordering::Acquire)
    }
}

/// The plain queue of Python's `multiprocessing.SimpleQueue`: `put`, `get`, `is_empty`, `close`.
pub struct SimpleQueue<T> {
    q: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue { q: self.q.clone() }
    }
}

impl<T> std::fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("queue", &self.q)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new (unbounded) queue, shared with children forked later.
    pub fn new() -> Result<Self> {
        Ok(SimpleQueue { q: Queue::new(0)? })
    }

    /// Puts `item`.
    pub fn put(&self, item: impl std::borrow::Borrow<T>) -> Result<()> {
        self.q.put(item)
    }

    /// Takes the oldest item, waiting for one; [`Error::Eof`] once closed and drained.
    pub fn get(&self) -> Result<T> {
        self.q.get()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Closes it (see [`Queue::close`]).
    pub fn close(&self) -> Result<()> {
        self.q.close()
    }
}
