//! `Listener` and `Client`: unrelated processes meet by name and get a [`Connection`].
//!
//! The name is a Unix socket in `/dev/shm` (`shmwire.[$SHMWIRE_PREFIX.]l.NAME`, mode 0600, and the peer's
//! uid is checked on accept). The socket only carries the introduction: the client creates an ordinary
//! shared-memory pipe (a sealed memfd and its eventfds) and passes its descriptors over the socket
//! (`SCM_RIGHTS`); the listener opens its own description of it, takes end 0 and says so; the client
//! keeps end 1. From then on the socket is closed and everything runs over shared memory; no segment
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
//! p.join()?;
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
use std::time::Duration;

const HELLO: &[u8; 8] = b"SHMWp\x01\0\0"; // "SHMW", kind pipe, protocol 1
const OK: &[u8; 2] = b"OK";
/// How long an accepted client may take to introduce itself.
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

fn unix_socket() -> Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn poll_in(fd: BorrowedFd<'_>, deadline: Deadline) -> Result<bool> {
    use rustix::event::{PollFd, PollFlags, poll};
    loop {
        let left = deadline.remaining();
        let ts = left.map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, ts.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the socket at `path` has no live listener (refused, or gone).
fn is_stale(path: &std::path::Path) -> bool {
    let Ok(addr) = SocketAddrUnix::new(path) else {
        return false;
    };
    let Ok(s) = unix_socket() else { return false };
    matches!(
        rustix::net::connect(&s, &addr),
        Err(rustix::io::Errno::CONNREFUSED) | Err(rustix::io::Errno::NOENT)
    )
}

/// A named rendezvous point: [`Client::connect`] to the same name from any process of this user.
#[derive(Debug)]
pub struct Listener {
    sock: OwnedFd,
    path: PathBuf,
    inode: (u64, u64),
    name: String,
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
            let sock = unix_socket()?;
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
    pub fn accept(&self) -> Result<Connection> {
        self.accept_at(Deadline::NEVER)
    }

    /// [`accept`](Self::accept), giving up with [`Error::Timeout`] after `timeout`.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_at(Deadline::after(Some(timeout)))
    }

    fn accept_at(&self, deadline: Deadline) -> Result<Connection> {
        loop {
            if !poll_in(self.sock.as_fd(), deadline)? {
                return Err(Error::Timeout);
            }
            let conn = match rustix::net::accept_with(&self.sock, SocketFlags::CLOEXEC) {
                Ok(c) => c,
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            // A client that fails its introduction is dropped; the listener goes on waiting.
            match self.introduce(&conn) {
                Ok(c) => return Ok(c),
                Err(Error::Io(e)) if e.kind() == ErrorKind::PermissionDenied => continue,
                Err(Error::Timeout | Error::Corrupt | Error::Incompatible | Error::Eof) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn introduce(&self, conn: &OwnedFd) -> Result<Connection> {
        let cred = rustix::net::sockopt::socket_peercred(conn)?;
        if cred.uid != rustix::process::geteuid() {
            return Err(Error::io(
                ErrorKind::PermissionDenied,
                "a client of another user was refused",
            ));
        }
        if !poll_in(conn.as_fd(), Deadline::after(Some(INTRO_TIMEOUT)))? {
            return Err(Error::Timeout);
        }
        let mut hello = [0u8; 8];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            conn,
            &mut [IoSliceMut::new(&mut hello)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
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
        let conn_end = crate::pipe::adopt_end(memfd, None, fds, 0)?;
        rustix::net::send(conn, OK, SendFlags::NOSIGNAL)?;
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
    /// died, [`Error::Eof`] if the listener closed without accepting.
    pub fn connect(name: &str) -> Result<Connection> {
        Self::connect_at(name, Deadline::NEVER)
    }

    /// [`connect`](Self::connect), giving up with [`Error::Timeout`] if not accepted within `timeout`.
    pub fn connect_timeout(name: &str, timeout: Duration) -> Result<Connection> {
        Self::connect_at(name, Deadline::after(Some(timeout)))
    }

    fn connect_at(name: &str, deadline: Deadline) -> Result<Connection> {
        let path = socket_path(name)?;
        let addr = SocketAddrUnix::new(path.as_path())?;
        let sock = unix_socket()?;
        match rustix::net::connect(&sock, &addr) {
            Ok(()) => {}
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
        let (theirs, mine) = crate::Pipe::new()?;
        let fds = theirs.descriptors();
        let borrowed: Vec<BorrowedFd<'_>> =
            // SAFETY: the descriptors belong to `theirs`'s segment, alive until the end of this call.
            fds.iter().map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) }).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        cmsg.push(SendAncillaryMessage::ScmRights(&borrowed));
        rustix::net::sendmsg(
            &sock,
            &[IoSlice::new(HELLO)],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        )?;
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
