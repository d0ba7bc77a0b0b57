//! `Listener` and `Client`: unrelated processes meet by name and get a [`Connection`].
//!
//! The name is a Unix socket in `/dev/shm` (`shmwire.[$SHMWIRE_PREFIX.]l.NAME`, mode 0600). Each side
//! checks the other's uid (`SO_PEERCRED`): a listener serves clients of its own user only, and a client
//! sends nothing to a listener of another user. Sharing across users is opt-in: a listener bound with
//! `.mode(0o660)` (see [`ListenerBuilder`](crate::ListenerBuilder)) has its socket in its creator's
//! effective group with mode 0660, so the kernel lets the users of that group connect; the listener
//! serves a client of another user only if it is in that group (`SO_PEERCRED`, `SO_PEERGROUPS`), and
//! such a client sends its pipe to a listener of another user only if the socket is that user's,
//! 0660 and in a group the client is in (no access for others), as for any named object. The socket
//! only carries the introduction: the client
//! creates an ordinary shared-memory pipe (a sealed memfd and its wake-up pipes) and passes its
//! descriptors over the socket (`SCM_RIGHTS`); the listener checks them (the memfd sealed against
//! resizing, its rings at most [`Listener::MAX_CLIENT_CAPACITY`], the wake-up descriptors anonymous
//! pipes, which it opens anew for itself), opens its own description of the memory, takes end 0 and
//! says so; the client keeps end 1. From then on the socket is closed and everything runs over shared
//! memory; no segment ever has a name, so nothing can be left in `/dev/shm` but the listener's socket,
//! which the next `bind` of the name reclaims if its listener died (and `shmwire::cleanup()` removes).
//!
//! **Binding.** A socket is bound and listening at a private temporary path before it is linked
//! (`link(2)`) to the name, so a socket found at a name is always a live listener or a dead one,
//! never one still starting. A name whose listener died is reclaimed by one process at a time: under
//! a lock (an abstract Unix socket named after the name, released by the kernel when its holder
//! dies), which `cleanup` takes too, the stale socket is checked again, removed, and ours linked.
//!
//! **Accepting.** A client accepted before its introduction arrived waits in the listener (for 5 s)
//! and is introduced by a later call. The listener's own state is locked only for moments (never
//! while it polls, so one thread's `accept` does not hold up another's `accept_timeout`), and only
//! under the fork gate, so a forked child never inherits the lock held; a thread that polls takes the
//! waiting clients with it, and one that hands clients back while others poll wakes them (a private
//! eventfd). Each client socket is tracked by the registry like the listening socket: a child forked
//! while it waits holds it only if its closure owns the listener. A listener reports itself ready to
//! [`wait`](fn@crate::wait) only with a connection in hand, introduced and kept for the next `accept`.
//!
//! ```
//! # fn main() -> shmwire::Result<()> {
//! use shmwire::{Client, Listener, Process};
//! let name = format!("doc-listener-{}", std::process::id());
//! let listener = Listener::bind(&name)?;
//! let n = name.clone();
//! let p = Process::fork(move || {
//!     let conn = Client::connect(&n).unwrap();
//!     conn.send(&"hello").unwrap();
//! })?;
//! let conn = listener.accept()?;
//! assert_eq!(conn.recv::<String>()?, "hello");
//! assert!(p.join()?.success());
//! # Ok(()) }
//! ```

use crate::error::{Error, Result};
use crate::pipe::connection::Connection;
use crate::segment::names::{is_stale, reclaim_lock, remove_stale_locked, unix_socket};
use crate::segment::registry::{self, Gate};
use crate::wait::Deadline;
use crate::wait::select::Armed;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags,
};
use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const HELLO: &[u8; 8] = b"SHMWp\x01\0\0"; // "SHMW", kind pipe, protocol 1
const OK: &[u8; 2] = b"OK";
/// How long an accepted client may take to introduce itself (across `accept` calls).
const INTRO_TIMEOUT: Duration = Duration::from_secs(5);
/// Descriptors a client sends: the pipe's memfd and its two wake-up pipes.
const FDS: usize = 3;
/// How long `bind` waits for another process that reclaims the same stale name.
const RECLAIM_WAIT: Duration = Duration::from_secs(1);

