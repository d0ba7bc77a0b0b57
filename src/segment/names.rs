//! Names of segments in `/dev/shm`, the listing of live ones and the removal of stale ones.
//!
//! Every name starts with `shmwire.`; when `SHMWIRE_PREFIX` is set (tests, CI) it follows, so a run's
//! leftovers can be found and removed. User names are checked.

use super::header::{HeaderFields, Kind, MAGIC, READY, READY_OFFSET};
use super::token;
use crate::error::{Error, Result};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) const SHM_DIR: &str = "/dev/shm";

/// The path in [`SHM_DIR`] of the OS name `os_name` (as `shm_open` takes it: `/shmwire...`).
pub(crate) fn path_of(os_name: &str) -> String {
    format!("{SHM_DIR}/{}", os_name.trim_start_matches('/'))
}

/// The run prefix: `shmwire.` plus `$SHMWIRE_PREFIX.` if set.
pub(crate) fn prefix() -> String {
    match std::env::var("SHMWIRE_PREFIX") {
        Ok(p) if !p.is_empty() => format!("shmwire.{p}."),
        _ => "shmwire.".to_owned(),
    }
}

/// The OS name (for `shm_open`) of the user name `name`.
pub(crate) fn user_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(Error::invalid(format!(
            "invalid name {name:?}: use 1 to 200 characters from [A-Za-z0-9._-]"
        )));
    }
    Ok(format!("/{}u.{name}", prefix()))
}

/// A segment found in `/dev/shm` (see [`list`]).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let lock = shmwire::Lock::create("doc-listed-lock")?;
/// let mine = shmwire::segment::list()?
///     .into_iter()
///     .find(|s| s.name.ends_with("doc-listed-lock"))
///     .expect("listed");
/// assert_eq!(mine.kind, Some(shmwire::segment::Kind::Sync));
/// assert!(!mine.is_stale()); // its participant (this process) lives
/// drop(lock);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// The name in `/dev/shm`.
    pub name: String,
    /// What it holds, if its header is valid.
    pub kind: Option<Kind>,
    /// Its size in bytes.
    pub size: u64,
    /// Pid of the process that created it.
    pub creator_pid: u32,
    /// Participants: pid and whether its token is still held (alive).
    pub participants: Vec<(u32, bool)>,
}

impl SegmentInfo {
    /// Whether every participant is dead (the segment can be removed).
    pub fn is_stale(&self) -> bool {
        self.participants.iter().all(|&(_, alive)| !alive)
    }
}

/// Reads a segment's header and probes its participants without mapping it.
fn inspect(file_name: &str) -> Option<SegmentInfo> {
    use rustix::shm::{Mode, OFlags};
    let fd = rustix::shm::open(
        format!("/{file_name}").as_str(),
        OFlags::RDONLY,
        Mode::empty(),
    )
    .ok()?;
    let size = rustix::fs::fstat(&fd).ok()?.st_size as u64;
    let mut raw = [0u8; std::mem::size_of::<HeaderFields>() + 4];
    let n = rustix::io::pread(&fd, &mut raw, 0).unwrap_or(0);
    let mut info = SegmentInfo {
        name: file_name.to_owned(),
        kind: None,
        size,
        creator_pid: 0,
        participants: vec![],
    };
    let creator_alive = token::is_held(fd.as_raw_fd(), 0).unwrap_or(true);
    if n < raw.len() {
        // Not a complete segment (ours get their name only once complete: a crashed creator of an
        // older version, or not ours): only a creator (slot 0) can be alive.
        info.participants.push((0, creator_alive));
        return Some(info);
    }
    let hdr: HeaderFields =
        bytemuck::pod_read_unaligned(&raw[..std::mem::size_of::<HeaderFields>()]);
    let ready = u32::from_ne_bytes(raw[READY_OFFSET..READY_OFFSET + 4].try_into().ok()?);
    if hdr.magic != MAGIC
        || ready != READY
        || hdr.n_slots == 0
        || hdr.n_slots > super::header::MAX_SLOTS
    {
        info.participants.push((0, creator_alive));
        return Some(info);
    }
    info.kind = Kind::from_u32(hdr.kind);
    info.creator_pid = hdr.creator_pid;
    // Slot table: state and pid per slot.
    let table_len = hdr.n_slots as usize * super::header::SLOT_SIZE;
    let mut table = vec![0u8; table_len];
    let got = rustix::io::pread(&fd, &mut table, super::header::SLOTS_OFFSET as u64).unwrap_or(0);
    for i in 0..hdr.n_slots {
        let off = i as usize * super::header::SLOT_SIZE;
        if off + 8 > got {
            break;
        }
        let state = u32::from_ne_bytes(table[off..off + 4].try_into().ok()?);
        let pid = u32::from_ne_bytes(table[off + 4..off + 8].try_into().ok()?);
        let alive = token::is_held(fd.as_raw_fd(), i).unwrap_or(true);
        if state != 0 || alive {
            info.participants.push((pid, alive));
        }
    }
    Some(info)
}

/// A listener's socket: alive unless connecting to it is refused (never waits: a live listener with
/// a full backlog is alive).
fn inspect_listener(name: &str, path: &str) -> SegmentInfo {
    let alive = !is_stale(std::path::Path::new(path));
    SegmentInfo {
        name: name.to_owned(),
        kind: Some(Kind::Listener),
        size: 0,
        creator_pid: 0,
        participants: vec![(0, alive)],
    }
}

