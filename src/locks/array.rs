//! `Array`: a fixed-length array of plain data in shared memory with its lock, Python's
//! `multiprocessing.Array`; the same protocol as `Value` (see `value`): copies in and out under the
//! lock, never a reference into shared bytes.

use crate::error::{Error, Result};
use crate::locks::builder::{Built, SyncBuilder};
use crate::locks::shared_memory::{read_shared, write_shared};
use crate::locks::value::{Unlock, ValueBlock, ValueGuard, lock, lock_copy, pod_fingerprint};
use crate::segment::Kind;
use crate::segment::object::Object;
use crate::wait::{Deadline, WaitStrategy};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::time::Duration;

const PARAM_LEN: usize = 0;

/// A fixed-length array of `T` in shared memory, with a lock: Python's `multiprocessing.Array`.
///
/// A named array opens as `Array<U>` for any `U` of `T`'s size and alignment; another is
/// [`Error::Incompatible`], as is opening it as a [`Value`](crate::Value).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Array, Process};
/// let a = Array::<f64>::new(&[1.0, 2.0, 3.0])?;
/// let a2 = a.clone();
/// let p = Process::fork(move || a2.set(1, 20.0).unwrap())?;
/// assert!(p.join()?.success());
/// assert_eq!(a.to_vec()?, vec![1.0, 20.0, 3.0]);
/// {
///     let mut g = a.get_lock()?;
///     g[2] += 1.0;
/// }
/// assert_eq!(a.get(2)?, 4.0);
/// # Ok(()) }
/// ```
pub struct Array<T: Pod> {
    obj: Object<ValueBlock>,
    len: usize,
    wait: WaitStrategy,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            obj: self.obj.clone(),
            len: self.len,
            wait: self.wait,
            _t: PhantomData,
        }
    }
}

impl<T: Pod> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array").field("len", &self.len).finish()
    }
}

impl<T: Pod> Built for Array<T> {
    type Init = Vec<T>;
}

impl<T: Pod> SyncBuilder<Array<T>> {
    /// Creates the array.
    pub fn build(self) -> Result<Array<T>> {
        let items = &self.init[..];
        let bytes = std::mem::size_of_val(items);
        let mut p = [0u64; 6];
        p[PARAM_LEN] = items.len() as u64;
        let obj = self.create(|name| {
            Object::create_with(
                Kind::Value,
                pod_fingerprint::<T>("Array"),
                p,
                bytes.max(1),
                name,
                // SAFETY: the data area holds `len` Ts (sized so); nobody reads it before it is
                // published.
                &|_, data| unsafe { write_shared(data, bytemuck::cast_slice(items)) },
            )
        })?;
        Ok(Array {
            obj,
            len: items.len(),
            wait: self.wait,
            _t: PhantomData,
        })
    }
}

impl<T: Pod> Array<T> {
    /// An array holding a copy of `items`, shared with children forked later.
    pub fn new(items: &[T]) -> Result<Self> {
        Self::builder(items).build()
    }

    /// An array of `len` zeroes.
    pub fn zeroed(len: usize) -> Result<Self> {
        SyncBuilder::<Array<T>>::new(vec![T::zeroed(); len]).build()
    }

    /// A named array holding a copy of `items`.
    pub fn create(name: &str, items: &[T]) -> Result<Self> {
        Self::builder(items).name(name).build()
    }

    /// Options for an array holding a copy of `items`: a name, a wait strategy for its lock (see
    /// [`SyncBuilder`]).
    pub fn builder(items: &[T]) -> SyncBuilder<Array<T>> {
        SyncBuilder::new(items.to_vec())
    }

    /// How this handle waits for the lock.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Changes how this handle waits for the lock (its clones keep theirs).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: [`create`](Self::create), raising `signal` in this process as soon as the object
    /// can be opened by name.
    pub fn __create_interrupted(name: &str, items: &[T], signal: i32) -> Result<Self> {
        crate::segment::object::hooks::raise_after_publish(signal);
        Self::create(name, items)
    }

    /// Opens the array named `name`, whose elements must have `T`'s size and alignment (else
    /// [`Error::Incompatible`]), with the default wait strategy.
    pub fn open(name: &str) -> Result<Self> {
        let obj: Object<ValueBlock> =
            Object::open(Kind::Value, pod_fingerprint::<T>("Array"), name)?;
        let len = obj.params()[PARAM_LEN] as usize;
        if len
            .checked_mul(std::mem::size_of::<T>())
            .is_none_or(|b| b > obj.data().1)
        {
            return Err(Error::Corrupt);
        }
        Ok(Array {
            obj,
            len,
            wait: WaitStrategy::default(),
            _t: PhantomData,
        })
    }

