//! `SharedDict`: a hash table in the arena, Python's `Manager().dict()`.
//!
//! The table is one block: its capacity (a power of two), then one word per bucket: 0 empty, 1 a
//! tombstone, else an entry's `Ref` with the top 8 bits of its hash as a tag. An entry is one block:
//! the full hash, the key's and value's lengths, the key's bytes, the value's bytes (both encoded).
//! Lookups probe linearly, at most `capacity` buckets.
//!
//! Every change is one redo record (see `slot`): a new entry's bucket word (the entry filled before),
//! a tombstone, a value of the same length rewritten in place (the bytes travel in the record), or a
//! new table swapped in at the root (a rehash, copied while nobody could reach it; or none, to
//! clear, with the old table's entries freed after). A table grows past 3/4 full and shrinks below
//! 1/8.

use super::arena::{Arena, Ref, Span};
use super::bytes::{self, Copied, Enc};
use super::slot::{self, Change, Container, DICT, DRAIN_TABLE, INLINE, Locked, REF_MASK, Slot};
use crate::error::{Error, Result};
use crate::segment::fingerprint_of;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A snapshot's bytes, and each entry's (key length, value length) in them.
type Snapshot = (Vec<u8>, Vec<(usize, usize)>);

const EMPTY: u64 = 0;
const TOMB: u64 = 1;
const MIN_CAP: u64 = 8;
const MAX_CAP: u64 = 1 << 32;
/// Bytes before an entry's key: its hash, its lengths.
const ENTRY_HDR: u64 = 16;

/// A dict shared by processes, in a [`Manager`](crate::Manager)'s arena: Python's
/// `Manager().dict()`.
///
/// Keys and values are any serde types; keys are equal when their encodings are (`K: Eq + Hash` by
/// its encoded bytes), so a `&str` finds a `String` key. Every call is one atomic step for every
/// process: `modify` is a read-modify-write no other process can interleave with (the seeds'
/// `d['count'] -= 1`). Readers never block each other nor write shared memory (a seqlock); writers
/// take the dict's robust mutex, and a writer killed at any instruction leaves the dict as it was
/// before or after its change, never between.
///
/// `Clone + Send + Sync`; shared with forked children, and serde-serializable: a handle sent through
/// a [`Queue`](crate::Queue) or [`Pipe`](crate::Pipe), or passed to a spawned child, opens the same
/// dict there. The dict lives until [`destroy`](Self::destroy) or until its manager is gone (every
/// process holding it closed it or died), not until its last handle drops; a call on a destroyed dict
/// is [`Error::Closed`].
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Manager, Process};
/// let m = Manager::new()?;
/// let d = m.dict_from([("count".to_string(), 100)])?;
/// let mut kids = Vec::new();
/// for _ in 0..4 {
///     let d = d.clone();
///     kids.push(Process::fork(move || {
///         d.modify("count", |v| *v -= 1).unwrap();
///     })?);
/// }
/// for k in kids {
///     assert!(k.join()?.success());
/// }
/// assert_eq!(d.get("count")?, Some(96));
/// assert_eq!(format!("{d:?}"), r#"{"count": 96}"#);
/// # Ok(()) }
/// ```
pub struct SharedDict<K, V> {
    pub(crate) c: Container,
    _t: PhantomData<Types<K, V>>,
}

/// The key and value types, for `PhantomData` (neither is owned: `Send + Sync` whatever they are).
type Types<K, V> = fn(K, V) -> (K, V);

impl<K, V> Clone for SharedDict<K, V> {
    fn clone(&self) -> Self {
        SharedDict {
            c: self.c.clone(),
            _t: PhantomData,
        }
    }
}

/// Where a key is, or where it would go.
enum Probe {
    Found {
        bucket: Ref,
        entry: Ref,
        /// The entry's bytes, its key's length and its value's length.
        span: Span,
        klen: u64,
        vlen: u64,
    },
    Vacant {
        bucket: Ref,
        was_empty: bool,
    },
}

