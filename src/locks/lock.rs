//! `Lock` and `RLock`: cross-process mutexes that survive their holder's death.
//!
//! A process that dies holding one never freezes the others: the next `acquire()` returns a guard
//! whose [`owner_died`](LockGuard::owner_died) is `true`, and later acquirers keep hearing so until one
//! calls [`mark_consistent`](LockGuard::mark_consistent) (the data the lock guarded may be half
//! written: repair it first). A holder that is only stopped (SIGSTOP) is alive: others wait, and with
//! a timeout they time out; nothing is ever stolen.

use crate::error::{Error, Result};
use crate::locks::builder::{Built, SyncBuilder};
use crate::segment::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::wait::mutex::RawMutex;
use crate::wait::{Deadline, WaitStrategy};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[repr(C)]
pub(crate) struct LockBlock {
    pub(crate) m: RawMutex,
}
// SAFETY: repr(C), all atomics.
unsafe impl SharedBlock for LockBlock {}

struct LockTag;
struct RLockTag;

/// A mutual-exclusion lock shared by processes (and threads): Python's `multiprocessing.Lock`.
///
/// `Clone + Send + Sync`; a forked child shares it, and other processes can open it by name.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Lock, Process, Value};
/// let lock = Lock::new()?;
/// let count = Value::new(0u64)?;
/// let mut kids = Vec::new();
/// for _ in 0..4 {
///     let (lock, count) = (lock.clone(), count.clone());
///     kids.push(Process::fork(move || {
///         for _ in 0..100 {
///             let _g = lock.acquire().unwrap();
///             let v = count.get().unwrap();
///             count.set(v + 1).unwrap();
///         }
///     })?);
/// }
/// for k in kids {
///     assert!(k.join()?.success());
/// }
/// assert_eq!(count.get()?, 400);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lock {
    obj: Object<LockBlock>,
    wait: WaitStrategy,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("held", &(self.obj.block().m.holder() != 0))
            .finish()
    }
}

/// Holds a [`Lock`]; dropping it releases the lock.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Lock, Process};
/// let lock = Lock::new()?;
/// let g = lock.acquire()?;
/// assert!(!g.owner_died());
/// let l = lock.clone();
/// let p = Process::fork(move || assert!(l.try_acquire().unwrap().is_none()))?;
/// assert!(p.join()?.success());
/// g.release(); // or drop it
/// assert!(!lock.is_locked());
/// # Ok(()) }
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    owner_died: std::cell::Cell<bool>,
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

impl Built for Lock {
    type Init = ();
}

impl SyncBuilder<Lock> {
    /// Creates the lock.
    pub fn build(self) -> Result<Lock> {
        let obj = self.create(|name| {
            Object::create(Kind::Sync, fingerprint_of::<LockTag>(), [0; 6], 0, name)
        })?;
        Ok(Lock {
            obj,
            wait: self.wait,
        })
    }
}

impl Lock {
    /// A new lock, shared with children forked later.
    pub fn new() -> Result<Lock> {
        Self::builder().build()
    }

    /// A new lock named `name`, which other processes of this user can [`open`](Self::open).
    pub fn create(name: &str) -> Result<Lock> {
        Self::builder().name(name).build()
    }

    /// Options: a name, a wait strategy (see [`SyncBuilder`]).
    pub fn builder() -> SyncBuilder<Lock> {
        SyncBuilder::new(())
    }

    /// Opens the lock named `name` (`Incompatible` if that name is something else), with the default
    /// wait strategy.
    pub fn open(name: &str) -> Result<Lock> {
        Ok(Lock {
            obj: Object::open(Kind::Sync, fingerprint_of::<LockTag>(), name)?,
            wait: WaitStrategy::default(),
        })
    }

