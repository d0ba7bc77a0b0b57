//! `Queue`, `JoinableQueue` and `SimpleQueue`: multi-producer multi-consumer queues between processes,
//! Python's `multiprocessing.Queue` and friends, on the slot ring of `ring::mpmc`.
//!
//! No feeder thread and no lock: a `put` is done when it returns (so a process may exit without
//! draining what it put, and joining it never deadlocks), and a consumer stopped in the middle of a
//! `get` does not hold up the others. Blocked producers and consumers spin briefly, then sleep on
//! eventcounts, so a busy queue makes no system calls.
//!
//! * `builder`: `QueueBuilder`, type tags, and what an opener checks.
//! * `ops`: the machinery under `put` and `get` (rings, spill area, waiting, repair).
//! * `rings`: the one ring of a bounded queue, or the growing chain of an unbounded one.
//! * `iter`: `QueueIter`, `for item in q.iter()`.
//! * `joinable`: `JoinableQueue` and `SimpleQueue`.

pub mod builder;
pub mod iter;
pub mod joinable;
mod ops;
pub mod rings;

pub use builder::QueueBuilder;
pub use iter::QueueIter;
pub use joinable::{JoinableQueue, SimpleQueue};

use crate::codec;
use crate::error::{Error, Result};
use crate::ring::spill::SpillCtl;
use crate::segment::object::{Object, SharedBlock};
use crate::wait::eventcount::EventCount;
use crate::wait::mutex::RawMutex;
use crate::wait::{Deadline, WaitStrategy};
use crossbeam_utils::CachePadded;
use rings::Chain;
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
/// `fingerprint_of_pod` of the maker's `T`: raw items of an opener whose `T` differs are refused.
const PARAM_POD: usize = 4;
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
/// Python's names are kept (`qsize`, `get_nowait`, `put_nowait`), beside the names a Rust user looks
/// for ([`len`](Queue::len), [`try_get`](Queue::try_get), [`iter`](Queue::iter)). Every blocking call
/// has a `_timeout` form, which gives up with [`Error::Timeout`] having put or taken nothing. An item
/// that does not decode as `T` is [`Error::Decode`], taken with its bytes in the error. A named queue
/// is opened by its type tag ([`QueueBuilder`]).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, Queue};
/// let q = Queue::<String>::new(0)?;
/// let producer = q.clone();
/// let p = Process::fork(move || {
///     for v in ["A", "B", "C"] {
///         producer.put(&v.to_string()).unwrap();
///     }
///     producer.close().unwrap();
/// })?;
/// let mut got = Vec::new();
/// for v in q.iter() {
///     got.push(v?); // until the producer closes the queue and it is drained
/// }
/// assert_eq!(got, ["A", "B", "C"]);
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    obj: Object<QueueBlock>,
    maxsize: usize,
    chain: Arc<Chain>,
    /// How this handle's blocked calls wait.
    wait: WaitStrategy,
    /// Whether the maker's `T` has this `T`'s size and alignment (raw items may move).
    pod_fits: bool,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            obj: self.obj.clone(),
            maxsize: self.maxsize,
            chain: self.chain.clone(),
            wait: self.wait,
            pod_fits: self.pod_fits,
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

impl<T> Queue<T> {
    /// A queue of at most `maxsize` items (0: unbounded, as in Python: it grows, a put never waits
    /// for a consumer), shared with children forked later.
    pub fn new(maxsize: usize) -> Result<Queue<T>> {
        Self::builder().maxsize(maxsize).build()
    }

    /// Options: maxsize, item size, spill size, name, type tag, wait strategy.
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            maxsize: 0,
            item_size: DEFAULT_ITEM_SIZE,
            spill_size: DEFAULT_SPILL_SIZE,
            name: None,
            mode: None,
            tag: None,
            wait: WaitStrategy::default(),
            _t: PhantomData,
        }
    }

    /// Opens the queue named `name` that another process made (see [`QueueBuilder::open`] to give
    /// a type tag or a wait strategy): it must carry `T`'s default type tag, the name of `T`
    /// (stable only within one build), else [`Error::Incompatible`].
    pub fn open(name: &str) -> Result<Queue<T>> {
        Self::builder().name(name).open()
    }

    /// How this handle's blocked calls wait ([`QueueBuilder::wait_strategy`]).
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
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

    /// Items in the queue now: [`qsize`](Self::qsize) under the name a Rust user looks for.
    pub fn len(&self) -> usize {
        self.qsize()
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
    /// Test hook: this process's descriptor of the queue's segment (the fuzz targets and the
    /// hostile-peer tests write into it as a peer could).
    pub fn __segment_fd(&self) -> std::os::fd::RawFd {
        self.obj.segment().descriptor()
    }

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

/// Decodes an item taken from the queue; one that does not decode as `T` is [`Error::Decode`]
/// carrying the item's bytes (it was taken: nobody else will see it).
#[inline]
fn decode_taken<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    codec::decode(bytes).map_err(|e| with_bytes(e, bytes))
}

/// [`decode_taken`] for a raw item: one of another size is [`Error::Decode`] with its bytes.
#[inline]
fn decode_pod_taken<T: bytemuck::Pod>(bytes: &[u8]) -> Result<T> {
    codec::decode_pod(bytes).map_err(|e| with_bytes(e, bytes))
}

