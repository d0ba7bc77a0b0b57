//! `RawQueue`: a named shmwire `Queue` (or `JoinableQueue`) of pickled items. `queue.Full` and
//! `queue.Empty` are raised by the Python layer from the `None`/`False` these return.

use crate::{blocking, deadline, none_on_timeout, to_py};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_bytes::ByteBuf;
use shmwire::{Error, JoinableQueue, Queue};

type Item = ByteBuf;

/// A queue of byte strings, by name; `joinable` ones count unfinished tasks.
#[pyclass(module = "shmwire._shmwire", name = "RawQueue", frozen)]
pub(crate) struct RawQueue {
    q: Queue<Item>,
    /// The same queue, counting unfinished tasks (JoinableQueue only: the count costs each get).
    j: Option<JoinableQueue<Item>>,
    name: String,
}

impl RawQueue {
    fn make(q: Queue<Item>, name: String, joinable: bool) -> RawQueue {
        let j = joinable.then(|| JoinableQueue::from_queue(q.clone()));
        RawQueue { q, j, name }
    }

    fn joinable(&self) -> PyResult<&JoinableQueue<Item>> {
        self.j
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("not a JoinableQueue"))
    }
}

/// The item's bytes: a `bytes` object is read in place, any other buffer through the protocol.
fn item_of(obj: &Bound<'_, PyAny>) -> PyResult<Item> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(ByteBuf::from(b.as_bytes().to_vec()));
    }
    let buf = PyBuffer::<u8>::get_bound(obj)?;
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("the buffer must be contiguous"));
    }
    Ok(ByteBuf::from(buf.to_vec(obj.py())?))
}

#[pymethods]
impl RawQueue {
    /// A new queue named `name` holding at most `maxsize` items (0: unbounded).
    #[staticmethod]
    #[pyo3(signature = (name, maxsize, joinable=false))]
    fn create(name: String, maxsize: usize, joinable: bool) -> PyResult<RawQueue> {
        let q = Queue::<Item>::builder()
            .maxsize(maxsize)
            .name(&name)
            .build()
            .map_err(to_py)?;
        Ok(RawQueue::make(q, name, joinable))
    }

    #[staticmethod]
    #[pyo3(signature = (name, joinable=false))]
    fn open(py: Python<'_>, name: String, joinable: bool) -> PyResult<RawQueue> {
        let q = py
            .allow_threads(|| Queue::<Item>::open(&name))
            .map_err(to_py)?;
        Ok(RawQueue::make(q, name, joinable))
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[getter]
    fn maxsize(&self) -> usize {
        self.q.maxsize()
    }

    /// Puts `buf`; False if the timeout (seconds, None: for ever; 0: don't wait) ran out.
    #[pyo3(signature = (buf, timeout=None))]
    fn put(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<bool> {
        let item = item_of(buf)?;
        // First without letting go of the GIL: a put with room is a few stores.
        match self.q.put_nowait(&item) {
            Ok(()) => return Ok(true),
            Err(Error::Full) if timeout.is_some_and(|t| t <= 0.0) => return Ok(false),
            Err(Error::Full) => {}
            Err(e) => return Err(to_py(e)),
        }
        let q = &self.q;
        let done = blocking(py, deadline(timeout)?, |slice| {
            none_on_timeout(q.put_timeout(&item, slice))
        })?;
        Ok(done.is_some())
    }

    /// Takes an item; None if the timeout ran out (0: don't wait).
    #[pyo3(signature = (timeout=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        // First without letting go of the GIL: a get of a ready item is a few loads and stores.
        let now = match self.q.get_nowait() {
            Ok(v) => Some(v),
            Err(Error::Empty) => None,
            Err(e) => return Err(to_py(e)),
        };
        let got = if now.is_some() || timeout.is_some_and(|t| t <= 0.0) {
            now
        } else {
            let q = &self.q;
            blocking(py, deadline(timeout)?, |slice| {
                none_on_timeout(q.get_timeout(slice))
            })?
        };
        Ok(got.map(|b| PyBytes::new_bound(py, &b)))
    }

    fn qsize(&self) -> usize {
        self.q.qsize()
    }

    fn empty(&self) -> bool {
        self.q.is_empty()
    }

    fn full(&self) -> bool {
        self.q.is_full()
    }

    fn task_done(&self) -> PyResult<()> {
        self.joinable()?.task_done().map_err(|e| match e {
            Error::CalledTooOften => PyValueError::new_err("task_done() called too many times"),
            e => to_py(e),
        })
    }

    /// Waits until every item put has been taken and marked done; False if the timeout ran out.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let q = self.joinable()?;
        let done = blocking(py, deadline(timeout)?, |slice| {
            none_on_timeout(q.join_timeout(slice))
        })?;
        Ok(done.is_some())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RawQueue>()
}
