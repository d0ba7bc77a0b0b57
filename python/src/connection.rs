//! `Connection`: one end of a named shmwire pipe (`Pipe::builder().name(..)`), so that a child of any
//! start method opens it by name. Pickling (`send`/`recv`) happens in Python; this moves bytes.

use crate::{blocking, deadline, none_on_timeout, to_py};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shmwire::{Connection, Pipe, Transport};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// One end of a pipe. `send_bytes` and the receiving calls take the end's lock (a `Connection` is
/// used by one thread at a time); blocking ones hold it for one slice at a time.
#[pyclass(module = "shmwire._shmwire", name = "RawConnection")]
pub(crate) struct RawConnection {
    conn: Mutex<Option<Connection>>,
    name: String,
    end: usize,
    /// An eventfd of ours in the end's epoll instance: `fileno()` makes it readable when
    /// `prepare_poll` says a message is there already (see `fileno`).
    ready: OnceLock<OwnedFd>,
}

/// Each direction's ring: large enough that a 1 MiB message goes in place, not streamed.
const RING: usize = 4 << 20;

fn closed() -> PyErr {
    PyOSError::new_err("handle is closed")
}

impl RawConnection {
    pub(crate) fn new(conn: Connection, name: String, end: usize) -> Self {
        RawConnection {
            conn: Mutex::new(Some(conn)),
            name,
            end,
            ready: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the end in slices until it gives `Some` or the deadline passes.
    fn wait<T: Send>(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        mut f: impl FnMut(&Connection, Duration) -> shmwire::Result<Option<T>> + Send,
    ) -> PyResult<Option<T>> {
        let deadline = deadline(timeout)?;
        let mut gone = false;
        let out = blocking(py, deadline, |slice| {
            let guard = self.lock();
            match guard.as_ref() {
                Some(c) => f(c, slice).map(|o| o.map(Some)),
                None => {
                    gone = true;
                    Ok(Some(None))
                }
            }
        })?;
        match out {
            Some(Some(v)) => Ok(Some(v)),
            Some(None) if gone => Err(closed()),
            _ => Ok(None),
        }
    }
}

impl RawConnection {
    /// Receives the message of `needed` bytes that is there (or arriving, if streamed) straight
    /// into a new bytes object, without the GIL, in slices.
    fn recv_into_new<'py>(&self, py: Python<'py>, needed: usize) -> PyResult<Bound<'py, PyBytes>> {
        {
            // A message that fits in the ring in place is all there: copy it keeping the GIL.
            let g = self.lock();
            let c = g.as_ref().ok_or_else(closed)?;
            // (Over a socket the message may still be arriving: the loop below waits for it.)
            if needed <= c.max_in_place_len() && c.transport() == Transport::SharedMemory {
                return PyBytes::new_bound_with(py, needed, |buf| {
                    match c.recv_bytes_into_timeout(buf, Duration::ZERO) {
                        Ok(n) if n == needed => Ok(()),
                        Ok(_) => Err(crate::Error::new_err(
                            "the message changed length while it was received",
                        )),
                        Err(e) => Err(to_py(e)),
                    }
                });
            }
        }
        PyBytes::new_bound_with(py, needed, |buf| loop {
            let r = py.allow_threads(|| {
                let g = self.lock();
                match g.as_ref() {
                    Some(c) => c.recv_bytes_into_timeout(buf, crate::SLICE).map(Some),
                    None => Ok(None),
                }
            });
            match r {
                Ok(Some(n)) if n == needed => return Ok(()),
                Ok(Some(_)) => {
                    return Err(crate::Error::new_err(
                        "the message changed length while it was received",
                    ))
                }
                Ok(None) => return Err(closed()),
                Err(shmwire::Error::Timeout) => py.check_signals()?, // pieces so far are kept
                Err(e) => return Err(to_py(e)),
            }
        })
    }
}

/// A contiguous byte view of `buf` (the Python layer passes a memoryview cast to bytes).
fn bytes_of(buf: &PyBuffer<u8>) -> PyResult<&[u8]> {
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("the buffer must be contiguous"));
    }
    // SAFETY: the buffer is exported (held by `buf`) for as long as the slice lives, so its memory
    // stays put (Python forbids resizing an exported bytearray); it is C-contiguous with
    // `len_bytes` bytes of item size 1. Another thread writing into it meanwhile changes what is
    // sent, as with Python's own send_bytes.
    Ok(unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.len_bytes()) })
}

#[pymethods]
impl RawConnection {
    /// A new pipe named `name`: both ends.
    #[staticmethod]
    fn pipe(name: String, duplex: bool) -> PyResult<(RawConnection, RawConnection)> {
        let (a, b) = Pipe::builder()
            .capacity(RING)
            .duplex(duplex)
            .name(&name)
            .build()
            .map_err(to_py)?;
        Ok((
            RawConnection::new(a, name.clone(), 0),
            RawConnection::new(b, name, 1),
        ))
    }

