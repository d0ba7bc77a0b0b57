//! Unix and TCP stream sockets: binding, accepting and connecting (every wait bounded by its
//! deadline), the options every socket connection gets, and the sockets' place in the fork rules.
//!
//! **Options.** A TCP connection sends without delay (`TCP_NODELAY`: a frame goes out at once, as
//! a pipe's does) and notices a peer that vanished (its host powered off, a cable pulled: no FIN,
//! no reset ever comes) within its dead-peer timeout ([`DEAD_PEER_TIMEOUT`] by default,
//! [`Connection::set_dead_peer_timeout`](crate::Connection::set_dead_peer_timeout)): TCP
//! keepalive probes an idle connection after half of it, then every few seconds, and gives up
//! when the timeout is spent (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`), and
//! `TCP_USER_TIMEOUT` bounds how long sent data may stay unacknowledged. A call blocked on such a
//! connection then fails (never waits for ever). A Unix socket needs neither: its peer is on this
//! host, and the kernel closes its end when it dies.
//!
//! **Fork.** Every socket is made (or accepted) under the fork gate and tracked like a
//! shared-memory listener's socket, so a child forked with [`Process::fork`](crate::Process::fork)
//! holds exactly the sockets its closure owns: the others are replaced, in the child, by a socket
//! that neither listens nor connects. All are close-on-exec.

use super::address::{Address, tcp_string};
use crate::error::{Error, Result};
use crate::segment::registry;
use crate::wait::Deadline;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

/// How long a TCP connection's peer may stay silent to probes (or leave sent data unacknowledged)
/// before the connection is declared lost: a vanished host is noticed within this (rounded up to
/// whole seconds, plus at most a second).
pub const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// Which kind of stream socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Unix,
    Tcp,
}

/// A socket of this process, tracked for the fork rules (see the module docs). Dropping it closes
/// it here (a forked child whose closure owns it keeps its own copy).
#[derive(Debug)]
pub(crate) struct Sock {
    fd: OwnedFd,
    /// Whether it was closed here (`release`).
    released: AtomicBool,
    /// Whether it is moving into a child just forked, once asked (`moving`): 0 not asked, 1 no,
    /// 2 yes. (Atomics only so that a `Listener` is `Sync`; one thread drops it.)
    moving: AtomicU8,
}

impl Sock {
    /// A new socket of `family`, close-on-exec.
    fn new(family: AddressFamily) -> Result<Sock> {
        let _gate = registry::fork_gate();
        let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
        registry::track_listener(fd.as_raw_fd());
        Ok(Sock {
            fd,
            released: Default::default(),
            moving: Default::default(),
        })
    }