#[cold]
fn with_bytes(e: Error, taken: &[u8]) -> Error {
    match e {
        Error::Decode { reason, .. } => Error::Decode {
            reason,
            bytes: taken.to_vec(),
        },
        e => e,
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

    /// [`put_nowait`](Self::put_nowait) under the name a Rust user looks for (beside
    /// [`try_get`](Self::try_get)): puts `item` if there is room now, else [`Error::Full`].
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let q = shmwire::Queue::<u32>::new(1)?;
    /// q.try_put(1)?;
    /// assert!(matches!(q.try_put(2), Err(shmwire::Error::Full)));
    /// # Ok(()) }
    /// ```
    pub fn try_put(&self, item: impl Borrow<T>) -> Result<()> {
        self.put_nowait(item)
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
    ///
    /// An item that does not decode as `T` (put by a process with another type under the same type
    /// tag, or put raw with [`put_pod`](Self::put_pod)) is [`Error::Decode`]: the item is taken and
    /// its bytes are in the error, so it is neither lost nor in the way of the next call (never
    /// [`Error::Corrupt`], which means broken shared state).
    pub fn get(&self) -> Result<T> {
        self.get_with(Deadline::NEVER, decode_taken::<T>)?
    }

    /// [`get`](Self::get), giving up with [`Error::Timeout`] (nothing taken) after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(Deadline::after(Some(timeout)), decode_taken::<T>)?
    }

    /// Takes the oldest item if there is one now, else [`Error::Empty`] ([`Error::Eof`] if closed and
    /// drained). Python's name; [`try_get`](Self::try_get) is the same call.
    pub fn get_nowait(&self) -> Result<T> {
        match self.get_with(Deadline::after(Some(Duration::ZERO)), decode_taken::<T>) {
            Err(Error::Timeout) => Err(Error::Empty),
            Ok(v) => v,
            Err(e) => Err(e),
        }
    }

    /// Takes the oldest item if there is one now, else [`Error::Empty`] ([`Error::Eof`] if closed and
    /// drained): [`get_nowait`](Self::get_nowait) under the name a Rust user looks for.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let q = shmwire::Queue::<u32>::new(0)?;
    /// assert!(matches!(q.try_get(), Err(shmwire::Error::Empty)));
    /// q.put(7)?;
    /// assert_eq!(q.try_get()?, 7);
    /// # Ok(()) }
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.get_nowait()
    }

    /// The items as they come, each a `Result`: `for item in q.iter()` takes items (waiting for
    /// each, as [`get`](Self::get)) until the queue is closed and drained. An item that does not
    /// decode is yielded as [`Error::Decode`] and the iteration goes on (the item was taken: the
    /// queue is fine); any other error is yielded once, then the iteration ends.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::{Process, Queue};
    /// let q = Queue::<u64>::new(0)?;
    /// let producer = q.clone();
    /// let p = Process::fork(move || {
    ///     for i in 1..=10 {
    ///         producer.put(i).unwrap();
    ///     }
    ///     producer.close().unwrap();
    /// })?;
    /// let mut sum = 0;
    /// for x in q.iter() {
    ///     sum += x?;
    /// }
    /// assert_eq!(sum, 55);
    /// assert!(p.join()?.success());
    /// # Ok(()) }
    /// ```
    pub fn iter(&self) -> QueueIter<'_, T> {
        QueueIter::new(self)
    }
}

impl<T: bytemuck::Pod> Queue<T> {
    /// Raw items may move only if the maker's `T` has this `T`'s size and alignment.
    #[inline]
    fn pod_fits(&self) -> Result<()> {
        if self.pod_fits {
            Ok(())
        } else {
            Err(Error::Incompatible)
        }
    }

    fn put_pod_at(&self, item: &T, deadline: Deadline) -> Result<()> {
        self.pod_fits()?;
        self.put_bytes_at(bytemuck::bytes_of(item), deadline)
    }

    fn get_pod_at(&self, deadline: Deadline) -> Result<T> {
        self.pod_fits()?;
        self.get_with(deadline, decode_pod_taken::<T>)?
    }

    /// Puts a plain-old-data item as its raw bytes (no encoding), waiting while the queue is full.
    ///
    /// Raw items move between handles whose `T` has the maker's size and alignment, whatever its
    /// name (a named queue opened with another `T` of the same [type tag](QueueBuilder#type-tags)):
    /// another size or alignment is [`Error::Incompatible`], with nothing put.
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
        self.put_pod_at(item, Deadline::NEVER)
    }

    /// [`put_pod`](Self::put_pod), giving up with [`Error::Timeout`] (nothing put) after `timeout`.
    pub fn put_pod_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        self.put_pod_at(item, Deadline::after(Some(timeout)))
    }

    /// [`put_pod`](Self::put_pod) if there is room now, else [`Error::Full`].
    pub fn put_pod_nowait(&self, item: &T) -> Result<()> {
        match self.put_pod_at(item, Deadline::after(Some(Duration::ZERO))) {
            Err(Error::Timeout) => Err(Error::Full),
            other => other,
        }
    }

    /// Takes the oldest item put with [`put_pod`](Self::put_pod); [`Error::Eof`] once closed and
    /// drained. An item of another size (put encoded with [`put`](Self::put)) is [`Error::Decode`],
    /// taken with its bytes in the error.
    pub fn get_pod(&self) -> Result<T> {
        self.get_pod_at(Deadline::NEVER)
    }

    /// [`get_pod`](Self::get_pod), giving up with [`Error::Timeout`] (nothing taken) after `timeout`.
    pub fn get_pod_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_pod_at(Deadline::after(Some(timeout)))
    }

    /// [`get_pod`](Self::get_pod) if there is an item now, else [`Error::Empty`] ([`Error::Eof`] if
    /// closed and drained).
    pub fn get_pod_nowait(&self) -> Result<T> {
        match self.get_pod_at(Deadline::after(Some(Duration::ZERO))) {
            Err(Error::Timeout) => Err(Error::Empty),
            other => other,
        }
    }
}
