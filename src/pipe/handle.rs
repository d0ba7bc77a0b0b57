//! `ConnectionHandle`: a `Connection` as plain data, to be opened by a spawned child or by any
//! process of the same user.

use crate::error::{Error, Result};
use crate::pipe::connection::Connection;
use crate::segment::registry;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A serializable handle on one end of a pipe. Make it with [`Connection::to_handle`], pass it to
/// [`Process::spawn`](crate::Process::spawn) or send it to any process of this user, and
/// [`open`](Self::open) it there. What it holds (descriptor numbers, a name) is private: it is only
/// serialized, compared and opened.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{ConnectionHandle, Pipe, Process};
/// let (a, b) = Pipe::new()?;
/// let bytes = postcard::to_allocvec(&b.to_handle()?).unwrap(); // plain data
/// let p = Process::fork(move || {
///     let h: ConnectionHandle = postcard::from_bytes(&bytes).unwrap();
///     let b = h.open().unwrap(); // through this process's maker, which holds the end
///     b.send("opened").unwrap();
/// })?;
/// assert_eq!(a.recv::<String>()?, "opened");
/// assert!(p.join()?.success());
/// # drop(b); Ok(()) }
/// ```
///
/// Shared memory does not cross hosts: a handle records the boot of the host that made it, and
/// opening it on another host is [`Error::Invalid`], saying to connect over `tcp://` instead.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConnectionHandle {
    /// The boot id of the host that made it (zeros if unknown).
    host: [u8; 16],
    repr: Repr,
}

/// What a handle names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
enum Repr {
    /// An anonymous pipe: what the spawned child inherits (a description and participant slot
    /// prepared for it), and what another process opens through `/proc` while the maker lives.
    Inherited {
        /// The inherited descriptor of the pipe's memory.
        fd: i32,
        /// The participant slot prepared for the child.
        slot: u32,
        /// Which end (0 or 1).
        end: u8,
        /// The inherited wake-up descriptors (one pipe per ring).
        eventfds: Vec<i32>,
        /// Device and inode of the pipe's memory, to check a descriptor is the one meant.
        file: (u64, u64),
        /// The maker's pid and its own descriptors of the pipe's memory and wake-up pipes.
        exporter: (u32, i32, Vec<i32>),
    },
    /// A named pipe, opened by name.
    Named {
        /// The OS name of the segment.
        os_name: String,
        /// Which end (0 or 1).
        end: u8,
    },
}

/// The same shape as `ConnectionHandle`, serialized after noting which export it carries.
#[derive(Serialize)]
#[serde(rename = "ConnectionHandle")]
struct HandleOut<'a> {
    host: [u8; 16],
    repr: ReprOut<'a>,
}

/// The same shape as `Repr`.
#[derive(Serialize)]
#[serde(rename = "Repr")]
enum ReprOut<'a> {
    Inherited {
        fd: i32,
        slot: u32,
        end: u8,
        eventfds: &'a [i32],
        file: (u64, u64),
        exporter: &'a (u32, i32, Vec<i32>),
    },
    Named {
        os_name: &'a str,
        end: u8,
    },
}

impl Serialize for ConnectionHandle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let repr = match &self.repr {
            Repr::Inherited {
                fd,
                slot,
                end,
                eventfds,
                file,
                exporter,
            } => {
                // A spawn encoding its arguments takes this export for its child.
                registry::note_handle_serialized(*fd, *slot, *end as usize);
                ReprOut::Inherited {
                    fd: *fd,
                    slot: *slot,
                    end: *end,
                    eventfds,
                    file: *file,
                    exporter,
                }
            }
            Repr::Named { os_name, end } => ReprOut::Named { os_name, end: *end },
        };
        HandleOut {
            host: self.host,
            repr,
        }
        .serialize(s)
    }
}

/// The boot id of this host (`/proc/sys/kernel/random/boot_id`), zeros if it cannot be read.
fn host_id() -> [u8; 16] {
    static ID: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let hex: Vec<u8> = text
            .bytes()
            .filter_map(|b| (b as char).to_digit(16).map(|d| d as u8))
            .collect();
        let mut id = [0u8; 16];
        if hex.len() == 32 {
            for (i, pair) in hex.chunks(2).enumerate() {
                id[i] = pair[0] << 4 | pair[1];
            }
        }
        id
    })
}

/// Device and inode of the file behind `fd`.
fn identity(fd: RawFd) -> Result<(u64, u64)> {
    // SAFETY: `fd` is only borrowed for the fstat (an invalid one makes fstat fail, nothing more).
    let st = rustix::fs::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })?;
    Ok((st.st_dev, st.st_ino))
}