    /// Where element `i` lives; `i <= len`.
    fn ptr(&self, i: usize) -> *mut u8 {
        debug_assert!(i <= self.len);
        // SAFETY: the data area holds `len` Ts (checked on open), so the offset is in bounds.
        unsafe { self.obj.data().0.add(i * std::mem::size_of::<T>()) }
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// [`Error::OutOfRange`] unless `i < len`.
    fn check_index(&self, i: usize) -> Result<()> {
        if i >= self.len {
            return Err(Error::OutOfRange {
                index: i,
                len: self.len,
            });
        }
        Ok(())
    }

    /// Element `i` (under the lock); out of range is [`Error::OutOfRange`].
    pub fn get(&self, i: usize) -> Result<T> {
        self.get_at(i, Deadline::NEVER)
    }

    /// [`get`](Self::get), giving up with [`Error::Timeout`] if the lock is not free within
    /// `timeout`.
    pub fn get_timeout(&self, i: usize, timeout: Duration) -> Result<T> {
        self.get_at(i, Deadline::after(Some(timeout)))
    }

    fn get_at(&self, i: usize, deadline: Deadline) -> Result<T> {
        self.check_index(i)?;
        let mut v = T::zeroed();
        let _held = Unlock(lock(&self.obj, deadline, self.wait)?.0);
        // SAFETY: element `i < len` lies in the data area, mapped while `self` lives.
        unsafe { read_shared(self.ptr(i), bytemuck::bytes_of_mut(&mut v)) };
        Ok(v)
    }

    /// Sets element `i` (under the lock); out of range is [`Error::OutOfRange`].
    pub fn set(&self, i: usize, v: T) -> Result<()> {
        self.set_at(i, v, Deadline::NEVER)
    }

    /// [`set`](Self::set), giving up with [`Error::Timeout`] (and writing nothing) if the lock is
    /// not free within `timeout`.
    pub fn set_timeout(&self, i: usize, v: T, timeout: Duration) -> Result<()> {
        self.set_at(i, v, Deadline::after(Some(timeout)))
    }

    fn set_at(&self, i: usize, v: T, deadline: Deadline) -> Result<()> {
        self.check_index(i)?;
        let _held = Unlock(lock(&self.obj, deadline, self.wait)?.0);
        // SAFETY: element `i < len` lies in the data area, mapped while `self` lives.
        unsafe { write_shared(self.ptr(i), bytemuck::bytes_of(&v)) };
        Ok(())
    }

    /// A copy of all elements (under the lock).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.to_vec_at(Deadline::NEVER)
    }

    /// [`to_vec`](Self::to_vec), giving up with [`Error::Timeout`] if the lock is not free within
    /// `timeout`.
    pub fn to_vec_timeout(&self, timeout: Duration) -> Result<Vec<T>> {
        self.to_vec_at(Deadline::after(Some(timeout)))
    }

    fn to_vec_at(&self, deadline: Deadline) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); self.len];
        let _held = Unlock(lock(&self.obj, deadline, self.wait)?.0);
        // SAFETY: the data area holds `len` Ts, mapped while `self` lives.
        unsafe { read_shared(self.ptr(0), bytemuck::cast_slice_mut(&mut v)) };
        Ok(v)
    }

    /// Takes the lock and gives a copy of the elements to read and change until the guard is
    /// dropped (changes are written back then). It copies the whole array in (and out, if changed):
    /// for a few elements of a large array, [`get`](Self::get) and [`set`](Self::set) cost less.
    pub fn get_lock(&self) -> Result<ValueGuard<'_, [T]>> {
        self.get_lock_at(Deadline::NEVER)
    }

    /// [`get_lock`](Self::get_lock), giving up with [`Error::Timeout`] after `timeout`.
    pub fn get_lock_timeout(&self, timeout: Duration) -> Result<ValueGuard<'_, [T]>> {
        self.get_lock_at(Deadline::after(Some(timeout)))
    }

    fn get_lock_at(&self, deadline: Deadline) -> Result<ValueGuard<'_, [T]>> {
        let copy = vec![T::zeroed(); self.len].into_boxed_slice();
        // SAFETY: the data area holds `len` Ts (checked on open), mapped while `self` lives; T is Pod.
        unsafe { lock_copy(&self.obj, self.ptr(0), copy, deadline, self.wait) }
    }
}
