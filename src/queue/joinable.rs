//! `JoinableQueue` and `SimpleQueue`: the two other queues of Python's `multiprocessing`, over [`Queue`].

use super::Queue;
use crate::error::{Error, Result};
use crate::wait::{Deadline, Spinner, block_on};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A [`Queue`] whose consumers mark items done and whose producers can wait until all are:
/// Python's `multiprocessing.JoinableQueue`.
///
/// It derefs to its [`Queue`]: `put` (by value or by reference), `get`, `try_get`, `iter`, `len`,
/// `close` and the rest are the queue's. Every item a `get` took counts until it is marked done
/// with [`task_done`](Self::task_done), an item that did not decode ([`Error::Decode`], taken
/// with its bytes) too. Options (a name, a type tag, a wait strategy) are given to
/// [`Queue::builder`], then the queue is wrapped with [`from_queue`](Self::from_queue).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{JoinableQueue, Process};
/// let q = JoinableQueue::<u32>::new(0)?;
/// let worker = q.clone();
/// let p = Process::fork(move || {
///     for job in &worker {
///         let _job = job.unwrap(); // ends once the queue is closed and drained
///         worker.task_done().unwrap();
///     }
/// })?;
/// for i in 0..10 {
///     q.put(&i)?;
/// }
/// q.join()?; // every item was taken and marked done
/// q.close()?;
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
///
/// Items go in by value or by reference:
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let q = shmwire::JoinableQueue::<String>::new(0)?;
/// let s = String::from("a");
/// q.put(&s)?;
/// q.put(s)?;
/// let n = shmwire::JoinableQueue::<u64>::new(0)?;
/// n.put(5)?;
/// n.put(&6)?;
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

    /// Marks one item taken by `get` as done; more calls than items taken is [`Error::CalledTooOften`].
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
        let died = std::cell::Cell::new(false);
        let mut spinner = Spinner::new(self.q.wait);
        block_on(
            &mut spinner,
            false,
            &b.joined,
            deadline,
            || {
                if self.q.qsize() != 0 || b.held.busy() {
                    return Ok(None);
                }
                if died.get() {
                    return Err(Error::PeerDied);
                }
                Ok(Some(()))
            },
            // Dead producers' slots become skipped items, a dead consumer's slot an abandoned
            // item; what dead consumers held is forgotten here, and reported once all else is done.
            || {
                self.q.repair()?;
                if b.held.forget_dead(|id| seg.claim_alive(id))? != 0 {
                    died.set(true);
                }
                Ok(())
            },
        )
    }

    /// Items put and not yet marked done: those in the queue and those taken and not marked done
    /// (a snapshot).
    pub fn unfinished(&self) -> u64 {
        self.q.qsize() as u64 + self.q.obj.block().held.held()
    }
}

/// Per participant slot, two words of `claim id << 32 | n`, on the slot's own cache line:
/// `pending`, the attempts to take an item now under way (counted before the claim, so that `join`
/// never sees an item in neither the ring nor here), and `count`, the items taken and not yet marked
/// done. A successful claim moves one from `pending` to `count`. Words of a dead claimer: its pending
/// attempts were no items, its count is items nobody will mark done (`join` reports them, once).
#[repr(C)]
pub(crate) struct Held {
    lines: [Line; crate::segment::object::OBJECT_SLOTS as usize],
    /// Items lost with dead participants, not yet reported: counts of an earlier holder of a slot
    /// found by its new holder, and items whose consumer died in the middle of taking them.
    abandoned: AtomicU64,
}

#[repr(C, align(64))]
struct Line {
    pending: AtomicU64,
    count: AtomicU64,
}

const N: u64 = 0xffff_ffff;

#[inline]
fn id_of(w: u64) -> u64 {
    w >> 32
}

/// Adds one to `w` for `me`. A word of another id (an earlier holder of our slot: it left or died)
/// starts over; its count is returned, for `abandoned`.
#[inline]
fn bump(w: &AtomicU64, me: u32) -> u64 {
    let me = u64::from(me);
    let mut cur = w.load(Ordering::Relaxed);
    loop {
        let next = if id_of(cur) == me && cur & N != N {
            cur + 1
        } else {
            me << 32 | 1
        };
        // ORDERING: AcqRel: the claim that follows is ordered after it.
        match w.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) if id_of(cur) != me => return cur & N,
            Ok(_) => return 0,
            Err(now) => cur = now,
        }
    }
}

