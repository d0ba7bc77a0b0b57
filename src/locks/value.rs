//! `Value` (and, in `array`, `Array`): plain data (`bytemuck::Pod`) in shared memory, each with its
//! own lock; and, for integers, atomic operations that need no lock. Python's
//! `multiprocessing.Value` and `Array`.
//!
//! The data lives in memory that other processes may write at any moment (a process that skips the
//! lock, or a buggy one), so no Rust reference into it is ever formed, except to atomics for the
//! lock-free operations. [`Value::get`]/[`Value::set`] (and [`Array::get`](crate::Array::get)/[`Array::set`](crate::Array::set)) copy
//! under the lock; a guard from `get_lock` holds a private copy taken under the lock, which it writes
//! back, still under the lock, when it drops (if it was changed through `DerefMut`). The bytes are
//! copied by relaxed atomic loads and stores: what another process writes at the same time can give
//! a mix of old and new bytes (any bytes are a valid `Pod`), never undefined behaviour.
//!
//! The lock coordinates the processes that take it, and only them: `fetch_add` and the other atomic
//! operations do not wait for it. A value updated both ways can lose updates (a `fetch_add` made
//! while another process holds a changed guard is overwritten when that guard drops): use the lock
//! or the atomics for a given value, not both.
//!
//! A named value is compatible with every `T` of the same size and alignment (any bytes are a valid
//! `Pod`): the check at `open` compares those (and whether it is a `Value` or an `Array`), not the
//! type's name, so programs built apart, or another integer type of the same width, open it.

use crate::error::{Error, Result};
use crate::locks::builder::{Built, SyncBuilder};
use crate::locks::shared_memory::{read_shared, write_shared};
use crate::segment::Kind;
use crate::segment::object::{Object, SharedBlock};
use crate::wait::mutex::RawMutex;
use crate::wait::{Deadline, WaitStrategy};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

#[repr(C)]
pub(crate) struct ValueBlock {
    lock: RawMutex,
}
// SAFETY: repr(C), all atomics.
unsafe impl SharedBlock for ValueBlock {}

/// The fingerprint of plain data of `T`'s size and alignment, for a `what` ("Value" or "Array",
/// so that one never opens as the other), as `segment::fingerprint_of_pod` makes it for queue items.
pub(super) fn pod_fingerprint<T: Pod>(what: &str) -> u64 {
    crate::segment::fingerprint_parts(
        &format!("shmwire.pod.{what}"),
        std::mem::size_of::<T>() as u64,
        std::mem::align_of::<T>() as u64,
    )
}

/// A `T` in shared memory, with a lock: Python's `multiprocessing.Value`.
///
/// `get` and `set` take the lock; [`get_lock`](Self::get_lock) holds it across a read-modify-write;
/// for integers, [`fetch_add`](Value::fetch_add) and friends are atomic without it (do not mix the
/// two on one value: see the module docs). A named value opens as any `T` of the size and alignment
/// it was created with (a `u64` as an `i64`, a struct of the same layout defined by another
/// program); another size or alignment is [`Error::Incompatible`].
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, Value};
/// let v = Value::new(40u64)?;
/// let v2 = v.clone();
/// let p = Process::fork(move || {
///     let mut g = v2.get_lock().unwrap(); // a private copy, taken under the lock
///     *g += 1;
/// })?; // written back, then unlocked, when the guard drops
/// assert!(p.join()?.success());
/// v.fetch_add(1); // atomic, without the lock
/// assert_eq!(v.get()?, 42);
/// # Ok(()) }
/// ```
pub struct Value<T: Pod> {
    obj: Object<ValueBlock>,
    wait: WaitStrategy,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            obj: self.obj.clone(),
            wait: self.wait,
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

/// Holds a value's (or array's) lock, with a private copy of the data taken under it.
///
/// It dereferences to that copy; if it was changed (through `DerefMut`), the copy is written back
/// to shared memory when the guard drops, before the lock is released. So what the guard shows
/// does not change under it, whatever other processes do.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Array, Process};
/// use std::time::Duration;
/// let a = Array::new(&[1u32, 2, 3])?;
/// let a2 = a.clone();
/// let p = Process::fork(move || {
///     let mut g = a2.get_lock_timeout(Duration::from_secs(10)).unwrap();
///     g.reverse();
///     assert!(!g.owner_died());
/// })?;
/// assert!(p.join()?.success());
/// assert_eq!(a.to_vec()?, [3, 2, 1]);
/// # Ok(()) }
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: ?Sized> {
    lock: &'a RawMutex,
    /// Where the data lives in shared memory.
    shared: *mut u8,
    copy: Box<T>,
    changed: bool,
    owner_died: std::cell::Cell<bool>,
}

// SAFETY: the guard owns its copy and a pointer into a mapping its `'a` borrow keeps alive; the lock
// is the process's (any thread may release it).
unsafe impl<T: ?Sized + Send> Send for ValueGuard<'_, T> {}

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
        &self.copy
    }
}

