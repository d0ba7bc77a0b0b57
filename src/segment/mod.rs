//! The segment layer: a shared mapping with a validated header and a participant table whose slots are
//! held through kernel-released liveness tokens.
//!
//! * Anonymous segments (shared only with forked children) are sealed memfds: no name to leak, and
//!   `F_SEAL_SHRINK | F_SEAL_GROW` so no participant can truncate them under the others.
//! * Named segments are POSIX shared memory objects (`/dev/shm/shmwire.*`), mode 0600, `fallocate`d so
//!   that a full tmpfs is an error at creation rather than a SIGBUS later, and made without a name
//!   (`O_TMPFILE`), linked under it only once complete (a name already taken is an error).
//!   The last participant to drop its handle unlinks the name; [`cleanup`] removes names whose
//!   participants all died. A peer that shrinks a named segment can still make the others fault: only
//!   seals prevent that, and POSIX shm cannot be sealed.
//! * Every process that maps a segment holds one participant slot and its token (see the `token` module). A
//!   role (an end of a pipe) is a bitmask over slots, so "is the role still held?" is one load, and a
//!   dead holder is removed from it exactly once, by whoever takes its token first (the reaper).

mod header;
pub(crate) mod moving;
pub(crate) mod names;
pub(crate) mod object;
mod participants;
pub(crate) mod registry;

pub(crate) use participants::CLAIM_BITS;

pub(crate) use header::fingerprint_parts;
pub use header::{Kind, fingerprint_of, fingerprint_of_pod, fingerprint_of_tag};
pub use names::{SegmentInfo, cleanup, list};

use crate::error::{Error, Result};
use crate::sys::token;
use header::{
    HeaderFields, LAYOUT_VERSION, MAGIC, MAX_SLOTS, PAGE, READY, READY_OFFSET, kind_offset,
    round_up,
};
use memmap2::{MmapOptions, MmapRaw};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `Segment::slot` when this process holds no slot (it takes one on first use, see `ensure_owner`).
pub(crate) const NO_SLOT: u32 = u32::MAX;
/// `Segment::owner_gen` that no fork generation equals: the next use takes a slot.
const STALE: u64 = u64::MAX;

/// What a kind asks of a new segment.
pub(crate) struct Spec {
    pub kind: Kind,
    pub fingerprint: u64,
    pub params: [u64; 8],
    /// Bytes the kind needs after the participant table.
    pub kind_size: usize,
    pub n_slots: u32,
    /// Called (in whichever process notices) when the last holder of a role lets go or dies.
    pub on_role_closed: fn(&Segment, usize),
    /// Whether the file may grow past its first size ([`Segment::extend`]); an anonymous one is then
    /// sealed against shrinking only.
    pub growable: bool,
    /// Bytes at the end of the kind's area that a named segment does not allocate at creation: the
    /// kind allocates them as it first uses them ([`Segment::reserve`]).
    pub lazy_tail: usize,
}

/// A mapped segment, as one process sees it.
pub(crate) struct Segment {
    map: MmapRaw,
    /// This process's open file description of the segment (its liveness token lives on it).
    fd: AtomicI32,
    /// This process's participant slot.
    slot: AtomicU32,
    /// This process's claim id (see [`Segment::claim_id`]); 0 until first asked for after the slot
    /// changed.
    claim: AtomicU32,
    /// The fork generation in which `fd` and `slot` were taken (see [`registry::fork_generation`]).
    owner_gen: AtomicU64,
    hdr: HeaderFields,
    name: Option<String>,
    on_role_closed: fn(&Segment, usize),
    /// Descriptors that travel with the segment (a pipe's wake-up pipes): inherited by forked
    /// children, passed to spawned ones and through a `Listener`.
    companions: Vec<OwnedFd>,
}

