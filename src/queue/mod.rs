//! `Queue`, `JoinableQueue` and `SimpleQueue`: multi-producer multi-consumer queues between processes,
//! Python's `multiprocessing.Queue` and friends, on the slot ring of `ring::mpmc`.
//!
//! No feeder thread and no lock: a `put` is done when it returns (so a process may exit without
//! draining what it put, and joining it never deadlocks), and a consumer stopped in the middle of a
//! `get` does not hold up the others. Blocked producers and consumers spin briefly, then sleep on
//! eventcounts, so a busy queue makes no system calls.
//!
//! * `ops`: the machinery under `put` and `get` (rings, spill area, waiting, repair).
//! * `rings`: the one ring of a bounded queue, or the growing chain of an unbounded one.
//! * `joinable`: `JoinableQueue` and `SimpleQueue`.

mod joinable;
mod ops;
mod rings;

pub use joinable::{JoinableQueue, SimpleQueue};

use crate::codec;
use crate::error::{Error, Result};
use crate::ring::mpmc::SLOT_HEADER;
use crate::ring::spill::{self, SpillCtl};
use crate::segment::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::wait::Deadline;
use crate::wait::eventcount::EventCount;
use crate::wait::mutex::RawMutex;
use crossbeam_utils::CachePadded;
use rings::{Chain, FIRST_SLOTS};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::Arc;
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
    /// Read-mostly: closed, and which rings are in use.
    dir: CachePadded<Dir>,
    /// Non-zero once the queue is used as a `JoinableQueue`: consumers then count what they hold.
    joinable: CachePadded<AtomicU64>,
    joined: EventCount,
    /// Taken to append a ring (unbounded queues).
    grow: CachePadded<RawMutex>,
    /// The spill area's mutex and redo record.
    spill: CachePadded<SpillCtl>,
    /// JoinableQueue: per participant slot, the items its holder took and has not marked done.
    held: joinable::Held,
}
// SAFETY: repr(C), all atomics (CachePadded only adds alignment).
unsafe impl SharedBlock for QueueBlock {}

#[repr(C)]
pub(crate) struct Dir {
    closed: AtomicU32,
    /// The ring consumers take from.
    head: AtomicU32,
    /// The newest ring, which producers put into.
    last: AtomicU32,
}

const PARAM_CAP: usize = 0;
const PARAM_SLOT: usize = 1;
const PARAM_SPILL_UNITS: usize = 2;
const PARAM_GROWS: usize = 3;
/// The most slots of one ring an unbounded queue appends (1,048,576). An unbounded queue starts with
/// 1,024 slots and appends rings of twice the slots (up to this many) as it fills, to 40 rings.
pub const UNBOUNDED_CAPACITY: usize = 1 << 20;
/// Default bytes per item kept in the slot itself (encoded); larger items go to the spill area.
pub const DEFAULT_ITEM_SIZE: usize = 240;
/// Default size of the spill area, where items larger than a slot wait (64 MiB; its pages are only
/// allocated as they are first used: by touch for an anonymous queue, 1 MiB at a time with
/// `fallocate` for a named one, so a full tmpfs is an `Io` error from `put`, never a SIGBUS).
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
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    obj: Object<QueueBlock>,
    maxsize: usize,
    chain: Arc<Chain>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            obj: self.obj.clone(),
            maxsize: self.maxsize,
            chain: self.chain.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("maxsize", &self.maxsize)
            .field("len", &self.qsize())
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
    /// The most items it holds; 0 (the default) means unbounded: the queue grows as items wait.
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
            FIRST_SLOTS as usize
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
                Error::invalid("maxsize x item_size + spill_size is too large for one queue")
            })?;
        let mut p = [0u64; 6];
        p[PARAM_CAP] = cap as u64;
        p[PARAM_SLOT] = slot as u64;
        p[PARAM_SPILL_UNITS] = units as u64;
        p[PARAM_GROWS] = u64::from(self.maxsize == 0);
        let obj = Object::create_growable(
            Kind::Queue,
            fingerprint_of::<T>(),
            p,
            bytes,
            self.name.as_deref(),
            self.maxsize == 0,
            units * spill::UNIT,
        )?;
        Ok(Queue::with(obj))
    }
}

