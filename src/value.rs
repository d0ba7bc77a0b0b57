//! `Value` and `Array`: plain data (`bytemuck::Pod`) in shared memory, each with its own lock; and,
//! for integers, atomic operations that need no lock. Python's `multiprocessing.Value` and `Array`.

use crate::error::{Error, Result};
use crate::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::sync::mutex::RawMutex;
use crate::sync::wait::Deadline;
use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

#[repr(C)]
pub(crate) struct ValueBlock {
    lock: RawMutex,
}
// SAFETY: repr(C), all atomics.
unsafe impl SharedBlock for ValueBlock {}

const PARAM_LEN: usize = 0;

struct ArrayOf<T>(PhantomData<T>);

/// A `T` in shared memory, with a lock: Python's `multiprocessing.Value`.
///
/// `get` and `set` take the lock; [`get_lock`](Self::get_lock) holds it across a read-modify-write;
/// for integers, [`fetch_add`](Value::fetch_add) and friends are atomic without it. Opening a named
/// value with another `T` is [`Error::Incompatible`].
pub struct Value<T: Pod> {
    obj: Object<ValueBlock>,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            obj: self.obj.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("value", &self.read_unlocked())
            .finish()
    }
}

/// Holds a value's (or array's) lock and gives access to the data.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: ?Sized> {
    lock: &'a RawMutex,
    data: &'a mut T,
    owner_died: std::cell::Cell<bool>,
}

impl<T: ?Sized> ValueGuard<'_, T> {
    /// Whether a process died holding this lock (the data may be half written).
    pub fn owner_died(&self) -> bool {
        self.owner_died.get()
    }

    /// Declares the data repaired.
    pub fn mark_consistent(&self) {
        self.lock.mark_consistent();
        self.owner_died.set(false);
    }
}

impl<T: ?Sized> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.data
    }
}

impl<T: ?Sized> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.data
    }
}

impl<T: ?Sized> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

fn lock_data<'a, T: ?Sized>(
    obj: &'a Object<ValueBlock>,
    data: &'a mut T,
) -> Result<ValueGuard<'a, T>> {
    let me = obj.me()?;
    let lock = &obj.block().lock;
    lock.lock(obj.segment(), me, Deadline::NEVER)?;
    Ok(ValueGuard {
        lock,
        data,
        owner_died: std::cell::Cell::new(lock.is_inconsistent()),
    })
}

impl<T: Pod> Value<T> {
    fn make(v: T, name: Option<&str>) -> Result<Self> {
        let obj = Object::create(
            Kind::Value,
            fingerprint_of::<T>(),
            [0; 6],
            std::mem::size_of::<T>().max(1),
            name,
        )?;
        let me = Value {
            obj,
            _t: PhantomData,
        };
        // SAFETY: nobody else can see a fresh anonymous object; a fresh named one is read only after
        // `create` returns to its creator... and is zero (a valid Pod) until then.
        unsafe { std::ptr::write(me.ptr(), v) };
        Ok(me)
    }

    /// A value holding `v`, shared with children forked later.
    pub fn new(v: T) -> Result<Self> {
        Self::make(v, None)
    }

    /// A value named `name` holding `v`.
    pub fn create(name: &str, v: T) -> Result<Self> {
        Self::make(v, Some(name))
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: [`create`](Self::create), raising `signal` in this process as soon as the object
    /// can be opened by name (a creator stopped or killed half way).
    pub fn __create_interrupted(name: &str, v: T, signal: i32) -> Result<Self> {
        crate::object::hooks::raise_after_publish(signal);
        Self::create(name, v)
    }

    /// Opens the value named `name`, which must hold a `T`.
    pub fn open(name: &str) -> Result<Self> {
        let obj: Object<ValueBlock> = Object::open(Kind::Value, fingerprint_of::<T>(), name)?;
        if obj.data().1 < std::mem::size_of::<T>() {
            return Err(Error::Corrupt);
        }
        Ok(Value {
            obj,
            _t: PhantomData,
        })
    }

    fn ptr(&self) -> *mut T {
        self.obj.data().0 as *mut T
    }

    fn read_unlocked(&self) -> T {
        // SAFETY: the data area holds a T (checked), 128-aligned; a Pod has no invalid bit patterns;
        // volatile, since other processes may write it.
        unsafe { std::ptr::read_volatile(self.ptr()) }
    }

    /// Reads it (under the lock).
    pub fn get(&self) -> Result<T> {
        let g = self.get_lock()?;
        Ok(*g)
    }

    /// Writes it (under the lock).
    pub fn set(&self, v: T) -> Result<()> {
        let mut g = self.get_lock()?;
        *g = v;
        Ok(())
    }

    /// Takes the lock and gives access to the value until the guard is dropped.
    pub fn get_lock(&self) -> Result<ValueGuard<'_, T>> {
        // SAFETY: as in `read_unlocked`; the `&mut` is handed out only under the lock.
        let data = unsafe { &mut *self.ptr() };
        lock_data(&self.obj, data)
    }
}

