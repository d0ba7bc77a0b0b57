//! A listening Unix or TCP socket: what a [`Listener`](crate::Listener) bound to `unix:` or
//! `tcp://` accepts with. Each accepted socket becomes a [`SockConn`] with its options set (see
//! [`stream`](super::stream)); the authkey handshake, if any, runs above (for every transport alike).
//!
//! A Unix listener's path is removed when the listener is dropped, if the path is still its own
//! (and it is not moving into a forked child); a path left by a listener that died is reclaimed by
//! the next `bind`.

use super::address::{Address, tcp_string, unix_string};
use super::conn::{SockConn, poll_one};
use super::stream::{self, DEAD_PEER_TIMEOUT, Family, Sock};
use crate::error::{Error, Result};
use crate::wait::Deadline;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;

/// A listening socket.
#[derive(Debug)]
pub(crate) struct SockListener {
    sock: Sock,
    family: Family,
    address: String,
    /// A Unix listener's path and its device and inode.
    path: Option<(PathBuf, (u64, u64))>,
}

impl SockListener {
    /// Binds a `unix:` or `tcp://` address; a Unix socket gets `mode` (checked by the caller).
    pub(crate) fn bind(addr: &Address, mode: u32) -> Result<SockListener> {
        match addr {
            Address::Tcp { host, port } => {
                let (sock, address) = stream::bind_tcp(host, *port)?;
                Ok(SockListener {
                    sock,
                    family: Family::Tcp,
                    address,
                    path: None,
                })
            }
            Address::Unix(path) => {
                let (sock, inode) = stream::bind_unix(path, mode)?;
                Ok(SockListener {
                    sock,
                    family: Family::Unix,
                    address: unix_string(path),
                    path: Some((path.clone(), inode)),
                })
            }
            Address::Shm(_) => unreachable!("a shared-memory name is bound by the pipe listener"),
        }
    }

    /// The address bound (with the real port of a port-0 bind).
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Waits until `deadline` for a connection and accepts it.
    pub(crate) fn accept_at(&self, deadline: Deadline) -> Result<SockConn> {
        loop {
            if !poll_one(self.sock.as_fd(), true, deadline)? {
                return Err(Error::Timeout);
            }
            match self.sock.accept() {
                Ok(s) => {
                    stream::configure(&s, self.family, DEAD_PEER_TIMEOUT)?;
                    let peer = match self.family {
                        Family::Tcp => rustix::net::getpeername(&s)
                            .ok()
                            .flatten()
                            .and_then(|a| SocketAddr::try_from(a).ok())
                            .map_or_else(|| "tcp://?".into(), |a| tcp_string(&a)),
                        Family::Unix => format!("a client of {}", self.address),
                    };
                    return Ok(SockConn::new(s, self.family, peer));
                }
                Err(
                    rustix::io::Errno::AGAIN
                    | rustix::io::Errno::INTR
                    | rustix::io::Errno::CONNABORTED,
                ) => {
                    if deadline.is_immediate_or_past() {
                        return Err(Error::Timeout);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether a connection waits to be accepted.
    pub(crate) fn pending(&self) -> Result<bool> {
        poll_one(
            self.sock.as_fd(),
            true,
            Deadline::after(Some(std::time::Duration::ZERO)),
        )
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.sock.as_fd().as_raw_fd()
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for SockListener {
    fn drop(&mut self) {
        // Remove the path while we still listen, if it is still ours and not moving to a child.
        if let Some((path, inode)) = &self.path {
            if !self.sock.moving() {
                if let Ok(st) = rustix::fs::stat(path.as_path()) {
                    if (st.st_dev, st.st_ino) == *inode {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
        self.sock.release();
    }
}
