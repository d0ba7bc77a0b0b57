//! `SharedList`: an array of element `Ref`s in the arena, Python's `Manager().list()`.
//!
//! The array is one block: its capacity, then one word per element, the `Ref` of a block holding the
//! element's length and encoded bytes. The list's length lives in its slot. Changes, each one redo
//! record (see `slot`):
//!
//! * `push`: the new element's `Ref` goes in the word just past the end (nobody reads it yet), and
//!   the length moves on;
//! * `set`, `modify`: the element's word moves to a new element (or, for bytes of the same length,
//!   they are rewritten in place);
//! * `pop`: the length moves back (and the element is freed);
//! * `insert`, `remove`, growth and shrinking: a new array (copied while nobody could reach it) is
//!   swapped in at the root; `clear` swaps in none and frees the old elements after.

use super::arena::{Arena, Ref};
use super::bytes::{self, Copied, Enc};
use super::slot::{self, Change, Container, DRAIN_ARRAY, INLINE, LIST, Locked, Slot};
use crate::error::{Error, Result};
use crate::segment::fingerprint_of;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::Duration;

const MIN_CAP: u64 = 8;
const MAX_CAP: u64 = 1 << 34;

/// A list shared by processes, in a [`Manager`](crate::Manager)'s arena: Python's
/// `Manager().list()`.
///
/// Elements are any serde type. Every call is one atomic step for every process; an index out of
/// range is [`Error::OutOfRange`], never a panic. Readers never block each other nor write shared
/// memory; writers take the list's robust mutex, and a writer killed at any instruction leaves the
/// list as it was before or after its change.
///
/// `Clone + Send + Sync`, shared with forked children, and serde-serializable (a handle sent to
/// another process opens the same list there). It lives until [`destroy`](Self::destroy) or until its
/// manager is gone.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Manager, Process};
/// let m = Manager::new()?;
/// let num = m.list_from([1, 2, 3])?;
/// let child = num.clone();
/// let p = Process::fork(move || {
///     child.modify(0, |v| *v -= 1).unwrap();
/// })?;
/// assert!(p.join()?.success());
/// assert_eq!(num.to_vec()?, [0, 2, 3]);
/// assert_eq!(format!("{num:?}"), "[0, 2, 3]");
/// # Ok(()) }
/// ```
pub struct SharedList<T> {
    pub(crate) c: Container,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for SharedList<T> {
    fn clone(&self) -> Self {
        SharedList {
            c: self.c.clone(),
            _t: PhantomData,
        }
    }
}

#[derive(Clone, Copy)]
struct Array {
    at: Ref,
    cap: u64,
}

impl Array {
    /// The root array, checked against the length: `len <= cap`, the words within the chunk.
    #[inline]
    fn of(a: &Arena, s: &Slot) -> Result<Option<Array>> {
        let at = Ref(s.root.load(Ordering::Relaxed));
        let len = s.len.load(Ordering::Relaxed);
        if at.is_null() {
            return if len == 0 {
                Ok(None)
            } else {
                Err(Error::Corrupt)
            };
        }
        let cap = a.load(at)?;
        if cap > MAX_CAP || len > cap {
            return Err(Error::Corrupt);
        }
        a.at(at, 8 + 8 * cap)?;
        Ok(Some(Array { at, cap }))
    }

    #[inline]
    fn word(&self, i: u64) -> Ref {
        self.at.add(8 + 8 * i)
    }

    /// Element `i`'s block and its bytes' length.
    #[inline]
    fn elem(&self, a: &Arena, i: u64) -> Result<(Ref, u64)> {
        let e = Ref(a.load(self.word(i))?);
        let n = a.load(e)?;
        a.at(e, 8u64.checked_add(n).ok_or(Error::Corrupt)?)?;
        Ok((e, n))
    }
}

fn out_of_range(index: u64, len: u64) -> Error {
    Error::OutOfRange {
        index: index as usize,
        len: len as usize,
    }
}

impl<T> SharedList<T> {
    pub(crate) fn attach(c: Container) -> Self {
        SharedList { c, _t: PhantomData }
    }

    pub(crate) fn fingerprints() -> (u64, u64) {
        (fingerprint_of::<T>(), 0)
    }