    /// How this handle's blocked calls wait.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Changes how this handle's blocked calls wait (its clones keep theirs).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Waits for the lock and takes it.
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.acquire_at(Deadline::NEVER)
    }

    /// [`acquire`](Self::acquire), giving up with [`Error::Timeout`] after `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.acquire_at(Deadline::after(Some(timeout)))
    }

    /// Takes the lock if it is free: `Ok(None)` if someone holds it.
    pub fn try_acquire(&self) -> Result<Option<LockGuard<'_>>> {
        let me = self.obj.me()?;
        let m = &self.obj.block().m;
        if !m.try_lock(me) && !m.take_over_if_holder_died(self.obj.segment(), me)? {
            return Ok(None);
        }
        Ok(Some(LockGuard {
            lock: self,
            owner_died: std::cell::Cell::new(m.is_inconsistent()),
        }))
    }

    fn acquire_at(&self, deadline: Deadline) -> Result<LockGuard<'_>> {
        let me = self.obj.me()?;
        let m = &self.obj.block().m;
        m.lock_with(self.obj.segment(), me, deadline, self.wait)?;
        Ok(LockGuard {
            lock: self,
            owner_died: std::cell::Cell::new(m.is_inconsistent()),
        })
    }

    /// Whether some process holds it (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.obj.block().m.holder() != 0
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        &self.obj.block().m
    }
}

impl LockGuard<'_> {
    /// Whether a previous holder died holding the lock, since the last
    /// [`mark_consistent`](Self::mark_consistent): the data it guarded may need repair.
    pub fn owner_died(&self) -> bool {
        self.owner_died.get()
    }

    /// Declares the guarded data repaired: later acquirers no longer hear that an owner died.
    pub fn mark_consistent(&self) {
        self.lock.raw().mark_consistent();
        self.owner_died.set(false);
    }

    /// Releases the lock (as dropping the guard does).
    pub fn release(self) {}
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.raw().unlock();
    }
}

// ---- RLock ------------------------------------------------------------------------------------------

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);
thread_local! {
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

/// A token for the calling thread, unique within this process.
fn thread_token() -> u64 {
    THREAD.with(|t| {
        if t.get() == 0 {
            t.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    })
}

/// A re-entrant lock: the holding thread may acquire it again; it is free once released as many
/// times. Python's `multiprocessing.RLock`.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Error, RLock};
/// let lock = RLock::new()?;
/// let outer = lock.acquire()?;
/// let inner = lock.acquire()?; // the same thread: fine
/// drop(inner);
/// drop(outer);
/// assert!(matches!(lock.release(), Err(Error::NotOwner)));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RLock {
    obj: Object<LockBlock>,
    wait: WaitStrategy,
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RLock")
            .field("held", &(self.obj.block().m.holder() != 0))
            .finish()
    }
}

/// Holds one level of an [`RLock`]; dropping it releases that level.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Error, Process, RLock};
/// use std::time::Duration;
/// let lock = RLock::new()?;
/// let outer = lock.acquire()?;
/// let inner = lock.acquire()?;
/// assert_eq!(lock.levels(), 2);
/// drop(inner);
/// let l = lock.clone();
/// let p = Process::fork(move || {
///     // Another process waits while any level is held.
///     assert!(matches!(l.acquire_timeout(Duration::from_millis(20)), Err(Error::Timeout)));
/// })?;
/// assert!(p.join()?.success());
/// drop(outer);
/// assert_eq!(lock.levels(), 0);
/// # Ok(()) }
/// ```
///
/// The lock belongs to the thread that took it, so the guard stays on that thread (it is not
/// `Send`: dropped on another thread it could not release the lock):
///
/// ```compile_fail,E0277
/// let lock = shmwire::RLock::new().unwrap();
/// let g = lock.acquire().unwrap();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(g)); // error: `RLockGuard` cannot be sent between threads
/// });
/// ```
#[must_use = "the level is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    owner_died: std::cell::Cell<bool>,
    /// Not `Send` (nor `Sync`): the level belongs to this thread.
    _thread: PhantomData<*const ()>,
}

impl Built for RLock {
    type Init = ();
}

impl SyncBuilder<RLock> {
    /// Creates the re-entrant lock.
    pub fn build(self) -> Result<RLock> {
        Ok(RLock {
            obj: self.create(|name| {
                Object::create(Kind::Sync, fingerprint_of::<RLockTag>(), [0; 6], 0, name)
            })?,
            wait: self.wait,
        })
    }
}