/// Takes one from `w` if it is `me`'s (any id's, with `None`) and non-zero; whether it did.
fn drop_one(w: &AtomicU64, me: Option<u32>) -> bool {
    let mut cur = w.load(Ordering::Acquire);
    while cur & N != 0 && me.is_none_or(|me| id_of(cur) == u64::from(me)) {
        match w.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
    false
}

impl Held {
    fn line(&self, slot: u32) -> &Line {
        &self.lines[(slot as usize).min(self.lines.len() - 1)]
    }

    /// Before an attempt to take an item (participant slot `slot`, claim id `me`).
    #[inline]
    pub(crate) fn hold(&self, slot: u32, me: u32) {
        bump(&self.line(slot).pending, me);
    }

    /// The attempt claimed an item: it is held until marked done.
    #[inline]
    pub(crate) fn claimed(&self, slot: u32, me: u32) {
        let line = self.line(slot);
        let left = bump(&line.count, me);
        if left != 0 {
            self.abandoned.fetch_add(left, Ordering::AcqRel);
        }
        drop_one(&line.pending, Some(me));
    }

    /// The attempt is over without an item, or with one it could not deliver (`claimed`: counted
    /// already, so counted off).
    #[inline]
    pub(crate) fn unhold(&self, slot: u32, me: u32, claimed: bool) {
        let line = self.line(slot);
        if claimed {
            drop_one(&line.count, Some(me));
        } else {
            drop_one(&line.pending, Some(me));
        }
    }

    /// Items lost with dead consumers in the middle of a `get` (found by the ring's repair).
    pub(crate) fn lost(&self, n: u64) {
        if n != 0 {
            self.abandoned.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Counts one item as done: this slot's if it holds any, else any other's (an item taken in
    /// another process). [`Error::CalledTooOften`] if nobody holds one.
    fn done(&self, me: u32, slot: u32) -> Result<()> {
        if drop_one(&self.line(slot).count, Some(me))
            || self.lines.iter().any(|l| drop_one(&l.count, None))
        {
            return Ok(());
        }
        Err(Error::CalledTooOften) // task_done() called more times than items were taken
    }

    /// Whether any attempt is under way or any item held (dead or alive), or lost items are still to
    /// be reported: loads only, no system call.
    fn busy(&self) -> bool {
        self.abandoned.load(Ordering::Acquire) != 0
            || self.lines.iter().any(|l| {
                l.pending.load(Ordering::Acquire) & N != 0
                    || l.count.load(Ordering::Acquire) & N != 0
            })
    }

    /// Items held (a snapshot, dead holders included).
    fn held(&self) -> u64 {
        self.lines
            .iter()
            .map(|l| l.count.load(Ordering::Acquire) & N)
            .sum()
    }

    /// Clears the words of dead claimers; returns how many items they held (and lost items), each
    /// counted by the one call that removed it.
    fn forget_dead(&self, alive: impl Fn(u32) -> Result<bool>) -> Result<u64> {
        let mut removed = self.abandoned.swap(0, Ordering::AcqRel);
        for l in &self.lines {
            for (w, items) in [(&l.pending, false), (&l.count, true)] {
                let cur = w.load(Ordering::Acquire);
                if cur & N != 0
                    && !alive(id_of(cur) as u32)?
                    && w.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    && items
                {
                    removed += cur & N;
                }
            }
        }
        Ok(removed)
    }
}

/// The plain queue of Python's `multiprocessing.SimpleQueue`: `put`, `get`, `is_empty`, `close`,
/// an unbounded [`Queue`] underneath (with its defaults); and the Rust forms `try_get`, `iter`, and
/// timeouts.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, SimpleQueue};
/// let q = SimpleQueue::<String>::new()?;
/// let producer = q.clone();
/// let p = Process::fork(move || {
///     let s = String::from("by value");
///     producer.put(&s).unwrap(); // by reference
///     producer.put(s).unwrap(); // by value
///     producer.close().unwrap();
/// })?;
/// let got: Vec<String> = q.iter().collect::<shmwire::Result<_>>()?;
/// assert_eq!(got, ["by value", "by value"]);
/// assert!(p.join()?.success());
/// let n = SimpleQueue::<u64>::new()?;
/// n.put(5)?;
/// n.put(&6)?;
/// assert_eq!(n.try_get()?, 5);
/// # Ok(()) }
/// ```
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

    /// Puts `item` (by value or by reference). The queue is unbounded, so this waits only while
    /// its spill area is too full for a large item (see [`Queue`]).
    pub fn put(&self, item: impl std::borrow::Borrow<T>) -> Result<()> {
        self.q.put(item)
    }

    /// [`put`](Self::put), giving up with [`Error::Timeout`] (nothing put) after `timeout`.
    pub fn put_timeout(&self, item: impl std::borrow::Borrow<T>, timeout: Duration) -> Result<()> {
        self.q.put_timeout(item, timeout)
    }

    /// Takes the oldest item, waiting for one; [`Error::Eof`] once closed and drained; an item that
    /// does not decode is [`Error::Decode`] (see [`Queue::get`]).
    pub fn get(&self) -> Result<T> {
        self.q.get()
    }

    /// [`get`](Self::get), giving up with [`Error::Timeout`] (nothing taken) after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.q.get_timeout(timeout)
    }

    /// Takes the oldest item if there is one now, else [`Error::Empty`] ([`Error::Eof`] if closed
    /// and drained).
    pub fn try_get(&self) -> Result<T> {
        self.q.try_get()
    }

    /// The items as they come, until the queue is closed and drained (see [`Queue::iter`]).
    pub fn iter(&self) -> super::QueueIter<'_, T> {
        self.q.iter()
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
