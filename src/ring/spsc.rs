//! A bounded single-producer single-consumer ring of byte frames in shared memory.
//!
//! The writer owns `tail`, the reader owns `head` (monotonic 64-bit byte positions, each on a cache line
//! of its own with that side's claim word). The reader does not poll `tail`: it polls the *frame
//! header* at `head`, which the writer publishes last, so a small message crosses from one core to the
//! other as one cache line (header and payload together), as in FastForward (Giacomoni et al., 2008)
//! and Lamport's ring with the index moved into the data. The writer keeps a private copy of `head` and
//! re-reads the shared one only when its copy says the ring is full.
//!
//! Frames are `[len: u32][tag: u32][payload][pad to 8]`; tag 0 means "nothing here yet". A frame never
//! straddles the end of the buffer: when it does not fit before the end, a `WRAP` header at the old
//! position sends the reader to offset 0, so every payload is one contiguous slice (zero-copy reads and
//! writes). Before publishing a frame, the writer zeroes the header slot that follows it (the *guard*),
//! so the reader, arriving there, never mistakes an old lap's bytes for a new frame. A frame's payload
//! is at most half the capacity less 16 bytes, which guarantees an empty ring always has room for it.
//!
//! SYNC POINT: the writer writes the payload and the guard, then stores the header with Release; the
//! reader loads the header with Acquire before reading the payload. The reader, done with a frame,
//! stores `head` with Release; the writer loads `head` with Acquire before reusing that space. After
//! each publish, the side notifies the other's eventcount, which costs a system call only if the other
//! side sleeps.
//!
//! Everything read from shared memory is validated before use (positions aligned and in range, frame
//! tags and lengths possible) and yields [`Error::Corrupt`] otherwise: a hostile peer can garble the
//! data it sends, never make us read or write out of bounds. Positions are counted modulo 2^64
//! (wrapping arithmetic throughout), so a position a peer set near `u64::MAX` is one more value to
//! check, never an overflow.

use super::buf::RingBuf;
use crate::error::{Error, Result};
use crate::loom::{AtomicU32, AtomicU64, Ordering};
use crate::wait::eventcount::EventCount;
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::os::fd::RawFd;

/// A frame holding a whole message.
pub(crate) const TAG_WHOLE: u32 = 1;
/// The first frame of a message larger than a frame: `[total: u64][first bytes]`.
pub(crate) const TAG_HEAD: u32 = 2;
/// A following piece of such a message.
pub(crate) const TAG_CONT: u32 = 3;
/// Filler up to the end of the buffer; the next frame starts at offset 0.
pub(crate) const TAG_WRAP: u32 = 4;
/// Size of a frame header (and of the guard slot after each frame).
pub(crate) const FRAME_HDR: usize = 8;

/// Smallest ring capacity.
pub(crate) const MIN_CAPACITY: usize = 4096;
/// Largest ring capacity (frame lengths are u32).
pub(crate) const MAX_CAPACITY: usize = 1 << 31;
/// Reads of 4 KiB that emptying a wake-up pipe takes at most (a default pipe holds 64 KiB).
const DRAIN_READS: usize = 16;

/// One side's counter and claim word, on a cache line of its own.
#[repr(C)]
pub(crate) struct Side {
    pub(crate) pos: AtomicU64,
    pub(crate) claim: AtomicU32,
    /// The claim id of the last process that read the ring (reader side only; 0: nobody yet). A sender may take this ring's frames into a private backlog only
    /// if no other live process reads it (see `Connection`).
    pub(crate) last: AtomicU32,
}

/// The shared control block of one ring (four cache lines). The reader never reads `tx` and the writer
/// reads `rx` only when the ring looks full, so each side's claim CAS and counter store stay in its own
/// cache.
#[repr(C)]
pub(crate) struct RingCtl {
    /// Writer: `tail` (for the next writer after a hand-over, and for checks), and the writer's claim.
    pub(crate) tx: CachePadded<Side>,
    /// Reader: `head`, and the reader's claim.
    pub(crate) rx: CachePadded<Side>,
    /// The reader sleeps here when the ring is empty.
    pub(crate) data: CachePadded<EventCount>,
    /// The writer sleeps here when the ring is full.
    pub(crate) space: CachePadded<EventCount>,
}

/// Bytes a ring's control block takes.
pub(crate) const CTL_SIZE: usize = std::mem::size_of::<RingCtl>();

