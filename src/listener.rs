//! `Listener` and `Client`: unrelated processes meet by name and get a [`Connection`].
//!
//! The name is a Unix socket in `/dev/shm` (`shmwire.[$SHMWIRE_PREFIX.]l.NAME`, mode 0600). Each side
//! checks the other's uid (`SO_PEERCRED`): a listener serves clients of its own user only, and a client
//! sends nothing to a listener of another user. The socket only carries the introduction: the client
//! creates an ordinary shared-memory pipe (a sealed memfd and its eventfds) and passes its descriptors
//! over the socket (`SCM_RIGHTS`); the listener checks them (the memfd sealed against resizing, the
//! eventfds eventfds and non-blocking), opens its own description of the memory, takes end 0 and says
//! so; the client keeps end 1. From then on the socket is closed and everything runs over shared memory; no segment
//! ever has a name, so nothing can be left in `/dev/shm` but the listener's socket, which the next
//! `bind` of the name reclaims if its listener died (and `shmwire::cleanup()` removes).
//!
//! ```
//! # fn main() -> shmwire::Result<()> {
//! use shmwire::{Client, Listener, Process};
//! let name = format!("doc-listener-{}", std::process::id());
//! let listener = Listener::bind(&name)?;
//! let n = name.clone();
//! let mut p = Process::fork(move || {
//!     let conn = Client::connect(&n).unwrap();
//!     conn.send(&"hello").unwrap();
//! })?;
//! let conn = listener.accept()?;
//! assert_eq!(conn.recv::<String>()?, "hello");
//! assert!(p.join()?.success());
//! # Ok(()) }
//! ```

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::select::{Armed, Waitable};
use crate::sync::wait::Deadline;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const HELLO: &[u8; 8] = b"SHMWp\x01\0\0"; // "SHMW", kind pipe, protocol 1
const OK: &[u8; 2] = b"OK";
/// How long an accepted client may take to introduce itself (across `accept` calls).
const INTRO_TIMEOUT: Duration = Duration::from_secs(5);
/// Descriptors a client sends: the pipe's memfd and its two eventfds.
const FDS: usize = 3;

/// The socket path of the listener `name`.
fn socket_path(name: &str) -> Result<PathBuf> {
    let os = crate::segment::names::user_name(name)?; // validates the name
    let file = os.trim_start_matches('/').replacen(".u.", ".l.", 1);
    let path = PathBuf::from(format!("/dev/shm/{file}"));
    if path.as_os_str().len() >= 108 {
        return Err(Error::io(
            ErrorKind::InvalidInput,
            format!("listener name {name:?} is too long for a socket path"),
        ));
    }
    Ok(path)
}

fn unix_socket(flags: SocketFlags) -> Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | flags,
        None,
    )?)
}

