//! `Queue`, `JoinableQueue` and `SimpleQueue`: multi-producer multi-consumer queues between processes,
//! Python's `multiprocessing.Queue` and friends, on the slot ring of `ring::mpmc`.
//!
//! No feeder thread and no lock: a `put` is done when it returns (so a process may exit without
//! draining what it put, and joining it never deadlocks), and a consumer stopped in the middle of a
//! `get` does not hold up the others. Blocked producers and consumers spin briefly, then sleep on
//! eventcounts, so a busy queue makes no system calls.

use crate::codec;
use crate::error::{Error, Result};
use crate::object::{Object, SharedBlock};
use crate::ring::mpmc::{Attempt, Item, Mpmc, SLOT_HEADER};
use crate::ring::spill::{self, Spill, SpillCtl};
use crate::segment::{Kind, fingerprint_of};
use crate::sync::eventcount::EventCount;
use crate::sync::wait::{Deadline, Spinner, WaitStrategy, block_on};
use crossbeam_utils::CachePadded;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

#[repr(C)]
pub(crate) struct QueueBlock {
    enq: CachePadded<AtomicU64>,
    deq: CachePadded<AtomicU64>,
    /// Consumers sleep here.
    not_empty: CachePadded<EventCount>,
    /// Producers sleep here.
    not_full: CachePadded<EventCount>,
    closed: AtomicU32,
    /// JoinableQueue: items put and not yet marked done.
    unfinished: AtomicU64,
    joined: EventCount,
    /// The spill area's mutex and redo record.
    spill: CachePadded<SpillCtl>,
}
// SAFETY: repr(C), all atomics (CachePadded only adds alignment).
unsafe impl SharedBlock for QueueBlock {}

const PARAM_CAP: usize = 0;
const PARAM_SLOT: usize = 1;
const PARAM_SPILL_UNITS: usize = 2;
/// Slots of a queue created with `maxsize == 0` (1,048,576). Pages are only allocated as slots are
/// first used (at 256 bytes a slot with the default item size, a queue that has carried a million
/// items holds 256 MiB of shared memory); past that many items waiting, a put blocks.
pub const UNBOUNDED_CAPACITY: usize = 1 << 20;
/// Default bytes per item kept in the slot itself (encoded); larger items go to the spill area.
pub const DEFAULT_ITEM_SIZE: usize = 240;
/// Default size of the spill area, where items larger than a slot wait (64 MiB; pages are only
/// allocated as they are first used, except for a named queue, whose segment is allocated whole).
pub const DEFAULT_SPILL_SIZE: usize = 64 << 20;

/// A multi-producer multi-consumer queue of `T` shared by processes.
///
/// `Clone + Send + Sync`. Items are any serde type, encoded with postcard (`put`/`get`). An encoded item
/// up to the item size ([`QueueBuilder::item_size`], 240 bytes by default) is copied into its slot;
/// a larger one is written once into a block of the queue's spill area
/// ([`QueueBuilder::spill_size`], 64 MiB by default) and the slot points to it; one larger than the
/// whole spill area is [`Error::TooLarge`]. A `bytemuck::Pod` item can go in as its raw bytes with no
/// encoding at all ([`put_pod`](Queue::put_pod)/[`get_pod`](Queue::get_pod)), whether or not it is
/// also serde.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, Queue};
/// let q = Queue::<String>::new(0)?;
/// let producer = q.clone();
/// let mut p = Process::fork(move || {
///     for v in ["A", "B", "C"] {
///         producer.put(&v.to_string()).unwrap();
///     }
///     producer.close().unwrap();
/// })?;
/// let mut got = Vec::new();
/// while let Ok(v) = q.get() {
///     got.push(v);
/// }
/// assert_eq!(got, ["A", "B", "C"]);
/// p.join()?;
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    obj: Object<QueueBlock>,
    maxsize: usize,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            obj: self.obj.clone(),
            maxsize: self.maxsize,
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("maxsize", &self.maxsize)
            .field("len", &self.ring().len())
            .finish()
    }
}