impl<T: ?Sized> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.changed = true;
        &mut self.copy
    }
}

impl<T: ?Sized> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        if self.changed {
            let len = std::mem::size_of_val(&*self.copy);
            // SAFETY: guards are made only over `Pod` data (a `T` or a `[T]`, see `lock_copy`), whose
            // bytes have no padding; `shared` holds `len` bytes, mapped while `'a` lives.
            unsafe {
                let bytes = std::slice::from_raw_parts(&*self.copy as *const T as *const u8, len);
                write_shared(self.shared, bytes);
            }
        }
        self.lock.unlock();
    }
}

/// Takes `obj`'s lock, waiting as `wait` says until `deadline`; whether a holder died (since the
/// last `mark_consistent`).
pub(super) fn lock(
    obj: &Object<ValueBlock>,
    deadline: Deadline,
    wait: WaitStrategy,
) -> Result<(&RawMutex, bool)> {
    let me = obj.me()?;
    let lock = &obj.block().lock;
    lock.lock_with(obj.segment(), me, deadline, wait)?;
    Ok((lock, lock.is_inconsistent()))
}

/// Releases a lock taken by [`lock`] when dropped.
pub(super) struct Unlock<'a>(pub(super) &'a RawMutex);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// Takes the lock and a copy of the data at `shared`, which must be `Pod` data (a `T` or `[T]`)
/// of `copy`'s size; `copy` is filled in place.
///
/// # Safety
/// `shared` holds `size_of_val(copy)` bytes, mapped while `obj` lives; `T` is `Pod` (or `[Pod]`).
pub(super) unsafe fn lock_copy<'a, T: ?Sized>(
    obj: &'a Object<ValueBlock>,
    shared: *mut u8,
    mut copy: Box<T>,
    deadline: Deadline,
    wait: WaitStrategy,
) -> Result<ValueGuard<'a, T>> {
    let (lock, died) = lock(obj, deadline, wait)?;
    let len = std::mem::size_of_val(&*copy);
    // SAFETY: `copy` is `Pod` data of `len` bytes, so any bytes written into it are valid; `shared`
    // holds `len` bytes (the caller's promise).
    unsafe {
        let bytes = std::slice::from_raw_parts_mut(&mut *copy as *mut T as *mut u8, len);
        read_shared(shared, bytes);
    }
    Ok(ValueGuard {
        lock,
        shared,
        copy,
        changed: false,
        owner_died: std::cell::Cell::new(died),
    })
}

impl<T: Pod> Built for Value<T> {
    type Init = T;
}

impl<T: Pod> SyncBuilder<Value<T>> {
    /// Creates the value.
    pub fn build(self) -> Result<Value<T>> {
        let v = self.init;
        let obj = self.create(|name| {
            Object::create_with(
                Kind::Value,
                pod_fingerprint::<T>("Value"),
                [0; 6],
                std::mem::size_of::<T>().max(1),
                name,
                // SAFETY: the data area holds a `T` (sized so); nobody reads it before it is
                // published.
                &|_, data| unsafe { write_shared(data, bytemuck::bytes_of(&v)) },
            )
        })?;
        Ok(Value {
            obj,
            wait: self.wait,
            _t: PhantomData,
        })
    }
}

impl<T: Pod> Value<T> {
    /// A value holding `v`, shared with children forked later.
    pub fn new(v: T) -> Result<Self> {
        Self::builder(v).build()
    }

    /// A value named `name` holding `v`.
    pub fn create(name: &str, v: T) -> Result<Self> {
        Self::builder(v).name(name).build()
    }

