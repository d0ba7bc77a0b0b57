//! `wait()`: block until any of several objects is ready, as `multiprocessing.connection.wait`.
//!
//! Each object offers a descriptor the kernel can poll: a shared-memory
//! [`Connection`](crate::Connection) its wake-up pipe (signalled by the sender only while somebody
//! polls, so the fast path stays free of system calls), a socket `Connection` its socket (ready
//! once a whole message has arrived: the bytes that came are read into it as the poll reports
//! them), a [`Process`](crate::Process) its pidfd, a [`Listener`](crate::Listener) its socket. `wait`
//! arms them all, polls once, and reports the ready ones; between polls of at most
//! [`PROBE_INTERVAL`] it re-checks, so a peer that dies is reported (its
//! connection becomes ready: `recv` returns the error) and nothing waits for ever on the dead.

use crate::error::{Error, Result};
use crate::timeout::Timeout;
use crate::wait::{Deadline, PROBE_INTERVAL};
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

/// How an object takes part in a [`wait`].
#[doc(hidden)]
#[derive(Debug)]
pub enum Armed {
    /// Ready now.
    Ready,
    /// Poll this descriptor.
    Fd(RawFd),
    /// No descriptor: check again shortly.
    Tick,
}

/// Keeps [`Waitable`] to the types of this crate (a private supertrait: nobody else can name it).
pub(crate) mod sealed {
    /// Implemented by the crate's own waitable types only.
    pub trait Sealed {}
}

/// Something [`wait`] can wait on: [`Connection`](crate::Connection) (a message, or the end of the
/// stream, is ready), [`Process`](crate::Process) (it ended), [`Listener`](crate::Listener) (a client
/// is waiting to be accepted). It is sealed: only this crate's types implement it, so that how they
/// take part in a `wait` can change without breaking anyone.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Pipe, Process, Waitable, wait};
/// use std::time::Duration;
/// let (a, b) = Pipe::new()?;
/// let p = Process::fork(move || b.send(&1u8).unwrap())?;
/// let objects: [&dyn Waitable; 2] = [&a, &p];
/// let ready = wait(&objects, Duration::from_secs(10))?;
/// assert!(!ready.is_empty()); // the message, the child's exit, or both
/// assert!(p.join()?.success());
/// assert_eq!(a.recv::<u8>()?, 1);
/// # Ok(()) }
/// ```
///
/// Other types cannot implement it:
///
/// ```compile_fail,E0277
/// struct Mine;
/// impl shmwire::Waitable for Mine {}
/// ```
pub trait Waitable: sealed::Sealed {
    #[doc(hidden)]
    /// Registers interest; `Ready` if the object is ready already.
    fn __arm(&self) -> Result<Armed>;
    #[doc(hidden)]
    /// After the poll: whether it is ready (`signalled`: its descriptor fired).
    fn __check(&self, signalled: bool) -> Result<bool>;
    #[doc(hidden)]
    /// Withdraws the interest registered by `__arm`.
    fn __disarm(&self) {}
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`Duration::ZERO`: just look;
/// `None`: for ever), and returns the indices of the ready ones (empty on timeout).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Pipe, Process, wait};
/// use std::time::Duration;
/// let (a, b) = Pipe::new()?;
/// let (c, d) = Pipe::new()?;
/// let p = Process::fork(move || d.send(&"second").unwrap())?;
/// let ready = wait(&[&a, &c], Some(Duration::from_secs(5)))?;
/// assert_eq!(ready, vec![1]);
/// assert_eq!(c.recv::<String>()?, "second");
/// assert!(p.join()?.success());
/// # drop(b); Ok(()) }
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: impl Into<Timeout>) -> Result<Vec<usize>> {
    let deadline = Deadline::after(timeout.into().duration());
    loop {
        let mut ready = Vec::new();
        let mut armed: Vec<(usize, Option<RawFd>)> = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            match o.__arm() {
                Ok(Armed::Ready) => ready.push(i),
                Ok(Armed::Fd(fd)) => armed.push((i, Some(fd))),
                Ok(Armed::Tick) => armed.push((i, None)),
                Err(e) => {
                    for &(j, _) in &armed {
                        objects[j].__disarm();
                    }
                    return Err(e);
                }
            }
        }
        if !ready.is_empty() {
            for &(j, _) in &armed {
                objects[j].__disarm();
            }
            return Ok(ready);
        }
        let tick = armed.iter().any(|a| a.1.is_none());
        let mut slice = if tick {
            Duration::from_millis(1)
        } else {
            PROBE_INTERVAL
        };
        if let Some(left) = deadline.remaining() {
            slice = slice.min(left);
        }
        let fired = poll_fds(&armed, slice)?;
        for (k, &(i, _)) in armed.iter().enumerate() {
            objects[i].__disarm();
            if objects[i].__check(fired[k])? {
                ready.push(i);
            }
        }
        if !ready.is_empty() || deadline.is_immediate_or_past() {
            return Ok(ready);
        }
    }
}

/// Polls the descriptors (entries without one never fire) for up to `slice`; returns which fired.
fn poll_fds(armed: &[(usize, Option<RawFd>)], slice: Duration) -> Result<Vec<bool>> {
    use rustix::event::{PollFd, PollFlags, poll};
    // SAFETY: every descriptor comes from an object the caller borrows for the whole call, so it stays
    // open while polled.
    let borrowed: Vec<Option<BorrowedFd<'_>>> = armed
        .iter()
        .map(|a| a.1.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) }))
        .collect();
    let mut fds: Vec<PollFd<'_>> = borrowed
        .iter()
        .flatten()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let ts = rustix::time::Timespec {
        tv_sec: slice.as_secs() as i64,
        tv_nsec: slice.subsec_nanos() as _,
    };
    match poll(&mut fds, Some(&ts)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(Error::from(e)),
    }
    let mut it = fds.iter();
    Ok(borrowed
        .iter()
        .map(|b| b.is_some() && it.next().is_some_and(|p| !p.revents().is_empty()))
        .collect())
}
