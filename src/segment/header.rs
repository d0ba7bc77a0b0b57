//! The validated header at offset 0 of every segment, and the layout that follows it.
//!
//! ```text
//! 0     Header: magic, layout version, kind, size, type fingerprint, creator pid, slot count,
//!       kind parameters, then the `ready` word (set last, with Release, by the creator)
//! 192   Roles: one u64 bitmask per role (bit i = participant slot i holds it), the `died` mask
//! 256   Participant slots, 16 bytes each
//! kind_offset (page aligned): the kind's own area (rings, ...)
//! ```
//!
//! A reader copies the header out of shared memory once and validates the copy (no double fetch).

use crate::error::{Error, Result};
use bytemuck::{Pod, Zeroable};

/// "SHMWIRE\0" little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SHMWIRE\0");
/// Bumped whenever the layout of any kind changes.
pub(crate) const LAYOUT_VERSION: u32 = 1;
/// `ready` holds this once the creator has initialised everything.
pub(crate) const READY: u32 = 0x5245_4459;

pub(crate) const ROLES_OFFSET: usize = 192;
pub(crate) const SLOTS_OFFSET: usize = 256;
pub(crate) const SLOT_SIZE: usize = 16;
/// Most participants a segment can have.
pub(crate) const MAX_SLOTS: u32 = 256;
/// Roles (ends of a pipe, ...) are bitmasks over the first 64 slots.
pub(crate) const MAX_ROLES: usize = 4;
pub(crate) const PAGE: usize = 4096;

/// What a segment holds (as [`list`](super::list) reports it).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let _q = shmwire::Queue::<u32>::builder().name("doc-kind-queue").build()?;
/// let info = shmwire::segment::list()?
///     .into_iter()
///     .find(|s| s.name.ends_with("doc-kind-queue"))
///     .expect("listed");
/// assert_eq!(info.kind, Some(shmwire::segment::Kind::Queue));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum Kind {
    /// A [`Pipe`](crate::Pipe): one or two SPSC byte rings.
    Pipe = 1,
    /// A [`SharedMemory`](crate::SharedMemory) block of raw bytes.
    SharedMemory = 2,
    /// A lock, semaphore, event, condition or barrier.
    Sync = 3,
    /// A [`Value`](crate::Value) or [`Array`](crate::Array).
    Value = 4,
    /// A [`Queue`](crate::Queue).
    Queue = 5,
    /// A [`Pool`](crate::Pool)'s task board, result rings and argument arena.
    Pool = 6,
    /// A [`Manager`](crate::Manager)'s arena (its dicts and lists).
    Manager = 7,
    /// A [`Listener`](crate::Listener)'s socket (listings only: it has no segment header).
    Listener = 100,
}

impl Kind {
    pub(crate) fn from_u32(v: u32) -> Option<Kind> {
        match v {
            1 => Some(Kind::Pipe),
            2 => Some(Kind::SharedMemory),
            3 => Some(Kind::Sync),
            4 => Some(Kind::Value),
            5 => Some(Kind::Queue),
            6 => Some(Kind::Pool),
            7 => Some(Kind::Manager),
            _ => None,
        }
    }

    /// A short lowercase name for listings.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pipe => "pipe",
            Kind::SharedMemory => "shm",
            Kind::Sync => "sync",
            Kind::Value => "value",
            Kind::Queue => "queue",
            Kind::Pool => "pool",
            Kind::Manager => "manager",
            Kind::Listener => "listener",
        }
    }
}

/// The plain-data part of the header, copied out and validated as a whole.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct HeaderFields {
    pub magic: u64,
    pub version: u32,
    pub kind: u32,
    pub size: u64,
    pub fingerprint: u64,
    pub creator_pid: u32,
    pub n_slots: u32,
    /// Kind-specific parameters (a pipe: ring capacity, duplex flag), validated by the kind.
    pub params: [u64; 8],
    pub kind_offset: u64,
}

