//! `ConnectionHandle`: a `Connection` as plain data, to be opened by a spawned child (or, for a named
//! pipe, by any process of the same user).

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::segment::registry;
use serde::{Deserialize, Serialize};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A serializable handle on one end of a pipe. Make it with [`Connection::to_handle`], pass it to
/// [`Process::spawn`](crate::Process::spawn) (or send it anywhere, for a named pipe), and
/// [`open`](Self::open) it on the other side.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum ConnectionHandle {
    /// An anonymous pipe, for the next spawned child: the descriptor numbers it inherits, the
    /// participant slot prepared for it (already holding the end), and the file's identity.
    Inherited {
        /// The inherited descriptor of the pipe's memory.
        fd: i32,
        /// The participant slot prepared for the child.
        slot: u32,
        /// Which end (0 or 1).
        end: u8,
        /// The inherited eventfds.
        eventfds: Vec<i32>,
        /// Device and inode of the pipe's memory, to check the descriptor is the one meant.
        file: (u64, u64),
    },
    /// A named pipe, opened by name.
    Named {
        /// The OS name of the segment.
        os_name: String,
        /// Which end (0 or 1).
        end: u8,
    },
}

/// The same shape as `ConnectionHandle`, for serializing it after noting which export it carries.
#[derive(Serialize)]
enum Repr<'a> {
    Inherited {
        fd: i32,
        slot: u32,
        end: u8,
        eventfds: &'a [i32],
        file: (u64, u64),
    },
    Named {
        os_name: &'a str,
        end: u8,
    },
}

impl Serialize for ConnectionHandle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ConnectionHandle::Inherited {
                fd,
                slot,
                end,
                eventfds,
                file,
            } => {
                registry::note_handle_serialized(*fd);
                Repr::Inherited {
                    fd: *fd,
                    slot: *slot,
                    end: *end,
                    eventfds,
                    file: *file,
                }
                .serialize(s)
            }
            ConnectionHandle::Named { os_name, end } => {
                Repr::Named { os_name, end: *end }.serialize(s)
            }
        }
    }
}

fn identity(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: `fd` is only borrowed for the fstat.
    let st = rustix::fs::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).ok()?;
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// A copy of inherited descriptor `fd` (close-on-exec), closing the inherited one.
fn take_inherited(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor sharing the open file description.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return Err(Error::Misuse);
    }
    // SAFETY: `fd` was inherited for this handle and is consumed here, once (a second open finds it
    // closed); `copy` is ours.
    unsafe {
        libc::close(fd);
        Ok(OwnedFd::from_raw_fd(copy))
    }
}

impl Connection {
    /// A handle on this end for another process: for an anonymous pipe, the child started by the
    /// [`Process::spawn`](crate::Process::spawn) whose arguments contain the handle inherits it (and
    /// holds the end from that moment, as a forked child would); for a named pipe, any process of this
    /// user can open it. An anonymous-pipe handle never passed to a spawn keeps the end open as long as
    /// this process lives.
    pub fn to_handle(&self) -> Result<ConnectionHandle> {
        let seg = self.segment();
        let end = self.end() as u8;
        if let Some(os_name) = seg.os_name() {
            return Ok(ConnectionHandle::Named {
                os_name: os_name.to_owned(),
                end,
            });
        }
        let (fd, slot) = registry::prepare_export(seg, self.end())?;
        let file = identity(fd).ok_or(Error::Corrupt)?;
        Ok(ConnectionHandle::Inherited {
            fd,
            slot,
            end,
            eventfds: seg.companions().collect(),
            file,
        })
    }
}

impl ConnectionHandle {
    /// Opens the end this handle names. An inherited handle opens once, in the child it was made for
    /// (elsewhere, or twice, it is [`Error::Misuse`]).
    pub fn open(&self) -> Result<Connection> {
        match self {
            ConnectionHandle::Named { os_name, end } => {
                crate::pipe::open_os_name(os_name, *end as usize)
            }
            ConnectionHandle::Inherited {
                fd,
                slot,
                end,
                eventfds,
                file,
            } => {
                if identity(*fd) != Some(*file) {
                    return Err(Error::Misuse);
                }
                let memfd = take_inherited(*fd)?;
                let companions = eventfds
                    .iter()
                    .filter_map(|&e| take_inherited(e).ok())
                    .collect();
                crate::pipe::adopt_end(memfd, Some(*slot), companions, *end as usize)
            }
        }
    }
}
