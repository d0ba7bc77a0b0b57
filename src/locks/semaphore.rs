//! `Semaphore` and `BoundedSemaphore`: a counter in shared memory; `acquire` takes one (waiting while
//! it is zero), `release` gives one back; `acquire_permit` takes one as a [`SemaphorePermit`] that
//! gives it back when dropped. A process that dies holding some does not give them back (as with
//! POSIX semaphores): there is no holder to track, so a waiter has nobody to probe either, and
//! sleeps until a release wakes it or its deadline passes.

use crate::error::{Error, Result};
use crate::locks::builder::{Built, SyncBuilder};
use crate::segment::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::wait::eventcount::EventCount;
use crate::wait::{Deadline, Spinner, WaitStrategy, block_on_unprobed};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[repr(C)]
pub(crate) struct SemBlock {
    value: AtomicU32,
    ec: EventCount,
}
// SAFETY: repr(C), all atomics.
unsafe impl SharedBlock for SemBlock {}

struct SemTag;
const PARAM_BOUND: usize = 0;
const UNBOUNDED: u64 = u64::MAX;

/// A counting semaphore shared by processes: Python's `multiprocessing.Semaphore`.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, Semaphore};
/// let sem = Semaphore::new(2)?;
/// sem.acquire()?;
/// let permit = sem.acquire_permit()?; // given back when dropped
/// assert!(!sem.try_acquire()?);
/// let s = sem.clone();
/// let p = Process::fork(move || s.release().unwrap())?;
/// assert!(p.join()?.success());
/// assert_eq!(sem.value(), 1);
/// drop(permit);
/// assert_eq!(sem.value(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    obj: Object<SemBlock>,
    wait: WaitStrategy,
}

/// A semaphore whose `release` past its initial value is an error: Python's `BoundedSemaphore`.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{BoundedSemaphore, Error, Process};
/// let sem = BoundedSemaphore::new(1)?;
/// assert!(matches!(sem.release(), Err(Error::CalledTooOften))); // past its initial value
/// let permit = sem.acquire_permit()?;
/// let s = sem.clone();
/// let p = Process::fork(move || assert!(s.try_acquire_permit().unwrap().is_none()))?;
/// assert!(p.join()?.success());
/// drop(permit);
/// assert_eq!(sem.value(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

/// One unit taken from a [`Semaphore`] or [`BoundedSemaphore`], given back when dropped (from any
/// thread; a process that dies holding one does not give it back).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, Semaphore};
/// use std::time::Duration;
/// let sem = Semaphore::new(1)?;
/// let s = sem.clone();
/// let p = Process::fork(move || {
///     let _permit = s.acquire_permit().unwrap();
///     std::thread::sleep(Duration::from_millis(20));
/// })?; // the child's permit is given back when it drops
/// assert!(p.join()?.success());
/// let permit = sem.acquire_permit_timeout(Duration::from_secs(10))?;
/// assert_eq!(sem.value(), 0);
/// permit.forget(); // keep it taken: release() gives it back later
/// sem.release()?;
/// assert_eq!(sem.value(), 1);
/// # Ok(()) }
/// ```
#[must_use = "the permit is given back as soon as it is dropped"]
#[derive(Debug)]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
}

impl SemaphorePermit<'_> {
    /// Keeps the unit taken: the permit is consumed without giving it back (a later
    /// [`Semaphore::release`] does).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        // Only a `BoundedSemaphore` released past its bound by someone else refuses; the count is
        // then full anyway.
        let _ = self.sem.release();
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish()
    }
}

impl Built for Semaphore {
    type Init = u32;
}

impl SyncBuilder<Semaphore> {
    /// Creates the semaphore.
    pub fn build(self) -> Result<Semaphore> {
        Ok(Semaphore {
            obj: self.create(|name| Semaphore::block(self.init, UNBOUNDED, name))?,
            wait: self.wait,
        })
    }
}

impl Built for BoundedSemaphore {
    type Init = u32;
}

impl SyncBuilder<BoundedSemaphore> {
    /// Creates the bounded semaphore.
    pub fn build(self) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            inner: Semaphore {
                obj: self.create(|name| Semaphore::block(self.init, u64::from(self.init), name))?,
                wait: self.wait,
            },
        })
    }
}

impl Semaphore {
    /// The shared block of a semaphore holding `value`, at most `bound`.
    fn block(value: u32, bound: u64, name: Option<&str>) -> Result<Object<SemBlock>> {
        let mut p = [0u64; 6];
        p[PARAM_BOUND] = bound;
        // The count is in place before a named semaphore can be opened (published with it).
        Object::create_with(
            Kind::Sync,
            fingerprint_of::<SemTag>(),
            p,
            0,
            name,
            &|b: &SemBlock, _| b.value.store(value, Ordering::Relaxed),
        )
    }

    /// A semaphore holding `value`, shared with children forked later.
    pub fn new(value: u32) -> Result<Semaphore> {
        Self::builder(value).build()
    }

    /// A semaphore named `name`, holding `value`.
    pub fn create(name: &str, value: u32) -> Result<Semaphore> {
        Self::builder(value).name(name).build()
    }

