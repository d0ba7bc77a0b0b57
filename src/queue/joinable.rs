//! `JoinableQueue` and `SimpleQueue`: the two other queues of Python's `multiprocessing`, over [`Queue`].

use super::Queue;
use crate::error::{Error, Result};
use crate::sync::wait::{Deadline, Spinner, WaitStrategy, block_on};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};
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
        Ok(Self::from_queue(Queue::new(maxsize)?))
    }

    /// Wraps a queue made with [`Queue::builder`] (or opened by name). Items taken before the
    /// queue was first wrapped (in any process) are not counted.
    pub fn from_queue(q: Queue<T>) -> Self {
        q.obj.block().joinable.store(1, Ordering::Relaxed);
        JoinableQueue { q }
    }

    /// Marks one item taken by `get` as done; more calls than items taken is [`Error::Misuse`].
    /// (An item taken in another process may be marked done here too.)
    pub fn task_done(&self) -> Result<()> {
        let me = self.q.obj.me()?;
        let b = self.q.obj.block();
        b.held.done(me, self.q.obj.segment().my_slot())?;
        let _ = b.joined.notify();
        Ok(())
    }

    /// Waits until every item put has been taken and marked done. A consumer that died holding
    /// items it had not marked done makes this [`Error::PeerDied`] (once: those items are then
    /// forgotten); a producer that died in the middle of a `put` is no item.
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
        let seg = self.q.obj.segment();
        let mut spinner = Spinner::new(WaitStrategy::Adaptive);
        block_on(
            &mut spinner,
            false,
            &b.joined,
            deadline,
            || {
                if self.q.qsize() != 0 {
                    return Ok(None);
                }
                let (live, dead) = b.held.count(|id| seg.claim_alive(id))?;
                if live != 0 {
                    return Ok(None);
                }
                if dead != 0 {
                    b.held.forget_dead(|id| seg.claim_alive(id))?;
                    return Err(Error::PeerDied);
                }
                Ok(Some(()))
            },
            // Dead producers' slots become skipped items, so they stop counting.
            || self.q.repair(),
        )
    }

    /// Items put and not yet marked done: those in the queue and those taken and not marked done
    /// (a snapshot).
    pub fn unfinished(&self) -> u64 {
        let seg = self.q.obj.segment();
        let held = self
            .q
            .obj
            .block()
            .held
            .count(|id| seg.claim_alive(id))
            .map_or(0, |(live, _)| live);
        self.q.qsize() as u64 + held
    }
}

/// Per participant slot: `claim id << 32 | items held`, on its own cache line. The holder counts an
/// item before it claims it and its `task_done` counts it off; a word whose claim id is dead holds
/// items nobody will mark done.
#[repr(C)]
pub(crate) struct Held {
    words: [Line; crate::object::OBJECT_SLOTS as usize],
    /// Items held by dead participants whose slot was taken since.
    abandoned: AtomicU64,
}

#[repr(C, align(64))]
struct Line(HeldWord);

const COUNT: u64 = 0xffff_ffff;

impl Held {
    /// Counts one more item held by participant slot `slot` (this process's), as `me`.
    #[inline]
    pub(crate) fn hold(&self, slot: u32, me: u32) {
        self.of(slot).hold(me, &self.abandoned);
    }

    /// Takes back a count of [`hold`](Self::hold): the attempt found nothing.
    #[inline]
    pub(crate) fn unhold(&self, slot: u32, me: u32) {
        self.of(slot).release(me);
    }

    fn of(&self, slot: u32) -> &HeldWord {
        &self.words[(slot as usize).min(self.words.len() - 1)].0
    }

    /// Counts one item of those held as done: this slot's if it holds any, else any other's (an
    /// item taken in another process). [`Error::Misuse`] if nobody holds one.
    fn done(&self, me: u32, slot: u32) -> Result<()> {
        if self.of(slot).release(me) {
            return Ok(());
        }
        for line in &self.words {
            let w = &line.0.0;
            let mut cur = w.load(Ordering::Acquire);
            while cur & COUNT != 0 {
                match w.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(()),
                    Err(now) => cur = now,
                }
            }
        }
        Err(Error::Misuse) // task_done() called more times than items were taken
    }

    /// Items held by live and by dead participants.
    fn count(&self, alive: impl Fn(u32) -> Result<bool>) -> Result<(u64, u64)> {
        let (mut live, mut dead) = (0, self.abandoned.load(Ordering::Acquire));
        for line in &self.words {
            let w = line.0.0.load(Ordering::Acquire);
            if w & COUNT != 0 {
                if alive((w >> 32) as u32)? {
                    live += w & COUNT;
                } else {
                    dead += w & COUNT;
                }
            }
        }
        Ok((live, dead))
    }

    /// Forgets what dead participants held.
    fn forget_dead(&self, alive: impl Fn(u32) -> Result<bool>) -> Result<()> {
        self.abandoned.store(0, Ordering::Release);
        for line in &self.words {
            let w = line.0.0.load(Ordering::Acquire);
            if w & COUNT != 0 && !alive((w >> 32) as u32)? {
                let _ = line
                    .0
                    .0
                    .compare_exchange(w, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// One participant's word of [`Held`].
#[repr(C)]
pub(crate) struct HeldWord(AtomicU64);

impl HeldWord {
    /// Counts one more item held by `me`.
    #[inline]
    pub(crate) fn hold(&self, me: u32, abandoned: &AtomicU64) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = if cur >> 32 == u64::from(me) && cur & COUNT != COUNT {
                cur + 1
            } else {
                // Ours from scratch; if an earlier holder of our slot (dead: the slot is ours now)
                // left items it never marked done, they move to `abandoned`, for `join` to report.
                u64::from(me) << 32 | 1
            };
            // ORDERING: AcqRel, and the claim that follows is ordered after it: `join` never sees
            // an item neither in the ring nor held.
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if cur >> 32 != u64::from(me) && cur & COUNT != 0 {
                        abandoned.fetch_add(cur & COUNT, Ordering::AcqRel);
                    }
                    return;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Takes back one count of `me`'s; whether there was one.
    fn release(&self, me: u32) -> bool {
        let mut cur = self.0.load(Ordering::Acquire);
        while cur >> 32 == u64::from(me) && cur & COUNT != 0 {
            match self
                .0
                .compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
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
