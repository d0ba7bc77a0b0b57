//! `QueueIter`: a queue's items as an iterator, the consumer loop `for item in q.iter()`.

use super::{JoinableQueue, Queue, SimpleQueue};
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::iter::FusedIterator;

/// The items of a [`Queue`] (or [`SimpleQueue`], [`JoinableQueue`]) as they come: each `next`
/// waits for an item as [`Queue::get`] does. It ends once the queue is closed and drained
/// ([`Error::Eof`] is the end, not an item). An item that does not decode is yielded as
/// [`Error::Decode`] (with its bytes) and the iteration goes on; any other error is yielded once,
/// then the iteration ends.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, Queue};
/// let jobs = Queue::<String>::new(0)?;
/// let results = Queue::<usize>::new(0)?;
/// let (j, r) = (jobs.clone(), results.clone());
/// let mut worker = Process::fork(move || {
///     for job in &j {
///         r.put(job.unwrap().len()).unwrap();
///     }
///     r.close().unwrap();
/// })?;
/// for s in ["a", "bb", "ccc"] {
///     jobs.put(s.to_string())?;
/// }
/// jobs.close()?;
/// let lens: Vec<usize> = results.iter().collect::<shmwire::Result<_>>()?;
/// assert_eq!(lens, [1, 2, 3]);
/// assert!(worker.join()?.success());
/// # Ok(()) }
/// ```
pub struct QueueIter<'a, T> {
    q: &'a Queue<T>,
    done: bool,
}

impl<'a, T> QueueIter<'a, T> {
    pub(super) fn new(q: &'a Queue<T>) -> Self {
        QueueIter { q, done: false }
    }
}

impl<T> std::fmt::Debug for QueueIter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueIter")
            .field("queue", self.q)
            .field("done", &self.done)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Iterator for QueueIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        match self.q.get() {
            Ok(v) => Some(Ok(v)),
            Err(Error::Eof) => {
                self.done = true;
                None
            }
            // The item was taken with its bytes: the queue is fine, go on.
            Err(e @ Error::Decode { .. }) => Some(Err(e)),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<T: Serialize + DeserializeOwned> FusedIterator for QueueIter<'_, T> {}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a Queue<T> {
    type Item = Result<T>;
    type IntoIter = QueueIter<'a, T>;
    fn into_iter(self) -> QueueIter<'a, T> {
        self.iter()
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a SimpleQueue<T> {
    type Item = Result<T>;
    type IntoIter = QueueIter<'a, T>;
    fn into_iter(self) -> QueueIter<'a, T> {
        self.iter()
    }
}

impl<'a, T: Serialize + DeserializeOwned> IntoIterator for &'a JoinableQueue<T> {
    type Item = Result<T>;
    type IntoIter = QueueIter<'a, T>;
    fn into_iter(self) -> QueueIter<'a, T> {
        self.iter()
    }
}