// SAFETY: all process-local fields are atomics or immutable after construction; the mapping is shared
// memory whose every access goes through atomics or through the owning kind's protocol.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    fn ready_word(&self) -> &AtomicU32 {
        // SAFETY: READY_OFFSET is 4-aligned and inside the first page; atomics may alias shared memory.
        unsafe { &*(self.map.as_ptr().add(READY_OFFSET) as *const AtomicU32) }
    }

    /// Creates an anonymous segment (a sealed memfd) for this process and its forked children.
    pub(crate) fn create_anonymous(spec: &Spec, companions: Vec<OwnedFd>) -> Result<Arc<Segment>> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let _gate = registry::fork_gate(); // until registered (see `registry`)
        let fd =
            rustix::fs::memfd_create("shmwire", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let size = layout_size(spec);
        rustix::fs::ftruncate(&fd, size as u64)?;
        let seals = if spec.growable {
            SealFlags::SHRINK | SealFlags::SEAL
        } else {
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL
        };
        rustix::fs::fcntl_add_seals(&fd, seals)?;
        Self::init(fd, spec, size, None, companions, &|_| {})
    }

    /// Creates a named segment; fails with [`Error::Exists`] if the name is taken.
    pub(crate) fn create_named(os_name: &str, spec: &Spec) -> Result<Arc<Segment>> {
        Self::create_named_with(os_name, spec, &|_| {})
    }

    /// [`create_named`](Self::create_named), calling `fill` on the new segment before it is published
    /// (`READY`): what `fill` writes in the kind's area is there for every opener.
    ///
    /// The file is made without a name (`O_TMPFILE` in `/dev/shm`) and linked under `os_name` only
    /// once it is complete and its creator holds slot 0: no one (an opener, or [`cleanup`] judging
    /// a file without a live participant stale) ever sees a half-made segment under the name, and a
    /// creator that dies half way leaves nothing behind. `linkat` fails if the name exists, as
    /// `O_EXCL` would.
    pub(crate) fn create_named_with(
        os_name: &str,
        spec: &Spec,
        fill: &dyn Fn(&Segment),
    ) -> Result<Arc<Segment>> {
        use rustix::fs::{AtFlags, CWD, Mode, OFlags};
        let _gate = registry::fork_gate(); // until registered (see `registry`)
        let fd = rustix::fs::open(
            names::SHM_DIR,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        crate::hooks::hit(crate::hooks::Point::NamedCreating);
        let size = layout_size(spec);
        rustix::fs::ftruncate(&fd, size as u64)?;
        let eager = size - spec.lazy_tail.min(size - kind_offset(spec.n_slots)) / PAGE * PAGE;
        rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, eager as u64)?;
        let seg = Self::init(fd, spec, size, Some(os_name.to_owned()), Vec::new(), fill)?;
        // Published: a failure drops `seg`, whose `leave` removes no name that leads elsewhere.
        rustix::fs::linkat(
            CWD,
            format!("/proc/self/fd/{}", seg.raw_fd()),
            CWD,
            names::path_of(os_name),
            AtFlags::SYMLINK_FOLLOW,
        )
        .map_err(|e| {
            if e == rustix::io::Errno::EXIST {
                Error::Exists
            } else {
                e.into()
            }
        })?;
        Ok(seg)
    }

    fn init(
        fd: OwnedFd,
        spec: &Spec,
        size: usize,
        name: Option<String>,
        companions: Vec<OwnedFd>,
        fill: &dyn Fn(&Segment),
    ) -> Result<Arc<Segment>> {
        assert!(spec.n_slots >= 1 && spec.n_slots <= MAX_SLOTS);
        let map = map_fd(&fd, size)?;
        let hdr = HeaderFields {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            kind: spec.kind as u32,
            size: size as u64,
            fingerprint: spec.fingerprint,
            creator_pid: std::process::id(),
            n_slots: spec.n_slots,
            params: spec.params,
            kind_offset: kind_offset(spec.n_slots) as u64,
        };
        // SAFETY: the mapping is at least one page long and page aligned; nobody else can see the header
        // yet (`ready` is still 0), so a plain write does not race.
        unsafe { std::ptr::write(map.as_mut_ptr() as *mut HeaderFields, hdr) };
        registry::install_fork_handler();
        crate::sys::membarrier::register();
        let seg = Arc::new(Segment {
            map,
            fd: AtomicI32::new(fd.into_raw_fd()),
            slot: AtomicU32::new(0),
            claim: AtomicU32::new(0),
            owner_gen: AtomicU64::new(registry::fork_generation()),
            hdr,
            name,
            on_role_closed: spec.on_role_closed,
            companions,
        });
        // Slot 0 is the creator's: take its token (a named segment took it already; taking it again
        // through the same description is a no-op).
        if !token::try_take(seg.raw_fd(), 0)? {
            return Err(Error::Corrupt);
        }
        let id = seg.fill_slot(seg.raw_fd(), 0)?;
        seg.claim.store(id, Ordering::Relaxed);
        fill(&seg);
        // ORDERING: Release publishes the header, slot 0 and what `fill` wrote to openers that
        // Acquire `ready`.
        seg.ready_word().store(READY, Ordering::Release);
        registry::register(&seg);
        Ok(seg)
    }

    /// Opens the named segment `os_name`, which must be a `kind` made for `fingerprint`.
    pub(crate) fn open_named(
        os_name: &str,
        kind: Kind,
        fingerprint: u64,
        on_role_closed: fn(&Segment, usize),
    ) -> Result<Arc<Segment>> {
        use rustix::shm::{Mode, OFlags};
        let _gate = registry::fork_gate(); // until registered (see `registry`)
        let fd = rustix::shm::open(os_name, OFlags::RDWR, Mode::empty()).map_err(|e| match e {
            rustix::io::Errno::NOENT => Error::NotFound,
            rustix::io::Errno::ACCESS => denied(os_name),
            e => e.into(),
        })?;
        check_owner(os_name, &rustix::fs::fstat(&fd)?)?;
        let (map, size) = wait_ready(&fd)?;
        // SAFETY: `map` is at least one page long (checked by `wait_ready`), so the header is in bounds;
        // the header is plain data, copied out once and validated as a copy.
        let hdr: HeaderFields =
            unsafe { std::ptr::read_volatile(map.as_ptr() as *const HeaderFields) };
        hdr.validate(kind, fingerprint, size as u64)?;
        registry::install_fork_handler();
        crate::sys::membarrier::register();
        let seg = Arc::new(Segment {
            map,
            fd: AtomicI32::new(fd.into_raw_fd()),
            slot: AtomicU32::new(u32::MAX),
            claim: AtomicU32::new(0),
            owner_gen: AtomicU64::new(registry::fork_generation()),
            hdr,
            name: Some(os_name.to_owned()),
            on_role_closed,
            companions: Vec::new(),
        });
        let slot = seg.claim_slot(seg.raw_fd())?;
        seg.set_slot(slot);
        registry::register(&seg);
        Ok(seg)
    }

    /// Maps a segment received as a descriptor (through a `Listener`, or inherited by a spawned
    /// child), which must be a `kind` made for `fingerprint`. With `prepared_slot`, `fd` is an open
    /// file description prepared for this process (by a parent, see `registry::prepare_export`) that
    /// already holds that slot's token; without, the descriptor is shared with its sender, so we open
    /// our own description and take a fresh slot.
    pub(crate) fn adopt(
        fd: OwnedFd,
        prepared_slot: Option<u32>,
        kind: Kind,
        fingerprint: u64,
        on_role_closed: fn(&Segment, usize),
        companions: Vec<OwnedFd>,
    ) -> Result<Arc<Segment>> {
        let _gate = registry::fork_gate(); // until registered (see `registry`)
        let fd = match prepared_slot {
            Some(_) => fd,
            None => reopen(fd.as_raw_fd())?, // the sender's description stays the sender's
        };
        let size = rustix::fs::fstat(&fd)?.st_size as usize;
        if size < PAGE {
            return Err(Error::Corrupt);
        }
        let map = map_fd(&fd, size)?;
        // SAFETY: the mapping is at least one page; the header is plain data, copied once.
        let hdr: HeaderFields =
            unsafe { std::ptr::read_volatile(map.as_ptr() as *const HeaderFields) };
        // SAFETY: READY_OFFSET is within the first page, 4-aligned.
        let ready = unsafe { &*(map.as_ptr().add(READY_OFFSET) as *const AtomicU32) };
        if ready.load(Ordering::Acquire) != READY {
            return Err(Error::Corrupt);
        }
        hdr.validate(kind, fingerprint, size as u64)?;
        registry::install_fork_handler();
        crate::sys::membarrier::register();
        let seg = Arc::new(Segment {
            map,
            fd: AtomicI32::new(fd.into_raw_fd()),
            slot: AtomicU32::new(u32::MAX),
            claim: AtomicU32::new(0),
            owner_gen: AtomicU64::new(registry::fork_generation()),
            hdr,
            name: None,
            on_role_closed,
            companions,
        });
        let slot = match prepared_slot {
            Some(s) if s < seg.hdr.n_slots && token::try_take(seg.raw_fd(), s)? => {
                seg.set_slot_pid(s, std::process::id());
                s
            }
            Some(_) => return Err(Error::Corrupt),
            None => seg.claim_slot(seg.raw_fd())?,
        };
        seg.set_slot(slot);
        registry::register(&seg);
        Ok(seg)
    }

    /// The `i`th companion descriptor, if any.
    pub(crate) fn companion(&self, i: usize) -> Option<RawFd> {
        self.companions.get(i).map(|f| f.as_raw_fd())
    }

    /// All companion descriptors.
    pub(crate) fn companions(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.companions.iter().map(|f| f.as_raw_fd())
    }

    /// This process's descriptor of the segment (to send or export; never to close).
    pub(crate) fn descriptor(&self) -> RawFd {
        self.raw_fd()
    }

    /// The validated header copy (kind parameters included).
    pub(crate) fn header(&self) -> &HeaderFields {
        &self.hdr
    }

    /// The kind's area: its start and length, page aligned.
    pub(crate) fn kind_area(&self) -> (*mut u8, usize) {
        let off = self.hdr.kind_offset as usize;
        // SAFETY: `kind_offset <= size` was validated (or written by us), so the pointer is in bounds.
        (
            unsafe { self.map.as_mut_ptr().add(off) },
            self.hdr.size as usize - off,
        )
    }

    /// Grows the file to at least `size` bytes, allocating the new range (a full tmpfs is an error
    /// here, not a SIGBUS later). Idempotent; only for segments made `growable`.
    pub(crate) fn extend(&self, size: u64) -> Result<()> {
        let fd = self.raw_fd();
        // SAFETY: `fd` is this segment's open descriptor, borrowed for these calls only.
        let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
        let now = rustix::fs::fstat(fd)?.st_size as u64;
        if now < size {
            rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), now, size - now)?;
        }
        Ok(())
    }

    /// Allocates `len` bytes of the kind's area from `offset` if the segment is named (its tmpfs may
    /// be full: an error here rather than a SIGBUS on first touch); an anonymous segment's pages come
    /// as they are touched.
    pub(crate) fn reserve(&self, offset: usize, len: usize) -> Result<()> {
        if self.name.is_none() || len == 0 {
            return Ok(());
        }
        let start = self.hdr.kind_offset + offset as u64;
        if start + len as u64 > self.hdr.size {
            return Err(Error::Corrupt);
        }
        // SAFETY: `fd` is this segment's open descriptor, borrowed for this call only.
        let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(self.raw_fd()) };
        rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::KEEP_SIZE, start, len as u64)?;
        Ok(())
    }

    /// Maps `len` bytes of the file at `offset` (page aligned), which must lie within the file.
    pub(crate) fn map_extent(&self, offset: u64, len: usize) -> Result<MmapRaw> {
        let fd = self.raw_fd();
        // SAFETY: as in `extend`.
        let bfd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
        let size = rustix::fs::fstat(bfd)?.st_size as u64;
        let Some(end) = offset.checked_add(len as u64) else {
            return Err(Error::Corrupt);
        };
        if offset < self.hdr.size || offset % PAGE as u64 != 0 || end > size {
            return Err(Error::Corrupt);
        }
        Ok(MmapOptions::new().offset(offset).len(len).map_raw(fd)?)
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.load(Ordering::Relaxed)
    }

    /// The OS name of a named segment.
    pub(crate) fn os_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Gives a named segment `mode` (checked by [`check_mode`]; a builder's `.mode`): its group
    /// may then open it too. An anonymous one has no name to open: nothing to do.
    pub(crate) fn set_mode(&self, mode: u32) -> Result<()> {
        check_mode(mode)?;
        if self.name.is_some() {
            // SAFETY: `fd` is this segment's open descriptor, borrowed for this call only.
            let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(self.raw_fd()) };
            rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(mode))?;
        }
        Ok(())
    }

    /// Removes the name now (the mapping stays valid for those who have it).
    pub(crate) fn unlink_name(&self) -> Result<()> {
        match &self.name {
            Some(n) => Ok(rustix::shm::unlink(n.as_str())?),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("kind", &Kind::from_u32(self.hdr.kind))
            .field("size", &self.hdr.size)
            .field("name", &self.name)
            .finish()
    }
}