impl Probe {
    /// The value's bytes, copied out (a found key).
    #[inline(always)]
    fn value(&self, out: &mut Copied) -> Result<bool> {
        match self {
            Probe::Found {
                span, klen, vlen, ..
            } => {
                out.fill_from(span, ENTRY_HDR + klen, *vlen)?;
                Ok(true)
            }
            Probe::Vacant { .. } => Ok(false),
        }
    }
}

#[derive(Clone, Copy)]
struct Table {
    at: Ref,
    cap: u64,
    span: Span,
}

impl Table {
    /// The root table, checked: a power-of-two capacity whose buckets lie within the chunk.
    #[inline]
    fn of(a: &Arena, s: &Slot) -> Result<Option<Table>> {
        let at = Ref(s.root.load(Ordering::Relaxed));
        if at.is_null() {
            return Ok(None);
        }
        let span = a.span(at)?;
        let cap = span.load(0)?;
        if !cap.is_power_of_two() || !(MIN_CAP..=MAX_CAP).contains(&cap) {
            return Err(Error::Corrupt);
        }
        span.check(0, 8 + 8 * cap)?;
        Ok(Some(Table { at, cap, span }))
    }

    #[inline]
    fn bucket(&self, i: u64) -> Ref {
        self.at.add(8 + 8 * i)
    }

    #[inline]
    fn load(&self, i: u64) -> Result<u64> {
        self.span.load(8 + 8 * i)
    }

    /// Probes for `key` (hash `h`): at most `cap` buckets.
    #[inline(always)]
    fn find(&self, a: &Arena, key: &[u8], h: u64) -> Result<Probe> {
        let mask = self.cap - 1;
        let tag = h >> 56;
        let mut tomb = None;
        for step in 0..self.cap {
            let i = h.wrapping_add(step) & mask;
            let w = self.load(i)?;
            if w == EMPTY {
                return Ok(Probe::Vacant {
                    bucket: tomb.unwrap_or(self.bucket(i)),
                    was_empty: tomb.is_none(),
                });
            }
            if w == TOMB {
                tomb.get_or_insert(self.bucket(i));
                continue;
            }
            if w >> 56 != tag {
                continue;
            }
            let entry = Ref(w & REF_MASK);
            let e = a.span(entry)?;
            if e.load(0)? != h {
                continue;
            }
            let lens = e.load(8)?;
            let (klen, vlen) = (lens & 0xffff_ffff, lens >> 32);
            if klen != key.len() as u64 {
                continue;
            }
            e.check(ENTRY_HDR, klen + vlen)?;
            if bytes::equal_in(&e, ENTRY_HDR, key)? {
                return Ok(Probe::Found {
                    bucket: self.bucket(i),
                    entry,
                    span: e,
                    klen,
                    vlen,
                });
            }
        }
        match tomb {
            Some(bucket) => Ok(Probe::Vacant {
                bucket,
                was_empty: false,
            }),
            None => Err(Error::Corrupt), // a full table: never kept so
        }
    }

    /// The key and value of each entry, in bucket order (bounded by the table).
    fn entries(&self, a: &Arena, mut f: impl FnMut(&Span, u64, u64) -> Result<()>) -> Result<()> {
        for i in 0..self.cap {
            let w = self.load(i)?;
            if w <= TOMB {
                continue;
            }
            let e = a.span(Ref(w & REF_MASK))?;
            let lens = e.load(8)?;
            let (klen, vlen) = (lens & 0xffff_ffff, lens >> 32);
            e.check(ENTRY_HDR, klen + vlen)?;
            f(&e, klen, vlen)?;
        }
        Ok(())
    }
}

impl<K, V> SharedDict<K, V> {
    pub(crate) fn attach(c: Container) -> Self {
        SharedDict { c, _t: PhantomData }
    }

    /// The fingerprints a dict of these types records (its key and value type names).
    pub(crate) fn fingerprints() -> (u64, u64) {
        (fingerprint_of::<K>(), fingerprint_of::<V>())
    }