    /// The next connection waiting on the listening socket `self` (non-blocking: `AGAIN` if none).
    /// The accepted socket blocks.
    pub(crate) fn accept(&self) -> rustix::io::Result<Sock> {
        let _gate = registry::fork_gate();
        let fd = rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC)?;
        registry::track_listener(fd.as_raw_fd());
        Ok(Sock {
            fd,
            released: Default::default(),
            moving: Default::default(),
        })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether this socket is being dropped with a closure just forked (which owns it: the child
    /// keeps its copy). Asked once; later calls repeat the answer.
    pub(crate) fn moving(&self) -> bool {
        match self.moving.load(Ordering::Relaxed) {
            0 => {
                let m = crate::segment::moving::note_listener_moved(self.raw());
                self.moving.store(1 + m as u8, Ordering::Relaxed);
                m
            }
            v => v == 2,
        }
    }

    /// Closes the socket in this process now (the number stays valid, on an inert socket, until
    /// the value drops). A child forked with a closure owning it keeps its copy.
    pub(crate) fn release(&self) {
        if self.released.swap(true, Ordering::Relaxed) {
            return;
        }
        self.moving();
        registry::close_listener(self.raw());
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        self.release();
    }
}

fn set_nonblocking(fd: &Sock, on: bool) -> Result<()> {
    rustix::io::ioctl_fionbio(fd, on)?;
    Ok(())
}

/// Binds and listens at the TCP `host:port` (the first of its addresses that binds and listens);
/// returns the non-blocking listening socket and the address it got (the real port for port 0).
/// A port another socket listens on is [`Error::Exists`].
pub(crate) fn bind_tcp(host: &str, port: u16) -> Result<(Sock, String)> {
    let mut last = None;
    for sa in Address::resolve(host, port)? {
        let family = match sa {
            SocketAddr::V4(_) => AddressFamily::INET,
            SocketAddr::V6(_) => AddressFamily::INET6,
        };
        let sock = Sock::new(family)?;
        rustix::net::sockopt::set_socket_reuseaddr(&sock, true)?;
        if let Err(e) = rustix::net::bind(&sock, &sa) {
            last = Some((sa, e));
            continue;
        }
        crate::hooks::hit(crate::hooks::Point::BoundNotListening);
        // With `SO_REUSEADDR`, a port that is bound but not listening yet may be bound again: the
        // kernel lets the first to `listen` have it, and the other's `listen` is `ADDRINUSE`.
        if let Err(e) = rustix::net::listen(&sock, 128) {
            last = Some((sa, e));
            continue;
        }
        set_nonblocking(&sock, true)?;
        let local: SocketAddr = rustix::net::getsockname(&sock)?
            .try_into()
            .map_err(|_| Error::io(ErrorKind::Other, "the bound socket has no IP address"))?;
        return Ok((sock, tcp_string(&local)));
    }
    let (sa, e) = last.expect("resolve returns at least one address");
    Err(match e {
        rustix::io::Errno::ADDRINUSE => Error::Exists,
        rustix::io::Errno::ADDRNOTAVAIL => Error::io(
            ErrorKind::AddrNotAvailable,
            format!(
                "{sa} is not an address of this host, so nothing can listen there; use one of its addresses, or 0.0.0.0 / [::]"
            ),
        ),
        rustix::io::Errno::ACCESS => Error::io(
            ErrorKind::PermissionDenied,
            format!(
                "binding {sa} needs privileges (a port below 1024?); use a port of 1024 or more"
            ),
        ),
        e => e.into(),
    })
}

/// Binds and listens at the Unix socket `path`, reclaiming a path whose listener died; returns the
/// non-blocking listening socket and the path's device and inode (to remove it only if it is still
/// ours). A live listener's path is [`Error::Exists`], and so is a path that is not a socket. The
/// socket file gets `mode` (0600 or 0660) before it listens, so nobody connects under a wider one.
///
/// Bound as a shared-memory listener's name is (`pipe::listener::bind_at`): the socket is bound and
/// listening at a private path in the same directory before it is linked (`link(2)`, which fails if
/// the name is taken) to `path`, so `path` only ever leads to a listening socket. (Bound at `path`
/// itself, a socket would be refused there between its `bind` and its `listen`, as a dead
/// listener's is: another binder would reclaim it, and this one listen on a path no longer its.)
pub(crate) fn bind_unix(path: &Path, mode: u32) -> Result<(Sock, (u64, u64))> {
    use crate::pipe::listener::{Placing, bind_at};
    for _ in 0..4 {
        let sock = Sock::new(AddressFamily::UNIX)?;
        match bind_at(sock.as_fd(), path, mode) {
            Ok(st) => {
                set_nonblocking(&sock, true)?;
                return Ok((sock, (st.st_dev, st.st_ino)));
            }
            Err(Placing::Taken) => return Err(Error::Exists),
            Err(Placing::Failed(e)) => return Err(e),
            // The private path could not be made, or went before it was linked.
            Err(Placing::Lost) => {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                if dir.is_some_and(|d| !d.is_dir()) {
                    return Err(Error::io(
                        ErrorKind::NotFound,
                        format!(
                            "the directory of {} does not exist; create it, or choose another path",
                            path.display()
                        ),
                    ));
                }
            }
        }
    }
    Err(Error::io(
        ErrorKind::NotFound,
        format!(
            "the socket bound for {} was removed as it was made (four times); bind again",
            path.display()
        ),
    ))
}

/// Connects to a Unix socket, within `deadline`. Nobody listening there is [`Error::NotFound`].
pub(crate) fn connect_unix(path: &Path, deadline: Deadline) -> Result<Sock> {
    let addr = SocketAddrUnix::new(path)?;
    let sock = Sock::new(AddressFamily::UNIX)?;
    if let Some(left) = deadline.remaining() {
        // A Unix socket's connect waits while the listener's backlog is full, for as long as the
        // socket's send timeout allows. (Cleared once connected: sends have deadlines of their own.)
        rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Send,
            Some(left.max(Duration::from_micros(1))),
        )?;
    }
    match rustix::net::connect(&sock, &addr) {
        Ok(()) => {}
        Err(rustix::io::Errno::AGAIN) => return Err(Error::Timeout),
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::CONNREFUSED) => {
            return Err(Error::NotFound);
        }
        Err(rustix::io::Errno::ACCESS) => {
            let what = format!("the listener at {}", path.display());
            return Err(crate::pipe::listener::socket_denied(&what, path));
        }
        Err(e) => return Err(e.into()),
    }
    rustix::net::sockopt::set_socket_timeout(&sock, rustix::net::sockopt::Timeout::Send, None)?;
    Ok(sock)
}