/// Whether `name` still leads to the file open as `fd` (not to one made since under the same name).
fn names_this_file(name: &str, fd: RawFd) -> bool {
    use rustix::shm::{Mode, OFlags};
    let Ok(named) = rustix::shm::open(name, OFlags::RDONLY, Mode::empty()) else {
        return false;
    };
    // SAFETY: `fd` is this segment's open descriptor, borrowed for the call only.
    let ours = rustix::fs::fstat(unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) });
    matches!((rustix::fs::fstat(&named), ours), (Ok(a), Ok(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino))
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Under the fork gate until the descriptor is closed and the segment has left the list; a fork
        // waits meanwhile (see `registry::prepare_fork`), so no child copies the descriptor unseen.
        crate::hooks::hit(crate::hooks::Point::SegmentDropping);
        let _gate = registry::fork_gate();
        // A handle dropped in a child forked behind our back takes its own slot first, so that it never
        // releases its parent's; one that holds no slot (see `registry`) has nothing to give up.
        if self.my_slot() != NO_SLOT && self.ensure_owner().is_ok() {
            self.leave();
        }
        // SAFETY: `fd` is this handle's own descriptor and is closed exactly once, here.
        drop(unsafe { OwnedFd::from_raw_fd(self.raw_fd()) });
        registry::unregister(self);
    }
}

