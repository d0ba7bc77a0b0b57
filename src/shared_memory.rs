//! `SharedMemory`: a named block of raw bytes, as Python's `multiprocessing.shared_memory`.
//!
//! It is a segment like the others (0600, `O_EXCL`, `fallocate`d, a validated header, liveness
//! tokens), with the caller's bytes after the header page. Python keeps a block until someone calls
//! `unlink()`; here the last process to drop its handle also removes the name, so nothing outlives its
//! users, and [`cleanup`](crate::cleanup) removes blocks whose users all died.

use crate::error::{Error, Result};
use crate::segment::{Kind, Segment, Spec, names};
use std::sync::Arc;

const PARAM_LEN: usize = 0;
const SHM_SLOTS: u32 = 256;

fn no_roles(_: &Segment, _: usize) {}

/// A named block of shared bytes.
///
/// The bytes are shared with every process that opened the block: another process may change them
/// at any moment. Treat them as you would a file others write (coordinate with a lock or a message);
/// the slices never move and never shrink while this handle lives.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::SharedMemory;
/// let name = format!("doc-shm-{}", std::process::id());
/// let mut a = SharedMemory::create(&name, 4096)?;
/// a.as_mut_slice()[..5].copy_from_slice(b"hello");
/// let b = SharedMemory::open(&name)?;
/// assert_eq!(&b.as_slice()[..5], b"hello");
/// assert_eq!(b.len(), 4096);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SharedMemory {
    seg: Arc<Segment>,
    len: usize,
    name: String,
}

impl SharedMemory {
    /// Creates the block `name` of `size` bytes, zero-filled. A taken name is `Io(AlreadyExists)`.
    pub fn create(name: &str, size: usize) -> Result<SharedMemory> {
        if size == 0 || size > isize::MAX as usize / 2 {
            return Err(Error::io(
                std::io::ErrorKind::InvalidInput,
                format!("size {size} is not a usable block size"),
            ));
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
        Ok(SharedMemory {
            seg,
            len: size,
            name: name.to_owned(),
        })
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

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the kind area holds `len` bytes (checked on open), mapped while `self.seg` lives.
        unsafe { std::slice::from_raw_parts(self.seg.kind_area().0, self.len) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` makes this the only slice this handle gives out.
        unsafe { std::slice::from_raw_parts_mut(self.seg.kind_area().0, self.len) }
    }

    /// A raw pointer to the first byte (for atomics or volatile access across processes).
    pub fn as_ptr(&self) -> *mut u8 {
        self.seg.kind_area().0
    }

    /// Removes the name now: later `open`s fail, existing handles keep working.
    pub fn unlink(&self) -> Result<()> {
        self.seg.unlink_name()
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // Dropped with a closure just forked: the child owns this handle (see `segment::registry`).
        crate::process::note_segment_moved(&self.seg);
    }
}
