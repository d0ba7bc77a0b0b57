//! `Manager` with its `dict` and `list`: containers in a shared arena, keys and values as bytes
//! (the Python layer encodes keys canonically, so `1`, `1.0` and `True` are one key, and pickles
//! values). Handles pass to other processes as their serde encoding (`handle()` / `open`).

use crate::to_py;
use pyo3::exceptions::{PyIndexError, PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_bytes::{ByteBuf, Bytes};
use shmwire::{Error, Manager, SharedDict, SharedList};

type Dict = SharedDict<ByteBuf, ByteBuf>;
type List = SharedList<ByteBuf>;

fn handle_of<T: serde::Serialize>(h: &T) -> PyResult<Vec<u8>> {
    postcard::to_allocvec(h).map_err(|e| PyValueError::new_err(e.to_string()))
}

fn from_handle<T: serde::de::DeserializeOwned>(b: &[u8]) -> PyResult<T> {
    postcard::from_bytes(b).map_err(|e| PyValueError::new_err(format!("not a shmwire handle: {e}")))
}

fn py_bytes(py: Python<'_>, b: ByteBuf) -> PyObject {
    PyBytes::new_bound(py, &b).into_any().unbind()
}

#[pyclass(module = "shmwire._shmwire", name = "RawManager", frozen)]
pub(crate) struct RawManager {
    m: Manager,
    name: String,
}

#[pymethods]
impl RawManager {
    #[staticmethod]
    fn create(name: String) -> PyResult<RawManager> {
        Ok(RawManager {
            m: Manager::create(&name).map_err(to_py)?,
            name,
        })
    }

    #[staticmethod]
    fn open(name: String) -> PyResult<RawManager> {
        Ok(RawManager {
            m: Manager::open(&name).map_err(to_py)?,
            name,
        })
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    fn dict(&self, py: Python<'_>) -> PyResult<RawDict> {
        let d = py.allow_threads(|| self.m.dict()).map_err(to_py)?;
        Ok(RawDict { d })
    }

    fn list(&self, py: Python<'_>) -> PyResult<RawList> {
        let l = py.allow_threads(|| self.m.list()).map_err(to_py)?;
        Ok(RawList { l })
    }
}

#[pyclass(module = "shmwire._shmwire", name = "RawDict", frozen)]
pub(crate) struct RawDict {
    d: Dict,
}

#[pymethods]
impl RawDict {
    #[staticmethod]
    fn open(handle: &[u8]) -> PyResult<RawDict> {
        Ok(RawDict {
            d: from_handle(handle)?,
        })
    }

    fn handle<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new_bound(py, &handle_of(&self.d)?))
    }

    fn get(&self, py: Python<'_>, key: &[u8]) -> PyResult<Option<PyObject>> {
        let v = py
            .allow_threads(|| self.d.get(Bytes::new(key)))
            .map_err(to_py)?;
        Ok(v.map(|b| py_bytes(py, b)))
    }

    fn set(&self, py: Python<'_>, key: &[u8], value: &[u8]) -> PyResult<()> {
        let (k, v) = (ByteBuf::from(key), ByteBuf::from(value));
        py.allow_threads(|| self.d.insert(k, v)).map_err(to_py)?;
        Ok(())
    }

    /// Removes `key`, returning its value (KeyError if absent).
    fn pop(&self, py: Python<'_>, key: &[u8]) -> PyResult<PyObject> {
        match py
            .allow_threads(|| self.d.remove(Bytes::new(key)))
            .map_err(to_py)?
        {
            Some(b) => Ok(py_bytes(py, b)),
            None => Err(PyKeyError::new_err(())),
        }
    }

    fn contains(&self, py: Python<'_>, key: &[u8]) -> PyResult<bool> {
        py.allow_threads(|| self.d.contains_key(Bytes::new(key)))
            .map_err(to_py)
    }

    /// `setdefault`: the value of `key`, inserting `value` first if absent.
    fn setdefault(&self, py: Python<'_>, key: &[u8], value: &[u8]) -> PyResult<PyObject> {
        let (k, v) = (ByteBuf::from(key), ByteBuf::from(value));
        let got = py
            .allow_threads(|| self.d.get_or_insert(k, v))
            .map_err(to_py)?;
        Ok(py_bytes(py, got))
    }

    fn update(&self, py: Python<'_>, items: Vec<(Vec<u8>, Vec<u8>)>) -> PyResult<()> {
        let items: Vec<(ByteBuf, ByteBuf)> = items
            .into_iter()
            .map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v)))
            .collect();
        py.allow_threads(|| self.d.update(items)).map_err(to_py)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        py.allow_threads(|| self.d.len()).map_err(to_py)
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        py.allow_threads(|| self.d.clear()).map_err(to_py)
    }

    /// A consistent snapshot of the (key, value) pairs.
    fn items(&self, py: Python<'_>) -> PyResult<Vec<(PyObject, PyObject)>> {
        let items = py.allow_threads(|| self.d.items()).map_err(to_py)?;
        Ok(items
            .into_iter()
            .map(|(k, v)| (py_bytes(py, k), py_bytes(py, v)))
            .collect())
    }

    fn keys(&self, py: Python<'_>) -> PyResult<Vec<PyObject>> {
        let keys = py.allow_threads(|| self.d.keys()).map_err(to_py)?;
        Ok(keys.into_iter().map(|k| py_bytes(py, k)).collect())
    }
}