/// The socket path of the listener `name`.
fn socket_path(name: &str) -> Result<PathBuf> {
    let os = crate::segment::names::user_name(name)?; // validates the name
    let file = os.trim_start_matches('/').replacen(".u.", ".l.", 1);
    let path = PathBuf::from(format!("/dev/shm/{file}"));
    if path.as_os_str().len() >= 108 {
        return Err(Error::invalid(format!(
            "listener name {name:?} is too long for a socket path; use a shorter name"
        )));
    }
    Ok(path)
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

/// A socket path of this process's own in the directory of `path` (so it can be linked there), to
/// bind a listener at before it is linked to `path`.
fn private_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let prefix = crate::segment::names::prefix();
    // Unguessable as well as unique: another user of a shared directory cannot take the names in
    // advance, and a name left by a killed process whose pid came back is not ours to trip on.
    let r = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.finish() as u32
    };
    let file = format!("{prefix}b.{}.{n}.{r:08x}", std::process::id());
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(file),
        _ => PathBuf::from(file),
    }
}

/// How placing a listening socket at its name failed.
pub(crate) enum Placing {
    /// A live listener has the name (or another process is reclaiming it).
    Taken,
    /// Our temporary path went (a `cleanup` took it for stale before it listened): try again.
    Lost,
    Failed(Error),
}

impl From<rustix::io::Errno> for Placing {
    fn from(e: rustix::io::Errno) -> Placing {
        match e {
            rustix::io::Errno::NOENT => Placing::Lost,
            e => Placing::Failed(e.into()),
        }
    }
}

/// Binds `sock` at a private path in the directory of `path`, with `mode` (checked: 0600 or
/// 0660), listening, and links it to `path`; returns the socket's stat. The private path is removed
/// in any case. (Also how a `unix:` listener is bound: see `transport::stream::bind_unix`.)
pub(crate) fn bind_at(
    sock: BorrowedFd<'_>,
    path: &Path,
    mode: u32,
) -> std::result::Result<rustix::fs::Stat, Placing> {
    use rustix::fs::Mode;
    let tmp = private_path(path);
    let addr = SocketAddrUnix::new(tmp.as_path()).map_err(|e| match e {
        rustix::io::Errno::NAMETOOLONG => Placing::Failed(Error::invalid(format!(
            "the socket path {} leaves no room for the temporary socket a listener is bound at \
             first ({}, at most 107 bytes); use a shorter path",
            path.display(),
            tmp.display()
        ))),
        e => Placing::from(e),
    })?;
    match rustix::net::bind(sock, &addr) {
        Ok(()) => {}
        // The private name exists (a leftover, however unlikely): another name, another try.
        Err(rustix::io::Errno::ADDRINUSE) => return Err(Placing::Lost),
        Err(e) => return Err(e.into()),
    }
    crate::hooks::hit(crate::hooks::Point::BoundNotListening);
    let placed = (|| {
        // Nobody connects before `listen`, so nobody connects under a wider mode (umask's).
        rustix::fs::chmod(tmp.as_path(), Mode::from_raw_mode(mode))?;
        rustix::net::listen(sock, 128)?;
        let st = rustix::fs::stat(tmp.as_path())?;
        place(&tmp, path)?;
        Ok(st)
    })();
    let _ = std::fs::remove_file(&tmp);
    placed
}