    /// This handle with every call bounded by `timeout` ([`Error::Timeout`] when the list's lock
    /// holder is stopped; nothing changed).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        SharedList {
            c: self.c.with_timeout(Some(timeout)),
            _t: PhantomData,
        }
    }

    /// Elements now.
    pub fn len(&self) -> Result<usize> {
        self.c
            .read(|_, s| Ok(s.len.load(Ordering::Relaxed) as usize))
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        let g = self.c.lock()?;
        Self::clear_locked(&g)
    }

    fn clear_locked(g: &Locked<'_>) -> Result<()> {
        if let Some(arr) = Array::of(g.arena(), g.s)? {
            let len = g.s.len.load(Ordering::Relaxed);
            g.commit(Change::store(g.c.root_ref(), 0, 0, 0).draining(arr.at, DRAIN_ARRAY, len))?;
        }
        Ok(())
    }

    /// Frees the list and its elements, for every process: later calls on any handle of it are
    /// [`Error::Closed`].
    pub fn destroy(&self) -> Result<()> {
        let g = self.c.lock()?;
        Self::clear_locked(&g)?;
        g.retire();
        Ok(())
    }

    /// A new element block holding `bytes` (new block `which`).
    fn new_elem(g: &Locked<'_>, bytes: &[u8], which: usize) -> Result<Ref> {
        let a = g.arena();
        let e = g.alloc(8 + bytes.len() as u64, which)?;
        a.word(e)?.store(bytes.len() as u64, Ordering::Relaxed);
        a.copy_in(e.add(8), bytes)?;
        Ok(e)
    }

    /// A new array of `cap` words: those of `old` (its first `len`), with `edit` applied: `Some((i,
    /// Some(e)))` puts `e` at `i` (shifting the rest up), `Some((i, None))` leaves out element `i`.
    fn new_array(
        g: &Locked<'_>,
        old: Option<Array>,
        len: u64,
        cap: u64,
        edit: Option<(u64, Option<Ref>)>,
    ) -> Result<Ref> {
        if cap > MAX_CAP {
            return Err(Error::Full);
        }
        let a = g.arena();
        let at = g.alloc(8 + 8 * cap, 0)?;
        a.word(at)?.store(cap, Ordering::Relaxed);
        let mut to = 0u64;
        let mut put = |w: u64| -> Result<()> {
            a.word(at.add(8 + 8 * to))?.store(w, Ordering::Relaxed);
            to += 1;
            Ok(())
        };
        for i in 0..len {
            match edit {
                Some((at_i, Some(e))) if at_i == i => put(e.0)?,
                Some((at_i, None)) if at_i == i => continue,
                _ => {}
            }
            let w = match old {
                Some(o) => a.load(o.word(i))?,
                None => return Err(Error::Corrupt),
            };
            put(w)?;
        }
        if let Some((at_i, Some(e))) = edit {
            if at_i == len {
                put(e.0)?;
            }
        }
        Ok(at)
    }

    /// Appends under the lock.
    fn push_locked(g: &Locked<'_>, bytes: &[u8]) -> Result<()> {
        let a = g.arena();
        let len = g.s.len.load(Ordering::Relaxed);
        let arr = match Array::of(a, g.s)? {
            Some(arr) if len < arr.cap => arr,
            old => {
                let cap = old.map_or(0, |o| o.cap).saturating_mul(2).max(MIN_CAP);
                let at = Self::new_array(g, old, len, cap, None)?;
                g.commit(
                    Change::store(g.c.root_ref(), at.0, len, 0)
                        .freeing(old.map_or(Ref::NULL, |o| o.at)),
                )?;
                Array { at, cap }
            }
        };
        let e = Self::new_elem(g, bytes, 0)?;
        // Past the end: nobody reads this word until the length moves on.
        a.word(arr.word(len))?.store(e.0, Ordering::Relaxed);
        g.commit(Change::store(g.c.len_ref(), len + 1, len + 1, 0)) // len < cap
    }

    /// Replaces element `i` with `bytes` under the lock.
    fn set_locked(g: &Locked<'_>, arr: Array, i: u64, bytes: &[u8]) -> Result<()> {
        let a = g.arena();
        let len = g.s.len.load(Ordering::Relaxed);
        let (old, n) = arr.elem(a, i)?;
        if n == bytes.len() as u64 && bytes.len() <= INLINE {
            return g.commit(Change {
                bytes: Some(bytes),
                ..Change::store(old.add(8), 0, len, 0)
            });
        }
        let e = Self::new_elem(g, bytes, 0)?;
        g.commit(Change::store(arr.word(i), e.0, len, 0).freeing(old))
    }

    /// Shrinks a array that is mostly empty, after a removal that is done: an economy, so no room
    /// for the smaller one ([`Error::Full`], [`Error::Io`]) or a stopped allocator holder
    /// ([`Error::Timeout`]) keeps the larger one, and the removal still returns its value.
    fn maybe_shrink(g: &Locked<'_>) -> Result<()> {
        match Self::shrink(g) {
            Err(Error::Full | Error::Io(_) | Error::Timeout) => Ok(()),
            r => r,
        }
    }

    fn shrink(g: &Locked<'_>) -> Result<()> {
        let len = g.s.len.load(Ordering::Relaxed);
        if let Some(arr) = Array::of(g.arena(), g.s)? {
            if arr.cap > 64 && len.saturating_mul(4) < arr.cap {
                let cap = (len * 2).max(MIN_CAP);
                let at = Self::new_array(g, Some(arr), len, cap, None)?;
                g.commit(Change::store(g.c.root_ref(), at.0, len, 0).freeing(arr.at))?;
            }
        }
        Ok(())
    }

    /// The locked array with `i` in range.
    fn locked_at(g: &Locked<'_>, i: usize) -> Result<Array> {
        let len = g.s.len.load(Ordering::Relaxed);
        if i as u64 >= len {
            return Err(out_of_range(i as u64, len));
        }
        Array::of(g.arena(), g.s)?.ok_or(Error::Corrupt)
    }
}