    /// This handle with every call bounded by `timeout`: a call that cannot take the dict's lock in
    /// time (its holder is stopped) returns [`Error::Timeout`], having changed nothing.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        SharedDict {
            c: self.c.with_timeout(Some(timeout)),
            _t: PhantomData,
        }
    }

    /// Entries now.
    pub fn len(&self) -> Result<usize> {
        self.c
            .read(|_, s| Ok(s.len.load(Ordering::Relaxed) as usize))
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        let g = self.c.lock()?;
        Self::clear_locked(&g)
    }

    fn clear_locked(g: &Locked<'_>) -> Result<()> {
        if let Some(t) = Table::of(g.arena(), g.s)? {
            g.commit(Change::store(g.c.root_ref(), 0, 0, 0).draining(t.at, DRAIN_TABLE, 0))?;
        }
        Ok(())
    }

    /// Frees the dict and everything in it, for every process: later calls on any handle of it are
    /// [`Error::Closed`].
    pub fn destroy(&self) -> Result<()> {
        if self.c.index == 0 {
            return Err(Error::Misuse); // the manager's namespace
        }
        let g = self.c.lock()?;
        Self::clear_locked(&g)?;
        g.retire();
        Ok(())
    }

    /// Test hook: writes `h` as the stored hash of every entry, as a hostile peer could (no lock, no
    /// redo record). Returns how many entries it rewrote.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn __same_hash_everywhere(&self, h: u64) -> Result<u64> {
        self.c.read(|a, s| {
            let mut n = 0;
            if let Some(t) = Table::of(a, s)? {
                for i in 0..t.cap {
                    let w = t.load(i)?;
                    if w > TOMB {
                        a.word(Ref(w & REF_MASK))?.store(h, Ordering::Relaxed);
                        n += 1;
                    }
                }
            }
            Ok(n)
        })
    }

    /// Where `key` is, or where it would go, in a table with room for it: a table is made if there
    /// is none, and a larger one swapped in past 3/4 full (counting tombstones).
    #[inline(always)]
    fn probe_for_write(g: &Locked<'_>, key: &[u8], h: u64) -> Result<(Table, Probe)> {
        let (a, s) = (g.arena(), g.s);
        let old = Table::of(a, s)?;
        if let Some(t) = old {
            let p = t.find(a, key, h)?;
            let filled = s.filled.load(Ordering::Relaxed);
            if matches!(p, Probe::Found { .. })
                || filled.saturating_add(1).saturating_mul(4) <= t.cap * 3
            {
                return Ok((t, p));
            }
        }
        let len = s.len.load(Ordering::Relaxed);
        let cap = len
            .saturating_add(1)
            .saturating_mul(2)
            .clamp(MIN_CAP, MAX_CAP + 1)
            .next_power_of_two();
        let t = Self::rehash(g, old, cap)?;
        let p = t.find(a, key, h)?;
        Ok((t, p))
    }

    /// Swaps in a table of `cap` buckets holding the same entries. The probes are bounded, all
    /// entries together, by a budget linear in `cap`: stored hashes that a peer made collide are
    /// [`Error::Corrupt`], not a quadratic walk.
    fn rehash(g: &Locked<'_>, old: Option<Table>, cap: u64) -> Result<Table> {
        if cap > MAX_CAP {
            return Err(Error::Full);
        }
        let a = g.arena();
        let at = g.alloc(8 + 8 * cap, 0)?;
        let span = a.span(at)?;
        span.check(0, 8 + 8 * cap)?;
        span.word(0)?.store(cap, Ordering::Relaxed);
        a.zero(at.add(8), 8 * cap)?;
        let new = Table { at, cap, span };
        let mut n = 0u64;
        // Probes for all the entries together. Honest hashes (keyed by the arena's random seed) in
        // a table at most half full take about 2.5 probes per entry; entries whose stored hashes a
        // peer made equal would take one probe per entry already placed (quadratic in the table).
        let mut budget = cap.saturating_mul(16).saturating_add(4096);
        if let Some(t) = old {
            for i in 0..t.cap {
                let w = t.load(i)?;
                if w <= TOMB {
                    continue;
                }
                let h = a.load(Ref(w & REF_MASK))?;
                let mut placed = false;
                for step in 0..cap {
                    budget = budget.checked_sub(1).ok_or(Error::Corrupt)?;
                    let j = h.wrapping_add(step) & (cap - 1);
                    if new.load(j)? == EMPTY {
                        span.word(8 + 8 * j)?.store(w, Ordering::Relaxed);
                        placed = true;
                        break;
                    }
                }
                if !placed {
                    return Err(Error::Corrupt);
                }
                n += 1;
            }
        }
        let old_at = old.map_or(Ref::NULL, |t| t.at);
        g.commit(Change::store(g.c.root_ref(), at.0, n, n).freeing(old_at))?;
        Ok(new)
    }

    /// Shrinks a table that is mostly empty, after a removal that is done: an economy, so no room
    /// for the smaller one ([`Error::Full`], [`Error::Io`]) or a stopped allocator holder
    /// ([`Error::Timeout`]) keeps the larger one, and the removal still returns its value.
    fn maybe_shrink(g: &Locked<'_>) -> Result<()> {
        match Self::shrink(g) {
            Err(Error::Full | Error::Io(_) | Error::Timeout) => Ok(()),
            r => r,
        }
    }

    fn shrink(g: &Locked<'_>) -> Result<()> {
        if let Some(t) = Table::of(g.arena(), g.s)? {
            let len = g.s.len.load(Ordering::Relaxed);
            if t.cap > 64 && len.saturating_mul(8) < t.cap {
                let cap = (len * 4).max(MIN_CAP).next_power_of_two();
                Self::rehash(g, Some(t), cap)?;
            }
        }
        Ok(())
    }

    /// A new entry block holding `key` and `value`.
    fn new_entry(g: &Locked<'_>, key: &[u8], h: u64, value: &[u8]) -> Result<Ref> {
        if key.len() > u32::MAX as usize || value.len() > u32::MAX as usize {
            return Err(Error::invalid(
                "a key or value of 4 GiB or more: a dict entry holds less",
            ));
        }
        let a = g.arena();
        let (klen, vlen) = (key.len() as u64, value.len() as u64);
        let e = g.alloc(ENTRY_HDR + klen + vlen, 0)?;
        let span = a.span(e)?;
        span.check(0, ENTRY_HDR + klen + vlen)?;
        span.word(0)?.store(h, Ordering::Relaxed);
        span.word(8)?.store(klen | vlen << 32, Ordering::Relaxed);
        a.copy_in(e.add(ENTRY_HDR), key)?;
        a.copy_in(e.add(ENTRY_HDR + klen), value)?;
        Ok(e)
    }

    /// Writes `value` for `key` where `probe` says (from [`probe_for_write`](Self::probe_for_write),
    /// or a found key): in place when it has the old value's length (and fits a redo record), else as
    /// a new entry.
    #[inline(always)]
    fn write_at(g: &Locked<'_>, probe: &Probe, key: &[u8], h: u64, value: &[u8]) -> Result<()> {
        let s = g.s;
        let (len, filled) = (
            s.len.load(Ordering::Relaxed),
            s.filled.load(Ordering::Relaxed),
        );
        let tag = h & !REF_MASK;
        match *probe {
            Probe::Found {
                bucket,
                entry,
                klen,
                vlen,
                ..
            } => {
                if vlen == value.len() as u64 && value.len() <= INLINE {
                    let at = entry.add(ENTRY_HDR + klen);
                    g.commit(Change {
                        bytes: Some(value),
                        ..Change::store(at, 0, len, filled)
                    })
                } else {
                    let e = Self::new_entry(g, key, h, value)?;
                    g.commit(Change::store(bucket, tag | e.0, len, filled).freeing(entry))
                }
            }
            Probe::Vacant { bucket, was_empty } => {
                let e = Self::new_entry(g, key, h, value)?;
                g.commit(Change::store(
                    bucket,
                    tag | e.0,
                    len.wrapping_add(1),
                    filled.wrapping_add(u64::from(was_empty)),
                ))
            }
        }
    }

    /// Sets `key` to `value` under the lock.
    fn put_locked(g: &Locked<'_>, key: &[u8], h: u64, value: &[u8]) -> Result<()> {
        let (_, p) = Self::probe_for_write(g, key, h)?;
        Self::write_at(g, &p, key, h, value)
    }

    fn seed(&self) -> u64 {
        self.c.slot().seed.load(Ordering::Relaxed)
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> SharedDict<K, V> {
    /// The value for `key`, if any (a `&str` finds a `String` key).
    #[inline]
    pub fn get<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        let mut out = Copied::new();
        let found = bytes::with_encoded(key, |key| {
            let h = bytes::hash(self.seed(), key);
            self.c.read(|a, s| match Table::of(a, s)? {
                Some(t) => t.find(a, key, h)?.value(&mut out),
                None => Ok(false),
            })
        })?;
        if found {
            Ok(Some(bytes::decode(out.bytes())?))
        } else {
            Ok(None)
        }
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
    {
        bytes::with_encoded(key, |key| {
            let h = bytes::hash(self.seed(), key);
            self.c.read(|a, s| match Table::of(a, s)? {
                Some(t) => Ok(matches!(t.find(a, key, h)?, Probe::Found { .. })),
                None => Ok(false),
            })
        })
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&self, key: impl Borrow<K>, value: impl Borrow<V>) -> Result<Option<V>> {
        bytes::with_encoded(key.borrow(), |key| {
            bytes::with_encoded(value.borrow(), |value| {
                let h = bytes::hash(self.seed(), key);
                let g = self.c.lock()?;
                let (_, p) = Self::probe_for_write(&g, key, h)?;
                let mut out = Copied::new();
                let old = match p.value(&mut out)? {
                    true => Some(bytes::decode::<V>(out.bytes())?),
                    false => None,
                };
                Self::write_at(&g, &p, key, h, value)?;
                Ok(old)
            })
        })
    }

    /// Removes `key`; returns its value, if it had one.
    pub fn remove<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        bytes::with_encoded(key, |key| {
            let h = bytes::hash(self.seed(), key);
            let g = self.c.lock()?;
            let Some(t) = Table::of(g.arena(), g.s)? else {
                return Ok(None);
            };
            let p = t.find(g.arena(), key, h)?;
            let mut out = Copied::new();
            let Probe::Found { bucket, entry, .. } = p else {
                return Ok(None);
            };
            p.value(&mut out)?;
            let old = bytes::decode::<V>(out.bytes())?;
            let (len, filled) = (
                g.s.len.load(Ordering::Relaxed),
                g.s.filled.load(Ordering::Relaxed),
            );
            g.commit(Change::store(bucket, TOMB, len.saturating_sub(1), filled).freeing(entry))?;
            Self::maybe_shrink(&g)?;
            Ok(Some(old))
        })
    }

    /// The value for `key`, after setting it to `value` if it had none (Python's `setdefault`).
    pub fn get_or_insert(&self, key: impl Borrow<K>, value: V) -> Result<V> {
        bytes::with_encoded(key.borrow(), |key| {
            let h = bytes::hash(self.seed(), key);
            let g = self.c.lock()?;
            let (_, p) = Self::probe_for_write(&g, key, h)?;
            let mut out = Copied::new();
            if p.value(&mut out)? {
                return bytes::decode(out.bytes());
            }
            bytes::with_encoded(&value, |v| Self::write_at(&g, &p, key, h, v))?;
            Ok(value)
        })
    }

    /// Runs `f` on the value for `key` and stores what it leaves, as one step no other process can
    /// interleave with; returns what `f` returns. [`Error::NotFound`] if `key` has no value (Python's
    /// `KeyError`), and nothing changes. A panic in `f` changes nothing.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let m = shmwire::Manager::new()?;
    /// let d = m.dict_from([("count".to_string(), 100)])?;
    /// let now = d.modify("count", |v| {
    ///     *v -= 1;
    ///     *v
    /// })?;
    /// assert_eq!(now, 99);
    /// assert!(matches!(d.modify("nope", |v| *v += 1), Err(shmwire::Error::NotFound)));
    /// # Ok(()) }
    /// ```
    pub fn modify<Q: Serialize + ?Sized, R>(
        &self,
        key: &Q,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<R>
    where
        K: Borrow<Q>,
    {
        bytes::with_encoded(key, |key| {
            let h = bytes::hash(self.seed(), key);
            let g = self.c.lock()?;
            let Some(t) = Table::of(g.arena(), g.s)? else {
                return Err(Error::NotFound);
            };
            let p = t.find(g.arena(), key, h)?;
            let mut out = Copied::new();
            if !p.value(&mut out)? {
                return Err(Error::NotFound);
            }
            let mut v: V = bytes::decode(out.bytes())?;
            let r = f(&mut v);
            bytes::with_encoded(&v, |v| Self::write_at(&g, &p, key, h, v))?;
            Ok(r)
        })
    }

    /// Sets every `(key, value)` of `items`, under one hold of the lock (each is its own step: a
    /// writer killed half way leaves the first ones set).
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let encoded: Vec<(Enc, Enc)> = items
            .into_iter()
            .map(|(k, v)| Ok((bytes::encode(&k)?, bytes::encode(&v)?)))
            .collect::<Result<_>>()?;
        let seed = self.seed();
        let g = self.c.lock()?;
        for (k, v) in &encoded {
            Self::put_locked(&g, k, bytes::hash(seed, k), v)?;
        }
        Ok(())
    }

    /// Every `(key, value)`, as one consistent snapshot (in no particular order).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let (buf, spans) = self.snapshot(true, true)?;
        let mut at = 0;
        spans
            .iter()
            .map(|&(klen, vlen)| {
                let (k, rest) = buf[at..].split_at(klen);
                at += klen + vlen;
                Ok((bytes::decode(k)?, bytes::decode(&rest[..vlen])?))
            })
            .collect()
    }

    /// Every key, as one consistent snapshot.
    pub fn keys(&self) -> Result<Vec<K>> {
        let (buf, spans) = self.snapshot(true, false)?;
        let mut at = 0;
        spans
            .iter()
            .map(|&(klen, _)| {
                at += klen;
                bytes::decode(&buf[at - klen..at])
            })
            .collect()
    }

    /// Every value, as one consistent snapshot.
    pub fn values(&self) -> Result<Vec<V>> {
        let (buf, spans) = self.snapshot(false, true)?;
        let mut at = 0;
        spans
            .iter()
            .map(|&(_, vlen)| {
                at += vlen;
                bytes::decode(&buf[at - vlen..at])
            })
            .collect()
    }

    /// The entries' bytes (keys and/or values, as asked) one after the other in one buffer, and
    /// each entry's (key length, value length) in it (0 for what was not asked): two allocations
    /// however many entries, so a large snapshot leaves no scattered heap behind.
    fn snapshot(&self, keys: bool, values: bool) -> Result<Snapshot> {
        self.c.read(|a, s| {
            let (mut buf, mut spans) = (Vec::new(), Vec::new());
            if let Some(t) = Table::of(a, s)? {
                // Entries are distinct blocks: together they hold less than the arena. Words that
                // point many buckets at one large entry (hostile, or torn) must not make this
                // allocate more than that.
                let mut left = a.mapped();
                t.entries(a, |e, klen, vlen| {
                    left = left.checked_sub(klen + vlen).ok_or(Error::Corrupt)?;
                    let k = if keys { klen as usize } else { 0 };
                    let v = if values { vlen as usize } else { 0 };
                    let at = buf.len();
                    buf.resize(at + k + v, 0);
                    e.copy_out(ENTRY_HDR, &mut buf[at..at + k])?;
                    e.copy_out(ENTRY_HDR + klen, &mut buf[at + k..])?;
                    spans.push((k, v));
                    Ok(())
                })?;
            }
            Ok((buf, spans))
        })
    }

    /// The stored bytes of `key`'s value, if any (a served dict's answer: a remote `modify` hands
    /// them back to [`replace_raw`](Self::replace_raw) as what it expects).
    pub(crate) fn get_raw(&self, key: &K) -> Result<Option<Vec<u8>>> {
        let mut out = Copied::new();
        let found = bytes::with_encoded(key, |key| {
            let h = bytes::hash(self.seed(), key);
            self.c.read(|a, s| match Table::of(a, s)? {
                Some(t) => t.find(a, key, h)?.value(&mut out),
                None => Ok(false),
            })
        })?;
        Ok(found.then(|| out.bytes().to_vec()))
    }

    /// Under the lock: sets `key`'s value to `new` if its stored bytes are `expected` (a remote
    /// `modify`'s compare-and-swap); whether it did. [`Error::NotFound`] if `key` has no value;
    /// `new` must decode as a `V` ([`Error::Decode`] else, and nothing changes).
    pub(crate) fn replace_raw(&self, key: &K, expected: &[u8], new: &[u8]) -> Result<bool> {
        bytes::decode::<V>(new)?;
        bytes::with_encoded(key, |key| {
            let h = bytes::hash(self.seed(), key);
            let g = self.c.lock()?;
            let Some(t) = Table::of(g.arena(), g.s)? else {
                return Err(Error::NotFound);
            };
            let p = t.find(g.arena(), key, h)?;
            let mut out = Copied::new();
            if !p.value(&mut out)? {
                return Err(Error::NotFound);
            }
            if out.bytes() != expected {
                return Ok(false);
            }
            Self::write_at(&g, &p, key, h, new)?;
            Ok(true)
        })
    }

    /// Under the lock: `f` gets the value for `key` (if any) and says what to store (if anything)
    /// and what to return. `f` runs with no other lock held (it may create containers).
    pub(crate) fn upsert_with<R>(
        &self,
        key: &K,
        f: impl FnOnce(Option<V>) -> Result<(Option<V>, R)>,
    ) -> Result<R> {
        let key = bytes::encode(key)?;
        let h = bytes::hash(self.seed(), &key);
        let g = self.c.lock()?;
        let mut out = Copied::new();
        let old = match Table::of(g.arena(), g.s)? {
            Some(t) if t.find(g.arena(), &key, h)?.value(&mut out)? => {
                Some(bytes::decode::<V>(out.bytes())?)
            }
            _ => None,
        };
        let (new, r) = f(old)?;
        if let Some(v) = new {
            Self::put_locked(&g, &key, h, &bytes::encode(&v)?)?;
        }
        Ok(r)
    }
}

impl<K, V> SharedDict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Makes a new empty dict in `arena` (used by the manager).
    pub(crate) fn create(arena: &std::sync::Arc<Arena>, timeout: Option<Duration>) -> Result<Self> {
        let c = slot::new_container(arena, DICT, Self::fingerprints(), timeout)?;
        Ok(Self::attach(c))
    }
}

impl<K, V> std::fmt::Debug for SharedDict<K, V>
where
    K: Serialize + DeserializeOwned + std::fmt::Debug,
    V: Serialize + DeserializeOwned + std::fmt::Debug,
{
    /// Prints like Python's dict: `{"count": 0}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.items() {
            Ok(items) => {
                f.write_str("{")?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k:?}: {v:?}")?;
                }
                f.write_str("}")
            }
            Err(e) => write!(f, "<dict: {e}>"),
        }
    }
}
