//! The arena: one growable segment file holding a manager's allocator, its container directory and
//! every dict's and list's blocks.
//!
//! ```text
//! chunk 0 = the segment's kind area:  ArenaCtl (allocator, chunk table, directory, first slot page)
//!                                     | heap blocks ... | epilogue
//! chunk i >= 1 = file range [off_i, off_i + len_i), appended as the arena grows: | blocks | epilogue
//! ```
//!
//! A position in the arena is a [`Ref`]: `chunk << 40 | offset`. Each process maps a chunk the first
//! time it meets a `Ref` into it, after checking that the chunk is published (`n_chunks`) and that its
//! range lies within the file (`Segment::map_extent`). A chunk is published once, by the grower, after
//! its descriptor is written; its descriptor never changes after that, so a mapping made once stays
//! right. Every access goes through [`Arena::at`] or [`Arena::word`], which check the `Ref` against the
//! chunk's length: a hostile `Ref` gives [`Error::Corrupt`], never an access outside the mapping.
//!
//! Nothing read from the arena is trusted: words are loaded through atomics, bytes are copied out
//! through raw pointers (no Rust reference is formed over bytes another process may write), and every
//! length and offset is bounded before use.

use super::alloc::{self, AllocCtl};
use super::slot::{DirCtl, SLOTS_PER_PAGE, Slot};
use crate::error::{Error, Result};
use crate::segment::{Kind, Segment, Spec, names};
use memmap2::MmapRaw;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Bits of a [`Ref`] that hold the offset within its chunk (a chunk is at most 1 TiB).
pub(crate) const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
/// Chunks an arena may have.
pub(crate) const MAX_CHUNKS: usize = 1024;
/// A `Ref` fits in 56 bits (a dict bucket keeps a hash tag in the top 8).
const _: () = assert!((MAX_CHUNKS as u64) << OFFSET_BITS <= 1 << 56);
pub(crate) const PAGE: u64 = 4096;
/// Participants a manager accepts (a hundred forked workers at once, as the seeds run).
const SLOTS: u32 = 256;
/// The smallest arena (the control block and a little heap).
pub(crate) const MIN_BYTES: u64 = 1 << 20;

/// A position in the arena: `chunk << 40 | offset`. 0 is never a block (chunk 0 starts with the
/// control block), so it stands for "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Ref(pub(crate) u64);

impl Ref {
    pub(crate) const NULL: Ref = Ref(0);

    #[inline]
    pub(crate) fn new(chunk: usize, offset: u64) -> Ref {
        Ref((chunk as u64) << OFFSET_BITS | (offset & OFFSET_MASK))
    }

    #[inline]
    pub(crate) fn chunk(self) -> usize {
        (self.0 >> OFFSET_BITS) as usize
    }

    #[inline]
    pub(crate) fn offset(self) -> u64 {
        self.0 & OFFSET_MASK
    }

    /// `n` bytes further in the same chunk (bounds are checked on access).
    #[inline]
    pub(crate) fn add(self, n: u64) -> Ref {
        Ref::new(self.chunk(), self.offset().wrapping_add(n))
    }

    #[inline]
    pub(crate) fn is_null(self) -> bool {
        self.0 == 0
    }
}

/// Shared bytes from a checked, 8-aligned position to the end of its chunk: one chunk lookup when
/// made, then one comparison per access (what a lookup's many small reads of one table or entry
/// need).
#[derive(Clone, Copy)]
pub(crate) struct Span {
    p: *mut u8,
    len: u64,
}

impl Span {
    /// A pointer to `n` bytes at `off`, checked to lie within the span.
    #[inline(always)]
    pub(crate) fn check(&self, off: u64, n: u64) -> Result<*mut u8> {
        if off > self.len || n > self.len - off {
            return Err(Error::Corrupt);
        }
        // SAFETY: `off + n <= len`: within the chunk's mapping.
        Ok(unsafe { self.p.add(off as usize) })
    }