    /// Options for a semaphore holding `value`: a name, a wait strategy (see [`SyncBuilder`]).
    pub fn builder(value: u32) -> SyncBuilder<Semaphore> {
        SyncBuilder::new(value)
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: [`create`](Self::create), raising `signal` in this process as soon as the object
    /// can be opened by name.
    pub fn __create_interrupted(name: &str, value: u32, signal: i32) -> Result<Semaphore> {
        crate::segment::object::hooks::raise_after_publish(signal);
        Self::create(name, value)
    }

    /// Opens the semaphore named `name`, with the default wait strategy.
    pub fn open(name: &str) -> Result<Semaphore> {
        Ok(Semaphore {
            obj: Object::open(Kind::Sync, fingerprint_of::<SemTag>(), name)?,
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

    fn try_take(&self) -> bool {
        let v = &self.obj.block().value;
        let mut cur = v.load(Ordering::Relaxed);
        while cur > 0 {
            match v.compare_exchange_weak(cur, cur - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Takes one, waiting while none is left.
    pub fn acquire(&self) -> Result<()> {
        self.acquire_at(Deadline::NEVER)
    }

    /// [`acquire`](Self::acquire), giving up with [`Error::Timeout`] after `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.acquire_at(Deadline::after(Some(timeout)))
    }

    /// Takes one if there is one: `Ok(false)` otherwise.
    pub fn try_acquire(&self) -> Result<bool> {
        self.obj.me()?;
        Ok(self.try_take())
    }

    /// Takes one, waiting while none is left, as a permit that gives it back when dropped.
    pub fn acquire_permit(&self) -> Result<SemaphorePermit<'_>> {
        self.acquire()?;
        Ok(SemaphorePermit { sem: self })
    }

    /// [`acquire_permit`](Self::acquire_permit), giving up with [`Error::Timeout`] after `timeout`.
    pub fn acquire_permit_timeout(&self, timeout: Duration) -> Result<SemaphorePermit<'_>> {
        self.acquire_timeout(timeout)?;
        Ok(SemaphorePermit { sem: self })
    }

    /// Takes one as a permit if there is one: `Ok(None)` otherwise.
    pub fn try_acquire_permit(&self) -> Result<Option<SemaphorePermit<'_>>> {
        // `then`, not `then_some`: a permit made and dropped would give back a unit never taken.
        Ok(self.try_acquire()?.then(|| SemaphorePermit { sem: self }))
    }

    fn acquire_at(&self, deadline: Deadline) -> Result<()> {
        self.obj.me()?;
        let mut spinner = Spinner::new(self.wait);
        block_on_unprobed(&mut spinner, false, &self.obj.block().ec, deadline, || {
            Ok(self.try_take().then_some(()))
        })
    }

    /// Gives one back (and wakes a waiter).
    pub fn release(&self) -> Result<()> {
        self.obj.me()?;
        let bound = self.obj.params()[PARAM_BOUND];
        let v = &self.obj.block().value;
        let mut cur = v.load(Ordering::Relaxed);
        loop {
            if u64::from(cur) >= bound || cur == u32::MAX {
                return Err(Error::CalledTooOften); // released more times than acquired
            }
            match v.compare_exchange_weak(cur, cur + 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let _ = self.obj.block().ec.notify();
        Ok(())
    }

    /// The current count (a snapshot).
    pub fn value(&self) -> u32 {
        self.obj.block().value.load(Ordering::Acquire)
    }
}

impl BoundedSemaphore {
    /// A bounded semaphore holding (and bounded by) `value`.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Self::builder(value).build()
    }

    /// A bounded semaphore named `name`.
    pub fn create(name: &str, value: u32) -> Result<BoundedSemaphore> {
        Self::builder(value).name(name).build()
    }

    /// Options for a bounded semaphore holding (and bounded by) `value`: a name, a wait strategy
    /// (see [`SyncBuilder`]).
    pub fn builder(value: u32) -> SyncBuilder<BoundedSemaphore> {
        SyncBuilder::new(value)
    }

    /// How this handle's blocked calls wait.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.inner.wait_strategy()
    }

    /// Changes how this handle's blocked calls wait (its clones keep theirs).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.inner.set_wait_strategy(wait);
    }

    /// Opens the bounded semaphore named `name` ([`Error::Incompatible`] if it is a plain
    /// [`Semaphore`]), with the default wait strategy.
    pub fn open(name: &str) -> Result<BoundedSemaphore> {
        let inner = Semaphore::open(name)?;
        if inner.obj.params()[PARAM_BOUND] == UNBOUNDED {
            return Err(Error::Incompatible); // a plain Semaphore: it has no bound to keep
        }
        Ok(BoundedSemaphore { inner })
    }

    /// Takes one, waiting while none is left.
    pub fn acquire(&self) -> Result<()> {
        self.inner.acquire()
    }

    /// [`acquire`](Self::acquire), giving up with [`Error::Timeout`] after `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.inner.acquire_timeout(timeout)
    }

    /// Takes one if there is one.
    pub fn try_acquire(&self) -> Result<bool> {
        self.inner.try_acquire()
    }

    /// Takes one, waiting while none is left, as a permit that gives it back when dropped.
    pub fn acquire_permit(&self) -> Result<SemaphorePermit<'_>> {
        self.inner.acquire_permit()
    }

    /// [`acquire_permit`](Self::acquire_permit), giving up with [`Error::Timeout`] after `timeout`.
    pub fn acquire_permit_timeout(&self, timeout: Duration) -> Result<SemaphorePermit<'_>> {
        self.inner.acquire_permit_timeout(timeout)
    }

    /// Takes one as a permit if there is one: `Ok(None)` otherwise.
    pub fn try_acquire_permit(&self) -> Result<Option<SemaphorePermit<'_>>> {
        self.inner.try_acquire_permit()
    }

    /// Gives one back; past the initial value it is [`Error::CalledTooOften`] and changes nothing.
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }

    /// The current count.
    pub fn value(&self) -> u32 {
        self.inner.value()
    }
}