/// Lists this user's shmwire segments in `/dev/shm` (those with the current `SHMWIRE_PREFIX`, if set).
pub fn list() -> Result<Vec<SegmentInfo>> {
    let want = prefix();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&want) {
            continue;
        }
        let path = format!("{SHM_DIR}/{name}");
        let is_socket = std::fs::symlink_metadata(&path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        });
        if is_socket {
            out.push(inspect_listener(&name, &path));
        } else if let Some(info) = inspect(&name) {
            out.push(info);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes the segments whose participants are all dead, and returns their names. Live segments are
/// never touched: liveness is the kernel's lock state, not a pid that may have been reused. A segment
/// being created is not seen at all: it gets its name only once complete, its creator holding slot 0
/// (see `Segment::create_named_with`).
///
/// Also reaps, without waiting, the children whose [`Process`](crate::Process) was dropped while
/// they ran and that have ended since (as the next fork or spawn does), so none stays a zombie.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// // A child makes a named lock and is killed: its name stays behind, held by nobody.
/// let p = shmwire::Process::fork(|| {
///     let lock = shmwire::Lock::create("doc-left-behind").unwrap();
///     std::mem::forget(lock);
///     // SAFETY: plain syscall on ourselves.
///     unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
/// })?;
/// p.join()?;
/// let removed = shmwire::cleanup()?;
/// assert!(removed.iter().any(|n| n.ends_with("doc-left-behind")));
/// # Ok(()) }
/// ```
pub fn cleanup() -> Result<Vec<String>> {
    crate::sys::reap::reap_dropped();
    let mut removed = Vec::new();
    for info in list()? {
        if !info.is_stale() {
            continue;
        }
        let gone = if info.kind == Some(Kind::Listener) {
            // Checked again under the lock that binders reclaiming the name take (see `listener`):
            // a socket found stale a moment ago may be a new listener's by now.
            let path = format!("{SHM_DIR}/{}", info.name);
            remove_if_stale(std::path::Path::new(&path))
        } else {
            rustix::shm::unlink(format!("/{}", info.name).as_str()).is_ok()
        };
        if gone {
            removed.push(info.name);
        }
    }
    Ok(removed)
}

// Listener names: a `Listener` is a Unix socket in /dev/shm; whether one lives behind a name is
// whether it accepts a connection.

/// A Unix stream socket (close-on-exec), for listener names.
pub(crate) fn unix_socket(flags: SocketFlags) -> Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | flags,
        None,
    )?)
}

/// Whether the socket at `path` has no live listener (refused, or gone). Never waits: a live
/// listener whose backlog is full (`EAGAIN`) is alive.
pub(crate) fn is_stale(path: &Path) -> bool {
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

/// The lock under which a stale name is checked and removed: an abstract Unix socket bound to a name
/// made from the file's, held while bound (the kernel unbinds it when its holder closes it or dies).
/// `None` if another process held it for all of `wait`. The caller holds the fork gate, so no child
/// copies the lock.
pub(crate) fn reclaim_lock(path: &Path, wait: Duration) -> Result<Option<OwnedFd>> {
    let file = path.file_name().unwrap_or_default().as_encoded_bytes();
    let name = [file, b".reclaim"].concat(); // at most 98 + 8 bytes: fits an abstract name
    let addr = SocketAddrUnix::new_abstract_name(&name)?;
    let start = Instant::now();
    loop {
        let s = unix_socket(SocketFlags::empty())?;
        match rustix::net::bind(&s, &addr) {
            Ok(()) => return Ok(Some(s)),
            Err(rustix::io::Errno::ADDRINUSE) if start.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(rustix::io::Errno::ADDRINUSE) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes the listener socket at `path` if no listener lives behind it (for `cleanup`): false if
/// one does, or if another process is reclaiming the name at this moment.
pub(crate) fn remove_if_stale(path: &Path) -> bool {
    let _gate = super::registry::fork_gate();
    let Ok(Some(_lock)) = reclaim_lock(path, Duration::from_millis(100)) else {
        return false;
    };
    remove_stale_locked(path).unwrap_or(false)
}

/// Under the reclaim lock: removes the socket file at `path` if its listener is dead, and only the
/// very file that was checked; whether it did. A name with no file is left alone: a new listener
/// may link itself there at any moment without the lock (a free name needs none), and removing
/// "what is there now" would remove that live listener. A file replaced while it was checked is
/// left alone too, and so is anything but a socket (a `unix:` path may name a user's file). Once a
/// refused socket is seen at `path` twice (the same inode), only a holder of the lock can remove it
/// (a socket is only ever linked at a name once it listens, and a live listener's own drop removes
/// its file before it stops listening, so a refused file has no live owner), so the removal below
/// takes that file.
pub(crate) fn remove_stale_locked(path: &Path) -> std::io::Result<bool> {
    let same =
        |a: &rustix::fs::Stat, b: &rustix::fs::Stat| (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino);
    let Ok(before) = rustix::fs::lstat(path) else {
        return Ok(false); // no file: nothing to reclaim
    };
    if rustix::fs::FileType::from_raw_mode(before.st_mode) != rustix::fs::FileType::Socket {
        return Ok(false);
    }
    if !refused(path) {
        return Ok(false);
    }
    crate::hooks::hit(crate::hooks::Point::ReclaimChecked);
    match rustix::fs::lstat(path) {
        Ok(after) if same(&before, &after) => {}
        _ => return Ok(false),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether connecting to the socket file at `path` is refused: it exists and nobody listens.
fn refused(path: &Path) -> bool {
    let Ok(addr) = SocketAddrUnix::new(path) else {
        return false;
    };
    let Ok(s) = unix_socket(SocketFlags::NONBLOCK) else {
        return false;
    };
    matches!(
        rustix::net::connect(&s, &addr),
        Err(rustix::io::Errno::CONNREFUSED)
    )
}