/// Connects to TCP `host:port` (each of its addresses in turn), within `deadline`. Nobody listening
/// there (refused) is [`Error::NotFound`].
pub(crate) fn connect_tcp(host: &str, port: u16, deadline: Deadline) -> Result<Sock> {
    let mut last = Error::NotFound;
    for sa in Address::resolve(host, port)? {
        let family = match sa {
            SocketAddr::V4(_) => AddressFamily::INET,
            SocketAddr::V6(_) => AddressFamily::INET6,
        };
        let sock = Sock::new(family)?;
        set_nonblocking(&sock, true)?;
        let done = match rustix::net::connect(&sock, &sa) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::INPROGRESS | rustix::io::Errno::AGAIN) => {
                match super::conn::poll_one(sock.as_fd(), false, deadline)? {
                    false => return Err(Error::Timeout),
                    true => rustix::net::sockopt::socket_error(&sock)?,
                }
            }
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => {
                set_nonblocking(&sock, false)?;
                return Ok(sock);
            }
            Err(rustix::io::Errno::CONNREFUSED) => last = Error::NotFound,
            Err(e @ (rustix::io::Errno::HOSTUNREACH | rustix::io::Errno::NETUNREACH)) => {
                last = Error::io(
                    std::io::Error::from(e).kind(),
                    format!("{sa} cannot be reached ({e}); check the address and the network"),
                );
            }
            Err(rustix::io::Errno::TIMEDOUT) => last = Error::Timeout,
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

/// Sets the options of a connected socket: for TCP, no delay, and keepalive and the user timeout
/// for `dead_peer` (see the module docs).
pub(crate) fn configure(sock: &Sock, family: Family, dead_peer: Duration) -> Result<()> {
    if family == Family::Tcp {
        rustix::net::sockopt::set_tcp_nodelay(sock, true)?;
        set_dead_peer(sock, dead_peer)?;
    }
    Ok(())
}

/// Keepalive probes start after half of `d` idle and go every `(d - idle) / 3` (whole seconds, at
/// least one), three unanswered probes give up; sent data may stay unacknowledged for `d`.
pub(crate) fn set_dead_peer(sock: &Sock, d: Duration) -> Result<()> {
    use rustix::net::sockopt as so;
    let secs = d.as_secs_f64().ceil().max(2.0) as u64;
    let idle = (secs / 2).max(1);
    let cnt = 3u32;
    let intvl = ((secs - idle) / cnt as u64).max(1);
    so::set_socket_keepalive(sock, true)?;
    so::set_tcp_keepidle(sock, Duration::from_secs(idle))?;
    so::set_tcp_keepintvl(sock, Duration::from_secs(intvl))?;
    so::set_tcp_keepcnt(sock, cnt)?;
    so::set_tcp_user_timeout(sock, (secs * 1000).min(u32::MAX as u64) as u32)?;
    Ok(())
}