    /// The word at `off` (a multiple of 8).
    #[inline(always)]
    pub(crate) fn word(&self, off: u64) -> Result<&AtomicU64> {
        if off % 8 != 0 {
            return Err(Error::Corrupt);
        }
        let p = self.check(off, 8)?;
        // SAFETY: in bounds, 8-aligned (the span starts 8-aligned); atomics may alias shared memory.
        Ok(unsafe { &*(p as *const AtomicU64) })
    }

    #[inline(always)]
    pub(crate) fn load(&self, off: u64) -> Result<u64> {
        Ok(self.word(off)?.load(Ordering::Relaxed))
    }

    /// Copies the bytes at `off` into `out` (a private copy).
    #[inline]
    pub(crate) fn copy_out(&self, off: u64, out: &mut [u8]) -> Result<()> {
        let p = self.check(off, out.len() as u64)?;
        // SAFETY: in bounds (checked); raw copy, no reference to shared bytes.
        unsafe { copy_raw(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }
}

/// Where chunk `i` lives in the file. Written by the grower before the chunk is published, never
/// after.
#[repr(C)]
pub(crate) struct ChunkDesc {
    pub(crate) off: AtomicU64,
    pub(crate) len: AtomicU64,
    /// 1 once its space is in the free lists (see `alloc::Guard::grow`).
    pub(crate) inserted: AtomicU64,
}

/// The control block at the start of chunk 0. All atomics: any bytes are a valid value.
#[repr(C)]
pub(crate) struct ArenaCtl {
    /// Most bytes the file may hold (0: no cap).
    pub(crate) max_bytes: AtomicU64,
    /// A random number naming the objects made through this manager (`named_lock`, ...).
    pub(crate) prefix: AtomicU64,
    /// The creator's pid and descriptor of the file (`pid << 32 | fd`), for handles of an anonymous
    /// manager opened by a process that does not map it yet.
    pub(crate) creator: AtomicU64,
    /// Chunks published.
    pub(crate) n_chunks: AtomicU64,
    pub(crate) chunks: [ChunkDesc; MAX_CHUNKS],
    pub(crate) alloc: AllocCtl,
    pub(crate) dir: DirCtl,
    /// The first page of container slots (the namespace is slot 0).
    pub(crate) first_page: [Slot; SLOTS_PER_PAGE],
}

/// Where the heap starts in chunk 0.
pub(crate) const HEAP_START: u64 = (std::mem::size_of::<ArenaCtl>() as u64).div_ceil(PAGE) * PAGE;

/// Identifies the layout: a build with another `ArenaCtl` is `Incompatible`.
fn fingerprint() -> u64 {
    crate::segment::fingerprint_of::<ArenaCtl>() ^ 0x6d61_6e61_6765_7201
}

fn no_roles(_: &Segment, _: usize) {}

/// A process's view of one arena.
pub(crate) struct Arena {
    pub(crate) seg: Arc<Segment>,
    base: *mut u8,
    base_len: usize,
    /// This process's mappings of chunks 1.. (index `i - 1`).
    maps: Box<[OnceLock<MmapRaw>]>,
    /// Device and inode of the file.
    pub(crate) file: (u64, u64),
}

// SAFETY: `base` points into the segment's mapping, which lives as long as `seg`; every access to the
// shared bytes goes through atomics or the bounds-checked raw copies below.
unsafe impl Send for Arena {}
// SAFETY: as above; the process-local fields are immutable or `OnceLock`s.
unsafe impl Sync for Arena {}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("name", &self.seg.os_name())
            .field("file", &self.file)
            .finish()
    }
}

/// The arenas this process maps, so that a handle received twice (or by the process that made it)
/// shares one mapping and one participant slot.
static ARENAS: Mutex<Vec<Weak<Arena>>> = Mutex::new(Vec::new());

fn arenas() -> std::sync::MutexGuard<'static, Vec<Weak<Arena>>> {
    ARENAS.lock().unwrap_or_else(|p| p.into_inner())
}