#[cfg(loom)]
impl RingCtl {
    pub(crate) fn new() -> Self {
        let side = || {
            CachePadded::new(Side {
                pos: AtomicU64::new(0),
                claim: AtomicU32::new(0),
                last: AtomicU32::new(0),
            })
        };
        RingCtl {
            tx: side(),
            rx: side(),
            data: CachePadded::new(EventCount::new()),
            space: CachePadded::new(EventCount::new()),
        }
    }
}

#[cfg(not(loom))]
type CtlRef = *const RingCtl;
#[cfg(loom)]
type CtlRef = loom::sync::Arc<RingCtl>;

/// Room reserved for one frame (and the wrap filler before it, if any).
#[derive(Debug)]
pub(crate) struct Reservation {
    wrap_at: Option<u64>,
    frame_at: u64,
    len: usize,
    new_tail: u64,
}

impl Reservation {
    /// The payload length reserved.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Gives back the end of the room: the frame will carry `len` bytes (at most those reserved).
    #[inline]
    pub(crate) fn shrink(&mut self, len: usize) {
        if len != self.len {
            assert!(len < self.len);
            self.len = len;
            self.new_tail = self.frame_at + (FRAME_HDR + pad8(len)) as u64;
        }
    }
}

/// A published frame the reader may look at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) tag: u32,
    pub(crate) len: usize,
    payload_at: usize,
    next_head: u64,
}

/// One process's view of a ring: where it is, and its private copies of the other side's counter.
pub(crate) struct Spsc {
    ctl: CtlRef,
    buf: RingBuf,
    cap: u64,
    /// `max_payload()`, computed once.
    max_len: usize,
    cached_head: Cell<u64>,
    /// The wake-up pipe to signal when a frame is published and a descriptor-polling reader waits
    /// (held through this process's own non-blocking description, see `pipe`).
    data_fd: Option<RawFd>,
}

// SAFETY: the view points into shared memory that outlives it (the owner keeps the segment mapped);
// moving it to another thread changes nothing about who may touch the ring, which the claim words
// govern. It is deliberately not Sync (the cached counters are `Cell`s).
unsafe impl Send for Spsc {}

#[inline]
fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// The bytes a frame of `len` payload bytes takes in the ring (its header, the payload padded).
#[inline]
pub(crate) fn frame_len(len: usize) -> usize {
    FRAME_HDR + pad8(len)
}

#[inline]
fn header(tag: u32, len: usize) -> u64 {
    ((tag as u64) << 32) | len as u64
}

