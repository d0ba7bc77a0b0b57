//! `Manager`: an arena of dicts and lists, with a namespace of names (itself a dict in slot 0) through
//! which unrelated processes find containers and other objects.

use super::arena::{Arena, MIN_BYTES};
use super::dict::SharedDict;
use super::list::SharedList;
use super::slot::{self, Container, DICT, LIST, NAMESPACE_ID};
use crate::error::{Error, Result};
use crate::segment::fingerprint_of;
use crate::{Event, Lock, Queue, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A namespace entry: what a name stands for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct NsEntry {
    kind: u64,
    slot: u32,
    id: u64,
    fp_k: u64,
    fp_v: u64,
}

const OBJ_QUEUE: u64 = 16;
const OBJ_LOCK: u64 = 17;
const OBJ_EVENT: u64 = 18;
const OBJ_VALUE: u64 = 19;

/// The types of the namespace dict.
pub(crate) fn namespace_fingerprints() -> (u64, u64) {
    (fingerprint_of::<String>(), fingerprint_of::<NsEntry>())
}

/// Python's `multiprocessing.Manager()`: dicts and lists (and queues, locks, events, values) shared
/// by processes, here in a shared-memory arena rather than behind a server process, so an operation
/// costs a lock and a few cache lines instead of a socket round trip.
///
/// * [`Manager::new`]: shared with children forked later (no name in `/dev/shm`);
///   [`Manager::create`]/[`Manager::open`]: by name, for unrelated processes of the same user.
/// * [`dict`](Self::dict), [`list`](Self::list) make new containers, [`dict_from`](Self::dict_from),
///   [`list_from`](Self::list_from) filled ones, and [`named_dict`](Self::named_dict) /
///   [`named_list`](Self::named_list) get or create one by name.
/// * Memory: the arena grows by appending to its file as the queue does, freed space is reused,
///   [`stats`](Self::stats) says how much is used, free and mapped, and
///   [`ManagerBuilder::max_bytes`] caps it ([`Error::Full`] beyond).
///
/// `Clone + Send + Sync` and serde-serializable. Containers live until they are destroyed or until the
/// manager is gone: every process holding it (or a handle of one of its containers) closed it or
/// died. A manager used as a scope is the seeds' `with Manager() as m:`.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Manager, Process};
/// let m = Manager::new()?;
/// let d = m.dict::<String, u32>()?;
/// let l = m.list::<String>()?;
/// let (d2, l2) = (d.clone(), l.clone());
/// let p = Process::fork(move || {
///     d2.insert("child".to_string(), 7).unwrap();
///     l2.push("hello".to_string()).unwrap();
/// })?;
/// assert!(p.join()?.success());
/// assert_eq!(d.get("child")?, Some(7));
/// assert_eq!(l.to_vec()?, ["hello"]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Manager {
    pub(crate) arena: Arc<Arena>,
    timeout: Option<Duration>,
    /// Objects made by name through this manager, kept while it lives in this process.
    keep: Arc<Mutex<Vec<Box<dyn Any + Send + Sync>>>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("name", &self.arena.os_name())
            .field("stats", &self.stats().ok())
            .finish()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // Dropped with a closure just forked: the child owns this handle (see `segment::registry`).
        crate::segment::moving::note_segment_moved(&self.arena.seg);
    }
}

/// Options for a [`Manager`].
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Error, Manager};
/// let m = Manager::builder().max_bytes(4 << 20).build()?;
/// let l = m.list::<Vec<u8>>()?;
/// let err = loop {
///     if let Err(e) = l.push(vec![0u8; 100_000]) {
///         break e;
///     }
/// };
/// assert!(matches!(err, Error::Full)); // nothing lost: what went in is there
/// assert!(m.stats()?.mapped <= 4 << 20);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ManagerBuilder {
    name: Option<String>,
    mode: Option<u32>,
    max_bytes: u64,
    initial_bytes: u64,
}

impl ManagerBuilder {
    /// A name other processes can [`Manager::open`].
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Who may open it by name besides this user: `0o660` also lets in the users of its group
    /// (the creating process's effective group), `0o600` (the default) nobody else; others never
    /// (any other mode is [`Error::Invalid`]). A process of another user
    /// opens such an object only if it is in that group; without this, it is refused.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// The most bytes the arena's file may hold (its control block included); an operation that
    /// would need more is [`Error::Full`]. Default: no cap.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// Bytes the arena starts with (default 1 MiB; it grows as needed).
    pub fn initial_bytes(mut self, n: u64) -> Self {
        self.initial_bytes = n;
        self
    }

    /// Creates the manager.
    pub fn build(self) -> Result<Manager> {
        let initial = if self.initial_bytes == 0 {
            MIN_BYTES
        } else {
            self.initial_bytes
        };
        self.mode.map_or(Ok(()), crate::segment::check_mode)?;
        let arena = Arena::create(self.name.as_deref(), initial, self.max_bytes)?;
        if let Some(m) = self.mode {
            arena.seg.set_mode(m)?;
        }
        Ok(Manager::with(arena))
    }
}