impl Connection {
    /// A handle on this end for another process. For an anonymous pipe: the child started by the
    /// [`Process::spawn`](crate::Process::spawn) whose arguments contain the handle inherits the end
    /// (and holds it from that moment, as a forked child would); any other process of this user
    /// opens it through `/proc` as long as this end lives here. For a named pipe: any process of this
    /// user, by name.
    ///
    /// An anonymous pipe's end has at most one export waiting for a spawn: calling this again before
    /// a spawn takes it returns the same handle (a spawn that takes it makes the next call prepare a
    /// new one). A closed end is [`Error::Misuse`], and so is an end holding frames that only this
    /// process has: taken into its private backlog by a waiting send, or the first pieces of a
    /// message received in part (whoever opens the handle would never see them): receive them first.
    ///
    /// A socket connection has no handle ([`Error::Invalid`]): send its address to the other
    /// process, and connect there.
    pub fn to_handle(&self) -> Result<ConnectionHandle> {
        let Some(shm) = self.shm_end() else {
            return Err(Error::invalid(
                "a socket connection cannot be handed over as a handle; send the listener's address to the other process and connect from there",
            ));
        };
        if shm.is_closed() || shm.holds_private_frames() {
            return Err(Error::Misuse);
        }
        let seg = shm.segment();
        let end = shm.end() as u8;
        if let Some(os_name) = seg.os_name() {
            return Ok(ConnectionHandle {
                host: host_id(),
                repr: Repr::Named {
                    os_name: os_name.to_owned(),
                    end,
                },
            });
        }
        let (fd, slot) = registry::prepare_export(seg, shm.end())?;
        let file = identity(fd)?;
        let eventfds: Vec<i32> = seg.companions().collect();
        let exporter = (std::process::id(), seg.descriptor(), eventfds.clone());
        Ok(ConnectionHandle {
            host: host_id(),
            repr: Repr::Inherited {
                fd,
                slot,
                end,
                eventfds,
                file,
                exporter,
            },
        })
    }
}

impl ConnectionHandle {
    /// Opens the end this handle names, making this process one more holder of it.
    ///
    /// Errors: [`Error::NotFound`] if the process that made an anonymous-pipe handle no longer
    /// holds the pipe (or the name is gone), [`Error::OpenedByMaker`] in the process that made it,
    /// [`Error::Invalid`] for a handle that names no end of a pipe. The spawned child
    /// it was made for adopts the descriptors it inherited for it (those `spawn::enter` recorded, and
    /// only once: a second open goes through the maker, like any other process's).
    ///
    /// A handle made on another host is [`Error::Invalid`]: shared memory does not cross hosts.
    pub fn open(&self) -> Result<Connection> {
        let here = host_id();
        if self.host != [0; 16] && here != [0; 16] && self.host != here {
            return Err(Error::invalid(
                "this ConnectionHandle names a shared-memory pipe of another host, and shared memory does not cross hosts; listen on a tcp:// address there (Listener::bind(\"tcp://HOST:PORT\")) and connect to it from here",
            ));
        }
        match &self.repr {
            Repr::Named { os_name, end } => crate::pipe::open_os_name(os_name, *end as usize),
            Repr::Inherited {
                fd,
                slot,
                end,
                eventfds,
                file,
                exporter,
            } => {
                // Until the segment is registered, a fork must not copy the inherited token.
                let _gate = registry::fork_gate();
                if let Some(memfd) = registry::take_inherited(*fd) {
                    // The spawned child it was prepared for: adopt the inherited description.
                    let mut companions: Vec<OwnedFd> = eventfds
                        .iter()
                        .filter_map(|&e| registry::take_inherited(e))
                        .collect();
                    if companions.len() != eventfds.len() {
                        companions.clear(); // all or none (`wait()` then polls)
                    }
                    if identity(memfd.as_raw_fd()).ok() != Some(*file) {
                        return Err(Error::NotFound); // not the pipe this handle names
                    }
                    return crate::pipe::adopt_end(memfd, Some(*slot), companions, *end as usize);
                }
                if exporter.0 == std::process::id() {
                    return Err(Error::OpenedByMaker); // the maker holds the end already
                }
                open_from(exporter, *file, *end as usize)
            }
        }
    }
}

impl ConnectionHandle {
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: the same handle, as if it had been made on another host.
    pub fn __from_another_host(mut self) -> Self {
        self.host = [0xa5; 16];
        self
    }
}

/// Opens the pipe memory `file` through the maker's descriptor (a new open file description of our
/// own), with its wake-up pipes duplicated by `pidfd_getfd` where the kernel allows (else `wait()`
/// polls).
fn open_from(exporter: &(u32, i32, Vec<i32>), file: (u64, u64), end: usize) -> Result<Connection> {
    use rustix::fs::{Mode, OFlags};
    let (pid, fd, eventfds) = exporter;
    let memfd = rustix::fs::open(
        format!("/proc/{pid}/fd/{fd}"),
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| Error::NotFound)?; // the maker exited, or no longer holds the pipe
    if identity(memfd.as_raw_fd()).ok() != Some(file) {
        return Err(Error::NotFound); // the descriptor now names another file
    }
    let companions: Vec<OwnedFd> = rustix::process::Pid::from_raw(*pid as i32)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .map(|pidfd| {
            eventfds
                .iter()
                .filter_map(|&e| {
                    // SAFETY: pidfd_getfd duplicates descriptor `e` of the process behind `pidfd`
                    // into ours, or fails; on success the new descriptor is ours alone.
                    let got =
                        unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), e, 0) };
                    // SAFETY: as above.
                    (got >= 0).then(|| unsafe { OwnedFd::from_raw_fd(got as RawFd) })
                })
                .collect()
        })
        .unwrap_or_default();
    let companions = if companions.len() == eventfds.len() {
        companions
    } else {
        Vec::new()
    };
    crate::pipe::adopt_end(memfd, None, companions, end)
}
