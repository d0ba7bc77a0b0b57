//! `shmwire._shmwire`: the Rust half of the Python module `shmwire`. One file per family
//! (connection, queue, locks, values, manager); `shmwire/__init__.py` gives them multiprocessing's
//! signatures, pickling (`__reduce__`) and the exceptions of `queue` and `multiprocessing`.
//!
//! Blocking calls release the GIL and wait in slices of [`SLICE`], checking for signals between
//! them, so Ctrl-C raises `KeyboardInterrupt` within a slice. No panic crosses into Python: every
//! `shmwire::Error` becomes a Python exception ([`to_py`]).

// pyo3 0.22's #[pymethods] expansion converts each PyResult's error into itself.
#![allow(clippy::useless_conversion)]

use pyo3::create_exception;
use pyo3::exceptions::{PyBrokenPipeError, PyEOFError, PyException, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use std::time::{Duration, Instant};

mod connection;
mod listener;
mod locks;
mod manager;
mod queue;
mod values;

create_exception!(
    _shmwire,
    Error,
    PyException,
    "An error of shmwire (the message says what happened and what to do)."
);

/// The longest one wait lasts without the GIL before signals are checked.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// A Python exception for a shmwire error.
pub(crate) fn to_py(e: shmwire::Error) -> PyErr {
    use shmwire::Error as E;
    match e {
        E::Timeout => PyTimeoutError::new_err("timed out"),
        E::Eof => PyEOFError::new_err(()),
        // Python's pipes give EOFError when the other side died: so do ours, with the reason.
        E::PeerDied => PyEOFError::new_err(e.to_string()),
        E::BrokenPipe => PyBrokenPipeError::new_err("the other end of the pipe is closed"),
        E::Invalid { .. } => PyValueError::new_err(e.to_string()),
        other => Error::new_err(other.to_string()),
    }
}

/// `timeout` in seconds (None: for ever) as a deadline.
pub(crate) fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() => Err(PyValueError::new_err("timeout is NaN")),
        Some(t) if t <= 0.0 => Ok(Some(Instant::now())),
        Some(t) => Ok(Some(
            Instant::now() + Duration::try_from_secs_f64(t).unwrap_or(Duration::from_secs(1 << 40)),
        )),
    }
}

/// Runs `step(slice)` without the GIL in slices until it gives `Some`, or the deadline passes
/// (`Ok(None)`), checking for signals between slices. `step` returns `Ok(None)` when its slice ran
/// out with nothing done (it must have changed nothing then).
pub(crate) fn blocking<T: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut step: impl FnMut(Duration) -> shmwire::Result<Option<T>> + Send,
) -> PyResult<Option<T>> {
    loop {
        let slice = match deadline {
            None => SLICE,
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
        };
        if let Some(v) = py.allow_threads(|| step(slice)).map_err(to_py)? {
            return Ok(Some(v));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}

/// A `Timeout` as "nothing yet" for [`blocking`].
pub(crate) fn none_on_timeout<T>(r: shmwire::Result<T>) -> shmwire::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(shmwire::Error::Timeout) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Foreign-fork hooks, called by `os.register_at_fork` (see `shmwire::process::foreign`).
/// Returns the error's message if the preparation failed (the child then takes its slots on first
/// use): a fork hook cannot raise.
#[pyfunction]
fn _before_fork() -> Option<String> {
    shmwire::process::foreign::__before_foreign_fork()
        .err()
        .map(|e| e.to_string())
}

#[pyfunction]
fn _after_fork_in_child() {
    shmwire::process::foreign::__after_foreign_fork_in_child();
}

#[pyfunction]
#[pyo3(signature = (pid=None))]
fn _after_fork_in_parent(pid: Option<u32>) {
    shmwire::process::foreign::__after_foreign_fork_in_parent(pid);
}

/// Gives up everything this process holds, as an exiting process's drops would (see
/// `shmwire::process::foreign::__release_at_exit`).
#[pyfunction]
fn _release_at_exit() {
    shmwire::process::foreign::__release_at_exit();
}

/// Removes segments whose participants all died; returns how many.
#[pyfunction]
fn cleanup() -> PyResult<usize> {
    shmwire::cleanup().map(|r| r.len()).map_err(to_py)
}

#[pymodule]
fn _shmwire(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type_bound::<Error>())?;
    m.add_function(wrap_pyfunction!(_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_parent, m)?)?;
    m.add_function(wrap_pyfunction!(cleanup, m)?)?;
    m.add_function(wrap_pyfunction!(_release_at_exit, m)?)?;
    m.add_function(wrap_pyfunction!(listener::client, m)?)?;
    connection::register(m)?;
    queue::register(m)?;
    locks::register(m)?;
    values::register(m)?;
    manager::register(m)?;
    Ok(())
}
