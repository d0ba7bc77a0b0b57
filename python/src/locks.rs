//! Lock, RLock, Semaphore (bounded or not), Event, Condition and Barrier, each named so that a child
//! of any start method opens it by name. Python's locks are not guards: a `Lock` keeps its guard
//! here between `acquire` and `release`.

use crate::{blocking, deadline, none_on_timeout, to_py};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use shmwire::{
    Barrier, BoundedSemaphore, Condition, Error, Event, Lock, LockGuard, RLock, Semaphore,
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `acquire(timeout)` for any lock kind: `try_once` never waits, `wait` waits a slice.
fn acquire_with<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    wait: impl FnMut(Duration) -> shmwire::Result<T> + Send,
) -> PyResult<Option<T>> {
    let mut wait = wait;
    blocking(py, deadline(timeout)?, |slice| none_on_timeout(wait(slice)))
}

// ---- Lock -----------------------------------------------------------------------------------------

/// A named `Lock`; the guard of the current hold is kept here (dropped before the lock it borrows).
#[pyclass(module = "shmwire._shmwire", name = "RawLock", frozen)]
pub(crate) struct RawLock {
    guard: Mutex<Option<LockGuard<'static>>>,
    lock: Arc<Lock>,
    name: String,
}

impl RawLock {
    fn lock_ref(&self) -> &'static Lock {
        // SAFETY: the `Arc` in `self.lock` keeps the `Lock` at this address as long as `self` lives,
        // and every `'static` borrow made here is held only by `self.guard`, which is declared first
        // and so dropped before `self.lock`; `release` drops it earlier still.
        unsafe { &*Arc::as_ptr(&self.lock) }
    }
}

#[pymethods]
impl RawLock {
    #[staticmethod]
    fn create(name: String) -> PyResult<RawLock> {
        let lock = Lock::create(&name).map_err(to_py)?;
        Ok(RawLock {
            guard: Mutex::new(None),
            lock: Arc::new(lock),
            name,
        })
    }

