//! `Listener` and `Client` (Python's `multiprocessing.connection` names): connections made by
//! address, to any program using shmwire, Rust or Python: a shared-memory name (this host), a
//! `unix:/path` or a `tcp://host:port`, with an optional authkey (Python's handshake). Such a
//! connection is not a named pipe, so it cannot be pickled for a child.

use crate::connection::RawConnection;
use crate::{blocking, deadline, to_py};
use pyo3::prelude::*;
use shmwire::{Client, Listener};
use std::sync::Mutex;
use std::time::Duration;

/// The `end` of a connection made by `Listener`/`Client`: not a pipe's end (not picklable).
pub(crate) const NOT_A_PIPE_END: usize = usize::MAX;

/// Python's `multiprocessing.AuthenticationError` for a wrong key, else as [`to_py`].
fn auth_to_py(py: Python<'_>, e: shmwire::Error) -> PyErr {
    if matches!(e, shmwire::Error::AuthenticationFailed) {
        if let Ok(cls) = py
            .import_bound("multiprocessing")
            .and_then(|m| m.getattr("AuthenticationError"))
        {
            return PyErr::from_type_bound(cls.downcast_into().expect("a type"), e.to_string());
        }
    }
    to_py(e)
}

#[pyclass(module = "shmwire._shmwire", name = "RawListener")]
pub(crate) struct RawListener {
    l: Mutex<Option<Listener>>,
    address: String,
}

#[pymethods]
impl RawListener {
    /// Listens at `address`; with `authkey`, every client must prove it holds the key.
    #[staticmethod]
    #[pyo3(signature = (address, authkey=None))]
    fn bind(address: String, authkey: Option<Vec<u8>>) -> PyResult<RawListener> {
        let l = match authkey {
            Some(k) => Listener::bind_with_authkey(&address, k),
            None => Listener::bind(&address),
        }
        .map_err(to_py)?;
        Ok(RawListener {
            address: l.address(),
            l: Mutex::new(Some(l)),
        })
    }

    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    /// The next client's connection (None: the timeout ran out), waiting in slices.
    #[pyo3(signature = (timeout=None))]
    fn accept(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<RawConnection>> {
        let d = deadline(timeout)?;
        let got = blocking(py, d, |slice| {
            let g = self.l.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_ref() {
                Some(l) => match l.accept_timeout(slice) {
                    Ok(c) => Ok(Some(Ok(c))),
                    Err(shmwire::Error::Timeout) => Ok(None),
                    // Raised as Python's AuthenticationError (with the GIL, below).
                    Err(e @ shmwire::Error::AuthenticationFailed) => Ok(Some(Err(e))),
                    Err(e) => Err(e),
                },
                None => Ok(Some(Err(shmwire::Error::Closed))),
            }
        })?;
        match got {
            None => Ok(None),
            Some(Ok(c)) => Ok(Some(RawConnection::new(
                c,
                self.address.clone(),
                NOT_A_PIPE_END,
            ))),
            Some(Err(e)) => Err(auth_to_py(py, e)),
        }
    }

    fn close(&self) {
        self.l.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A connection to the listener at `address` (Python's `multiprocessing.connection.Client`).
#[pyfunction]
#[pyo3(signature = (address, authkey=None, timeout=None))]
pub(crate) fn client(
    py: Python<'_>,
    address: String,
    authkey: Option<Vec<u8>>,
    timeout: Option<f64>,
) -> PyResult<RawConnection> {
    let t = timeout.map_or(Duration::from_secs(3600 * 24 * 365), |t| {
        Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX)
    });
    let c = py
        .allow_threads(|| match &authkey {
            Some(k) => Client::connect_with_authkey_timeout(&address, k, t),
            None => Client::connect_timeout(&address, t),
        })
        .map_err(|e| auth_to_py(py, e))?;
    Ok(RawConnection::new(c, address, NOT_A_PIPE_END))
}