/// Links the listening socket at `tmp` to `path`, reclaiming the name if its listener died.
fn place(tmp: &Path, path: &Path) -> std::result::Result<(), Placing> {
    match rustix::fs::link(tmp, path) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    if !is_stale(path) {
        return Err(Placing::Taken);
    }
    crate::hooks::hit(crate::hooks::Point::ReclaimFound);
    // Its listener died. Under the lock, a stale socket stays stale (nobody revives one: a live
    // listener is only ever linked in anew) and only we remove it; a name found with no file is
    // left for whoever links first (see `remove_stale_locked`).
    // The lock is a socket: a fork from another thread must not copy it into a child that would
    // hold it for its life (the gate is re-entrant: a shared-memory listener's bind holds it).
    let _gate = registry::fork_gate();
    let Some(_lock) = reclaim_lock(path, RECLAIM_WAIT).map_err(Placing::Failed)? else {
        return Err(Placing::Taken);
    };
    remove_stale_locked(path).map_err(|e| Placing::Failed(e.into()))?;
    match rustix::fs::link(tmp, path) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(Placing::Taken), // a live listener came first
        Err(e) => Err(e.into()),
    }
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

/// The socket of a client accepted and not yet introduced. It is tracked by the registry from the
/// moment it exists (both under the fork gate), so a child forked meanwhile makes its copy inert
/// unless its closure owns the listener; it is closed under the gate too.
#[derive(Debug)]
struct ClientSock(RawFd);

impl ClientSock {
    /// Accepts the next client of the listening socket `listener` (which is non-blocking).
    fn accept(listener: &OwnedFd) -> rustix::io::Result<ClientSock> {
        let _gate = registry::fork_gate();
        let fd = rustix::net::accept_with(listener, SocketFlags::CLOEXEC)?.into_raw_fd();
        registry::track_client(listener.as_raw_fd(), fd);
        Ok(ClientSock(fd))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is this value's own until it drops.
        unsafe { BorrowedFd::borrow_raw(self.0) }
    }
}

impl Drop for ClientSock {
    fn drop(&mut self) {
        let _gate = registry::fork_gate();
        registry::untrack_client(self.0);
        // SAFETY: this value owns the descriptor and closes it once, here.
        drop(unsafe { OwnedFd::from_raw_fd(self.0) });
    }
}

/// A client waiting for its introduction, and the instant it must have arrived by.
#[derive(Debug)]
struct Waiting {
    sock: ClientSock,
    by: Instant,
}

/// What the threads of this process using one listener share.
#[derive(Debug, Default)]
struct State {
    /// Clients accepted whose introduction has not arrived yet (oldest first), except those a
    /// polling thread has taken with it.
    clients: Vec<Waiting>,
    /// Connections introduced by [`wait`](crate::wait)'s look, for the next `accept`.
    ready: VecDeque<Connection>,
    /// Threads in `accept` now.
    accepting: usize,
}

/// The state, locked (see `Listener::state`). The guard goes before the gate.
struct Locked<'a> {
    guard: MutexGuard<'a, State>,
    _gate: Gate,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

/// A shared-memory listener: the part of a [`Listener`](crate::Listener) bound to a name.
#[derive(Debug)]
pub(crate) struct ShmListener {
    /// The listening socket (non-blocking).
    sock: OwnedFd,
    /// Signalled when clients or connections are handed back while other threads poll.
    wake: OwnedFd,
    path: PathBuf,
    inode: (u64, u64),
    /// The socket's group, if its mode lets that group in (`.mode(0o660)`): its users are served.
    group: Option<u32>,
    name: String,
    state: Mutex<State>,
}

impl ShmListener {
    /// The largest ring a client's pipe may have (each direction): a larger one is refused. What
    /// this process allocates for one message from a client is bounded by half of it (a frame).
    pub const MAX_CLIENT_CAPACITY: usize = 64 << 20;