fn identity(fd: &impl AsRawFd) -> Result<(u64, u64)> {
    // SAFETY: the descriptor is borrowed for this call only.
    let st = rustix::fs::fstat(unsafe { rustix::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) })?;
    Ok((st.st_dev, st.st_ino))
}

pub(crate) fn random_seed() -> u64 {
    let mut v = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `v`.
    let n = unsafe { libc::getrandom(v.as_mut_ptr().cast(), 8, 0) };
    if n == 8 {
        u64::from_ne_bytes(v)
    } else {
        // No entropy source: the time and pid still differ between managers.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ (u64::from(std::process::id()) << 32)
    }
}

impl Arena {
    /// Creates an arena: anonymous (shared with forked children) when `name` is `None`.
    pub(crate) fn create(name: Option<&str>, initial: u64, max_bytes: u64) -> Result<Arc<Arena>> {
        let floor = HEAP_START + (64 << 10);
        let mut initial = initial.max(floor);
        if max_bytes != 0 {
            if max_bytes < floor + 4 * PAGE {
                return Err(Error::invalid(format!(
                    "max_bytes {max_bytes} is below the smallest arena ({} bytes); ask for more",
                    floor + 4 * PAGE
                )));
            }
            // The segment's header and participant table come first (two pages for 256 slots).
            initial = initial.min(max_bytes - 4 * PAGE);
        }
        let initial = initial.div_ceil(PAGE) * PAGE;
        let spec = Spec {
            kind: Kind::Manager,
            fingerprint: fingerprint(),
            params: [initial, max_bytes, 0, 0, 0, 0, 0, 0],
            kind_size: initial as usize,
            n_slots: SLOTS,
            on_role_closed: no_roles,
            growable: true,
            lazy_tail: 0,
        };
        let prefix = random_seed();
        let fill = |seg: &Segment| {
            let (base, len) = seg.kind_area();
            // SAFETY: the kind area holds at least `initial` bytes (sized by `spec`), page aligned, and
            // nobody else sees it yet.
            unsafe { init(base, len as u64, seg, max_bytes, prefix) };
        };
        let seg = match name {
            None => {
                let seg = Segment::create_anonymous(&spec, Vec::new())?;
                fill(&seg);
                seg
            }
            Some(n) => Segment::create_named_with(&names::user_name(n)?, &spec, &fill)?,
        };
        let arena = Self::wrap(seg)?;
        arenas().push(Arc::downgrade(&arena));
        Ok(arena)
    }

    /// Opens the named arena (this process's mapping if it has one).
    pub(crate) fn open(name: &str) -> Result<Arc<Arena>> {
        Self::open_os(&names::user_name(name)?)
    }

    /// Opens the arena whose OS name is `os_name`.
    pub(crate) fn open_os(os_name: &str) -> Result<Arc<Arena>> {
        if let Ok(m) = std::fs::metadata(names::path_of(os_name)) {
            use std::os::unix::fs::MetadataExt;
            if let Some(a) = Self::find((m.dev(), m.ino())) {
                return Ok(a);
            }
        }
        let seg = Segment::open_named(os_name, Kind::Manager, fingerprint(), no_roles)?;
        Self::register(Self::wrap(seg)?)
    }

    /// Maps the arena behind `fd` (a descriptor of another process's, opened through `/proc`).
    pub(crate) fn adopt(fd: OwnedFd) -> Result<Arc<Arena>> {
        if let Some(a) = Self::find(identity(&fd)?) {
            return Ok(a);
        }
        let seg = Segment::adopt(fd, None, Kind::Manager, fingerprint(), no_roles, Vec::new())?;
        Self::register(Self::wrap(seg)?)
    }

    /// The arena this process maps for the file `file`, if any.
    pub(crate) fn find(file: (u64, u64)) -> Option<Arc<Arena>> {
        let mut list = arenas();
        list.retain(|w| w.strong_count() > 0);
        list.iter()
            .filter_map(Weak::upgrade)
            .find(|a| a.file == file)
    }

