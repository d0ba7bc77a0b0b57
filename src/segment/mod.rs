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
pub(crate) mod names;
pub(crate) mod registry;
mod token;

pub use header::{Kind, fingerprint_of};
pub use names::{SegmentInfo, cleanup, list};

use crate::error::{Error, Result};
use header::{
    HeaderFields, LAYOUT_VERSION, MAGIC, MAX_ROLES, MAX_SLOTS, PAGE, READY, READY_OFFSET,
    ROLES_OFFSET, SLOT_SIZE, SLOTS_OFFSET, kind_offset, round_up,
};
use memmap2::{MmapOptions, MmapRaw};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A claim id is `generation << CLAIM_SLOT_BITS | slot`: 29 bits in all, so that a queue slot's control
/// word can hold it beside its lap and state (see `ring::mpmc`).
pub(crate) const CLAIM_BITS: u32 = 29;
const CLAIM_SLOT_BITS: u32 = 8;
/// Generations of a claim id run from 1 to this (never 0, so an id is never 0; never all ones, so an
/// id is never `ring::mpmc`'s SKIP marker). A slot taken again gets the next generation, so a stale
/// claim id (of a dead holder) could name a live process only after its slot was taken 2^21 - 2 more
/// times, each by a process that opened the segment, before anyone repaired what the id marks; and
/// even then the kernel, not shared memory, says whether the id's holder lives (see `token`).
pub(crate) const CLAIM_GEN_MAX: u32 = (1 << (CLAIM_BITS - CLAIM_SLOT_BITS)) - 2;
const _: () = assert!(MAX_SLOTS <= 1 << CLAIM_SLOT_BITS);
const _: () = assert!(
    ((CLAIM_GEN_MAX as u64) << CLAIM_SLOT_BITS | (MAX_SLOTS as u64 - 1)) < (1 << CLAIM_BITS) - 1
);
const SLOT_FREE: u32 = 0;
const SLOT_LIVE: u32 = 1;
/// `Segment::slot` when this process holds no slot (it takes one on first use, see `ensure_owner`).
pub(crate) const NO_SLOT: u32 = u32::MAX;
/// `Segment::owner_gen` that no fork generation equals: the next use takes a slot.
const STALE: u64 = u64::MAX;

/// One participant slot in shared memory.
#[repr(C)]
struct Slot {
    state: AtomicU32,
    pid: AtomicU32,
    /// Bumped each time the slot is taken, so a stale claim (see [`Segment::claim_id`]) is told apart
    /// from its new holder's.
    generation: AtomicU32,
    /// The CPU this participant last waited on, plus one (0: not known). Written only when it changes.
    cpu: AtomicU32,
}
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_SIZE);