    /// Binds `name` (1 to 200 characters from `[A-Za-z0-9._-]`, short enough for a socket path),
    /// its socket with `mode` (0600, or 0660 to serve the users of this process's group; any other
    /// is [`Error::Invalid`]).
    ///
    /// A name held by a live listener is [`Error::Exists`]; one left by a listener that died is
    /// reclaimed (by one of several processes that try at once: the others get `Exists`).
    pub(crate) fn bind(name: &str, mode: u32) -> Result<ShmListener> {
        crate::segment::check_mode(mode)?;
        let path = socket_path(name)?;
        let taken = || Error::Exists;
        // A fork from another thread must not copy the socket before it is tracked.
        let _gate = registry::fork_gate();
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        let mut attempts = 0;
        let (sock, st) = loop {
            attempts += 1;
            let sock = unix_socket(SocketFlags::NONBLOCK)?;
            match bind_at(sock.as_fd(), &path, mode) {
                Ok(st) => break (sock, st),
                Err(Placing::Taken) => return Err(taken()),
                Err(Placing::Lost) if attempts < 4 => {}
                Err(Placing::Lost) => {
                    return Err(Error::io(
                        ErrorKind::NotFound,
                        "the listener's socket file was removed as it was made (by a cleanup, \
                         four times); bind again once no cleanup runs",
                    ));
                }
                Err(Placing::Failed(e)) => return Err(e),
            }
        };
        // A forked child closes it unless its closure owns this listener.
        registry::track_listener(sock.as_raw_fd());
        Ok(ShmListener {
            sock,
            wake,
            path,
            inode: (st.st_dev, st.st_ino),
            group: (mode & 0o060 == 0o060).then_some(st.st_gid),
            name: name.to_owned(),
            state: Mutex::new(State::default()),
        })
    }

