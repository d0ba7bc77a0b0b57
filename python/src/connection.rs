//! `Connection`: one end of a named shmwire pipe (`Pipe::builder().name(..)`), so that a child of any
//! start method opens it by name. Pickling (`send`/`recv`) happens in Python; this moves bytes.

use crate::{blocking, deadline, none_on_timeout, to_py};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use shmwire::{Connection, Pipe, Transport};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// One end of a pipe. Every call takes the end's lock (a `Connection` is used by one thread at a
/// time), and blocking ones hold it for one slice at a time, so that one thread may send while
/// another receives, as Python's connections allow. The lock is never waited for with the GIL
/// held (`with_conn`: a try first, then without the GIL), and a thread that held it for a slice
/// lets the threads waiting for it go first (`yield_to_waiters`: std's `Mutex` is not fair), so a
/// long send over a socket (in slices, see `send_bytes`) neither starves a `recv`/`poll` of
/// another thread nor keeps Ctrl-C out.
#[pyclass(module = "shmwire._shmwire", name = "RawConnection")]
pub(crate) struct RawConnection {
    conn: Mutex<Option<Connection>>,
    /// Threads waiting for `conn` (without the GIL).
    waiting: AtomicUsize,
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
            waiting: AtomicUsize::new(0),
            name,
            end,
            ready: OnceLock::new(),
        }
    }

    /// Waits for the end's lock: call without the GIL.
    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        // ORDERING: `waiting` is only a hint for `yield_to_waiters` (the mutex orders the rest).
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        g
    }

    /// The end's lock if it is free now (callable with the GIL: never waits).
    fn try_lock(&self) -> Option<MutexGuard<'_, Option<Connection>>> {
        match self.conn.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// After holding the lock for a slice: lets the threads waiting for it take it first (for at
    /// most 20 ms), so that a thread looping over slices does not starve them.
    fn yield_to_waiters(&self) {
        let until = Instant::now() + Duration::from_millis(20);
        while self.waiting.load(Ordering::Relaxed) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Runs `f` on the end (None: closed) under its lock: at once if the lock is free, else
    /// waiting for it without the GIL.
    fn with_conn<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Option<Connection>) -> T + Send,
    ) -> T {
        if let Some(mut g) = self.try_lock() {
            return f(&mut g);
        }
        py.allow_threads(|| {
            let mut g = self.lock();
            let out = f(&mut g);
            drop(g);
            self.yield_to_waiters();
            out
        })
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
            let r = match guard.as_ref() {
                Some(c) => f(c, slice).map(|o| o.map(Some)),
                None => {
                    gone = true;
                    Ok(Some(None))
                }
            };
            drop(guard);
            self.yield_to_waiters();
            r
        })?;
        match out {
            Some(Some(v)) => Ok(Some(v)),
            Some(None) if gone => Err(closed()),
            _ => Ok(None),
        }
    }
}

impl RawConnection {
    /// Sends `data` over a socket in slices, checking for signals between them. The first call
    /// that gets part of the message out makes the connection keep its rest (a socket's timed
    /// send counts a message cut short as sent); then the rest is flushed slice by slice.
    fn send_over_socket(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let mut started = false;
        loop {
            let r = py.allow_threads(|| {
                let g = self.lock();
                let r = match g.as_ref() {
                    None => Err(shmwire::Error::Closed),
                    Some(c) if started => c.flush_timeout(crate::SLICE),
                    Some(c) => c.send_bytes_timeout(data, crate::SLICE),
                };
                drop(g);
                self.yield_to_waiters();
                r
            });
            match r {
                Ok(()) if started => return Ok(()),
                Ok(()) => started = true, // out, or its rest kept: flush that
                // Interrupted: what is out stays out, the rest goes first with the next call.
                Err(shmwire::Error::Timeout) => py.check_signals()?,
                Err(e) => return Err(to_py(e)),
            }
        }
    }

    /// Receives the message of `needed` bytes that is there (or arriving, if streamed) straight
    /// into a new bytes object, without the GIL, in slices.
    fn recv_into_new<'py>(&self, py: Python<'py>, needed: usize) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(g) = self.try_lock() {
            // A message that fits in the ring in place is all there: copy it keeping the GIL (if
            // the end is free now; else the loop below waits for it without the GIL).
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
                let r = match g.as_ref() {
                    Some(c) => c.recv_bytes_into_timeout(buf, crate::SLICE).map(Some),
                    None => Ok(None),
                };
                drop(g);
                self.yield_to_waiters();
                r
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
    fn closed(&self, py: Python<'_>) -> bool {
        self.with_conn(py, |c| c.is_none())
    }

    #[getter]
    fn readable(&self, py: Python<'_>) -> bool {
        self.with_conn(py, |c| c.as_ref().is_some_and(|c| c.readable()))
    }

    #[getter]
    fn writable(&self, py: Python<'_>) -> bool {
        self.with_conn(py, |c| c.as_ref().is_some_and(|c| c.writable()))
    }

    /// Closes this process's hold on the end (the others keep theirs).
    fn close(&self, py: Python<'_>) {
        if let Some(c) = self.with_conn(py, |c| c.take()) {
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
        let socket = self.with_conn(py, |c| {
            c.as_ref().map(|c| c.transport() != Transport::SharedMemory)
        });
        if socket.ok_or_else(closed)? {
            return self.send_over_socket(py, data);
        }
        if let Some(g) = self.try_lock() {
            // First without letting go of the GIL, for a message that fits in the ring at once (a
            // longer one would be streamed, and given up part way if the ring filled).
            let c = g.as_ref().ok_or_else(closed)?;
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
        let now = self.with_conn(py, |c| {
            let c = c.as_ref().ok_or_else(closed)?;
            length(c, Duration::ZERO).map_err(to_py)
        })?;
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
            return self.with_conn(py, |c| {
                let c = c.as_ref().ok_or_else(closed)?;
                ready(c, Duration::ZERO).map(|r| r.is_some()).map_err(to_py)
            });
        }
        Ok(self.wait(py, timeout, ready)?.is_some())
    }

    /// A descriptor for `select`/`multiprocessing.connection.wait`: readable when a message may be
    /// there (and at the latest one probe tick later, `shmwire.PROBE_INTERVAL`: then `poll()` tells).
    /// Each call re-arms it, as selectors call `fileno()` before each wait.
    fn fileno(&self, py: Python<'_>) -> PyResult<RawFd> {
        self.with_conn(py, |c| self.fileno_of(c.as_ref().ok_or_else(closed)?))
    }
}

impl RawConnection {
    fn fileno_of(&self, c: &Connection) -> PyResult<RawFd> {
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