/// Byte offset of the `ready` word.
pub(crate) const READY_OFFSET: usize = std::mem::size_of::<HeaderFields>();
const _: () = assert!(READY_OFFSET + 4 <= ROLES_OFFSET);

/// The offset of the kind area for `n_slots` participants.
pub(crate) fn kind_offset(n_slots: u32) -> usize {
    round_up(SLOTS_OFFSET + n_slots as usize * SLOT_SIZE, PAGE)
}

pub(crate) fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

impl HeaderFields {
    /// Checks a header read from a segment that should be a `kind` of `fingerprint`, whose backing
    /// object is `actual_size` bytes long.
    pub(crate) fn validate(&self, kind: Kind, fingerprint: u64, actual_size: u64) -> Result<()> {
        if self.magic != MAGIC || self.version != LAYOUT_VERSION {
            return Err(Error::Incompatible);
        }
        if self.kind != kind as u32 || self.fingerprint != fingerprint {
            return Err(Error::Incompatible);
        }
        // A growable segment (an unbounded queue) may have grown past the size it was created with.
        if self.size > actual_size || self.n_slots == 0 || self.n_slots > MAX_SLOTS {
            return Err(Error::Corrupt);
        }
        if self.kind_offset != kind_offset(self.n_slots) as u64 || self.kind_offset > self.size {
            return Err(Error::Corrupt);
        }
        Ok(())
    }
}

pub(crate) fn fingerprint_parts(name: &str, size: u64, align: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(name.as_bytes());
    eat(&size.to_le_bytes());
    eat(&align.to_le_bytes());
    h
}

/// A fingerprint of an element type: its name, size and alignment (FNV-1a). A typed object opened
/// with another type is refused with [`Error::Incompatible`].
///
/// The name is [`std::any::type_name`], which Rust keeps stable only within one build: two programs
/// (or two compilers) may name one type differently. Named objects that other programs open check
/// what matters instead: [`fingerprint_of_tag`] for encoded items, [`fingerprint_of_pod`] for raw
/// data.
pub fn fingerprint_of<T>() -> u64 {
    fingerprint_parts(
        std::any::type_name::<T>(),
        std::mem::size_of::<T>() as u64,
        std::mem::align_of::<T>() as u64,
    )
}

/// The fingerprint of a type tag: the name a maker and its openers give the encoding of the items
/// they exchange (`"orders-v2"`), whatever each calls the type. Equal tags mean "these encoded items
/// decode as each other's"; the codec still checks every item ([`Error::Decode`]).
///
/// ```
/// use shmwire::segment::fingerprint_of_tag;
/// assert_eq!(fingerprint_of_tag("orders-v2"), fingerprint_of_tag("orders-v2"));
/// assert_ne!(fingerprint_of_tag("orders-v2"), fingerprint_of_tag("orders-v3"));
/// ```
pub fn fingerprint_of_tag(tag: &str) -> u64 {
    fingerprint_parts(tag, u64::MAX, 0)
}

/// The fingerprint of a plain-data (`bytemuck::Pod`) type by what matters for raw bytes: its size
/// and alignment, not its name. Two programs whose types differ in name but agree in both share raw
/// data (every bit pattern is a valid value of a `Pod` type); a different size or alignment is
/// [`Error::Incompatible`].
///
/// ```
/// use shmwire::segment::fingerprint_of_pod;
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Tick { seq: u64, price: f64 }
/// assert_eq!(fingerprint_of_pod::<Tick>(), fingerprint_of_pod::<[u64; 2]>());
/// assert_ne!(fingerprint_of_pod::<Tick>(), fingerprint_of_pod::<[u32; 4]>()); // alignment 4
/// ```
pub fn fingerprint_of_pod<T>() -> u64 {
    fingerprint_parts(
        "pod",
        std::mem::size_of::<T>() as u64,
        std::mem::align_of::<T>() as u64,
    )
}