impl Spsc {
    /// A view of the ring whose control block is at `ctl` and bytes at `buf`.
    ///
    /// # Safety
    /// `ctl` must point to a zero-initialised or live `RingCtl` and `buf` to `cap` bytes, both in memory
    /// that stays mapped while the view lives; `cap` must be a power of two in
    /// `MIN_CAPACITY..=MAX_CAPACITY`.
    #[cfg(not(loom))]
    pub(crate) unsafe fn new(ctl: *const RingCtl, buf: RingBuf, cap: usize) -> Self {
        debug_assert!(cap.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&cap));
        Spsc {
            ctl,
            buf,
            cap: cap as u64,
            max_len: cap / 2 - 2 * FRAME_HDR,
            cached_head: Cell::new(0),
            data_fd: None,
        }
    }

    #[cfg(loom)]
    pub(crate) fn new_heap(ctl: CtlRef, buf: RingBuf, cap: usize) -> Self {
        Spsc {
            ctl,
            buf,
            cap: cap as u64,
            max_len: cap / 2 - 2 * FRAME_HDR,
            cached_head: Cell::new(0),
            data_fd: None,
        }
    }

    #[inline]
    pub(crate) fn ctl(&self) -> &RingCtl {
        #[cfg(not(loom))]
        // SAFETY: valid for the view's life (see `new`).
        unsafe {
            &*self.ctl
        }
        #[cfg(loom)]
        &self.ctl
    }

    /// Capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// The largest payload one frame can carry: with the wrap filler before it and the guard after it,
    /// a frame of this size always fits in an empty ring.
    #[inline]
    pub(crate) fn max_payload(&self) -> usize {
        self.max_len
    }

    /// The header word at buffer offset `pos` (8-aligned, below `cap`).
    #[inline]
    fn slot(&self, pos: usize) -> &AtomicU64 {
        debug_assert!(pos % 8 == 0 && pos < self.cap as usize);
        // SAFETY: every caller passes an 8-aligned offset below `cap` (masked positions), so 8 bytes fit.
        unsafe { self.buf.word(pos) }
    }

    #[inline]
    fn mask(&self) -> u64 {
        self.cap - 1
    }

    // ---- writer side -------------------------------------------------------------------------------

    /// Reserves room for a frame of `len` payload bytes (`len <= max_payload()`); `None` if the ring
    /// is too full right now.
    #[inline]
    pub(crate) fn try_reserve(&self, len: usize) -> Result<Option<Reservation>> {
        debug_assert!(len <= self.max_payload());
        let ctl = self.ctl();
        // We hold the writer claim, so `tail` is ours; it was still written by someone and is checked.
        let tail = ctl.tx.pos.load(Ordering::Relaxed);
        if tail % 8 != 0 {
            return Err(Error::Corrupt);
        }
        let need = (FRAME_HDR + pad8(len)) as u64;
        let pos = tail & self.mask();
        let to_end = self.cap - pos;
        // Room for the frame, the guard slot after it, and the filler up to the end if it wraps.
        let guard = FRAME_HDR as u64;
        let (wrap_at, frame_at, total) = if need > to_end {
            (Some(tail), tail.wrapping_add(to_end), to_end + need + guard)
        } else {
            (None, tail, need + guard)
        };
        let head = self.cached_head.get();
        let used = tail.wrapping_sub(head);
        if used > self.cap || self.cap - used < total {
            // ORDERING: Acquire pairs with the reader's Release store of `head`: the bytes it read
            // before moving `head` are not overwritten before it is done with them.
            let head = ctl.rx.pos.load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            if used > self.cap || head % 8 != 0 {
                return Err(Error::Corrupt);
            }
            self.cached_head.set(head);
            if self.cap - used < total {
                return Ok(None);
            }
        }
        Ok(Some(Reservation {
            wrap_at,
            frame_at,
            len,
            new_tail: frame_at.wrapping_add(need),
        }))
    }

    /// Copies `src` into the reserved payload at `offset`.
    #[inline]
    pub(crate) fn write_payload(&self, r: &Reservation, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= r.len);
        let at = (r.frame_at & self.mask()) as usize + FRAME_HDR + offset;
        // SAFETY: the reservation lies within the buffer (frames never straddle its end) and is not
        // published, so no reader looks at it.
        unsafe { self.buf.write(at, src) }
    }

    /// The reserved payload as a raw pointer, valid for `r.len()` bytes of writes until `commit`.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn payload_ptr(&self, r: &Reservation) -> *mut u8 {
        let at = (r.frame_at & self.mask()) as usize + FRAME_HDR;
        // SAFETY: the reservation lies within the buffer (frames never straddle its end).
        unsafe { self.buf.ptr_at(at, r.len) }
    }

    /// The reserved payload, to be written in place.
    #[cfg(not(loom))]
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn payload_mut(&self, r: &Reservation) -> &mut [u8] {
        let at = (r.frame_at & self.mask()) as usize + FRAME_HDR;
        // SAFETY: as in `write_payload`; the `&mut` is unique because a `Reservation` is used by one
        // writer (it holds the claim) and `commit` consumes it.
        unsafe { self.buf.slice_mut(at, r.len) }
    }

    /// Publishes the reserved frame with `tag` and wakes the reader if it sleeps.
    #[inline(always)]
    pub(crate) fn commit(&self, r: Reservation, tag: u32) {
        let len = r.len as u32;
        self.commit_raw(r, tag, len);
    }

    /// [`commit`](Self::commit) with any length field (test hook: what a hostile writer could do).
    #[inline(always)]
    pub(crate) fn commit_raw(&self, r: Reservation, tag: u32, len_field: u32) {
        let new_tail = r.new_tail;
        self.publish(r, tag, len_field);
        // A writer killed here has published a frame without moving `tail`: the next holder of the
        // writer's claim walks over it (`recover_tail`).
        self.ctl().tx.pos.store(new_tail, Ordering::Relaxed);
        if self.ctl().data.notify() {
            self.signal_data_fd();
        }
    }

    /// Writes the guard and the frame's header (the publish point), and nothing else.
    #[inline(always)]
    pub(crate) fn publish(&self, r: Reservation, tag: u32, len_field: u32) {
        let mask = self.mask();
        // The guard: the next frame's header slot reads "nothing here" until that frame is published.
        self.slot((r.new_tail & mask) as usize)
            .store(0, Ordering::Relaxed);
        let hdr = header(tag, len_field as usize);
        match r.wrap_at {
            None => {
                // ORDERING: Release publishes the payload and the guard written above (SYNC POINT).
                self.slot((r.frame_at & mask) as usize)
                    .store(hdr, Ordering::Release);
            }
            Some(w) => {
                self.slot((r.frame_at & mask) as usize)
                    .store(hdr, Ordering::Relaxed);
                // ORDERING: the reader polls the old position: the WRAP header is the publish point,
                // Release covers the frame at offset 0, its header and its guard.
                self.slot((w & mask) as usize)
                    .store(header(TAG_WRAP, 0), Ordering::Release);
            }
        }
    }

    /// Brings `tail` up to date after the writer's claim was taken over from a dead writer, which may
    /// have published a frame (and the wrap filler before it) without storing `tail`: from the stored
    /// `tail`, walks forward over published headers up to the first empty slot (the guard the dead
    /// writer zeroed before publishing). Without this, the next frame would be written over one the
    /// reader may be reading (a torn or lost message), or behind one it has read already (`head` past
    /// `tail`: `Corrupt` for ever).
    ///
    /// The walk is bounded by the capacity and checks every header it crosses, then the result against
    /// `head`; a position that makes no sense is `Corrupt`.
    #[cold]
    pub(crate) fn recover_tail(&self) -> Result<()> {
        let ctl = self.ctl();
        let start = ctl.tx.pos.load(Ordering::Relaxed);
        if start % 8 != 0 {
            return Err(Error::Corrupt);
        }
        let mut tail = start;
        loop {
            let pos = (tail & self.mask()) as usize;
            // ORDERING: Acquire, as the reader loads headers: the frame behind a header is complete.
            let h = self.slot(pos).load(Ordering::Acquire);
            if h == 0 {
                break;
            }
            let (tag, len) = ((h >> 32) as u32, (h & 0xffff_ffff) as usize);
            let step = match tag {
                TAG_WRAP if pos != 0 => self.cap - pos as u64,
                TAG_WHOLE..=TAG_CONT if len <= self.max_payload() => {
                    let need = FRAME_HDR + pad8(len);
                    if pos + need > self.cap as usize {
                        return Err(Error::Corrupt);
                    }
                    need as u64
                }
                _ => return Err(Error::Corrupt),
            };
            tail = tail.wrapping_add(step);
            if tail.wrapping_sub(start) > self.cap {
                return Err(Error::Corrupt); // more than a ring's worth of "unaccounted" frames
            }
        }
        // ORDERING: Acquire pairs with the reader's Release store of `head` (as in `try_reserve`).
        let head = ctl.rx.pos.load(Ordering::Acquire);
        if head % 8 != 0 || tail.wrapping_sub(head) > self.cap {
            return Err(Error::Corrupt);
        }
        if tail != start {
            ctl.tx.pos.store(tail, Ordering::Relaxed);
        }
        Ok(())
    }

    // ---- reader side -------------------------------------------------------------------------------

    /// The next published frame, if any, without consuming it.
    #[inline]
    pub(crate) fn try_peek(&self) -> Result<Option<Frame>> {
        // We hold the reader claim, so `head` is ours; it was still written by someone and is checked.
        let mut head = self.ctl().rx.pos.load(Ordering::Relaxed);
        if head % 8 != 0 {
            return Err(Error::Corrupt);
        }
        let mut pos = (head & self.mask()) as usize;
        // ORDERING: Acquire pairs with the writer's Release store of the header (SYNC POINT).
        let mut h = self.slot(pos).load(Ordering::Acquire);
        if h == 0 {
            return Ok(None);
        }
        if (h >> 32) as u32 == TAG_WRAP {
            head = head.wrapping_add(self.cap - pos as u64);
            pos = 0;
            h = self.slot(0).load(Ordering::Acquire);
        }
        let (tag, len) = ((h >> 32) as u32, (h & 0xffff_ffff) as usize);
        if !(TAG_WHOLE..=TAG_CONT).contains(&tag) || len > self.max_payload() {
            return Err(Error::Corrupt);
        }
        let need = FRAME_HDR + pad8(len);
        if pos + need > self.cap as usize {
            return Err(Error::Corrupt);
        }
        Ok(Some(Frame {
            tag,
            len,
            payload_at: pos + FRAME_HDR,
            next_head: head.wrapping_add(need as u64),
        }))
    }

    /// Copies `dst.len()` bytes of `f`'s payload from `offset`.
    #[inline]
    pub(crate) fn read_payload(&self, f: &Frame, offset: usize, dst: &mut [u8]) {
        assert!(offset + dst.len() <= f.len);
        // SAFETY: the frame was validated to lie within the buffer and is published.
        unsafe { self.buf.read(f.payload_at + offset, dst) }
    }

    /// Copies `dst.len()` bytes of `f`'s payload from `offset` into private memory that may be
    /// uninitialised, and returns it as initialised bytes.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn read_payload_uninit<'d>(
        &self,
        f: &Frame,
        offset: usize,
        dst: &'d mut [std::mem::MaybeUninit<u8>],
    ) -> &'d mut [u8] {
        assert!(offset + dst.len() <= f.len);
        let len = dst.len();
        let ptr = dst.as_mut_ptr().cast::<u8>();
        // SAFETY: the frame was validated to lie within the buffer and is published; `dst` is valid
        // for `len` bytes, which the copy initialises, so the slice over them is sound.
        unsafe {
            self.buf.read_raw(f.payload_at + offset, ptr, len);
            std::slice::from_raw_parts_mut(ptr, len)
        }
    }

    /// The payload of `f`, borrowed in place until `consume`.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn payload(&self, f: &Frame) -> &[u8] {
        // SAFETY: validated, published, and not reused by the writer before `consume(f)`.
        unsafe { self.buf.slice(f.payload_at, f.len) }
    }

    /// Releases `f`'s bytes to the writer and wakes it if it sleeps.
    #[inline]
    pub(crate) fn consume(&self, f: Frame) {
        // ORDERING: Release: we are done reading the frame before the writer may reuse it.
        self.ctl().rx.pos.store(f.next_head, Ordering::Release);
        let _ = self.ctl().space.notify(); // nobody polls a descriptor for room
    }

    /// Empties the ring from the reader's side once its writer is dead and before another takes
    /// its place (nobody writes meanwhile): `head` and `tail` meet at `head` (8-aligned) and the
    /// header slot there reads "nothing", so whatever the dead writer left from there (a frame the
    /// reader could not step over, a half-written one) is dropped, and the next writer starts on a
    /// ring its `recover_tail` accepts.
    pub(crate) fn reset_after_writer(&self) {
        let ctl = self.ctl();
        let head = ctl.rx.pos.load(Ordering::Relaxed) & !7;
        self.slot((head & self.mask()) as usize)
            .store(0, Ordering::Relaxed);
        ctl.rx.pos.store(head, Ordering::Relaxed);
        // ORDERING: Release: the next writer (started after this) sees the zeroed slot first.
        ctl.tx.pos.store(head, Ordering::Release);
    }

    /// Records `me` as the last reader of the ring (we hold the reader's claim): one store to the
    /// line `consume` writes anyway.
    #[inline]
    pub(crate) fn note_reader(&self, me: u32) {
        self.ctl().rx.last.store(me, Ordering::Relaxed);
    }

    /// The claim id of the last process that read the ring (0: nobody yet).
    pub(crate) fn last_reader(&self) -> u32 {
        self.ctl().rx.last.load(Ordering::Relaxed)
    }

    /// Whether a writer is registered as waiting for room.
    #[inline]
    pub(crate) fn writer_waiting(&self) -> bool {
        self.ctl().space.has_waiters()
    }

    /// Wakes whoever sleeps on either side (close, death).
    pub(crate) fn wake_all(&self) {
        if self.ctl().data.notify_all_always() {
            self.signal_data_fd();
        }
        let _ = self.ctl().space.notify_all_always();
    }

    /// The descriptor a `shmwire::wait` on the reading end polls, if this pipe has one.
    pub(crate) fn data_fd(&self) -> Option<RawFd> {
        self.data_fd
    }

    /// Sets the wake-up pipe signalled when a frame is published while someone polls for it.
    pub(crate) fn set_data_fd(&mut self, fd: Option<RawFd>) {
        self.data_fd = fd;
    }

    #[cold]
    fn signal_data_fd(&self) {
        if let Some(fd) = self.data_fd {
            // One byte makes the pipe readable. Our description is non-blocking and nobody else's:
            // a full pipe (EAGAIN) is readable already.
            let one = [1u8];
            // SAFETY: writing 1 byte from a valid buffer to a descriptor the segment keeps open.
            let _ = unsafe { libc::write(fd, one.as_ptr().cast(), 1) };
            #[cfg(not(loom))]
            crate::stats::note_other_call();
        }
    }

    /// Empties the wake-up pipe (non-blocking reads, at most [`DRAIN_READS`] of them: a peer that
    /// keeps writing cannot hold us here), so that a level-triggered poll does not fire again for
    /// what it already reported.
    pub(crate) fn drain_data_fd(&self) {
        if let Some(fd) = self.data_fd {
            let mut b = [0u8; 4096];
            for _ in 0..DRAIN_READS {
                // SAFETY: reading into a valid buffer from a descriptor the segment keeps open;
                // our description is non-blocking (see `pipe`).
                let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), b.len()) };
                if n < b.len() as isize {
                    break;
                }
            }
        }
    }
}