impl<T> Queue<T> {
    /// A queue of at most `maxsize` items (0: unbounded, as in Python: it grows, a put never waits
    /// for a consumer), shared with children forked later.
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
            && p[PARAM_GROWS] <= 1
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
        Ok(Queue::with(obj))
    }

    fn with(obj: Object<QueueBlock>) -> Queue<T> {
        let p = obj.params();
        let grows = p[PARAM_GROWS] == 1;
        let chain = Chain::new(
            p[PARAM_CAP],
            p[PARAM_SLOT],
            p[PARAM_SPILL_UNITS] as usize,
            obj.segment().header().size,
            grows,
            UNBOUNDED_CAPACITY as u64,
        );
        Queue {
            maxsize: if grows { 0 } else { p[PARAM_CAP] as usize },
            obj,
            chain: Arc::new(chain),
            _t: PhantomData,
        }
    }
}

impl<T> Queue<T> {
    /// Items in the queue now (a snapshot; Python's `qsize`): those waiting, and those being put.
    /// An item a consumer is taking is no longer counted.
    pub fn qsize(&self) -> usize {
        let Ok((head, last)) = self.span() else {
            return 0;
        };
        (head..=last)
            .filter_map(|i| self.ring_at(i).ok())
            .map(|r| r.len() as usize)
            .sum()
    }

    /// Whether it is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether it is full (a snapshot; an unbounded queue never is).
    pub fn is_full(&self) -> bool {
        !self.chain.growable && self.qsize() as u64 >= self.obj.params()[PARAM_CAP]
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
        b.dir.closed.store(1, Ordering::SeqCst);
        let _ = b.not_empty.notify_all_always();
        let _ = b.not_full.notify_all_always();
        Ok(())
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed()
    }
}

impl<T> Queue<T> {
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    /// Test hook: how many rings the queue has (1 until an unbounded queue grows).
    pub fn __rings(&self) -> u32 {
        self.dir().last.load(Ordering::Acquire) + 1
    }

    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    /// Test hook: bytes of the spill area in use (in whole units), to check that nothing leaks.
    pub fn __spill_in_use(&self) -> u64 {
        match (self.spill(), self.obj.me()) {
            (Some(spill), Ok(me)) => spill.in_use(me).unwrap_or(u64::MAX),
            _ => 0,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Encodes `item` (on the stack when small) and puts it.
    fn put_item(&self, item: &T, deadline: Deadline) -> Result<()> {
        let len = codec::encoded_len(item)?;
        if len > self.max_inline() {
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
    ///
    /// The item goes in by value or by reference (`q.put(5)`, `q.put(&x)`, `q.put(s)` for a
    /// `Queue<String>`):
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let q = shmwire::Queue::<String>::new(0)?;
    /// let s = String::from("a");
    /// q.put(&s)?;
    /// q.put(s)?;
    /// let n = shmwire::Queue::<u64>::new(0)?;
    /// n.put(5)?;
    /// n.put(&6)?;
    /// # Ok(()) }
    /// ```
    pub fn put(&self, item: impl Borrow<T>) -> Result<()> {
        self.put_item(item.borrow(), Deadline::NEVER)
    }

    /// [`put`](Self::put), giving up with [`Error::Timeout`] (nothing put) after `timeout`.
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<()> {
        self.put_item(item.borrow(), Deadline::after(Some(timeout)))
    }

    /// Puts `item` if there is room now, else [`Error::Full`].
    pub fn put_nowait(&self, item: impl Borrow<T>) -> Result<()> {
        match self.put_item(item.borrow(), Deadline::after(Some(Duration::ZERO))) {
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