    /// Options for a value holding `v`: a name, a wait strategy for its lock (see
    /// [`SyncBuilder`]).
    pub fn builder(v: T) -> SyncBuilder<Value<T>> {
        SyncBuilder::new(v)
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
    /// can be opened by name (a creator stopped or killed half way).
    pub fn __create_interrupted(name: &str, v: T, signal: i32) -> Result<Self> {
        crate::segment::object::hooks::raise_after_publish(signal);
        Self::create(name, v)
    }

    /// Opens the value named `name`, which must hold data of `T`'s size and alignment (else
    /// [`Error::Incompatible`]), with the default wait strategy.
    pub fn open(name: &str) -> Result<Self> {
        let obj: Object<ValueBlock> =
            Object::open(Kind::Value, pod_fingerprint::<T>("Value"), name)?;
        if obj.data().1 < std::mem::size_of::<T>() {
            return Err(Error::Corrupt);
        }
        Ok(Value {
            obj,
            wait: WaitStrategy::default(),
            _t: PhantomData,
        })
    }

    fn ptr(&self) -> *mut u8 {
        self.obj.data().0
    }

    fn read_unlocked(&self) -> T {
        let mut v = T::zeroed();
        // SAFETY: the data area holds a T (checked on open), mapped while `self` lives.
        unsafe { read_shared(self.ptr(), bytemuck::bytes_of_mut(&mut v)) };
        v
    }

    /// Reads it (under the lock).
    pub fn get(&self) -> Result<T> {
        self.get_at(Deadline::NEVER)
    }

    /// [`get`](Self::get), giving up with [`Error::Timeout`] if the lock is not free within
    /// `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_at(Deadline::after(Some(timeout)))
    }

    fn get_at(&self, deadline: Deadline) -> Result<T> {
        let _held = Unlock(lock(&self.obj, deadline, self.wait)?.0);
        Ok(self.read_unlocked())
    }

    /// Writes it (under the lock).
    pub fn set(&self, v: T) -> Result<()> {
        self.set_at(v, Deadline::NEVER)
    }

    /// [`set`](Self::set), giving up with [`Error::Timeout`] (and writing nothing) if the lock is
    /// not free within `timeout`.
    pub fn set_timeout(&self, v: T, timeout: Duration) -> Result<()> {
        self.set_at(v, Deadline::after(Some(timeout)))
    }

    fn set_at(&self, v: T, deadline: Deadline) -> Result<()> {
        let _held = Unlock(lock(&self.obj, deadline, self.wait)?.0);
        // SAFETY: the data area holds a T (checked on open), mapped while `self` lives.
        unsafe { write_shared(self.ptr(), bytemuck::bytes_of(&v)) };
        Ok(())
    }

    /// Takes the lock and gives a copy of the value to read and change until the guard is dropped
    /// (changes are written back then).
    pub fn get_lock(&self) -> Result<ValueGuard<'_, T>> {
        self.get_lock_at(Deadline::NEVER)
    }

    /// [`get_lock`](Self::get_lock), giving up with [`Error::Timeout`] after `timeout`.
    pub fn get_lock_timeout(&self, timeout: Duration) -> Result<ValueGuard<'_, T>> {
        self.get_lock_at(Deadline::after(Some(timeout)))
    }

    fn get_lock_at(&self, deadline: Deadline) -> Result<ValueGuard<'_, T>> {
        let copy = Box::new(T::zeroed());
        // SAFETY: the data area holds a T (checked on open), mapped while `self` lives; T is Pod.
        unsafe { lock_copy(&self.obj, self.ptr(), copy, deadline, self.wait) }
    }
}

mod sealed {
    /// Only this crate implements [`AtomicInt`](super::AtomicInt): `Value` relies on `Atomic` being
    /// the atomic type of `Self`'s size and alignment.
    pub trait Sealed {}
}

/// Integers a [`Value`] can update atomically, without its lock (sealed: the integer types of 32
/// and 64 bits).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, Value};
/// let hits = Value::new(0u32)?;
/// let kids = (0..4)
///     .map(|_| {
///         let h = hits.clone();
///         Process::fork(move || {
///             for _ in 0..100 {
///                 h.fetch_add(1);
///             }
///         })
///     })
///     .collect::<shmwire::Result<Vec<_>>>()?;
/// for k in kids {
///     assert!(k.join()?.success());
/// }
/// assert_eq!(hits.load(), 400);
/// assert_eq!(hits.compare_exchange(400, 0), Ok(400));
/// # Ok(()) }
/// ```
pub trait AtomicInt: Pod + sealed::Sealed {
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
        impl sealed::Sealed for $t {}
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
        // atomic counterpart (`AtomicInt` is sealed); a reference to an atomic may alias memory
        // that other processes write.
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