impl<T: Serialize + DeserializeOwned> SharedList<T> {
    /// Appends `v` (Python's `append`).
    pub fn push(&self, v: impl Borrow<T>) -> Result<()> {
        let b = bytes::encode(v.borrow())?;
        let g = self.c.lock()?;
        Self::push_locked(&g, &b)
    }

    /// Appends every element of `items`, under one hold of the lock (each its own step).
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let encoded: Vec<Enc> = items
            .into_iter()
            .map(|v| bytes::encode(&v))
            .collect::<Result<_>>()?;
        let g = self.c.lock()?;
        for b in &encoded {
            Self::push_locked(&g, b)?;
        }
        Ok(())
    }

    /// Element `i`; [`Error::OutOfRange`] past the end.
    #[inline]
    pub fn get(&self, i: usize) -> Result<T> {
        let mut out = Copied::new();
        self.c.read(|a, s| {
            let len = s.len.load(Ordering::Relaxed);
            if i as u64 >= len {
                return Err(out_of_range(i as u64, len));
            }
            let arr = Array::of(a, s)?.ok_or(Error::Corrupt)?;
            let (e, n) = arr.elem(a, i as u64)?;
            out.fill(a, e.add(8), n)
        })?;
        bytes::decode(out.bytes())
    }

    /// Sets element `i` to `v`; [`Error::OutOfRange`] past the end.
    pub fn set(&self, i: usize, v: impl Borrow<T>) -> Result<()> {
        let b = bytes::encode(v.borrow())?;
        let g = self.c.lock()?;
        let arr = Self::locked_at(&g, i)?;
        Self::set_locked(&g, arr, i as u64, &b)
    }

    /// Runs `f` on element `i` and stores what it leaves, as one step no other process can
    /// interleave with; returns what `f` returns. [`Error::OutOfRange`] past the end.
    pub fn modify<R>(&self, i: usize, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let g = self.c.lock()?;
        let arr = Self::locked_at(&g, i)?;
        let (e, n) = arr.elem(g.arena(), i as u64)?;
        let mut out = Copied::new();
        out.fill(g.arena(), e.add(8), n)?;
        let mut v: T = bytes::decode(out.bytes())?;
        let r = f(&mut v);
        Self::set_locked(&g, arr, i as u64, &bytes::encode(&v)?)?;
        Ok(r)
    }

    /// The stored bytes of element `i` (a served list's answer: a remote `modify` hands them back
    /// to [`replace_raw`](Self::replace_raw) as what it expects).
    pub(crate) fn get_raw(&self, i: usize) -> Result<Vec<u8>> {
        let mut out = Copied::new();
        self.c.read(|a, s| {
            let len = s.len.load(Ordering::Relaxed);
            if i as u64 >= len {
                return Err(out_of_range(i as u64, len));
            }
            let arr = Array::of(a, s)?.ok_or(Error::Corrupt)?;
            let (e, n) = arr.elem(a, i as u64)?;
            out.fill(a, e.add(8), n)
        })?;
        Ok(out.bytes().to_vec())
    }

    /// Under the lock: sets element `i` to `new` if its stored bytes are `expected` (a remote
    /// `modify`'s compare-and-swap); whether it did. `new` must decode as a `T`.
    pub(crate) fn replace_raw(&self, i: usize, expected: &[u8], new: &[u8]) -> Result<bool> {
        bytes::decode::<T>(new)?;
        let g = self.c.lock()?;
        let arr = Self::locked_at(&g, i)?;
        let (e, n) = arr.elem(g.arena(), i as u64)?;
        let mut out = Copied::new();
        out.fill(g.arena(), e.add(8), n)?;
        if out.bytes() != expected {
            return Ok(false);
        }
        Self::set_locked(&g, arr, i as u64, new)?;
        Ok(true)
    }

    /// Replaces every element with `new` if the elements are `expected` now (equal encodings):
    /// a compare-and-swap of the whole list, for a caller that computes the new elements from a
    /// snapshot (Python's slice assignment, `sort`, `remove`, ...); whether it did. It is done
    /// under one hold of the list's lock, so no other writer's change comes between its steps:
    /// elements that differ are set, then the rest pushed or the surplus popped, each its own
    /// step, so a reader may see the list part way through, and a writer killed part way leaves
    /// it so (each element whole).
    pub fn replace_all_if(&self, expected: &[T], new: &[T]) -> Result<bool> {
        let want: Vec<Enc> = expected.iter().map(bytes::encode).collect::<Result<_>>()?;
        let put: Vec<Enc> = new.iter().map(bytes::encode).collect::<Result<_>>()?;
        let g = self.c.lock()?;
        let len = g.s.len.load(Ordering::Relaxed);
        if len != want.len() as u64 {
            return Ok(false);
        }
        let mut same = Vec::with_capacity(want.len());
        if let Some(arr) = Array::of(g.arena(), g.s)? {
            for (i, w) in want.iter().enumerate() {
                let (e, n) = arr.elem(g.arena(), i as u64)?;
                if n != w.len() as u64 || !bytes::equal_at(g.arena(), e.add(8), w)? {
                    return Ok(false);
                }
                same.push(put.get(i).is_some_and(|p| **p == **w));
            }
        }
        for (i, b) in put.iter().enumerate().take(want.len()) {
            if !same[i] {
                let arr = Self::locked_at(&g, i)?;
                Self::set_locked(&g, arr, i as u64, b)?;
            }
        }
        for b in put.iter().skip(want.len()) {
            Self::push_locked(&g, b)?;
        }
        let mut len = len;
        while len > put.len() as u64 {
            let arr = Array::of(g.arena(), g.s)?.ok_or(Error::Corrupt)?;
            let (e, _) = arr.elem(g.arena(), len - 1)?;
            g.commit(Change::store(g.c.len_ref(), len - 1, len - 1, 0).freeing(e))?;
            Self::maybe_shrink(&g)?;
            len -= 1;
        }
        Ok(true)
    }

    /// Removes and returns the last element; [`Error::OutOfRange`] if the list is empty.
    pub fn pop(&self) -> Result<T> {
        let g = self.c.lock()?;
        let len = g.s.len.load(Ordering::Relaxed);
        if len == 0 {
            return Err(out_of_range(0, 0));
        }
        let arr = Array::of(g.arena(), g.s)?.ok_or(Error::Corrupt)?;
        let (e, n) = arr.elem(g.arena(), len - 1)?;
        let mut out = Copied::new();
        out.fill(g.arena(), e.add(8), n)?;
        let v = bytes::decode(out.bytes())?;
        g.commit(Change::store(g.c.len_ref(), len - 1, len - 1, 0).freeing(e))?;
        Self::maybe_shrink(&g)?;
        Ok(v)
    }

    /// Inserts `v` before element `i` (`i == len` appends); [`Error::OutOfRange`] past that.
    pub fn insert(&self, i: usize, v: impl Borrow<T>) -> Result<()> {
        let b = bytes::encode(v.borrow())?;
        let g = self.c.lock()?;
        let len = g.s.len.load(Ordering::Relaxed);
        let i = i as u64;
        if i > len {
            return Err(out_of_range(i, len));
        }
        if i == len {
            return Self::push_locked(&g, &b);
        }
        let old = Array::of(g.arena(), g.s)?.ok_or(Error::Corrupt)?;
        let cap = if len < old.cap {
            old.cap
        } else {
            old.cap.saturating_mul(2).max(MIN_CAP)
        };
        let e = Self::new_elem(&g, &b, 1)?;
        let at = Self::new_array(&g, Some(old), len, cap, Some((i, Some(e))))?;
        g.commit(Change::store(g.c.root_ref(), at.0, len + 1, 0).freeing(old.at))
    }

    /// Removes and returns element `i`; [`Error::OutOfRange`] past the end.
    pub fn remove(&self, i: usize) -> Result<T> {
        let g = self.c.lock()?;
        let arr = Self::locked_at(&g, i)?;
        let len = g.s.len.load(Ordering::Relaxed);
        let i = i as u64;
        let (e, n) = arr.elem(g.arena(), i)?;
        let mut out = Copied::new();
        out.fill(g.arena(), e.add(8), n)?;
        let v = bytes::decode(out.bytes())?;
        if i + 1 == len {
            g.commit(Change::store(g.c.len_ref(), len - 1, len - 1, 0).freeing(e))?;
        } else {
            let at = Self::new_array(&g, Some(arr), len, arr.cap, Some((i, None)))?;
            g.commit(
                Change::store(g.c.root_ref(), at.0, len - 1, 0)
                    .freeing(arr.at)
                    .freeing2(e),
            )?;
        }
        Self::maybe_shrink(&g)?;
        Ok(v)
    }

    /// The index of the first element equal to `v` (equal encodings); [`Error::NotFound`] if none
    /// (Python's `ValueError`).
    pub fn index(&self, v: &T) -> Result<usize> {
        let want = bytes::encode(v)?;
        self.c.read(|a, s| {
            let len = s.len.load(Ordering::Relaxed);
            let Some(arr) = Array::of(a, s)? else {
                return Err(Error::NotFound);
            };
            for i in 0..len {
                let (e, n) = arr.elem(a, i)?;
                if n == want.len() as u64 && bytes::equal_at(a, e.add(8), &want)? {
                    return Ok(i as usize);
                }
            }
            Err(Error::NotFound)
        })
    }

    /// Every element, as one consistent snapshot.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        // The elements' bytes one after the other in one buffer, and each one's end in it: two
        // allocations however long the list, so a large snapshot leaves no scattered heap behind.
        let (buf, ends) = self.c.read(|a, s| {
            let len = s.len.load(Ordering::Relaxed);
            let (mut buf, mut ends) = (Vec::new(), Vec::new());
            if let Some(arr) = Array::of(a, s)? {
                // Elements are distinct blocks: together they hold less than the arena. Words
                // that point many elements at one large block (hostile, or torn) must not make
                // this allocate more than that.
                let mut left = a.mapped();
                for i in 0..len {
                    let (e, n) = arr.elem(a, i)?;
                    left = left.checked_sub(n).ok_or(Error::Corrupt)?;
                    a.append_out(e.add(8), n, &mut buf)?;
                    ends.push(buf.len());
                }
            }
            Ok((buf, ends))
        })?;
        let mut at = 0;
        ends.iter()
            .map(|&end| bytes::decode(&buf[std::mem::replace(&mut at, end)..end]))
            .collect()
    }

    /// Makes a new empty list in `arena` (used by the manager).
    pub(crate) fn create(arena: &std::sync::Arc<Arena>, timeout: Option<Duration>) -> Result<Self> {
        let c = slot::new_container(arena, LIST, Self::fingerprints(), timeout)?;
        Ok(Self::attach(c))
    }
}

impl<T> std::fmt::Debug for SharedList<T>
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
{
    /// Prints like Python's list: `[0, 2, 3]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_vec() {
            Ok(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x:?}")?;
                }
                f.write_str("]")
            }
            Err(e) => write!(f, "<list: {e}>"),
        }
    }
}