#[pyclass(module = "shmwire._shmwire", name = "RawList", frozen)]
pub(crate) struct RawList {
    l: List,
}

fn list_err(e: Error) -> PyErr {
    match e {
        Error::OutOfRange { .. } => PyIndexError::new_err("list index out of range"),
        Error::NotFound => PyValueError::new_err("list.index(x): x not in list"),
        e => to_py(e),
    }
}

#[pymethods]
impl RawList {
    #[staticmethod]
    fn open(handle: &[u8]) -> PyResult<RawList> {
        Ok(RawList {
            l: from_handle(handle)?,
        })
    }

    fn handle<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new_bound(py, &handle_of(&self.l)?))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        py.allow_threads(|| self.l.len()).map_err(to_py)
    }

    fn get(&self, py: Python<'_>, i: usize) -> PyResult<PyObject> {
        let b = py.allow_threads(|| self.l.get(i)).map_err(list_err)?;
        Ok(py_bytes(py, b))
    }

    fn set(&self, py: Python<'_>, i: usize, v: &[u8]) -> PyResult<()> {
        let v = ByteBuf::from(v);
        py.allow_threads(|| self.l.set(i, v)).map_err(list_err)
    }

    fn append(&self, py: Python<'_>, v: &[u8]) -> PyResult<()> {
        let v = ByteBuf::from(v);
        py.allow_threads(|| self.l.push(v)).map_err(list_err)
    }

    fn extend(&self, py: Python<'_>, items: Vec<Vec<u8>>) -> PyResult<()> {
        let items: Vec<ByteBuf> = items.into_iter().map(ByteBuf::from).collect();
        py.allow_threads(|| self.l.extend(items)).map_err(list_err)
    }

    fn insert(&self, py: Python<'_>, i: usize, v: &[u8]) -> PyResult<()> {
        let v = ByteBuf::from(v);
        py.allow_threads(|| self.l.insert(i, v)).map_err(list_err)
    }

    fn pop_last(&self, py: Python<'_>) -> PyResult<PyObject> {
        let b = py.allow_threads(|| self.l.pop()).map_err(|e| match e {
            Error::OutOfRange { .. } => PyIndexError::new_err("pop from empty list"),
            e => to_py(e),
        })?;
        Ok(py_bytes(py, b))
    }

    fn remove_at(&self, py: Python<'_>, i: usize) -> PyResult<PyObject> {
        let b = py.allow_threads(|| self.l.remove(i)).map_err(list_err)?;
        Ok(py_bytes(py, b))
    }

    fn index(&self, py: Python<'_>, v: &[u8]) -> PyResult<usize> {
        let v = ByteBuf::from(v);
        py.allow_threads(|| self.l.index(&v)).map_err(list_err)
    }

    fn to_list(&self, py: Python<'_>) -> PyResult<Vec<PyObject>> {
        let v = py.allow_threads(|| self.l.to_vec()).map_err(to_py)?;
        Ok(v.into_iter().map(|b| py_bytes(py, b)).collect())
    }

    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        py.allow_threads(|| self.l.clear()).map_err(to_py)
    }

    /// Replaces every element with `new` if they are `expected` now (see
    /// `SharedList::replace_all_if`): the Python layer's slice assignment, `sort` and friends
    /// compute `new` from a `to_list()` snapshot and try again if another process came between.
    fn replace_all_if(
        &self,
        py: Python<'_>,
        expected: Vec<Vec<u8>>,
        new: Vec<Vec<u8>>,
    ) -> PyResult<bool> {
        let expected: Vec<ByteBuf> = expected.into_iter().map(ByteBuf::from).collect();
        let new: Vec<ByteBuf> = new.into_iter().map(ByteBuf::from).collect();
        py.allow_threads(|| self.l.replace_all_if(&expected, &new))
            .map_err(list_err)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RawManager>()?;
    m.add_class::<RawDict>()?;
    m.add_class::<RawList>()?;
    Ok(())
}