    /// Adds `a` to the list, unless another thread mapped the same file meanwhile (then that one).
    fn register(a: Arc<Arena>) -> Result<Arc<Arena>> {
        let mut list = arenas();
        if let Some(other) = list
            .iter()
            .filter_map(Weak::upgrade)
            .find(|o| o.file == a.file)
        {
            return Ok(other);
        }
        list.push(Arc::downgrade(&a));
        Ok(a)
    }

    fn wrap(seg: Arc<Segment>) -> Result<Arc<Arena>> {
        let (base, len) = seg.kind_area();
        if (len as u64) < HEAP_START + PAGE {
            return Err(Error::Corrupt);
        }
        // SAFETY: the descriptor is the segment's own, borrowed for the fstat.
        let file = identity(&unsafe { std::os::fd::BorrowedFd::borrow_raw(seg.descriptor()) })?;
        Ok(Arc::new(Arena {
            seg,
            base,
            base_len: len,
            maps: (1..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            file,
        }))
    }

    /// The control block.
    #[inline]
    pub(crate) fn ctl(&self) -> &ArenaCtl {
        // SAFETY: the kind area starts page aligned and holds `HEAP_START >= size_of::<ArenaCtl>()`
        // bytes (checked in `wrap`); `ArenaCtl` is all atomics, valid for any bytes.
        unsafe { &*(self.base as *const ArenaCtl) }
    }

    /// The `Ref` of a word of the control block (for the allocator's undo log).
    #[inline]
    pub(crate) fn ctl_ref(&self, w: &AtomicU64) -> Ref {
        Ref::new(
            0,
            (w as *const AtomicU64 as usize - self.base as usize) as u64,
        )
    }

    /// The start and length of chunk `i`, mapping it on first use.
    #[inline]
    pub(crate) fn chunk(&self, i: usize) -> Result<(*mut u8, usize)> {
        if i == 0 {
            return Ok((self.base, self.base_len));
        }
        match self.maps.get(i - 1) {
            Some(m) => match m.get() {
                Some(m) => Ok((m.as_mut_ptr(), m.len())),
                None => self.map_chunk(i),
            },
            None => Err(Error::Corrupt),
        }
    }

    #[cold]
    fn map_chunk(&self, i: usize) -> Result<(*mut u8, usize)> {
        let n = self.ctl().n_chunks.load(Ordering::Acquire);
        if i as u64 >= n.min(MAX_CHUNKS as u64) {
            return Err(Error::Corrupt);
        }
        let d = &self.ctl().chunks[i];
        let (off, len) = (d.off.load(Ordering::Relaxed), d.len.load(Ordering::Relaxed));
        if len < PAGE || len % PAGE != 0 || len > OFFSET_MASK {
            return Err(Error::Corrupt);
        }
        let m = self.seg.map_extent(off, len as usize)?;
        let slot = &self.maps[i - 1];
        let _ = slot.set(m); // another thread may have mapped it meanwhile: its mapping wins
        let m = slot.get().ok_or(Error::Corrupt)?;
        Ok((m.as_mut_ptr(), m.len()))
    }

    /// The first byte where blocks may start in chunk `i`.
    #[inline]
    pub(crate) fn heap_start(i: usize) -> u64 {
        if i == 0 { HEAP_START } else { 0 }
    }

    /// The span from `r` (8-aligned) to the end of its chunk.
    #[inline]
    pub(crate) fn span(&self, r: Ref) -> Result<Span> {
        let (p, clen) = self.chunk(r.chunk())?;
        let off = r.offset();
        if off % 8 != 0 || off > clen as u64 {
            return Err(Error::Corrupt);
        }
        Ok(Span {
            // SAFETY: `off <= clen`: within (or at the end of) the mapping.
            p: unsafe { p.add(off as usize) },
            len: clen as u64 - off,
        })
    }

    /// A pointer to `len` bytes at `r`, checked to lie within its chunk.
    #[inline]
    pub(crate) fn at(&self, r: Ref, len: u64) -> Result<*mut u8> {
        let (p, clen) = self.chunk(r.chunk())?;
        let off = r.offset();
        if off > clen as u64 || len > clen as u64 - off {
            return Err(Error::Corrupt);
        }
        // SAFETY: `off + len <= clen`: in the mapping.
        Ok(unsafe { p.add(off as usize) })
    }

    /// The word at `r` (8-aligned, within its chunk).
    #[inline]
    pub(crate) fn word(&self, r: Ref) -> Result<&AtomicU64> {
        if r.0 % 8 != 0 {
            return Err(Error::Corrupt);
        }
        let p = self.at(r, 8)?;
        // SAFETY: in bounds and 8-aligned (chunks are page aligned); atomics may alias shared memory.
        Ok(unsafe { &*(p as *const AtomicU64) })
    }

    /// Loads the word at `r`.
    #[inline]
    pub(crate) fn load(&self, r: Ref) -> Result<u64> {
        Ok(self.word(r)?.load(Ordering::Relaxed))
    }

    /// Copies `out.len()` bytes at `r` into `out` (a private copy: the bytes may change meanwhile,
    /// which a seqlock reader detects afterwards).
    #[inline]
    pub(crate) fn copy_out(&self, r: Ref, out: &mut [u8]) -> Result<()> {
        let p = self.at(r, out.len() as u64)?;
        // SAFETY: `p..p + len` is in the mapping (checked); raw copy, no reference to shared bytes.
        unsafe { copy_raw(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Appends the `len` bytes at `r` to `out` (bounded by the chunk, checked first).
    pub(crate) fn append_out(&self, r: Ref, len: u64, out: &mut Vec<u8>) -> Result<()> {
        let p = self.at(r, len)?;
        let len = len as usize;
        out.reserve(len);
        // SAFETY: `p..p + len` is in the mapping (checked); written into the spare capacity of `out`,
        // whose length is then set to what was written.
        unsafe {
            std::ptr::copy_nonoverlapping(p, out.as_mut_ptr().add(out.len()), len);
            out.set_len(out.len() + len);
        }
        Ok(())
    }

    /// Copies `bytes` to `r` (a block this process owns and nobody reads yet, or inside a seqlock
    /// writer's window).
    #[inline]
    pub(crate) fn copy_in(&self, r: Ref, bytes: &[u8]) -> Result<()> {
        let p = self.at(r, bytes.len() as u64)?;
        // SAFETY: in bounds (checked); raw copy from our own memory.
        unsafe { copy_raw(bytes.as_ptr(), p, bytes.len()) };
        Ok(())
    }

    /// Zeroes `len` bytes at `r` (a block this process owns).
    pub(crate) fn zero(&self, r: Ref, len: u64) -> Result<()> {
        let p = self.at(r, len)?;
        // SAFETY: in bounds (checked).
        unsafe { std::ptr::write_bytes(p, 0, len as usize) };
        Ok(())
    }

    /// This process's claim id, after making sure it owns its participant slot (after a fork).
    #[inline]
    pub(crate) fn me(&self) -> Result<u32> {
        self.seg.ensure_owner()?;
        Ok(self.seg.claim_id())
    }

    /// Bytes of all published chunks, at most the file's bytes after the header: chunk lengths
    /// are words a peer can write, and callers bound allocations by this (a snapshot copies less
    /// than the arena holds), so it must not be larger than what exists.
    pub(crate) fn mapped(&self) -> u64 {
        // SAFETY: the segment's own descriptor, borrowed for the fstat.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.seg.descriptor()) };
        let file = rustix::fs::fstat(fd).map_or(0, |st| st.st_size as u64);
        let n = self
            .ctl()
            .n_chunks
            .load(Ordering::Acquire)
            .min(MAX_CHUNKS as u64);
        (0..n as usize)
            .map(|i| {
                if i == 0 {
                    self.base_len as u64
                } else {
                    self.ctl().chunks[i].len.load(Ordering::Relaxed)
                }
            })
            .fold(0u64, u64::saturating_add)
            .min(file.saturating_sub(self.seg.header().kind_offset))
    }

    /// The user name of a named arena.
    pub(crate) fn os_name(&self) -> Option<&str> {
        self.seg.os_name()
    }
}

/// Copies `len` bytes from `src` to `dst` (not overlapping): the few bytes of a key or a small value
/// as two overlapping words (a call to `memcpy` costs more than the copy), longer runs with `memcpy`.
///
/// # Safety
/// `src..src + len` must be readable and `dst..dst + len` writable, and they must not overlap.
#[inline(always)]
pub(crate) unsafe fn copy_raw(src: *const u8, dst: *mut u8, len: usize) {
    use std::ptr::{read_unaligned as rd, write_unaligned as wr};
    // SAFETY: every access below lies within `[0, len)` of both ranges (the caller's promise).
    unsafe {
        match len {
            0 => {}
            1 => *dst = *src,
            2..=3 => {
                let (a, b) = (rd(src as *const u16), rd(src.add(len - 2) as *const u16));
                wr(dst as *mut u16, a);
                wr(dst.add(len - 2) as *mut u16, b);
            }
            4..=7 => {
                let (a, b) = (rd(src as *const u32), rd(src.add(len - 4) as *const u32));
                wr(dst as *mut u32, a);
                wr(dst.add(len - 4) as *mut u32, b);
            }
            8..=16 => {
                let (a, b) = (rd(src as *const u64), rd(src.add(len - 8) as *const u64));
                wr(dst as *mut u64, a);
                wr(dst.add(len - 8) as *mut u64, b);
            }
            _ => std::ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

/// The `len <= 16` bytes at `p` as two words (overlapping reads, as `copy_raw` copies them), to
/// compare in registers.
///
/// # Safety
/// `p..p + len` must be readable and `len <= 16`.
#[inline(always)]
pub(crate) unsafe fn small_words(p: *const u8, len: usize) -> (u64, u64) {
    use std::ptr::read_unaligned as rd;
    // SAFETY: every read lies within `[0, len)` (the caller's promise).
    unsafe {
        match len {
            0 => (0, 0),
            1 => (u64::from(*p), 0),
            2..=3 => (
                u64::from(rd(p as *const u16)),
                u64::from(rd(p.add(len - 2) as *const u16)),
            ),
            4..=7 => (
                u64::from(rd(p as *const u32)),
                u64::from(rd(p.add(len - 4) as *const u32)),
            ),
            _ => (rd(p as *const u64), rd(p.add(len - 8) as *const u64)),
        }
    }
}

/// Writes a new arena's first state: the control block, chunk 0 as one free block, the directory's
/// first page with the namespace in slot 0.
///
/// # Safety
/// `base..base + len` must be the new segment's kind area, page aligned, seen by nobody else yet.
unsafe fn init(base: *mut u8, len: u64, seg: &Segment, max_bytes: u64, prefix: u64) {
    // SAFETY: `len >= HEAP_START + PAGE` (the caller sized it); all atomics.
    let ctl = unsafe { &*(base as *const ArenaCtl) };
    let r = Ordering::Relaxed;
    ctl.max_bytes.store(max_bytes, r);
    ctl.prefix.store(prefix, r);
    ctl.creator.store(
        u64::from(std::process::id()) << 32 | seg.descriptor() as u32 as u64,
        r,
    );
    ctl.chunks[0]
        .off
        .store(seg.header().kind_offset, Ordering::Relaxed);
    ctl.chunks[0].len.store(len, r);
    ctl.chunks[0].inserted.store(1, r);
    ctl.n_chunks.store(1, r);
    // SAFETY: as promised by our caller.
    unsafe { alloc::format_fresh(ctl, base, len) };
    super::slot::init_dir(ctl, base);
}