/// Options for a [`Queue`].
#[derive(Debug, Clone)]
#[must_use]
pub struct QueueBuilder<T> {
    maxsize: usize,
    item_size: usize,
    spill_size: usize,
    name: Option<String>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> QueueBuilder<T> {
    /// The most items it holds; 0 (the default) means as many as [`UNBOUNDED_CAPACITY`].
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = maxsize;
        self
    }

    /// The largest encoded item kept in a slot, in bytes (default 240); larger ones go to the spill
    /// area.
    pub fn item_size(mut self, bytes: usize) -> Self {
        self.item_size = bytes;
        self
    }

    /// Bytes of the spill area, where items larger than the item size wait (default
    /// [`DEFAULT_SPILL_SIZE`]); it bounds the largest item and the bytes of large items waiting at
    /// once (a put waits for room as it waits for a free slot). 0: no spill area, a larger item is
    /// [`Error::TooLarge`].
    pub fn spill_size(mut self, bytes: usize) -> Self {
        self.spill_size = bytes;
        self
    }

    /// A name other processes can [`Queue::open`].
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Creates the queue.
    pub fn build(self) -> Result<Queue<T>> {
        let cap = if self.maxsize == 0 {
            UNBOUNDED_CAPACITY
        } else {
            self.maxsize
        };
        let slot = (self.item_size.max(8) + SLOT_HEADER).div_ceil(8) * 8;
        let units = self.spill_size.div_ceil(spill::UNIT);
        let bytes = cap
            .checked_mul(slot)
            .and_then(|b| b.checked_add(spill::area_bytes(units)))
            .filter(|&b| b <= 1 << 40)
            .ok_or_else(|| {
                Error::io(
                    std::io::ErrorKind::InvalidInput,
                    "maxsize x item_size + spill_size is too large for one queue",
                )
            })?;
        let mut p = [0u64; 6];
        p[PARAM_CAP] = cap as u64;
        p[PARAM_SLOT] = slot as u64;
        p[PARAM_SPILL_UNITS] = units as u64;
        let obj = Object::create(
            Kind::Queue,
            fingerprint_of::<T>(),
            p,
            bytes,
            self.name.as_deref(),
        )?;
        Ok(Queue {
            obj,
            maxsize: self.maxsize,
            _t: PhantomData,
        })
    }
}

impl<T> Queue<T> {
    /// A queue of at most `maxsize` items (0: up to [`UNBOUNDED_CAPACITY`]), shared with children
    /// forked later.
    pub fn new(maxsize: usize) -> Result<Queue<T>> {
        Self::builder().maxsize(maxsize).build()
    }

    /// Options: maxsize, item size, name.
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            maxsize: 0,
            item_size: DEFAULT_ITEM_SIZE,
            spill_size: DEFAULT_SPILL_SIZE,
            name: None,
            _t: PhantomData,
        }
    }

    /// Opens the queue named `name`; it must carry `T` (else [`Error::Incompatible`]).
    pub fn open(name: &str) -> Result<Queue<T>> {
        let obj: Object<QueueBlock> = Object::open(Kind::Queue, fingerprint_of::<T>(), name)?;
        let p = obj.params();
        let (cap, slot, units) = (p[PARAM_CAP], p[PARAM_SLOT], p[PARAM_SPILL_UNITS]);
        let fits = cap > 0
            && slot >= SLOT_HEADER as u64 + 8
            && slot % 8 == 0
            && units < 1 << 40
            && cap
                .checked_mul(slot)
                .and_then(|b| b.checked_add(spill::area_bytes(units as usize) as u64))
                .is_some_and(|b| b <= obj.data().1 as u64);
        if !fits {
            return Err(Error::Corrupt);
        }
        let maxsize = if cap as usize == UNBOUNDED_CAPACITY {
            0
        } else {
            cap as usize
        };
        Ok(Queue {
            obj,
            maxsize,
            _t: PhantomData,
        })
    }
}