    #[staticmethod]
    fn open(name: String) -> PyResult<RawLock> {
        let lock = Lock::open(&name).map_err(to_py)?;
        Ok(RawLock {
            guard: Mutex::new(None),
            lock: Arc::new(lock),
            name,
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Takes the lock; False if the timeout (seconds; 0: don't wait; None: for ever) ran out. A
    /// holder that died is taken over (its state marked consistent again).
    #[pyo3(signature = (timeout=None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let lock = self.lock_ref();
        // First without letting go of the GIL: an uncontended acquire is one CAS.
        let mut g = lock.try_acquire().map_err(to_py)?;
        if g.is_none() && !timeout.is_some_and(|t| t <= 0.0) {
            g = acquire_with(py, timeout, |slice| lock.acquire_timeout(slice))?;
        }
        match g {
            Some(g) => {
                if g.owner_died() {
                    g.mark_consistent();
                }
                *locked(&self.guard) = Some(g);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn release(&self) -> PyResult<()> {
        match locked(&self.guard).take() {
            Some(g) => {
                g.release();
                Ok(())
            }
            None => Err(PyValueError::new_err(
                "semaphore or lock released too many times",
            )),
        }
    }

    /// Whether this object holds the lock (took it and has not released it): a `Condition` over
    /// it checks that before `wait` and `notify`.
    fn held(&self) -> bool {
        locked(&self.guard).is_some()
    }
}

// ---- RLock ----------------------------------------------------------------------------------------

/// A named `RLock`: levels are counted in shared memory per thread; the guards are forgotten and
/// `release` gives one level back.
#[pyclass(module = "shmwire._shmwire", name = "RawRLock", frozen)]
pub(crate) struct RawRLock {
    lock: RLock,
    name: String,
}

#[pymethods]
impl RawRLock {
    #[staticmethod]
    fn create(name: String) -> PyResult<RawRLock> {
        Ok(RawRLock {
            lock: RLock::create(&name).map_err(to_py)?,
            name,
        })
    }

    #[staticmethod]
    fn open(name: String) -> PyResult<RawRLock> {
        Ok(RawRLock {
            lock: RLock::open(&name).map_err(to_py)?,
            name,
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[pyo3(signature = (timeout=None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let lock = &self.lock;
        // The guard must be made and forgotten on the calling thread (the level is this thread's):
        // `allow_threads` runs the closure on this thread.
        let take = |slice: Duration| -> shmwire::Result<()> {
            let g = lock.acquire_timeout(slice)?;
            if g.owner_died() {
                g.mark_consistent();
            }
            std::mem::forget(g); // released by `release`
            Ok(())
        };
        if timeout.is_some_and(|t| t <= 0.0) {
            return match lock.try_acquire().map_err(to_py)? {
                Some(g) => {
                    if g.owner_died() {
                        g.mark_consistent();
                    }
                    std::mem::forget(g);
                    Ok(true)
                }
                None => Ok(false),
            };
        }
        Ok(acquire_with(py, timeout, take)?.is_some())
    }

    fn release(&self) -> PyResult<()> {
        self.lock.release().map_err(|e| match e {
            Error::NotOwner => PyRuntimeError::new_err("cannot release un-acquired lock"),
            e => to_py(e),
        })
    }

    fn levels(&self) -> u32 {
        self.lock.levels()
    }
}

// ---- Semaphore ------------------------------------------------------------------------------------

enum Sem {
    Plain(Semaphore),
    Bounded(BoundedSemaphore),
}

/// A named `Semaphore` or `BoundedSemaphore`.
#[pyclass(module = "shmwire._shmwire", name = "RawSemaphore", frozen)]
pub(crate) struct RawSemaphore {
    sem: Sem,
    name: String,
}

impl RawSemaphore {
    fn acquire_timeout(&self, d: Duration) -> shmwire::Result<()> {
        match &self.sem {
            Sem::Plain(s) => s.acquire_timeout(d),
            Sem::Bounded(s) => s.acquire_timeout(d),
        }
    }
}

#[pymethods]
impl RawSemaphore {
    #[staticmethod]
    fn create(name: String, value: u32, bounded: bool) -> PyResult<RawSemaphore> {
        let sem = if bounded {
            Sem::Bounded(BoundedSemaphore::create(&name, value).map_err(to_py)?)
        } else {
            Sem::Plain(Semaphore::create(&name, value).map_err(to_py)?)
        };
        Ok(RawSemaphore { sem, name })
    }

    #[staticmethod]
    fn open(name: String, bounded: bool) -> PyResult<RawSemaphore> {
        let sem = if bounded {
            Sem::Bounded(BoundedSemaphore::open(&name).map_err(to_py)?)
        } else {
            Sem::Plain(Semaphore::open(&name).map_err(to_py)?)
        };
        Ok(RawSemaphore { sem, name })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[pyo3(signature = (timeout=None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if timeout.is_some_and(|t| t <= 0.0) {
            return match &self.sem {
                Sem::Plain(s) => s.try_acquire(),
                Sem::Bounded(s) => s.try_acquire(),
            }
            .map_err(to_py);
        }
        Ok(acquire_with(py, timeout, |slice| self.acquire_timeout(slice))?.is_some())
    }

    fn release(&self) -> PyResult<()> {
        match &self.sem {
            Sem::Plain(s) => s.release(),
            Sem::Bounded(s) => s.release(),
        }
        .map_err(|e| match e {
            Error::CalledTooOften => {
                PyValueError::new_err("semaphore or lock released too many times")
            }
            e => to_py(e),
        })
    }

    fn get_value(&self) -> u32 {
        match &self.sem {
            Sem::Plain(s) => s.value(),
            Sem::Bounded(s) => s.value(),
        }
    }
}

// ---- Event ----------------------------------------------------------------------------------------

#[pyclass(module = "shmwire._shmwire", name = "RawEvent", frozen)]
pub(crate) struct RawEvent {
    ev: Event,
    name: String,
}

#[pymethods]
impl RawEvent {
    #[staticmethod]
    fn create(name: String) -> PyResult<RawEvent> {
        Ok(RawEvent {
            ev: Event::create(&name).map_err(to_py)?,
            name,
        })
    }

    #[staticmethod]
    fn open(name: String) -> PyResult<RawEvent> {
        Ok(RawEvent {
            ev: Event::open(&name).map_err(to_py)?,
            name,
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    fn set(&self) -> PyResult<()> {
        self.ev.set().map_err(to_py)
    }

    fn clear(&self) -> PyResult<()> {
        self.ev.clear().map_err(to_py)
    }

    fn is_set(&self) -> bool {
        self.ev.is_set()
    }

    /// Waits for the flag; returns it as found when the timeout runs out (as Python's does).
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if self.ev.is_set() {
            return Ok(true);
        }
        if timeout.is_some_and(|t| t <= 0.0) {
            return Ok(false);
        }
        let ev = &self.ev;
        let got = blocking(py, deadline(timeout)?, |slice| {
            ev.wait_timeout(slice).map(|set| set.then_some(()))
        })?;
        Ok(got.is_some() || self.ev.is_set())
    }
}

// ---- Condition ------------------------------------------------------------------------------------

/// A named `Condition` (with its own lock); the guard of the current hold is kept here.
#[pyclass(module = "shmwire._shmwire", name = "RawCondition", frozen)]
pub(crate) struct RawCondition {
    guard: Mutex<Option<LockGuard<'static>>>,
    cond: Arc<Condition>,
    name: String,
}

impl RawCondition {
    fn cond_ref(&self) -> &'static Condition {
        // SAFETY: as for `RawLock::lock_ref`: the `Arc` keeps the `Condition` in place while `self`
        // lives, and the guards borrowing it live only in `self.guard`, dropped first.
        unsafe { &*Arc::as_ptr(&self.cond) }
    }

    fn take_guard(&self) -> PyResult<LockGuard<'static>> {
        locked(&self.guard)
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("cannot wait on un-acquired lock"))
    }
}

#[pymethods]
impl RawCondition {
    #[staticmethod]
    fn create(name: String) -> PyResult<RawCondition> {
        let cond = Condition::create(&name).map_err(to_py)?;
        Ok(RawCondition {
            guard: Mutex::new(None),
            cond: Arc::new(cond),
            name,
        })
    }

    #[staticmethod]
    fn open(name: String) -> PyResult<RawCondition> {
        let cond = Condition::open(&name).map_err(to_py)?;
        Ok(RawCondition {
            guard: Mutex::new(None),
            cond: Arc::new(cond),
            name,
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[pyo3(signature = (timeout=None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let c = self.cond_ref();
        let g = if timeout.is_some_and(|t| t <= 0.0) {
            c.lock().try_acquire().map_err(to_py)?
        } else {
            acquire_with(py, timeout, |slice| c.acquire_timeout(slice))?
        };
        match g {
            Some(g) => {
                if g.owner_died() {
                    g.mark_consistent();
                }
                *locked(&self.guard) = Some(g);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn release(&self) -> PyResult<()> {
        self.take_guard().map(|g| g.release())
    }

    /// `Condition.wait` in one call, so no Python bytecode (where a signal handler may raise)
    /// falls between its steps: takes this inner lock (by the deadline: if it passes first, the
    /// answer is `False` and nothing was let go), releases `user` (a `RawLock` or `RawRLock` the
    /// caller holds `levels` times) `levels` times, sleeps until a notify or the deadline (the
    /// sleep lets go of the inner lock; a signal ends it early and Ctrl-C is checked then, see
    /// `Condition::sleep_interruptible`), then takes `user` back `levels` times. Whether
    /// notified. The inner lock is not taken again after the sleep (unregistering needs no
    /// lock), so the wait ends by its deadline plus what taking `user` back costs, whatever
    /// other processes do with the inner lock. An exception raised by a signal handler while
    /// `user` is taken back is raised once it is held again (at most `RETAKE_ERRORS` of them;
    /// past that, the first is raised without the lock).
    #[pyo3(signature = (user, levels, timeout=None))]
    fn wait_releasing(
        &self,
        py: Python<'_>,
        user: &Bound<'_, PyAny>,
        levels: u32,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        const RETAKE_ERRORS: u32 = 100;
        let c = self.cond_ref();
        let until = deadline(timeout)?;
        if locked(&self.guard).is_some() {
            return Err(PyRuntimeError::new_err("the inner lock is already held"));
        }
        let guard = match c.lock().try_acquire().map_err(to_py)? {
            Some(g) => g,
            None => match blocking(py, until, |slice| none_on_timeout(c.acquire_timeout(slice)))? {
                Some(g) => g,
                None => return Ok(false), // the deadline passed first: nothing was let go
            },
        };
        if guard.owner_died() {
            guard.mark_consistent();
        }
        for released in 0..levels {
            if let Err(e) = user.call_method0("release") {
                // The inner lock goes first: re-taking the user lock while holding it would invert
                // the order `notify` takes them in (user, then inner).
                drop(guard);
                for _ in 0..released {
                    user.call_method1("acquire", (None::<f64>,))?;
                }
                return Err(e);
            }
        }
        let r = py.allow_threads(|| {
            c.sleep_interruptible(guard, until, || Python::with_gil(|py| py.check_signals()))
        });
        let mut first: Option<PyErr> = None;
        let mut errors = 0;
        let mut held = 0;
        while held < levels {
            match user.call_method1("acquire", (None::<f64>,)) {
                Ok(_) => held += 1,
                Err(e) => {
                    errors += 1;
                    let stop = errors >= RETAKE_ERRORS;
                    first.get_or_insert(e);
                    if stop {
                        break;
                    }
                }
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        r.map_err(to_py)?
    }

    /// `Condition.notify(n)` in one call: takes this inner lock (Ctrl-C is checked while it waits
    /// for it), wakes up to `n` waiters and lets it go, with no Python bytecode between the steps:
    /// a signal handler that raises cannot leave the inner lock taken.
    #[pyo3(signature = (n=1))]
    fn notify_holding(&self, py: Python<'_>, n: u32) -> PyResult<()> {
        let c = self.cond_ref();
        let g = match c.lock().try_acquire().map_err(to_py)? {
            Some(g) => g,
            None => blocking(py, None, |slice| none_on_timeout(c.acquire_timeout(slice)))?
                .ok_or_else(|| PyRuntimeError::new_err("the condition's lock was not taken"))?,
        };
        if g.owner_died() {
            g.mark_consistent();
        }
        let r = c.notify_n(n).map_err(to_py);
        drop(g);
        r
    }

    #[pyo3(signature = (n=1))]
    fn notify(&self, n: u32) -> PyResult<()> {
        if locked(&self.guard).is_none() {
            return Err(PyRuntimeError::new_err("cannot notify on un-acquired lock"));
        }
        self.cond.notify_n(n).map_err(to_py)
    }

    fn notify_all(&self) -> PyResult<()> {
        if locked(&self.guard).is_none() {
            return Err(PyRuntimeError::new_err("cannot notify on un-acquired lock"));
        }
        self.cond.notify_all().map_err(to_py)
    }
}

// ---- Barrier --------------------------------------------------------------------------------------

#[pyclass(module = "shmwire._shmwire", name = "RawBarrier", frozen)]
pub(crate) struct RawBarrier {
    b: Barrier,
    name: String,
}

#[pymethods]
impl RawBarrier {
    #[staticmethod]
    fn create(name: String, parties: u32) -> PyResult<RawBarrier> {
        Ok(RawBarrier {
            b: Barrier::create(&name, parties).map_err(to_py)?,
            name,
        })
    }

    #[staticmethod]
    fn open(name: String) -> PyResult<RawBarrier> {
        Ok(RawBarrier {
            b: Barrier::open(&name).map_err(to_py)?,
            name,
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Waits for all parties; the index. A timeout breaks the barrier (Python's rule). One wait:
    /// a signal is seen when it returns.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<u32>> {
        let b = &self.b;
        if timeout.is_some_and(f64::is_nan) {
            return Err(PyValueError::new_err("timeout is NaN"));
        }
        let r = py.allow_threads(|| match timeout {
            None => b.wait(),
            Some(t) => b.wait_timeout(
                Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::from_secs(1 << 40)),
            ),
        });
        match r {
            Ok(i) => Ok(Some(i)),
            Err(Error::BrokenBarrier) | Err(Error::Timeout) => Ok(None),
            Err(e) => Err(to_py(e)),
        }
    }

    /// `wait`, arriving only in round `generation` (`shmwire::Barrier::wait_in`): None, without
    /// arriving, if that round has ended.
    #[pyo3(signature = (generation, timeout=None))]
    fn wait_in(
        &self,
        py: Python<'_>,
        generation: u32,
        timeout: Option<f64>,
    ) -> PyResult<Option<u32>> {
        let b = &self.b;
        if timeout.is_some_and(f64::is_nan) {
            return Err(PyValueError::new_err("timeout is NaN"));
        }
        let timeout = timeout.map(|t| {
            Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::from_secs(1 << 40))
        });
        match py.allow_threads(|| b.wait_in(generation, timeout)) {
            Ok(i) => Ok(Some(i)),
            Err(Error::BrokenBarrier) | Err(Error::Timeout) => Ok(None),
            Err(e) => Err(to_py(e)),
        }
    }

    /// The round now filling (`shmwire::Barrier::generation`).
    #[getter]
    fn generation(&self) -> u32 {
        self.b.generation()
    }

    /// Counts this process as a party without arriving (`shmwire::Barrier::enrol`).
    fn enrol(&self) -> PyResult<()> {
        self.b.enrol().map_err(to_py)
    }

    #[getter]
    fn parties(&self) -> u32 {
        self.b.parties()
    }

    #[getter]
    fn n_waiting(&self) -> u32 {
        self.b.n_waiting()
    }

    #[getter]
    fn broken(&self) -> bool {
        self.b.broken()
    }

    fn abort(&self) {
        self.b.abort()
    }

    fn reset(&self) -> PyResult<()> {
        self.b.reset().map_err(to_py)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RawLock>()?;
    m.add_class::<RawRLock>()?;
    m.add_class::<RawSemaphore>()?;
    m.add_class::<RawEvent>()?;
    m.add_class::<RawCondition>()?;
    m.add_class::<RawBarrier>()?;
    Ok(())
}
