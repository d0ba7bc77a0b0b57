//! `SharedMemory`: a named block of raw bytes, as Python's `multiprocessing.shared_memory`.
//!
//! It is a segment like the others (0600, `O_EXCL`, `fallocate`d, a validated header, liveness
//! tokens), with the caller's bytes after the header page. Python keeps a block until someone calls
//! `unlink()`; here the last process to drop its handle also removes the name, so nothing outlives its
//! users, and [`cleanup`](crate::cleanup) removes blocks whose users all died.

use crate::error::{Error, Result};
use crate::segment::{Kind, Segment, Spec, names};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

const PARAM_LEN: usize = 0;
const SHM_SLOTS: u32 = 256;

fn no_roles(_: &Segment, _: usize) {}

/// A named block of shared bytes.
///
/// The bytes are shared with every process that opened the block: another process may change them
/// at any moment. So the safe accessors copy: [`read`](Self::read) and [`write`](Self::write) (and
/// [`to_vec`](Self::to_vec)) move bytes between the block and your buffers, by relaxed atomic loads
/// and stores, so a concurrent writer gives a mix of old and new bytes, never undefined behaviour.
/// Coordinate with a lock or a message as you would for a file others write. For atomics in the
/// block, or zero-copy access, [`as_ptr`](Self::as_ptr) and the `unsafe`
/// [`as_slice`](Self::as_slice) / [`as_mut_slice`](Self::as_mut_slice) (whose caller promises that
/// nobody writes the bytes while the slice lives). The block never moves and never shrinks while
/// this handle lives.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::SharedMemory;
/// let name = format!("doc-shm-{}", std::process::id());
/// let a = SharedMemory::create(&name, 4096)?;
/// a.write(0, b"hello")?;
/// let b = SharedMemory::open(&name)?;
/// let mut buf = [0u8; 5];
/// b.read(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// assert_eq!(b.len(), 4096);
/// assert!(b.write(4094, b"abc").is_err()); // past the end: nothing written
/// # Ok(()) }
/// ```
///
/// A slice into the block is `unsafe`, since other processes may write it:
///
/// ```compile_fail,E0133
/// # let m = shmwire::SharedMemory::create("doc-shm-cf", 16).unwrap();
/// let bytes: &[u8] = m.as_slice(); // error: call to unsafe function
/// ```
#[derive(Debug)]
pub struct SharedMemory {
    seg: Arc<Segment>,
    len: usize,
    name: String,
}

/// Options for a [`SharedMemory`] block: start from [`SharedMemory::builder`], finish with
/// [`build`](Self::build).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::SharedMemory;
/// let name = format!("doc-shm-builder-{}", std::process::id());
/// let block = SharedMemory::builder(&name, 4096).mode(0o660).build()?;
/// assert_eq!(block.len(), 4096);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build()`"]
pub struct SharedMemoryBuilder {
    name: String,
    size: usize,
    mode: Option<u32>,
}

impl SharedMemoryBuilder {
    /// Who may open it by name besides this user: `0o660` also lets in the users of its group
    /// (the creating process's effective group), `0o600` (the default) nobody else; others never
    /// (any other mode is [`Error::Invalid`]). A process of another user
    /// opens such an object only if it is in that group; without this, it is refused.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Creates the block, zero-filled. A taken name is [`Error::Exists`].
    pub fn build(self) -> Result<SharedMemory> {
        let (name, size) = (self.name.as_str(), self.size);
        self.mode.map_or(Ok(()), crate::segment::check_mode)?;
        if size == 0 || size > isize::MAX as usize / 2 {
            return Err(Error::invalid(format!(
                "a block of {size} bytes cannot be made; ask for 1 to isize::MAX / 2 bytes"
            )));
        }
        let mut params = [0u64; 8];
        params[PARAM_LEN] = size as u64;
        let spec = Spec {
            kind: Kind::SharedMemory,
            fingerprint: 0,
            params,
            kind_size: size,
            n_slots: SHM_SLOTS,
            on_role_closed: no_roles,
            growable: false,
            lazy_tail: 0,
        };
        let seg = Segment::create_named(&names::user_name(name)?, &spec)?;
        if let Some(m) = self.mode {
            seg.set_mode(m)?;
        }
        Ok(SharedMemory {
            seg,
            len: size,
            name: self.name,
        })
    }
}

impl SharedMemory {
    /// Creates the block `name` of `size` bytes, zero-filled. A taken name is [`Error::Exists`].
    pub fn create(name: &str, size: usize) -> Result<SharedMemory> {
        Self::builder(name, size).build()
    }

    /// Options for the block `name` of `size` bytes (who else may open it).
    pub fn builder(name: &str, size: usize) -> SharedMemoryBuilder {
        SharedMemoryBuilder {
            name: name.to_owned(),
            size,
            mode: None,
        }
    }