fn layout_size(spec: &Spec) -> usize {
    round_up(kind_offset(spec.n_slots) + spec.kind_size, PAGE)
}

fn map_fd(fd: &OwnedFd, size: usize) -> Result<MmapRaw> {
    Ok(MmapOptions::new().len(size).map_raw(fd.as_raw_fd())?)
}

/// Modes a named object may be given: read and write for its owner, and optionally for its group
/// (`0o660`, `0o640`); never for others.
pub(crate) fn check_mode(mode: u32) -> Result<()> {
    if mode & !0o660 != 0 || mode & 0o600 != 0o600 {
        return Err(Error::invalid(format!(
            "mode {mode:o} for a named object: use 0o600 (the default: this user only) or 0o660 \
             (also the users of the object's group); others never"
        )));
    }
    Ok(())
}

/// Whether this process is a member of group `gid` (its effective or a supplementary group).
fn in_group(gid: u32) -> bool {
    if rustix::process::getegid().as_raw() == gid {
        return true;
    }
    rustix::process::getgroups().is_ok_and(|gs| gs.iter().any(|g| g.as_raw() == gid))
}

/// Whom a named object may come from: this user, with no access for others; or another user
/// who shared it with a group this process is in (`.mode(0o660)` on its builder), with no access
/// for others either. Anything else is refused before a byte of it is mapped (root, whom the
/// kernel lets open anything, is refused the same way).
pub(crate) fn check_owner(os_name: &str, st: &rustix::fs::Stat) -> Result<()> {
    let me = rustix::process::geteuid().as_raw();
    let mode = st.st_mode & 0o777;
    if mode & 0o007 != 0 {
        return Err(Error::io(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{os_name} has mode {mode:o}: users outside its group may open it, so it is \
                 refused (shmwire makes them 0600, or 0660 with `.mode(0o660)`)"
            ),
        ));
    }
    if st.st_uid != me && !(mode & 0o060 == 0o060 && in_group(st.st_gid)) {
        return Err(Error::io(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{os_name} belongs to uid {} (mode {mode:o}), not to this user (uid {me}): refused; \
                 to share it across users, its creator gives it `.mode(0o660)` and a group both \
                 users are in",
                st.st_uid
            ),
        ));
    }
    Ok(())
}