    /// Opens end `end` of the pipe named `name`.
    #[staticmethod]
    fn open(py: Python<'_>, name: String, end: usize) -> PyResult<RawConnection> {
        let c = py.allow_threads(|| Pipe::open(&name, end)).map_err(to_py)?;
        Ok(RawConnection::new(c, name, end))
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[getter]
    fn end(&self) -> usize {
        self.end
    }

    #[getter]
    fn closed(&self) -> bool {
        self.lock().is_none()
    }

    #[getter]
    fn readable(&self) -> bool {
        self.lock().as_ref().is_some_and(|c| c.readable())
    }

    #[getter]
    fn writable(&self) -> bool {
        self.lock().as_ref().is_some_and(|c| c.writable())
    }

    /// Closes this process's hold on the end (the others keep theirs).
    fn close(&self) {
        if let Some(c) = self.lock().take() {
            c.close();
        }
    }

    /// Sends `buf` as one message, waiting for room in slices.
    fn send_bytes(&self, py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<()> {
        // A `bytes` object is read in place (immutable, and kept alive by the caller); any other
        // buffer through the buffer protocol.
        let held;
        let data = match buf.downcast::<PyBytes>() {
            Ok(b) => b.as_bytes(),
            Err(_) => {
                held = PyBuffer::<u8>::get_bound(buf)?;
                bytes_of(&held)?
            }
        };
        {
            // First without letting go of the GIL, for a message that fits in the ring at once (a
            // longer one would be streamed, and given up part way if the ring filled).
            let g = self.lock();
            let c = g.as_ref().ok_or_else(closed)?;
            if c.transport() != Transport::SharedMemory {
                // A socket counts a message written in part when a timeout runs out as sent (its
                // rest goes out with the next call): so one call that waits until it is all out.
                drop(g);
                return py
                    .allow_threads(|| match self.lock().as_ref() {
                        Some(c) => c.send_bytes(data),
                        None => Err(shmwire::Error::Closed),
                    })
                    .map_err(to_py);
            }
            if data.len() <= c.max_in_place_len() {
                match c.send_bytes_timeout(data, Duration::ZERO) {
                    Ok(()) => return Ok(()),
                    Err(shmwire::Error::Timeout) => {}
                    Err(e) => return Err(to_py(e)),
                }
            }
        }
        self.wait(py, None, |c, slice| {
            none_on_timeout(c.send_bytes_timeout(data, slice))
        })?;
        Ok(())
    }

    /// Receives one message (None: the timeout ran out). The message is copied once, from the
    /// ring into the new bytes object: its length comes first (`BufferTooShort`, the message kept).
    #[pyo3(signature = (timeout=None))]
    fn recv_bytes<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        // First without letting go of the GIL (a message already there), then in slices without it
        // (spinning, then sleeping): each asks for the length only, and the message stays.
        let length = |c: &Connection, d: Duration| match c.recv_bytes_into_timeout(&mut [], d) {
            Ok(_) => Ok(Some(0)),
            Err(shmwire::Error::BufferTooShort { needed }) => Ok(Some(needed)),
            Err(shmwire::Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        };
        let now = {
            let g = self.lock();
            let c = g.as_ref().ok_or_else(closed)?;
            length(c, Duration::ZERO).map_err(to_py)?
        };
        let needed = match now {
            Some(n) => Some(n),
            None if timeout.is_some_and(|t| t <= 0.0) => None,
            None => self.wait(py, timeout, length)?,
        };
        match needed {
            None => Ok(None),
            Some(0) => Ok(Some(PyBytes::new_bound(py, b""))),
            Some(n) => self.recv_into_new(py, n).map(Some),
        }
    }

    /// Whether a message (or the end) is ready within `timeout` seconds (None: for ever).
    #[pyo3(signature = (timeout=Some(0.0)))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        // The end of the stream is "ready" (recv then raises EOFError), as in Python.
        let ready = |c: &Connection, d: Duration| match c.poll(d) {
            Ok(r) => Ok(r.then_some(())),
            Err(shmwire::Error::Eof | shmwire::Error::PeerDied) => Ok(Some(())),
            Err(e) => Err(e),
        };
        if timeout.is_some_and(|t| t <= 0.0) {
            let g = self.lock();
            let c = g.as_ref().ok_or_else(closed)?;
            return ready(c, Duration::ZERO).map(|r| r.is_some()).map_err(to_py);
        }
        Ok(self.wait(py, timeout, ready)?.is_some())
    }

    /// A descriptor for `select`/`multiprocessing.connection.wait`: readable when a message may be
    /// there (and at the latest one probe tick later, `shmwire.PROBE_INTERVAL`: then `poll()` tells).
    /// Each call re-arms it, as selectors call `fileno()` before each wait.
    fn fileno(&self) -> PyResult<RawFd> {
        let g = self.lock();
        let c = g.as_ref().ok_or_else(closed)?;
        if c.transport() != Transport::SharedMemory {
            return Ok(c.as_fd().as_raw_fd()); // a socket: readable when bytes are there
        }
        let ready = c.prepare_poll().map_err(to_py)?;
        let epoll = c.as_fd().as_raw_fd();
        let efd = match self.ready.get() {
            Some(fd) => fd.as_raw_fd(),
            None => {
                // SAFETY: eventfd creates a new descriptor or fails; on success it is ours alone.
                let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                if raw < 0 {
                    return Err(PyOSError::new_err(
                        std::io::Error::last_os_error().to_string(),
                    ));
                }
                // SAFETY: `raw` was just created and is owned by nobody else.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: u64::MAX,
                };
                // SAFETY: `epoll` is the end's epoll instance, open while the end lives (we hold
                // it through the lock); `raw` is our eventfd; `ev` is a valid event.
                if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, raw, &mut ev) } < 0 {
                    return Err(PyOSError::new_err(
                        std::io::Error::last_os_error().to_string(),
                    ));
                }
                let _ = self.ready.set(fd);
                raw
            }
        };
        let mut word = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `word` from our non-blocking eventfd (empties it).
        unsafe { libc::read(efd, word.as_mut_ptr().cast(), 8) };
        if ready {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from `one` to our eventfd, making the epoll readable.
            unsafe { libc::write(efd, one.as_ptr().cast(), 8) };
        }
        Ok(epoll)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RawConnection>()?;
    m.add_class::<crate::listener::RawListener>()?;
    m.add("PROBE_INTERVAL", shmwire::PROBE_INTERVAL.as_secs_f64())?;
    Ok(())
}