impl RLock {
    /// A new re-entrant lock, shared with children forked later.
    pub fn new() -> Result<RLock> {
        Self::builder().build()
    }

    /// A new re-entrant lock named `name`.
    pub fn create(name: &str) -> Result<RLock> {
        Self::builder().name(name).build()
    }

    /// Options: a name, a wait strategy (see [`SyncBuilder`]).
    pub fn builder() -> SyncBuilder<RLock> {
        SyncBuilder::new(())
    }

    /// Opens the re-entrant lock named `name`, with the default wait strategy.
    pub fn open(name: &str) -> Result<RLock> {
        Ok(RLock {
            obj: Object::open(Kind::Sync, fingerprint_of::<RLockTag>(), name)?,
            wait: WaitStrategy::default(),
        })
    }

    /// How this handle's blocked calls wait.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Changes how this handle's blocked calls wait (its clones keep theirs).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Takes the lock, or one more level of it if this thread holds it.
    pub fn acquire(&self) -> Result<RLockGuard<'_>> {
        self.acquire_at(Deadline::NEVER)
    }

    /// [`acquire`](Self::acquire), giving up with [`Error::Timeout`] after `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        self.acquire_at(Deadline::after(Some(timeout)))
    }

    /// Takes the lock (or one more level of it) if that is possible now: `Ok(None)` if another
    /// thread or process holds it.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let l = shmwire::RLock::new()?;
    /// let g = l.try_acquire()?.expect("free");
    /// let again = l.try_acquire()?.expect("ours: one more level");
    /// assert_eq!(l.levels(), 2);
    /// drop((again, g));
    /// # Ok(()) }
    /// ```
    pub fn try_acquire(&self) -> Result<Option<RLockGuard<'_>>> {
        match self.acquire_at(Deadline::after(Some(Duration::ZERO))) {
            Ok(g) => Ok(Some(g)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn acquire_at(&self, deadline: Deadline) -> Result<RLockGuard<'_>> {
        let me = self.obj.me()?;
        let m = &self.obj.block().m;
        let thread = thread_token();
        if m.holder() == me && m.thread.load(Ordering::Relaxed) == thread {
            m.count.fetch_add(1, Ordering::Relaxed);
            return Ok(RLockGuard {
                lock: self,
                owner_died: std::cell::Cell::new(m.is_inconsistent()),
                _thread: PhantomData,
            });
        }
        m.lock_with(self.obj.segment(), me, deadline, self.wait)?;
        m.thread.store(thread, Ordering::Relaxed);
        m.count.store(1, Ordering::Relaxed);
        Ok(RLockGuard {
            lock: self,
            owner_died: std::cell::Cell::new(m.is_inconsistent()),
            _thread: PhantomData,
        })
    }

    /// Releases one level. [`Error::NotOwner`] if this thread does not hold the lock.
    pub fn release(&self) -> Result<()> {
        let me = self.obj.me()?;
        let m = &self.obj.block().m;
        if m.holder() != me || m.thread.load(Ordering::Relaxed) != thread_token() {
            return Err(Error::NotOwner);
        }
        if m.count.fetch_sub(1, Ordering::Relaxed) <= 1 {
            m.count.store(0, Ordering::Relaxed);
            m.thread.store(0, Ordering::Relaxed);
            m.unlock();
        }
        Ok(())
    }

    /// How many levels this thread holds (0 if it does not hold the lock).
    pub fn levels(&self) -> u32 {
        let m = &self.obj.block().m;
        match self.obj.me() {
            Ok(me) if m.holder() == me && m.thread.load(Ordering::Relaxed) == thread_token() => {
                m.count.load(Ordering::Relaxed)
            }
            _ => 0,
        }
    }
}

impl RLockGuard<'_> {
    /// Whether a previous holder died holding the lock (see [`LockGuard::owner_died`]).
    pub fn owner_died(&self) -> bool {
        self.owner_died.get()
    }

    /// Declares the guarded data repaired.
    pub fn mark_consistent(&self) {
        self.lock.obj.block().m.mark_consistent();
        self.owner_died.set(false);
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}