/// The error for a named object this user may not open (`EACCES`): whose it is, and what to do.
pub(crate) fn denied(os_name: &str) -> Error {
    let me = rustix::process::geteuid().as_raw();
    let whose = match rustix::fs::stat(names::path_of(os_name)) {
        Ok(st) => format!("uid {} (mode {:o})", st.st_uid, st.st_mode & 0o777),
        Err(_) => "another user".to_owned(),
    };
    Error::io(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{os_name} belongs to {whose}, and this user (uid {me}) may not open it; to share it \
             across users, its creator gives it `.mode(0o660)` and a group both users are in"
        ),
    )
}

/// Opens a new open file description of the file behind `fd`.
pub(crate) fn reopen(fd: RawFd) -> Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        format!("/proc/self/fd/{fd}"),
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Waits (briefly) for a named segment's creator to finish initialising it, and maps it.
fn wait_ready(fd: &OwnedFd) -> Result<(MmapRaw, usize)> {
    let start = Instant::now();
    loop {
        let size = rustix::fs::fstat(fd)?.st_size as usize;
        if size >= PAGE {
            let map = map_fd(fd, size)?;
            // SAFETY: READY_OFFSET is within the first page, 4-aligned.
            let ready = unsafe { &*(map.as_ptr().add(READY_OFFSET) as *const AtomicU32) };
            // ORDERING: Acquire pairs with the creator's Release store of READY.
            if ready.load(Ordering::Acquire) == READY {
                return Ok((map, size));
            }
        }
        if !token::is_held(fd.as_raw_fd(), 0)? {
            // The creator died before finishing: nothing valid to open.
            return Err(Error::Incompatible);
        }
        if start.elapsed() > Duration::from_secs(2) {
            return Err(Error::Timeout);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