/// How much memory a manager's arena holds, in bytes.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let m = shmwire::Manager::new()?;
/// let d = m.dict::<u32, Vec<u8>>()?;
/// d.insert(1, vec![7u8; 1 << 20])?;
/// let s = m.stats()?;
/// assert!(s.used > 1 << 20 && s.mapped >= s.used + s.free);
/// d.remove(&1)?;
/// assert!(m.stats()?.used < 1 << 20); // freed, and reused by the next values
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagerStats {
    /// In blocks holding dicts, lists, entries and elements (their headers included).
    pub used: u64,
    /// In free blocks, ready for reuse.
    pub free: u64,
    /// The file's size: the control block, used and free blocks.
    pub mapped: u64,
}

impl Manager {
    pub(crate) fn with(arena: Arc<Arena>) -> Manager {
        Manager {
            arena,
            timeout: None,
            keep: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A manager shared with children forked later.
    pub fn new() -> Result<Manager> {
        Self::builder().build()
    }

    /// A manager named `name`, for unrelated processes of this user ([`Error::Exists`] if taken).
    pub fn create(name: &str) -> Result<Manager> {
        Self::builder().name(name).build()
    }

    /// Opens the manager named `name` ([`Error::NotFound`] if there is none).
    pub fn open(name: &str) -> Result<Manager> {
        Ok(Manager::with(Arena::open(name)?))
    }

    /// Options: name, `max_bytes`.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// This manager with every call bounded by `timeout` ([`Error::Timeout`] when a lock holder is
    /// stopped); the containers it makes or finds inherit the bound.
    pub fn with_timeout(&self, timeout: Duration) -> Manager {
        let mut m = self.clone();
        m.timeout = Some(timeout);
        m
    }

    /// The cap on the arena's size, if any.
    pub fn max_bytes(&self) -> Option<u64> {
        match self.arena.ctl().max_bytes.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Bytes used, free and mapped now.
    pub fn stats(&self) -> Result<ManagerStats> {
        let (used, free) = self.arena.alloc_counts();
        Ok(ManagerStats {
            used,
            free,
            // Both bounded by the file's size (`mapped` checks what peers wrote).
            mapped: self.arena.seg.header().kind_offset + self.arena.mapped(),
        })
    }

    /// A new, empty dict.
    pub fn dict<K, V>(&self) -> Result<SharedDict<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        SharedDict::create(&self.arena, self.timeout)
    }

    /// A new dict holding `items` (Python's `m.dict({'count': 100})`).
    pub fn dict_from<K, V>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<SharedDict<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let d = self.dict()?;
        d.update(items)?;
        Ok(d)
    }

    /// A new, empty list.
    pub fn list<T: Serialize + DeserializeOwned>(&self) -> Result<SharedList<T>> {
        SharedList::create(&self.arena, self.timeout)
    }

    /// A new list holding `items` (Python's `m.list([1, 2, 3])`).
    pub fn list_from<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<SharedList<T>> {
        let l = self.list()?;
        l.extend(items)?;
        Ok(l)
    }

    /// The dict named `name`, made empty if there is none (or it was destroyed). One with other
    /// key or value types (by their type names) is [`Error::Incompatible`], and so is a list or other
    /// object of that name.
    pub fn named_dict<K, V>(&self, name: &str) -> Result<SharedDict<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let c = self.named_container(name, DICT, SharedDict::<K, V>::fingerprints())?;
        Ok(SharedDict::attach(c))
    }

    /// The list named `name`, made empty if there is none (or it was destroyed); see
    /// [`named_dict`](Self::named_dict).
    pub fn named_list<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<SharedList<T>> {
        let c = self.named_container(name, LIST, SharedList::<T>::fingerprints())?;
        Ok(SharedList::attach(c))
    }

    /// A queue (Python's `m.Queue()`), shared with children forked later; see
    /// [`named_queue`](Self::named_queue) for unrelated processes.
    pub fn queue<T>(&self, maxsize: usize) -> Result<Queue<T>> {
        Queue::new(maxsize)
    }

    /// A lock (Python's `m.Lock()`), shared with children forked later.
    pub fn lock(&self) -> Result<Lock> {
        Lock::new()
    }

    /// An event (Python's `m.Event()`), shared with children forked later.
    pub fn event(&self) -> Result<Event> {
        Event::new()
    }

    /// A value (Python's `m.Value(typecode, v)`), shared with children forked later.
    pub fn value<T: bytemuck::Pod>(&self, v: T) -> Result<Value<T>> {
        Value::new(v)
    }

