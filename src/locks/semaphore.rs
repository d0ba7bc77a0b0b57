//! `Semaphore` and `BoundedSemaphore`: a counter in shared memory; `acquire` takes one (waiting while
//! it is zero), `release` gives one back. A process that dies holding some does not give them back
//! (as with POSIX semaphores): there is no holder to track.

use crate::error::{Error, Result};
use crate::segment::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::wait::eventcount::EventCount;
use crate::wait::{Deadline, Spinner, WaitStrategy, block_on};
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
/// let sem = shmwire::Semaphore::new(2)?;
/// sem.acquire()?;
/// sem.acquire()?;
/// assert!(!sem.try_acquire()?);
/// sem.release()?;
/// assert_eq!(sem.value(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    obj: Object<SemBlock>,
}

/// A semaphore whose `release` past its initial value is an error: Python's `BoundedSemaphore`.
#[derive(Clone, Debug)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish()
    }
}

impl Semaphore {
    fn make(value: u32, bound: u64, name: Option<&str>) -> Result<Semaphore> {
        let mut p = [0u64; 6];
        p[PARAM_BOUND] = bound;
        // The count is in place before a named semaphore can be opened (published with it).
        let obj: Object<SemBlock> = Object::create_with(
            Kind::Sync,
            fingerprint_of::<SemTag>(),
            p,
            0,
            name,
            &|b: &SemBlock, _| b.value.store(value, Ordering::Relaxed),
        )?;
        Ok(Semaphore { obj })
    }

    /// A semaphore holding `value`, shared with children forked later.
    pub fn new(value: u32) -> Result<Semaphore> {
        Self::make(value, UNBOUNDED, None)
    }

    /// A semaphore named `name`, holding `value`.
    pub fn create(name: &str, value: u32) -> Result<Semaphore> {
        Self::make(value, UNBOUNDED, Some(name))
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: [`create`](Self::create), raising `signal` in this process as soon as the object
    /// can be opened by name.
    pub fn __create_interrupted(name: &str, value: u32, signal: i32) -> Result<Semaphore> {
        crate::segment::object::hooks::raise_after_publish(signal);
        Self::create(name, value)
    }

    /// Opens the semaphore named `name`.
    pub fn open(name: &str) -> Result<Semaphore> {
        Ok(Semaphore {
            obj: Object::open(Kind::Sync, fingerprint_of::<SemTag>(), name)?,
        })
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

    fn acquire_at(&self, deadline: Deadline) -> Result<()> {
        self.obj.me()?;
        let mut spinner = Spinner::new(WaitStrategy::Adaptive);
        block_on(
            &mut spinner,
            false,
            &self.obj.block().ec,
            deadline,
            || Ok(self.try_take().then_some(())),
            || Ok(()),
        )
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
        Ok(BoundedSemaphore {
            inner: Semaphore::make(value, u64::from(value), None)?,
        })
    }

    /// A bounded semaphore named `name`.
    pub fn create(name: &str, value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            inner: Semaphore::make(value, u64::from(value), Some(name))?,
        })
    }

    /// Opens the bounded semaphore named `name`.
    pub fn open(name: &str) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            inner: Semaphore::open(name)?,
        })
    }

    /// Takes one, waiting while none is left.
    pub fn acquire(&self) -> Result<()> {
        self.inner.acquire()
    }

    /// [`acquire`](Self::acquire) with a timeout.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.inner.acquire_timeout(timeout)
    }

    /// Takes one if there is one.
    pub fn try_acquire(&self) -> Result<bool> {
        self.inner.try_acquire()
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