    /// Opens the block `name` made by any process of this user.
    pub fn open(name: &str) -> Result<SharedMemory> {
        let seg = Segment::open_named(&names::user_name(name)?, Kind::SharedMemory, 0, no_roles)?;
        let len = seg.header().params[PARAM_LEN];
        if len == 0 || len > seg.kind_area().1 as u64 {
            return Err(Error::Corrupt);
        }
        Ok(SharedMemory {
            seg,
            len: len as usize,
            name: name.to_owned(),
        })
    }

    /// The name it was created with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes (never: a block has at least one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::invalid(format!(
                "{len} bytes at offset {offset} do not fit in a block of {} bytes; keep offset + length within len()",
                self.len
            )));
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes from the block, starting at `offset`, into `buf`. A range past the
    /// end is [`Error::Invalid`] and copies nothing.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: `offset + buf.len() <= len` (checked), within the mapping `self.seg` keeps.
        unsafe { read_shared(self.seg.kind_area().0.add(offset), buf) };
        Ok(())
    }

    /// Copies `data` into the block at `offset`. A range past the end is [`Error::Invalid`] and
    /// writes nothing.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: as in `read`.
        unsafe { write_shared(self.seg.kind_area().0.add(offset), data) };
        Ok(())
    }

    /// A copy of the whole block.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        // SAFETY: the kind area holds `len` bytes (checked on open), mapped while `self.seg` lives.
        unsafe { read_shared(self.seg.kind_area().0, &mut v) };
        v
    }

    /// The bytes, in place.
    ///
    /// # Safety
    /// No process (this one included, through another handle or [`write`](Self::write)) may write
    /// the block's bytes while the slice lives: Rust assumes the bytes behind a shared reference do
    /// not change. Use [`read`](Self::read) when that cannot be promised.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the kind area holds `len` bytes (checked on open), mapped while `self.seg` lives;
        // the caller promises nobody writes them meanwhile.
        unsafe { std::slice::from_raw_parts(self.seg.kind_area().0, self.len) }
    }

    /// The bytes, writable in place.
    ///
    /// # Safety
    /// No other process, and no other handle or slice of this process, may read or write the block's
    /// bytes while the slice lives: Rust assumes a mutable reference is the only access. Use
    /// [`write`](Self::write) when that cannot be promised.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the caller promises exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.seg.kind_area().0, self.len) }
    }

    /// A raw pointer to the first byte (for atomics, or volatile access, across processes). It is
    /// page-aligned and valid for [`len`](Self::len) bytes while this handle lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.seg.kind_area().0
    }

    /// Removes the name now: later `open`s fail, existing handles keep working.
    pub fn unlink(&self) -> Result<()> {
        self.seg.unlink_name()
    }
}

/// Copies `dst.len()` bytes from shared memory at `src` into `dst`, by relaxed atomic loads (a word
/// at a time where aligned): bytes that other processes write meanwhile are read as some mix of old
/// and new, and no reference to a non-atomic place in shared memory is formed.
///
/// # Safety
/// `src` is valid for reads of `dst.len()` bytes for the duration of the call.
pub(crate) unsafe fn read_shared(src: *const u8, dst: &mut [u8]) {
    const W: usize = std::mem::size_of::<usize>();
    let len = dst.len();
    let head = src.align_offset(W).min(len);
    let mut i = 0;
    while i < len {
        if i >= head && len - i >= W {
            // SAFETY: `src + i` is in bounds and `usize`-aligned (past the head); an atomic may alias
            // bytes other processes write.
            let w =
                unsafe { AtomicUsize::from_ptr(src.add(i) as *mut usize) }.load(Ordering::Relaxed);
            dst[i..i + W].copy_from_slice(&w.to_ne_bytes());
            i += W;
        } else {
            // SAFETY: `src + i` is in bounds.
            dst[i] = unsafe { AtomicU8::from_ptr(src.add(i) as *mut u8) }.load(Ordering::Relaxed);
            i += 1;
        }
    }
}

/// Copies `src` into shared memory at `dst`, by relaxed atomic stores (see [`read_shared`]).
///
/// # Safety
/// `dst` is valid for writes of `src.len()` bytes for the duration of the call.
pub(crate) unsafe fn write_shared(dst: *mut u8, src: &[u8]) {
    const W: usize = std::mem::size_of::<usize>();
    let len = src.len();
    let head = dst.align_offset(W).min(len);
    let mut i = 0;
    while i < len {
        if i >= head && len - i >= W {
            let mut word = [0u8; W];
            word.copy_from_slice(&src[i..i + W]);
            let w = usize::from_ne_bytes(word);
            // SAFETY: `dst + i` is in bounds and `usize`-aligned (past the head).
            unsafe { AtomicUsize::from_ptr(dst.add(i) as *mut usize) }.store(w, Ordering::Relaxed);
            i += W;
        } else {
            // SAFETY: `dst + i` is in bounds.
            unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Ordering::Relaxed);
            i += 1;
        }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // Dropped with a closure just forked: the child owns this handle (see `segment::registry`).
        crate::segment::moving::note_segment_moved(&self.seg);
    }
}