fn timespec(d: Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// Polls `fds` for input for up to `wait` (`None`: no limit); which are readable (or hung up).
fn poll_all(fds: &[BorrowedFd<'_>], wait: Option<Duration>) -> Result<Vec<bool>> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
    match poll(&mut pfds, wait.map(timespec).as_ref()) {
        Ok(_) => Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect()),
        Err(rustix::io::Errno::INTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e.into()),
    }
}

fn poll_in(fd: BorrowedFd<'_>, deadline: Deadline) -> Result<bool> {
    loop {
        if poll_all(&[fd], deadline.remaining())?[0] {
            return Ok(true);
        }
        if deadline.is_immediate_or_past() {
            return Ok(false);
        }
    }
}

/// Whether the socket at `path` has no live listener (refused, or gone). Never waits: a live
/// listener whose backlog is full (`EAGAIN`) is alive.
pub(crate) fn is_stale(path: &std::path::Path) -> bool {
    let Ok(addr) = SocketAddrUnix::new(path) else {
        return false;
    };
    let Ok(s) = unix_socket(SocketFlags::NONBLOCK) else {
        return false;
    };
    matches!(
        rustix::net::connect(&s, &addr),
        Err(rustix::io::Errno::CONNREFUSED) | Err(rustix::io::Errno::NOENT)
    )
}

/// Whether an error in introducing one client is this process's problem (out of memory or
/// descriptors) rather than that client's: then `accept` reports it instead of dropping the client.
fn is_local_failure(e: &Error) -> bool {
    match e {
        Error::Io(io) => {
            io.kind() == ErrorKind::OutOfMemory
                || matches!(
                    io.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
                )
        }
        _ => false,
    }
}

/// A named rendezvous point: [`Client::connect`] to the same name from any process of this user.
#[derive(Debug)]
pub struct Listener {
    sock: OwnedFd,
    path: PathBuf,
    inode: (u64, u64),
    name: String,
    /// Clients accepted whose introduction has not arrived yet, each with the instant it must have
    /// arrived by: a call whose own deadline ran out leaves them to the next call.
    pending: Mutex<Vec<(OwnedFd, Instant)>>,
}

impl Listener {
    /// Binds `name` (1 to 200 characters from `[A-Za-z0-9._-]`, short enough for a socket path).
    ///
    /// A name held by a live listener is `Io(AddrInUse)`; one left by a listener that died is
    /// reclaimed.
    pub fn bind(name: &str) -> Result<Listener> {
        let path = socket_path(name)?;
        let addr = SocketAddrUnix::new(path.as_path())?;
        // A fork from another thread must not copy the socket before it is tracked.
        let _gate = crate::segment::registry::fork_gate();
        for attempt in 0..2 {
            let sock = unix_socket(SocketFlags::empty())?;
            match rustix::net::bind(&sock, &addr) {
                Ok(()) => {
                    use rustix::fs::Mode;
                    rustix::fs::chmod(path.as_path(), Mode::RUSR | Mode::WUSR)?;
                    rustix::net::listen(&sock, 128)?;
                    let st = rustix::fs::stat(path.as_path())?;
                    // A forked child closes it unless its closure owns this listener.
                    crate::segment::registry::track_listener(sock.as_raw_fd());
                    return Ok(Listener {
                        sock,
                        path,
                        inode: (st.st_dev, st.st_ino),
                        name: name.to_owned(),
                        pending: Mutex::new(Vec::new()),
                    });
                }
                Err(rustix::io::Errno::ADDRINUSE) if attempt == 0 && is_stale(&path) => {
                    let _ = std::fs::remove_file(&path); // its listener died: reclaim the name
                }
                Err(rustix::io::Errno::ADDRINUSE) => {
                    return Err(Error::io(
                        ErrorKind::AddrInUse,
                        format!("listener name {name:?} is taken by a live listener"),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::io(
            ErrorKind::AddrInUse,
            format!("listener name {name:?} is taken"),
        ))
    }

    /// The name it was bound to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for a client and returns the connection to it (end 0 of a new pipe).
    ///
    /// A client that fails its introduction (another user, bad descriptors, silence for 5 s, gone
    /// before the answer) is dropped and the wait goes on.
    pub fn accept(&self) -> Result<Connection> {
        self.accept_at(Deadline::NEVER)
    }

    /// [`accept`](Self::accept), giving up with [`Error::Timeout`] after `timeout`. A client that has
    /// connected but not yet introduced itself when the time is up is kept for the next call.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_at(Deadline::after(Some(timeout)))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(OwnedFd, Instant)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn accept_at(&self, deadline: Deadline) -> Result<Connection> {
        let mut pending = self.pending();
        loop {
            let now = Instant::now();
            pending.retain(|(_, by)| *by > now); // silent for INTRO_TIMEOUT: dropped
            // Sleep until a client connects or introduces itself, the call's deadline, or the next
            // pending client's time runs out.
            let expiry = pending.iter().map(|(_, by)| *by - now).min();
            let wait = match (deadline.remaining(), expiry) {
                (Some(d), Some(e)) => Some(d.min(e)),
                (d, e) => d.or(e),
            };
            let fds: Vec<BorrowedFd<'_>> = std::iter::once(self.sock.as_fd())
                .chain(pending.iter().map(|(c, _)| c.as_fd()))
                .collect();
            let ready = poll_all(&fds, wait)?;
            drop(fds);
            // Introductions that arrived, oldest first.
            let mut arrived = Vec::new();
            for i in (0..pending.len()).rev() {
                if ready[i + 1] {
                    arrived.push(pending.remove(i).0);
                }
            }
            for conn in arrived.into_iter().rev() {
                match self.introduce(&conn) {
                    Ok(c) => return Ok(c),
                    Err(e) if is_local_failure(&e) => return Err(e),
                    Err(_) => {} // that client is dropped; the others wait their turn
                }
            }
            if ready[0] {
                match rustix::net::accept_with(&self.sock, SocketFlags::CLOEXEC) {
                    Ok(c) => {
                        let cred = rustix::net::sockopt::socket_peercred(&c);
                        if cred.is_ok_and(|c| c.uid == rustix::process::geteuid()) {
                            // Its introduction is usually there already: the next round takes it.
                            pending.push((c, Instant::now() + INTRO_TIMEOUT));
                            continue;
                        } // a client of another user is refused (dropped unread)
                    }
                    Err(
                        rustix::io::Errno::AGAIN
                        | rustix::io::Errno::INTR
                        | rustix::io::Errno::CONNABORTED,
                    ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if deadline.is_immediate_or_past() {
                return Err(Error::Timeout);
            }
        }
    }

    /// Reads a client's introduction (it is there: `conn` polled readable), checks and adopts the
    /// pipe it passes, and answers. Never blocks.
    fn introduce(&self, conn: &OwnedFd) -> Result<Connection> {
        let mut hello = [0u8; 8];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            conn,
            &mut [IoSliceMut::new(&mut hello)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        )?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for msg in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(iter) = msg {
                fds.extend(iter);
            }
        }
        if got.bytes == 0 {
            return Err(Error::Eof);
        }
        if got.bytes != HELLO.len() || &hello != HELLO || fds.len() != FDS {
            return Err(Error::Incompatible);
        }
        let memfd = fds.remove(0);
        // `adopt_end` checks the descriptors (seals, eventfds, blocking mode) before using them.
        let conn_end = crate::pipe::adopt_end(memfd, None, fds, 0)?;
        // A client gone by now (EPIPE) is dropped like any other that fails its introduction.
        rustix::net::send(conn, OK, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)?;
        Ok(conn_end)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let fd = self.sock.as_raw_fd();
        let moved = crate::process::note_listener_moved(fd);
        crate::segment::registry::close_listener(fd);
        if moved {
            return; // dropped with a closure just forked: the child owns the socket and its name
        }
        // Remove the name only if it is still ours (not rebound by someone after a reclaim).
        if let Ok(st) = rustix::fs::stat(self.path.as_path()) {
            if (st.st_dev, st.st_ino) == self.inode {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl AsFd for Listener {
    /// The listening socket: readable when a client waits to be accepted.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Waitable for Listener {
    fn __arm(&self) -> Result<Armed> {
        // A client kept from an earlier call may have introduced itself since.
        let pending = self.pending();
        let fds: Vec<BorrowedFd<'_>> = pending.iter().map(|(c, _)| c.as_fd()).collect();
        if !fds.is_empty() && poll_all(&fds, Some(Duration::ZERO))?.contains(&true) {
            return Ok(Armed::Ready);
        }
        Ok(Armed::Fd(self.sock.as_raw_fd()))
    }

    fn __check(&self, signalled: bool) -> Result<bool> {
        Ok(signalled)
    }
}

/// Connects to a [`Listener`] by name.
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to the listener `name` and waits until it accepts; returns end 1 of a new pipe.
    ///
    /// Errors: `Io(NotFound)` if no listener has the name, `Io(ConnectionRefused)` if its listener
    /// died, `Io(PermissionDenied)` if it runs as another user (nothing is sent to it),
    /// [`Error::Eof`] if the listener closed without accepting.
    pub fn connect(name: &str) -> Result<Connection> {
        Self::connect_at(name, Deadline::NEVER)
    }

    /// [`connect`](Self::connect), giving up with [`Error::Timeout`] if not accepted within `timeout`
    /// (a listener whose backlog is full included).
    pub fn connect_timeout(name: &str, timeout: Duration) -> Result<Connection> {
        Self::connect_at(name, Deadline::after(Some(timeout)))
    }

    fn connect_at(name: &str, deadline: Deadline) -> Result<Connection> {
        let path = socket_path(name)?;
        let addr = SocketAddrUnix::new(path.as_path())?;
        let sock = unix_socket(SocketFlags::empty())?;
        if let Some(left) = deadline.remaining() {
            // A Unix socket's connect waits while the listener's backlog is full, for as long as the
            // socket's send timeout allows (which then also bounds sending the introduction).
            let left = left.max(Duration::from_micros(1));
            rustix::net::sockopt::set_socket_timeout(
                &sock,
                rustix::net::sockopt::Timeout::Send,
                Some(left),
            )?;
        }
        match rustix::net::connect(&sock, &addr) {
            Ok(()) => {}
            Err(rustix::io::Errno::AGAIN) if deadline.remaining().is_some() => {
                return Err(Error::Timeout);
            }
            Err(rustix::io::Errno::NOENT) => {
                return Err(Error::io(
                    ErrorKind::NotFound,
                    format!("no listener named {name:?}"),
                ));
            }
            Err(rustix::io::Errno::CONNREFUSED) => {
                return Err(Error::io(
                    ErrorKind::ConnectionRefused,
                    format!("the listener {name:?} is gone"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        // The pipe's descriptors go to a process of this user only.
        let cred = rustix::net::sockopt::socket_peercred(&sock)?;
        let me = rustix::process::geteuid();
        if cred.uid != me {
            return Err(Error::io(
                ErrorKind::PermissionDenied,
                format!(
                    "the listener {name:?} runs as uid {}, not as this user (uid {}): refused",
                    cred.uid.as_raw(),
                    me.as_raw()
                ),
            ));
        }
        let (theirs, mine) = crate::Pipe::new()?;
        let fds = theirs.descriptors();
        let borrowed: Vec<BorrowedFd<'_>> =
            // SAFETY: the descriptors belong to `theirs`'s segment, alive until the end of this call.
            fds.iter().map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) }).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        cmsg.push(SendAncillaryMessage::ScmRights(&borrowed));
        match rustix::net::sendmsg(
            &sock,
            &[IoSlice::new(HELLO)],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::AGAIN) => return Err(Error::Timeout),
            Err(e) => return Err(e.into()),
        }
        if !poll_in(sock.as_fd(), deadline)? {
            return Err(Error::Timeout);
        }
        let mut ok = [0u8; 2];
        let n = rustix::io::read(&sock, &mut ok)?;
        if n == 0 {
            return Err(Error::Eof);
        }
        if &ok[..n] != OK {
            return Err(Error::Incompatible);
        }
        drop(theirs); // the listener holds end 0 now
        Ok(mine)
    }
}