    /// The name it was bound to.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The shared state, locked for a moment: under the fork gate, so that no child is forked while
    /// the lock is held (it would stay locked in the child for ever).
    fn state(&self) -> Locked<'_> {
        let gate = registry::fork_gate();
        Locked {
            guard: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            _gate: gate,
        }
    }

    /// Waits until `deadline` for a client and returns the connection to it (end 0 of a new
    /// pipe). A client that fails its introduction (another user, bad descriptors, silence for
    /// 5 s, gone before the answer) is dropped and the wait goes on.
    pub(crate) fn accept_at(&self, deadline: Deadline) -> Result<Connection> {
        self.state().accepting += 1;
        struct Leave<'a>(&'a ShmListener);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.state().accepting -= 1;
            }
        }
        let _leave = Leave(self);
        loop {
            self.drain_wake();
            let mut mine = {
                let mut st = self.state();
                if let Some(c) = st.ready.pop_front() {
                    return Ok(c);
                }
                std::mem::take(&mut st.clients)
            };
            let got = self.round(&mut mine, deadline);
            self.hand_back(mine, None, true);
            if let Some(c) = got? {
                return Ok(c);
            }
            if deadline.is_immediate_or_past() {
                return Err(Error::Timeout);
            }
        }
    }

    /// One round of `accept`: sleeps until a client connects or introduces itself, a waiting client's
    /// time runs out, another thread hands clients back, or the deadline; then introduces the oldest
    /// client whose introduction arrived (the others stay in `mine`), or accepts one new client.
    /// Every round ends, so the caller checks its deadline after each.
    fn round(&self, mine: &mut Vec<Waiting>, deadline: Deadline) -> Result<Option<Connection>> {
        let now = Instant::now();
        mine.retain(|w| w.by > now); // silent for INTRO_TIMEOUT: dropped
        let expiry = mine.iter().map(|w| w.by - now).min();
        let wait = match (deadline.remaining(), expiry) {
            (Some(d), Some(e)) => Some(d.min(e)),
            (d, e) => d.or(e),
        };
        let ready = {
            let fds: Vec<BorrowedFd<'_>> = [self.sock.as_fd(), self.wake.as_fd()]
                .into_iter()
                .chain(mine.iter().map(|w| w.sock.fd()))
                .collect();
            poll_all(&fds, wait)?
        };
        let arrived: Vec<usize> = (0..mine.len()).filter(|&i| ready[i + 2]).collect();
        for (taken, i) in arrived.into_iter().enumerate() {
            let w = mine.remove(i - taken);
            match self.introduce(w.sock.fd()) {
                Ok(c) => return Ok(Some(c)),
                Err(e) if is_local_failure(&e) => return Err(e),
                Err(_) => {} // that client is dropped; the next one is tried
            }
        }
        if ready[0] {
            match ClientSock::accept(&self.sock) {
                Ok(c) => {
                    if self.serves(c.fd()) {
                        // Its introduction is usually there already.
                        if poll_all(&[c.fd()], Some(Duration::ZERO))?[0] {
                            match self.introduce(c.fd()) {
                                Ok(conn) => return Ok(Some(conn)),
                                Err(e) if is_local_failure(&e) => return Err(e),
                                Err(_) => {} // dropped
                            }
                        } else {
                            mine.push(Waiting {
                                sock: c,
                                by: Instant::now() + INTRO_TIMEOUT,
                            });
                        }
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
        Ok(None)
    }

    /// Whether the client on `conn` is one this listener serves: a process of this user, or, if
    /// the socket is shared with its group, of a user in that group (its effective group or one
    /// of its supplementary groups).
    fn serves(&self, conn: BorrowedFd<'_>) -> bool {
        let Ok(cred) = rustix::net::sockopt::socket_peercred(conn) else {
            return false;
        };
        if cred.uid == rustix::process::geteuid() {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        cred.gid.as_raw() == group || peer_groups(conn).is_some_and(|gs| gs.contains(&group))
    }

    /// Gives back the clients a round took (and a connection introduced for a later `accept`), and
    /// wakes the threads that poll (`accepting`: whether the caller is one of them).
    fn hand_back(&self, mine: Vec<Waiting>, conn: Option<Connection>, accepting: bool) {
        if mine.is_empty() && conn.is_none() {
            return;
        }
        let mut st = self.state();
        st.clients.extend(mine);
        st.clients.sort_by_key(|w| w.by);
        st.ready.extend(conn);
        let others = st.accepting - usize::from(accepting);
        drop(st);
        if others > 0 {
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        }
    }

    fn drain_wake(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut b);
    }

    /// One round that does not wait, for [`wait`](crate::wait): true if a connection is in hand
    /// (introduced now, or earlier), kept for the next `accept`.
    fn connection_in_hand(&self) -> Result<bool> {
        let mut mine = {
            let mut st = self.state();
            if !st.ready.is_empty() {
                return Ok(true);
            }
            std::mem::take(&mut st.clients)
        };
        let got = self.round(&mut mine, Deadline::after(Some(Duration::ZERO)));
        let (conn, err) = match got {
            Ok(c) => (c, None),
            Err(e) => (None, Some(e)),
        };
        let found = conn.is_some();
        self.hand_back(mine, conn, false);
        err.map_or(Ok(found), Err)
    }

    /// Reads a client's introduction (it is there: `conn` polled readable), checks and adopts the
    /// pipe it passes, and answers. Never blocks.
    fn introduce(&self, conn: BorrowedFd<'_>) -> Result<Connection> {
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
        // Checks the descriptors (seals, ring sizes, wake-up pipes) before using them.
        let conn_end =
            crate::pipe::adopt_end_capped(memfd, None, fds, 0, Self::MAX_CLIENT_CAPACITY)?;
        // A client gone by now (EPIPE) is dropped like any other that fails its introduction.
        rustix::net::send(conn, OK, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)?;
        Ok(conn_end)
    }
}

impl Drop for ShmListener {
    fn drop(&mut self) {
        let fd = self.sock.as_raw_fd();
        let moved = crate::segment::moving::note_listener_moved(fd);
        // Remove the name while we still listen (so nobody takes it for stale meanwhile), and only
        // if it is still ours. Moved with a closure just forked: the child owns it.
        if !moved {
            if let Ok(st) = rustix::fs::stat(self.path.as_path()) {
                if (st.st_dev, st.st_ino) == self.inode {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        }
        // The waiting clients' sockets close (each under the gate), then the listening socket.
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(|e| e.into_inner()));
        drop(state);
        registry::close_listener(fd);
    }
}

impl ShmListener {
    /// The listening socket (non-blocking): readable when a client waits to be accepted.
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    pub(crate) fn arm(&self) -> Result<Armed> {
        if self.connection_in_hand()? {
            return Ok(Armed::Ready);
        }
        Ok(Armed::Fd(self.sock.as_raw_fd()))
    }

    pub(crate) fn check(&self) -> Result<bool> {
        // A client that connected and hung up (a liveness probe) makes the socket readable: ready
        // only with a connection in hand. Clients waiting for their introduction are looked at too.
        self.connection_in_hand()
    }
}

/// The supplementary groups of the peer of `conn` (`SO_PEERGROUPS`), as they were when it
/// connected; `None` if the kernel does not say.
fn peer_groups(conn: BorrowedFd<'_>) -> Option<Vec<u32>> {
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: `groups` has room for `len` bytes; the kernel writes at most that many and says
        // how many it wrote (or needs) in `len`.
        let r = unsafe {
            libc::getsockopt(
                conn.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / 4;
        if r == 0 {
            groups.truncate(n);
            return Some(groups);
        }
        // ERANGE: `len` says how much it needs (at most NGROUPS_MAX, 65536 groups).
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE)
            || n <= groups.len()
            || n > 65536
        {
            return None;
        }
        groups.resize(n, 0);
    }
}

/// The error for a listener's socket this user may not connect to (`EACCES`): whose it is, its
/// mode, and what to do. (Also the `unix:` transport's.)
pub(crate) fn socket_denied(what: &str, path: &Path) -> Error {
    let whose = rustix::fs::stat(path).map_or("another user".to_owned(), |st| {
        format!("uid {} (socket mode {:o})", st.st_uid, st.st_mode & 0o777)
    });
    Error::io(
        ErrorKind::PermissionDenied,
        format!(
            "{what} belongs to {whose}, and this user (uid {}) may not connect to it; run the \
             client as the listener's user, or, to share it across users, bind the listener with \
             `.mode(0o660)` and connect as a user of a group both users are in",
            rustix::process::geteuid().as_raw()
        ),
    )
}

/// Connects to the shared-memory listener `name` within `deadline`; returns end 1 of a new pipe
/// (see [`Client::connect`](crate::Client::connect) for the errors).
pub(crate) fn connect_at(name: &str, deadline: Deadline) -> Result<Connection> {
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
        // No socket at the name, or one whose listener died: nobody listens there.
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::CONNREFUSED) => {
            return Err(Error::NotFound);
        }
        // The socket is another user's, not shared with us: say whose, and what to do.
        Err(rustix::io::Errno::ACCESS) => {
            return Err(socket_denied(&format!("the listener {name:?}"), &path));
        }
        Err(e) => return Err(e.into()),
    }
    // The pipe's descriptors go to a process of this user only, or of the user whose socket it is
    // if that user shares it with a group of ours (0660, no access for others: as a named object).
    let cred = rustix::net::sockopt::socket_peercred(&sock)?;
    let me = rustix::process::geteuid();
    let shared_with_us = || {
        rustix::fs::stat(path.as_path()).is_ok_and(|st| {
            st.st_uid == cred.uid.as_raw()
                && st.st_mode & 0o060 == 0o060
                && crate::segment::check_owner(&path.to_string_lossy(), &st).is_ok()
        })
    };
    if cred.uid != me && !shared_with_us() {
        return Err(Error::io(
            ErrorKind::PermissionDenied,
            format!(
                "the listener {name:?} runs as uid {}, not as this user (uid {}), so nothing \
                 was sent to it; connect as its user, or use a name of your own",
                cred.uid.as_raw(),
                me.as_raw()
            ),
        ));
    }
    let (theirs, mine) = crate::Pipe::new()?;
    let fds = theirs.shm_end().expect("a new pipe's end").descriptors();
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