/// The role block in shared memory.
#[repr(C)]
struct Roles {
    masks: [AtomicU64; MAX_ROLES],
    died: AtomicU32,
}
const _: () = assert!(ROLES_OFFSET + std::mem::size_of::<Roles>() <= SLOTS_OFFSET);

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

    /// Creates a named segment; fails with `AlreadyExists` if the name is taken.
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
                Error::io(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{os_name} already exists"),
                )
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
        crate::sync::membarrier::register();
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
        let fd = rustix::shm::open(os_name, OFlags::RDWR, Mode::empty()).map_err(|e| {
            if e == rustix::io::Errno::NOENT {
                Error::io(
                    std::io::ErrorKind::NotFound,
                    format!("no shared object named {os_name}"),
                )
            } else {
                e.into()
            }
        })?;
        // Peers are processes of this user: an object another user owns, or one that others may
        // open (shmwire creates them 0600), is refused before we map a byte of it.
        let st = rustix::fs::fstat(&fd)?;
        let me = rustix::process::geteuid().as_raw();
        if st.st_uid != me {
            return Err(Error::io(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{os_name} belongs to uid {}, not to this user (uid {me}): refused",
                    st.st_uid
                ),
            ));
        }
        if st.st_mode & 0o077 != 0 {
            return Err(Error::io(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{os_name} has mode {:o}: other users may open it, so it is refused \
                     (shmwire makes them 0600)",
                    st.st_mode & 0o777
                ),
            ));
        }
        let (map, size) = wait_ready(&fd)?;
        // SAFETY: `map` is at least one page long (checked by `wait_ready`), so the header is in bounds;
        // the header is plain data, copied out once and validated as a copy.
        let hdr: HeaderFields =
            unsafe { std::ptr::read_volatile(map.as_ptr() as *const HeaderFields) };
        hdr.validate(kind, fingerprint, size as u64)?;
        registry::install_fork_handler();
        crate::sync::membarrier::register();
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
        crate::sync::membarrier::register();
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
        let end = offset.checked_add(len as u64).ok_or(Error::Corrupt)?;
        if offset < self.hdr.size || offset % PAGE as u64 != 0 || end > size {
            return Err(Error::Corrupt);
        }
        Ok(MmapOptions::new().offset(offset).len(len).map_raw(fd)?)
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.load(Ordering::Relaxed)
    }

    fn ready_word(&self) -> &AtomicU32 {
        // SAFETY: READY_OFFSET is 4-aligned and inside the first page; atomics may alias shared memory.
        unsafe { &*(self.map.as_ptr().add(READY_OFFSET) as *const AtomicU32) }
    }

    fn roles(&self) -> &Roles {
        // SAFETY: ROLES_OFFSET is 64-aligned and the block fits before SLOTS_OFFSET; all fields are
        // atomics, for which any bit pattern is valid.
        unsafe { &*(self.map.as_ptr().add(ROLES_OFFSET) as *const Roles) }
    }

    fn slot_at(&self, i: u32) -> &Slot {
        assert!(i < self.hdr.n_slots);
        // SAFETY: i < n_slots (validated <= MAX_SLOTS) and the table ends before kind_offset <= size;
        // `Slot` is all atomics.
        unsafe { &*(self.map.as_ptr().add(SLOTS_OFFSET + i as usize * SLOT_SIZE) as *const Slot) }
    }

    /// Makes sure this process owns its token and slot: a child forked without [`crate::Process::fork`]
    /// shares its parent's open file description, so it must take its own before it does anything.
    #[inline]
    pub(crate) fn ensure_owner(&self) -> Result<()> {
        if self.owner_gen.load(Ordering::Relaxed) == registry::fork_generation() {
            return Ok(());
        }
        self.adopt_after_fork()
    }

    /// Also the first use, in a forked child, of a handle its closure does not own (its slot is
    /// `NO_SLOT`: no roles to copy).
    #[cold]
    fn adopt_after_fork(&self) -> Result<()> {
        let _gate = registry::fork_gate(); // the new token is ours before a fork can copy it
        let gen_now = registry::fork_generation();
        crate::sync::membarrier::register();
        let new_fd = reopen(self.raw_fd())?;
        let slot = self.claim_slot(new_fd.as_raw_fd())?;
        self.copy_roles(self.my_slot(), slot);
        let old = self.fd.swap(new_fd.into_raw_fd(), Ordering::Relaxed);
        // SAFETY: `old` was this handle's own descriptor (a copy of the parent's); nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(old) });
        self.set_slot(slot);
        self.owner_gen.store(gen_now, Ordering::Relaxed);
        Ok(())
    }

    /// This process's slot.
    #[inline]
    pub(crate) fn my_slot(&self) -> u32 {
        self.slot.load(Ordering::Relaxed)
    }

    /// Switches this handle to participant slot `slot`, whose token its descriptor holds, and works
    /// out its claim id: from the slot's generation, whose claim token was taken on this descriptor
    /// when the slot was filled (for a forked or spawned child, by its parent). Taking it again is a
    /// no-op, and takes it if it somehow was not (a scribbled generation), so the id we use is always
    /// backed by a token. Never on a fast path (one `fcntl`).
    pub(crate) fn set_slot(&self, slot: u32) {
        self.slot.store(slot, Ordering::Relaxed);
        let id = if slot < self.hdr.n_slots {
            let id = claim_of(slot, self.slot_at(slot).generation.load(Ordering::Relaxed));
            match token::try_take_claim(self.raw_fd(), id) {
                Ok(true) => id,
                // Someone else holds that id's token (a scribbled generation): take a new one.
                _ => self.fill_slot(self.raw_fd(), slot).unwrap_or(id),
            }
        } else {
            0
        };
        self.claim.store(id, Ordering::Relaxed);
    }

    /// This process's identity for claim words (lock owners, queue slots): its slot and the slot's
    /// generation, never 0 (see [`CLAIM_BITS`]). Its holder keeps the claim token of that id (see
    /// `token`), so [`claim_alive`](Self::claim_alive) asks the kernel alone.
    #[inline]
    pub(crate) fn claim_id(&self) -> u32 {
        self.claim.load(Ordering::Relaxed)
    }

    /// Whether the claim `id` (from [`claim_id`](Self::claim_id)) belongs to a live participant. Only
    /// the kernel decides: an id that is not well formed names nobody (false).
    pub(crate) fn claim_alive(&self, id: u32) -> Result<bool> {
        let (slot, generation) = (id & ((1 << CLAIM_SLOT_BITS) - 1), id >> CLAIM_SLOT_BITS);
        if generation == 0 || generation > CLAIM_GEN_MAX || slot >= self.hdr.n_slots {
            return Ok(false);
        }
        if id == self.claim_id() {
            return Ok(true);
        }
        if slot == self.my_slot() {
            return Ok(false); // an earlier holder of our slot: it left or died before we came
        }
        Ok(token::claim_held(self.raw_fd(), id)?)
    }

    /// Fills slot `i`, whose token `fd` holds: a new generation, and that claim id's token, taken
    /// through `fd`. Returns the claim id.
    fn fill_slot(&self, fd: RawFd, i: u32) -> Result<u32> {
        let s = self.slot_at(i);
        // A claim token still held by a holder on its way out (or a scribbled generation) makes us
        // move on to the next generation; a few tries suffice.
        for _ in 0..16 {
            let g = s.generation.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let g = if (1..=CLAIM_GEN_MAX).contains(&g) {
                g
            } else {
                s.generation.store(1, Ordering::Relaxed);
                1
            };
            let id = claim_of(i, g);
            if token::try_take_claim(fd, id)? {
                s.pid.store(std::process::id(), Ordering::Relaxed);
                s.state.store(SLOT_LIVE, Ordering::Release);
                return Ok(id);
            }
        }
        Err(Error::Corrupt)
    }

    /// Takes a free (or dead) slot through `fd`'s open file description.
    fn claim_slot(&self, fd: RawFd) -> Result<u32> {
        for i in 0..self.hdr.n_slots {
            if token::try_take(fd, i)? {
                self.reap_held(i);
                if let Err(e) = self.fill_slot(fd, i) {
                    let _ = token::release(fd, i);
                    return Err(e);
                }
                return Ok(i);
            }
        }
        Err(Error::io(
            std::io::ErrorKind::QuotaExceeded,
            format!(
                "all {} participant slots of this segment are taken by live processes",
                self.hdr.n_slots
            ),
        ))
    }

    /// Clears whatever a dead holder of slot `i` left; the caller holds `i`'s token.
    ///
    /// Where the dead holder was a role's last, `died` is set *before* its bit goes: whoever sees the
    /// role closed then reads how it closed (set after, a peer could read a death as a graceful
    /// close). If someone took the role in between (the exchange fails), the role is not closing:
    /// `died` is cleared again, as a graceful close would leave it (`drop_role_of`).
    fn reap_held(&self, i: u32) {
        let s = self.slot_at(i);
        if i < 64 {
            let bit = 1u64 << i;
            let died = &self.roles().died;
            for r in 0..MAX_ROLES {
                let mask = &self.roles().masks[r];
                let mut cur = mask.load(Ordering::Acquire);
                while cur & bit != 0 {
                    let last = cur == bit;
                    if last {
                        died.fetch_or(1 << r, Ordering::AcqRel);
                    }
                    // ORDERING: AcqRel: `died` (above) is visible to whoever Acquires the closed mask.
                    match mask.compare_exchange(
                        cur,
                        cur & !bit,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            crate::hooks::hit(crate::hooks::Point::RoleReaped);
                            if last {
                                (self.on_role_closed)(self, r);
                            }
                            break;
                        }
                        Err(now) => {
                            if last {
                                died.fetch_and(!(1 << r), Ordering::AcqRel);
                            }
                            cur = now;
                        }
                    }
                }
            }
        }
        s.state.store(SLOT_FREE, Ordering::Release);
    }

    /// Gives slot `to` every role slot `from` holds (a child's slot, its parent's roles), each only
    /// while `from` still holds it: a role its holder closes meanwhile stays closed (an exchange, not
    /// a load and an OR, which would reopen it).
    fn copy_roles(&self, from: u32, to: u32) {
        if from >= 64 || to >= 64 {
            return;
        }
        for r in 0..MAX_ROLES {
            let m = &self.roles().masks[r];
            let mut cur = m.load(Ordering::Acquire);
            while cur & (1 << from) != 0 {
                crate::hooks::hit(crate::hooks::Point::CopyingRoles);
                match m.compare_exchange(cur, cur | 1 << to, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
        }
    }

    /// Adds this process to the holders of `role`. Roles are masks over the first 64 slots: a process
    /// in a higher slot cannot hold one (an error, never a panic: the slot count may come from a
    /// segment another process made).
    pub(crate) fn take_role(&self, role: usize) -> Result<()> {
        self.add_role_of(self.my_slot(), role)
    }

    /// Removes this process from the holders of `role`; the last one out closes it.
    pub(crate) fn drop_role(&self, role: usize) {
        self.drop_role_of(self.my_slot(), role);
    }

    /// Adds slot `slot` to the holders of `role` (a slot prepared for a child); see
    /// [`take_role`](Self::take_role).
    pub(crate) fn add_role_of(&self, slot: u32, role: usize) -> Result<()> {
        if slot >= 64 || role >= MAX_ROLES {
            return Err(Error::io(
                std::io::ErrorKind::QuotaExceeded,
                format!(
                    "participant slot {slot} cannot hold role {role}: roles need a slot below 64"
                ),
            ));
        }
        self.roles().masks[role].fetch_or(1 << slot, Ordering::AcqRel);
        Ok(())
    }

    /// The OS name of a named segment.
    pub(crate) fn os_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Removes the name now (the mapping stays valid for those who have it).
    pub(crate) fn unlink_name(&self) -> Result<()> {
        match &self.name {
            Some(n) => Ok(rustix::shm::unlink(n.as_str())?),
            None => Ok(()),
        }
    }

    /// Removes slot `slot` from the holders of `role`; the last one out closes it.
    pub(crate) fn drop_role_of(&self, slot: u32, role: usize) {
        if slot >= 64 {
            return;
        }
        let bit = 1u64 << slot;
        let mask = &self.roles().masks[role];
        if mask.load(Ordering::Acquire) & bit == 0 {
            return; // not a holder (only the holder, or its reaper, removes its bit)
        }
        // A graceful way out: `died` says how the role's *last* holder left, and an earlier holder's
        // death is history once someone else held the role. Cleared before our bit goes, so a peer
        // that sees the role closed by us reads it clear; a holder that dies later sets it again.
        self.roles()
            .died
            .fetch_and(!(1u32 << role), Ordering::AcqRel);
        // ORDERING: Release, so that everything published before closing is visible to a peer that
        // Acquires the closed role.
        let prev = mask.fetch_and(!bit, Ordering::AcqRel);
        if prev & bit != 0 && prev & !bit == 0 {
            (self.on_role_closed)(self, role);
        }
    }

    /// Whether anyone (alive, or dead and not yet reaped) holds `role`.
    #[inline]
    pub(crate) fn role_open(&self, role: usize) -> bool {
        self.roles().masks[role].load(Ordering::Acquire) != 0
    }

    /// Whether this process is the only holder of `role` (a dead holder not yet reaped still counts).
    pub(crate) fn role_held_only_by_me(&self, role: usize) -> bool {
        let me = self.my_slot();
        me < 64 && self.roles().masks[role].load(Ordering::Acquire) == 1u64 << me
    }

    /// The roles this process holds now (bit `r`: role `r`).
    pub(crate) fn my_roles(&self) -> u32 {
        let me = self.my_slot();
        (0..MAX_ROLES)
            .filter(|&r| me < 64 && self.roles().masks[r].load(Ordering::Acquire) & 1 << me != 0)
            .fold(0, |acc, r| acc | 1 << r)
    }

    /// Whether `role` closed because its last holder died.
    pub(crate) fn role_died(&self, role: usize) -> bool {
        self.roles().died.load(Ordering::Acquire) & (1 << role) != 0
    }

    /// Probes the holders of `role` (other than this process) and reaps the dead ones.
    pub(crate) fn probe_role(&self, role: usize) -> Result<()> {
        let me = self.my_slot();
        let mut mask = self.roles().masks[role].load(Ordering::Acquire);
        while mask != 0 {
            let i = mask.trailing_zeros();
            mask &= mask - 1;
            if i == me || i >= self.hdr.n_slots {
                continue;
            }
            self.reap_if_dead(i)?;
        }
        Ok(())
    }

    fn reap_if_dead(&self, i: u32) -> Result<()> {
        let fd = self.raw_fd();
        if token::is_held(fd, i)? {
            return Ok(());
        }
        if token::try_take(fd, i)? {
            self.reap_held(i);
            token::release(fd, i)?;
        }
        Ok(())
    }

    /// Records the CPU this process is about to wait on, and says whether the (single) other holder of
    /// `peer_role` last waited on the same one: then the two take turns on one CPU, and spinning for
    /// the peer only burns the time it needs to run.
    ///
    /// Only a process confined to one CPU (`taskset -c N`) trusts this: two unpinned processes meet on
    /// one CPU only for a moment, and sleeping at once would invite the scheduler to keep them there.
    pub(crate) fn peer_shares_cpu(&self, peer_role: usize) -> bool {
        // SAFETY: sched_getcpu has no preconditions (it reads the rseq area or calls getcpu).
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu < 0 {
            return false;
        }
        let mine = cpu as u32 + 1;
        let me = self.my_slot();
        let slot = self.slot_at(me);
        if slot.cpu.load(Ordering::Relaxed) != mine {
            slot.cpu.store(mine, Ordering::Relaxed);
        }
        let others = self.roles().masks[peer_role].load(Ordering::Relaxed) & !(1u64 << me.min(63));
        if others.count_ones() != 1 {
            return false;
        }
        let peer = others.trailing_zeros();
        peer < self.hdr.n_slots
            && self.slot_at(peer).cpu.load(Ordering::Relaxed) == mine
            && pinned_to_one_cpu()
    }

    /// Drops every role this process holds (a graceful exit).
    pub(crate) fn drop_all_roles(&self) {
        for r in 0..MAX_ROLES {
            self.drop_role(r);
        }
    }

    /// Frees a slot that [`registry::prepare_fork`] reserved for a child that was never born.
    fn release_prepared(&self, fd: OwnedFd, slot: u32) {
        if slot < 64 {
            for m in &self.roles().masks {
                m.fetch_and(!(1u64 << slot), Ordering::AcqRel);
            }
        }
        self.slot_at(slot).state.store(SLOT_FREE, Ordering::Release);
        drop(fd); // releases the token
    }

    /// Sets the pid shown for slot `i` (a forked child's slot is reserved by its parent).
    fn set_slot_pid(&self, i: u32, pid: u32) {
        self.slot_at(i).pid.store(pid, Ordering::Relaxed);
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

impl Segment {
    /// Gives up this process's participation: its roles, its slot and its token; the last participant
    /// of a named segment removes the name, if the name still leads to this segment. The caller owns
    /// its slot (`ensure_owner`); the slot number stays as it was (the handle is going away).
    pub(crate) fn leave(&self) {
        let fd = self.raw_fd();
        let me = self.my_slot();
        if me >= self.hdr.n_slots {
            return;
        }
        self.drop_all_roles();
        self.slot_at(me).state.store(SLOT_FREE, Ordering::Release);
        // The claim token stays until the descriptor is closed (or the process exits): threads of
        // this process may still act under its claim id until then, and must not be judged dead.
        let _ = token::release(fd, me);
        if let Some(name) = &self.name {
            // The last participant out removes the name.
            let anyone = (0..self.hdr.n_slots).any(|i| token::is_held(fd, i).unwrap_or(true));
            if !anyone && names_this_file(name, fd) {
                let _ = rustix::shm::unlink(name.as_str());
            }
        }
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

/// The claim id of generation `generation` of slot `slot`.
fn claim_of(slot: u32, generation: u32) -> u32 {
    (generation << CLAIM_SLOT_BITS) | slot
}

/// Whether this process may run on one CPU only: `sched_getaffinity`, asked only when the peer was last
/// seen on our CPU and at most every 50 ms (so a `taskset` of a running process is noticed soon).
fn pinned_to_one_cpu() -> bool {
    use std::sync::OnceLock;
    use std::time::Instant;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    static CACHE: AtomicU64 = AtomicU64::new(0); // (milliseconds since EPOCH + 1) << 1 | pinned
    let now_ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    let c = CACHE.load(Ordering::Relaxed);
    if c != 0 && now_ms.saturating_sub(c >> 1) < 50 {
        return c & 1 == 1;
    }
    crate::stats::note_other_call();
    // SAFETY: cpu_set_t is plain data and sched_getaffinity fills it.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
            && libc::CPU_COUNT(&set) == 1
    };
    CACHE.store(now_ms << 1 | pinned as u64, Ordering::Relaxed);
    pinned
}

fn layout_size(spec: &Spec) -> usize {
    round_up(kind_offset(spec.n_slots) + spec.kind_size, PAGE)
}

fn map_fd(fd: &OwnedFd, size: usize) -> Result<MmapRaw> {
    Ok(MmapOptions::new().len(size).map_raw(fd.as_raw_fd())?)
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