impl<T> Queue<T> {
    fn ring(&self) -> Mpmc<'_> {
        let b = self.obj.block();
        let p = self.obj.params();
        let base = self.obj.data().0;
        let units = p[PARAM_SPILL_UNITS] as usize;
        let slots = (p[PARAM_CAP] * p[PARAM_SLOT]) as usize;
        Mpmc {
            enq: &b.enq,
            deq: &b.deq,
            base,
            cap: p[PARAM_CAP],
            slot_size: p[PARAM_SLOT] as usize,
            spill: (units > 0).then(|| Spill {
                ctl: &b.spill,
                seg: self.obj.segment(),
                // SAFETY: the data area holds the slots, then the spill area (checked on open,
                // sized on create); `slots` is a multiple of 8.
                base: unsafe { base.add(slots) },
                units,
            }),
        }
    }

    fn closed(&self) -> bool {
        self.obj.block().closed.load(Ordering::Acquire) != 0
    }

    fn repair(&self) -> Result<()> {
        let seg = self.obj.segment();
        let ring = self.ring();
        ring.repair(|id| seg.claim_alive(id))?;
        if let Some(spill) = &ring.spill {
            spill.repair(
                self.obj.me()?,
                |id| seg.claim_alive(id),
                |pos| ring.slot_now(pos, |id| seg.claim_alive(id)),
            )?;
        }
        Ok(())
    }

    /// Items in the queue now (a snapshot; Python's `qsize`).
    pub fn qsize(&self) -> usize {
        self.ring().len() as usize
    }

    /// Whether it is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether it is full (a snapshot).
    pub fn is_full(&self) -> bool {
        self.qsize() as u64 >= self.obj.params()[PARAM_CAP]
    }

    /// The `maxsize` it was created with (0: unbounded).
    pub fn maxsize(&self) -> usize {
        self.maxsize
    }

    /// Closes it for every process: later puts fail with [`Error::Closed`]; gets drain what is there,
    /// then fail with [`Error::Eof`].
    pub fn close(&self) -> Result<()> {
        self.obj.me()?;
        let b = self.obj.block();
        b.closed.store(1, Ordering::SeqCst);
        let _ = b.not_empty.notify_all_always();
        let _ = b.not_full.notify_all_always();
        Ok(())
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed()
    }

    fn put_bytes_at(&self, bytes: &[u8], deadline: Deadline) -> Result<()> {
        if bytes.len() > self.ring().max_item() {
            return self.put_spilled(
                bytes.len(),
                |buf| {
                    buf.copy_from_slice(bytes);
                    Ok(())
                },
                deadline,
            );
        }
        let me = self.obj.me()?;
        self.publish(me, &self.ring(), Item::Inline(bytes), deadline)
    }

    /// Puts an item of `len` bytes (more than a slot holds) that `fill` writes into a spill block:
    /// waits for room in the spill area, fills the block before claiming a slot, then publishes.
    fn put_spilled(
        &self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
        deadline: Deadline,
    ) -> Result<()> {
        let me = self.obj.me()?;
        let ring = self.ring();
        let spill = ring.spill.as_ref().ok_or(Error::TooLarge)?;
        if len > spill.max_item() {
            return Err(Error::TooLarge);
        }
        let b = self.obj.block();
        let mut spinner = Spinner::new(WaitStrategy::Adaptive);
        let alloc = || -> Result<Option<_>> {
            if self.closed() {
                return Err(Error::Closed);
            }
            spill.alloc(me, len, deadline)
        };
        let block = block_on(&mut spinner, false, &b.not_full, deadline, alloc, || {
            self.repair()
        })?;
        let out = spill
            .fill(block, len, fill)
            .and_then(|()| self.publish(me, &ring, Item::Spilled(block, len), deadline));
        if out.is_err() {
            spill.free(me, block)?;
            let _ = b.not_full.notify();
        }
        out
    }

    /// Claims a slot for `item` and publishes it, waiting while the queue is full.
    fn publish(&self, me: u32, ring: &Mpmc<'_>, item: Item<'_>, deadline: Deadline) -> Result<()> {
        let b = self.obj.block();
        let attempt = || -> Result<Option<()>> {
            if self.closed() {
                return Err(Error::Closed);
            }
            Ok(match ring.try_put(me, item)? {
                Attempt::Done(()) => Some(()),
                Attempt::Wait => None,
            })
        };
        // Counted before it is visible, so a consumer's task_done never runs ahead of it.
        b.unfinished.fetch_add(1, Ordering::AcqRel);
        let mut spinner = Spinner::new(WaitStrategy::Adaptive);
        if let Err(e) = block_on(&mut spinner, false, &b.not_full, deadline, attempt, || {
            self.repair()
        }) {
            if b.unfinished.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _ = b.joined.notify();
            }
            return Err(e);
        }
        let _ = b.not_empty.notify();
        Ok(())
    }

    fn get_with<R>(&self, deadline: Deadline, mut read: impl FnMut(&[u8]) -> R) -> Result<R> {
        let me = self.obj.me()?;
        let ring = self.ring();
        let b = self.obj.block();
        let attempt = || -> Result<Option<R>> {
            match ring.try_get(me, &mut read)? {
                Attempt::Done(v) => Ok(Some(v)),
                Attempt::Wait if self.closed() && !ring.has_pending() => Err(Error::Eof),
                Attempt::Wait => Ok(None),
            }
        };
        let mut spinner = Spinner::new(WaitStrategy::Adaptive);
        let out = block_on(&mut spinner, false, &b.not_empty, deadline, attempt, || {
            self.repair()
        })?;
        let _ = b.not_full.notify();
        Ok(out)
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    #[doc(hidden)]
    /// Test hook: claims a slot for `item`, raises `signal` in this process (SIGSTOP, SIGKILL), and,
    /// if it lives on, publishes it: a producer stopped or killed in the middle of a put.
    pub fn __put_interrupted(&self, item: &T, signal: i32) -> Result<()> {
        let me = self.obj.me()?;
        let bytes = codec::encode(item)?;
        let mut raise = || {
            // SAFETY: plain syscall on ourselves.
            unsafe { libc::kill(libc::getpid(), signal) };
        };
        let ring = self.ring();
        let item = match &ring.spill {
            Some(spill) if bytes.len() > ring.max_item() => {
                let block = spill
                    .alloc(me, bytes.len(), Deadline::NEVER)?
                    .ok_or(Error::Full)?;
                spill.fill(block, bytes.len(), |buf| buf.copy_from_slice(&bytes));
                Item::Spilled(block, bytes.len())
            }
            _ => Item::Inline(&bytes),
        };
        match ring.try_put_with(me, item, &mut raise)? {
            Attempt::Done(()) => {
                let _ = self.obj.block().not_empty.notify();
                Ok(())
            }
            Attempt::Wait => Err(Error::Full),
        }
    }

    #[doc(hidden)]
    /// Test hook: bytes of the spill area in use (in whole units), to check that nothing leaks.
    pub fn __spill_in_use(&self) -> u64 {
        self.obj.block().spill.used() * spill::UNIT as u64
    }

    #[doc(hidden)]
    /// Test hook: takes an item, raising `signal` in this process while it holds the slot: a consumer
    /// stopped or killed in the middle of a get.
    pub fn __get_interrupted(&self, signal: i32) -> Result<T> {
        self.get_with(Deadline::NEVER, |bytes| {
            // SAFETY: plain syscall on ourselves.
            unsafe { libc::kill(libc::getpid(), signal) };
            codec::decode::<T>(bytes)
        })?
    }

    /// Encodes `item` (on the stack when small) and puts it.
    fn put_item(&self, item: &T, deadline: Deadline) -> Result<()> {
        let len = codec::encoded_len(item)?;
        if len > self.ring().max_item() {
            return self.put_spilled(len, |buf| codec::encode_into(item, buf), deadline);
        }
        if len <= 256 {
            let mut buf = [0u8; 256];
            codec::encode_into(item, &mut buf[..len])?;
            return self.put_bytes_at(&buf[..len], deadline);
        }
        self.put_bytes_at(&codec::encode(item)?, deadline)
    }

    /// Puts `item`, waiting while the queue is full.
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_item(item, Deadline::NEVER)
    }

    /// [`put`](Self::put), giving up with [`Error::Timeout`] (nothing put) after `timeout`.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        self.put_item(item, Deadline::after(Some(timeout)))
    }

    /// Puts `item` if there is room now, else [`Error::Full`].
    pub fn put_nowait(&self, item: &T) -> Result<()> {
        match self.put_item(item, Deadline::after(Some(Duration::ZERO))) {
            Err(Error::Timeout) => Err(Error::Full),
            other => other,
        }
    }

    /// Takes the oldest item, waiting while the queue is empty; [`Error::Eof`] once it is closed and
    /// drained.
    pub fn get(&self) -> Result<T> {
        self.get_with(Deadline::NEVER, codec::decode::<T>)?
    }

    /// [`get`](Self::get), giving up with [`Error::Timeout`] after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(Deadline::after(Some(timeout)), codec::decode::<T>)?
    }

    /// Takes the oldest item if there is one now, else [`Error::Empty`] ([`Error::Eof`] if closed and
    /// drained).
    pub fn get_nowait(&self) -> Result<T> {
        match self.get_with(Deadline::after(Some(Duration::ZERO)), codec::decode::<T>) {
            Err(Error::Timeout) => Err(Error::Empty),
            Ok(v) => v,
            Err(e) => Err(e),
        }
    }
}