    /// The queue named `name` in this manager's namespace, made (with `maxsize`) if there is none:
    /// any process holding the manager finds it. It lives while some process holds it (this
    /// manager keeps it in every process that asked for it).
    pub fn named_queue<T: Send + Sync + 'static>(
        &self,
        name: &str,
        maxsize: usize,
    ) -> Result<Queue<T>> {
        self.named_object(
            name,
            OBJ_QUEUE,
            fingerprint_of::<T>(),
            Queue::<T>::open,
            |os| Queue::<T>::builder().name(os).maxsize(maxsize).build(),
        )
    }

    /// The lock named `name` in this manager's namespace (see [`named_queue`](Self::named_queue)).
    pub fn named_lock(&self, name: &str) -> Result<Lock> {
        self.named_object(name, OBJ_LOCK, 0, Lock::open, Lock::create)
    }

    /// The event named `name` in this manager's namespace (see [`named_queue`](Self::named_queue)).
    pub fn named_event(&self, name: &str) -> Result<Event> {
        self.named_object(name, OBJ_EVENT, 0, Event::open, Event::create)
    }

    /// The value named `name` in this manager's namespace, made holding `v` if there is none (see
    /// [`named_queue`](Self::named_queue)).
    pub fn named_value<T: bytemuck::Pod + Send + Sync>(
        &self,
        name: &str,
        v: T,
    ) -> Result<Value<T>> {
        self.named_object(
            name,
            OBJ_VALUE,
            fingerprint_of::<T>(),
            Value::<T>::open,
            |os| Value::create(os, v),
        )
    }

    fn namespace(&self) -> Result<SharedDict<String, NsEntry>> {
        let c = Container::attach(
            self.arena.clone(),
            0,
            NAMESPACE_ID,
            DICT,
            namespace_fingerprints(),
        )
        .map_err(|e| {
            if matches!(e, Error::Closed) {
                Error::Corrupt
            } else {
                e
            }
        })?;
        Ok(SharedDict::attach(c.with_timeout(self.timeout)))
    }

    fn named_container(&self, name: &str, kind: u64, fps: (u64, u64)) -> Result<Container> {
        let ns = self.namespace()?;
        let alive = |e: &NsEntry| {
            (e.kind == DICT || e.kind == LIST)
                && Container::attach(self.arena.clone(), e.slot, e.id, e.kind, (e.fp_k, e.fp_v))
                    .is_ok()
        };
        let entry = ns.upsert_with(&name.to_owned(), |old| match old {
            Some(e) if e.kind > LIST || alive(&e) => Ok((None, e)),
            _ => {
                let c = slot::new_container(&self.arena, kind, fps, self.timeout)?;
                let e = NsEntry {
                    kind,
                    slot: c.index,
                    id: c.id,
                    fp_k: fps.0,
                    fp_v: fps.1,
                };
                Ok((Some(e.clone()), e))
            }
        })?;
        if entry.kind != kind || (entry.fp_k, entry.fp_v) != fps {
            return Err(Error::Incompatible);
        }
        let c = Container::attach(self.arena.clone(), entry.slot, entry.id, kind, fps)?;
        Ok(c.with_timeout(self.timeout))
    }

    fn named_object<O: Clone + Send + Sync + 'static>(
        &self,
        name: &str,
        kind: u64,
        fp: u64,
        open: impl Fn(&str) -> Result<O>,
        create: impl Fn(&str) -> Result<O>,
    ) -> Result<O> {
        let prefix = self.arena.ctl().prefix.load(Ordering::Relaxed);
        let os = format!("m{prefix:016x}.{name}");
        crate::segment::names::user_name(&os)?; // a valid name, or Invalid
        let ns = self.namespace()?;
        let obj = ns.upsert_with(&name.to_owned(), |old| match old {
            Some(e) if e.kind != kind || e.fp_k != fp => Err(Error::Incompatible),
            Some(e) => {
                let o = match open(&os) {
                    Err(Error::NotFound) => create(&os).or_else(|_| open(&os))?,
                    other => other?,
                };
                Ok((None::<NsEntry>, (o, e)))
            }
            None => {
                let o = match create(&os) {
                    Err(Error::Exists) => open(&os)?,
                    other => other?,
                };
                let e = NsEntry {
                    kind,
                    slot: 0,
                    id: 0,
                    fp_k: fp,
                    fp_v: 0,
                };
                Ok((Some(e.clone()), (o, e)))
            }
        })?;
        self.keep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(obj.0.clone()));
        Ok(obj.0)
    }

    /// Checks the whole arena (test hook): the allocator's heap and lists, and that the blocks in use
    /// are exactly those the containers reach (nothing leaked, nothing shared). Returns the number
    /// of live containers.
    /// Test hook: this process's descriptor of the arena's segment (the fuzz targets and the
    /// hostile-peer tests write into it as a peer could).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn __segment_fd(&self) -> std::os::fd::RawFd {
        self.arena.seg.descriptor()
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn __audit(&self) -> std::result::Result<usize, String> {
        super::audit::audit(&self.arena, self.timeout)
    }
}