/// Integers a [`Value`] can update atomically, without its lock.
pub trait AtomicInt: Pod {
    #[doc(hidden)]
    type Atomic;
    #[doc(hidden)]
    fn fetch_add(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_sub(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn load(a: &Self::Atomic) -> Self;
    #[doc(hidden)]
    fn store(a: &Self::Atomic, v: Self);
    #[doc(hidden)]
    fn compare_exchange(
        a: &Self::Atomic,
        current: Self,
        new: Self,
    ) -> std::result::Result<Self, Self>;
}

macro_rules! atomic_int {
    ($($t:ty => $a:ty),*) => {$(
        impl AtomicInt for $t {
            type Atomic = $a;
            fn fetch_add(a: &$a, v: $t) -> $t { a.fetch_add(v, std::sync::atomic::Ordering::SeqCst) }
            fn fetch_sub(a: &$a, v: $t) -> $t { a.fetch_sub(v, std::sync::atomic::Ordering::SeqCst) }
            fn load(a: &$a) -> $t { a.load(std::sync::atomic::Ordering::SeqCst) }
            fn store(a: &$a, v: $t) { a.store(v, std::sync::atomic::Ordering::SeqCst) }
            fn compare_exchange(a: &$a, c: $t, n: $t) -> std::result::Result<$t, $t> {
                a.compare_exchange(c, n, std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst)
            }
        }
    )*};
}
atomic_int!(i32 => std::sync::atomic::AtomicI32, u32 => std::sync::atomic::AtomicU32,
            i64 => std::sync::atomic::AtomicI64, u64 => std::sync::atomic::AtomicU64,
            isize => std::sync::atomic::AtomicIsize, usize => std::sync::atomic::AtomicUsize);

impl<T: AtomicInt> Value<T> {
    fn atomic(&self) -> &T::Atomic {
        // SAFETY: the data is 128-aligned and holds a `T`, which has the size and alignment of its
        // atomic counterpart; atomics may alias memory other processes access atomically too.
        unsafe { &*(self.ptr() as *const T::Atomic) }
    }

    /// Adds `v` atomically (no lock) and returns the previous value (wrapping).
    pub fn fetch_add(&self, v: T) -> T {
        T::fetch_add(self.atomic(), v)
    }

    /// Subtracts `v` atomically (no lock) and returns the previous value (wrapping).
    pub fn fetch_sub(&self, v: T) -> T {
        T::fetch_sub(self.atomic(), v)
    }

    /// Reads it atomically, without the lock.
    pub fn load(&self) -> T {
        T::load(self.atomic())
    }

    /// Writes it atomically, without the lock.
    pub fn store(&self, v: T) {
        T::store(self.atomic(), v)
    }

    /// Replaces `current` by `new` if it holds `current`; `Err(actual)` otherwise.
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        T::compare_exchange(self.atomic(), current, new)
    }
}

/// A fixed-length array of `T` in shared memory, with a lock: Python's `multiprocessing.Array`.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let a = shmwire::Array::<f64>::new(&[1.0, 2.0, 3.0])?;
/// a.set(1, 20.0)?;
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
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            obj: self.obj.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Pod> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array").field("len", &self.len).finish()
    }
}

impl<T: Pod> Array<T> {
    fn make(items: &[T], name: Option<&str>) -> Result<Self> {
        let bytes = std::mem::size_of_val(items);
        let mut p = [0u64; 6];
        p[PARAM_LEN] = items.len() as u64;
        let obj = Object::create(
            Kind::Value,
            fingerprint_of::<ArrayOf<T>>(),
            p,
            bytes.max(1),
            name,
        )?;
        let me = Array {
            obj,
            len: items.len(),
            _t: PhantomData,
        };
        // SAFETY: the data area holds `len` Ts; nobody else sees a fresh object before we return.
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), me.ptr(), items.len()) };
        Ok(me)
    }

    /// An array holding a copy of `items`, shared with children forked later.
    pub fn new(items: &[T]) -> Result<Self> {
        Self::make(items, None)
    }

    /// An array of `len` zeroes.
    pub fn zeroed(len: usize) -> Result<Self> {
        Self::make(&vec![T::zeroed(); len], None)
    }

    /// A named array holding a copy of `items`.
    pub fn create(name: &str, items: &[T]) -> Result<Self> {
        Self::make(items, Some(name))
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: [`create`](Self::create), raising `signal` in this process as soon as the object
    /// can be opened by name.
    pub fn __create_interrupted(name: &str, items: &[T], signal: i32) -> Result<Self> {
        crate::object::hooks::raise_after_publish(signal);
        Self::create(name, items)
    }

    /// Opens the array named `name`, which must hold `T`s.
    pub fn open(name: &str) -> Result<Self> {
        let obj: Object<ValueBlock> =
            Object::open(Kind::Value, fingerprint_of::<ArrayOf<T>>(), name)?;
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
            _t: PhantomData,
        })
    }

    fn ptr(&self) -> *mut T {
        self.obj.data().0 as *mut T
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i` (under the lock); out of range is [`Error::Misuse`].
    pub fn get(&self, i: usize) -> Result<T> {
        let g = self.get_lock()?;
        g.get(i).copied().ok_or(Error::Misuse)
    }

    /// Sets element `i` (under the lock).
    pub fn set(&self, i: usize, v: T) -> Result<()> {
        let mut g = self.get_lock()?;
        *g.get_mut(i).ok_or(Error::Misuse)? = v;
        Ok(())
    }

    /// A copy of all elements (under the lock).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.get_lock()?.to_vec())
    }

    /// Takes the lock and gives access to the elements until the guard is dropped.
    pub fn get_lock(&self) -> Result<ValueGuard<'_, [T]>> {
        // SAFETY: the data area holds `len` Ts (checked on open), aligned; handed out under the lock.
        let data = unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) };
        lock_data(&self.obj, data)
    }
}