impl<T: bytemuck::Pod> Queue<T> {
    /// Puts a plain-old-data item as its raw bytes (no encoding), waiting while the queue is full.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Debug, PartialEq)]
    /// #[repr(C)]
    /// struct Tick { seq: u64, price: f64 }
    /// let q = shmwire::Queue::<Tick>::new(0)?;
    /// q.put_pod(&Tick { seq: 1, price: 2.5 })?;
    /// assert_eq!(q.get_pod()?, Tick { seq: 1, price: 2.5 });
    /// # Ok(()) }
    /// ```
    pub fn put_pod(&self, item: &T) -> Result<()> {
        self.put_bytes_at(bytemuck::bytes_of(item), Deadline::NEVER)
    }

    /// [`put_pod`](Self::put_pod) if there is room now, else [`Error::Full`].
    pub fn put_pod_nowait(&self, item: &T) -> Result<()> {
        match self.put_bytes_at(
            bytemuck::bytes_of(item),
            Deadline::after(Some(Duration::ZERO)),
        ) {
            Err(Error::Timeout) => Err(Error::Full),
            other => other,
        }
    }

    /// Takes the oldest item put with [`put_pod`](Self::put_pod); [`Error::Eof`] once closed and
    /// drained.
    pub fn get_pod(&self) -> Result<T> {
        self.get_with(Deadline::NEVER, codec::decode_pod::<T>)?
    }

    /// [`get_pod`](Self::get_pod), giving up with [`Error::Timeout`] after `timeout`.
    pub fn get_pod_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(Deadline::after(Some(timeout)), codec::decode_pod::<T>)?
    }
}

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
    /// A joinable queue of at most `maxsize` items (0: unbounded up to [`UNBOUNDED_CAPACITY`]).
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
    /// A new queue (up to [`UNBOUNDED_CAPACITY`] items), shared with children forked later.
    pub fn new() -> Result<Self> {
        Ok(SimpleQueue { q: Queue::new(0)? })
    }

    /// Puts `item`.
    pub fn put(&self, item: &T) -> Result<()> {
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
