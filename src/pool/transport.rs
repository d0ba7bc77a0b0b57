//! The pool's shared memory: how tasks reach the workers and results come back.
//!
//! One segment per pool (a sealed memfd: forked workers inherit it, spawned ones are handed a
//! descriptor of it), laid out as:
//!
//! ```text
//! PoolBlock    the task board's consumer position, the eventcounts (workers wait for tasks on
//!              `board`, the parent for results on `results`), flags, the initializer
//! worker slots one per worker index (128 bytes): who holds it (claim id, pid), what it holds
//!              (chunk and the task it began), how many tasks it ran, and its state
//! board        `cap` entries of 64 bytes: the task board
//! rings        one SPSC byte ring per worker index (`ring::spsc`): its results, in order
//! arena        the tasks' encoded arguments, allocated and freed by the parent alone
//! ```
//!
//! **The board** (one producer, the parent; many consumers, the workers). Entry `p % cap` carries
//! position `p` at lap `p / cap`; its control word is `lap (32) | state (2) | owner (29)` with the
//! states `FREE` (the parent may publish lap's position), `READY` and `TAKEN`. The parent (under its
//! own lock) fills a `FREE` entry's fields and publishes it `READY` with Release. A worker takes the
//! entry at the consumer position `deq` with a CAS to `TAKEN` by its claim id (so the kernel can
//! say whether the taker lives), moves `deq` on (whoever sees a taken entry helps), records what it
//! holds in its worker slot, and frees the entry as `FREE` of the next lap. An entry is therefore
//! `TAKEN` only for the few instructions between a worker's claim and its record; a taker that
//! dies there leaves it `TAKEN` by a dead claim, and the parent's repair ([`Board::reclaim`])
//! frees it and runs the chunk again. Nothing is ever lost: a chunk is always on the board, in a
//! live worker's slot, in a dead worker's slot (which the parent reads after the death), or done.
//!
//! **Arguments** live in the arena, in a block the parent allocates for each chunk and frees only
//! once every task of the chunk has its result: a worker reads a task's argument in place (copying
//! it first), so a chunk whose worker died runs again elsewhere from the same block.
//!
//! **Results**: worker `w` writes the results of the tasks it runs, in order, to ring `w` (its own:
//! one writer), and wakes the parent through `results`. A frame carries the results of consecutive
//! tasks of one chunk: `[chunk u64][first task u32][n u32]`, then per task `[status u32][len u32]
//! [value or message]`. A worker publishes a frame at the end of each chunk, before it waits, and
//! whenever it holds 64 results, 8 KiB of them, or results of tasks begun 50 µs ago or more: a
//! task that runs 50 µs or longer has its result published as it ends, a shorter one within
//! 50 µs or so; never with its chunk's end. A
//! frame larger than the ring allows goes as a `TAG_HEAD` frame (`[total u64]` then the frame's
//! first bytes) and `TAG_CONT` frames. A worker records each task it begins (`started = i + 1` in
//! its slot) before it runs it: once the parent has drained a dead worker's ring, task
//! `started - 1` of its chunk, if it has no result, was running when it died; the tasks below it
//! without a result had ended with their results unpublished (they run again), and those from
//! `started` on never began. It notes "began none" before it notes a new chunk, so a slot never
//! pairs a chunk with the count of the one before.
//!
//! Everything a process reads from shared memory it copies, then checks: positions, lengths,
//! offsets and the arena range of a block are validated before use.

use crate::error::{Error, Result};
use crate::ring::buf::RingBuf;
use crate::ring::spsc::{CTL_SIZE, MIN_CAPACITY, RingCtl, Spsc};
use crate::segment::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::wait::eventcount::EventCount;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bytes of a worker slot.
const WSLOT: usize = 128;
/// Bytes of a board entry.
const ENTRY: usize = 64;
/// A ring's control block, padded.
const RING_CTL: usize = CTL_SIZE.div_ceil(128) * 128;
/// Bytes of a result frame's header.
pub(crate) const FRAME_HEAD: usize = 16;
/// Unit of the arena's blocks.
pub(crate) const ARENA_UNIT: usize = 64;
/// Most worker slots a pool has (the segment's participants: workers, the parent, the zygote, and
/// a worker retiring while its successor starts).
pub(crate) const MAX_WORKERS: usize = 200;

const FREE: u64 = 0;
const READY: u64 = 1;
const TAKEN: u64 = 2;
const OWNER_MASK: u64 = (1 << 29) - 1;
const STATE_SHIFT: u64 = 30;
const _: () = assert!(crate::segment::CLAIM_BITS as u64 <= 29);
const _: () = assert!(std::mem::size_of::<WSlot>() <= WSLOT);
const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY);

/// `PoolBlock::flags`: the pool is closing; a worker that finds the board empty exits.
pub(crate) const CLOSING: u32 = 1;

/// Worker slot states.
pub(crate) const W_EMPTY: u32 = 0;
/// Running tasks.
pub(crate) const W_RUNNING: u32 = 1;
/// Done after `maxtasksperchild` tasks: it takes no more and exits.
pub(crate) const W_RETIRED: u32 = 2;
/// It runs another build of the program than the parent ([`Error::Incompatible`]).
pub(crate) const W_INCOMPATIBLE: u32 = 3;
/// The initializer panicked (its message is in the worker's ring).
pub(crate) const W_INIT_FAILED: u32 = 4;

/// Result frame statuses.
pub(crate) const S_OK: u32 = 0;
pub(crate) const S_PANICKED: u32 = 1;
pub(crate) const S_DECODE: u32 = 2;
pub(crate) const S_ENCODE: u32 = 3;
pub(crate) const S_INCOMPATIBLE: u32 = 4;
/// The frame of a failed initializer (chunk and index all ones).
pub(crate) const S_INIT: u32 = 5;

#[repr(C)]
pub(crate) struct PoolBlock {
    /// The board's consumer position.
    pub(crate) deq: CachePadded<AtomicU64>,
    /// Workers wait here for tasks (and for `CLOSING`).
    pub(crate) board: CachePadded<EventCount>,
    /// The parent waits here for results (and retirements).
    pub(crate) results: CachePadded<EventCount>,
    pub(crate) flags: CachePadded<AtomicU32>,
    /// Bumped by a worker that retires or cannot start: the parent looks at the slots at once.
    pub(crate) events: AtomicU32,
    /// The parent's claim id: a worker that finds it dead exits.
    pub(crate) parent_claim: AtomicU32,
    /// The initializer: shim and function offsets, its argument's arena block (`len` 0 and shim
    /// 0: none).
    pub(crate) init: [AtomicU64; 4],
}
// SAFETY: repr(C), all atomics (CachePadded only adds alignment).
unsafe impl SharedBlock for PoolBlock {}

/// One worker index's slot.
#[repr(C)]
pub(crate) struct WSlot {
    pub(crate) state: AtomicU32,
    pub(crate) claim: AtomicU32,
    pub(crate) pid: AtomicU32,
    _pad: AtomicU32,
    pub(crate) incarnation: AtomicU64,
    /// The chunk it holds, plus one (0: none).
    pub(crate) chunk: AtomicU64,
    /// The task of that chunk it began, plus one (0: none yet).
    pub(crate) started: AtomicU64,
    /// Tasks this incarnation ran.
    pub(crate) tasks: AtomicU64,
    /// The tasks of that chunk it was given, `first << 32 | end` (a dispatch after a death
    /// carries part of a chunk: the rest may be in other hands).
    pub(crate) range: AtomicU64,
}

#[repr(C)]
struct Entry {
    ctl: AtomicU64,
    chunk: AtomicU64,
    /// `first << 32 | count`: the tasks `first..count` of the chunk.
    range: AtomicU64,
    off: AtomicU64,
    len: AtomicU64,
    shim: AtomicU64,
    func: AtomicU64,
    _pad: AtomicU64,
}

/// A dispatch of (part of) a chunk, as the board carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Desc {
    pub(crate) chunk: u64,
    /// Tasks `first..count` of the chunk (the first ones may have run already).
    pub(crate) first: u32,
    pub(crate) count: u32,
    /// The arguments' block in the arena.
    pub(crate) off: u64,
    pub(crate) len: u64,
    /// The function (offsets, see `function`).
    pub(crate) shim: u64,
    pub(crate) func: u64,
}

#[inline]
fn word(lap: u32, state: u64, owner: u32) -> u64 {
    (u64::from(lap) << 32) | (state << STATE_SHIFT) | (u64::from(owner) & OWNER_MASK)
}

#[inline]
fn parts(w: u64) -> (u32, u64, u32) {
    (
        (w >> 32) as u32,
        (w >> STATE_SHIFT) & 3,
        (w & OWNER_MASK) as u32,
    )
}

/// Whether lap `a` comes after lap `b` (laps wrap around).
#[inline]
fn ahead(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The sizes a pool's segment is made with (the header's parameters).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) workers: usize,
    pub(crate) cap: usize,
    pub(crate) ring: usize,
    pub(crate) arena: usize,
}

const P_WORKERS: usize = 0;
const P_CAP: usize = 1;
const P_RING: usize = 2;
const P_ARENA: usize = 3;

impl Layout {
    fn slots_at(&self) -> usize {
        0
    }
    fn board_at(&self) -> usize {
        self.workers * WSLOT
    }
    fn rings_at(&self) -> usize {
        self.board_at() + self.cap * ENTRY
    }
    fn ring_bytes(&self) -> usize {
        RING_CTL + self.ring
    }
    fn arena_at(&self) -> usize {
        self.rings_at() + self.workers * self.ring_bytes()
    }
    /// Bytes of the data area.
    pub(crate) fn bytes(&self) -> Option<usize> {
        let rings = self.workers.checked_mul(self.ring_bytes())?;
        let board = self.cap.checked_mul(ENTRY)?;
        (self.workers * WSLOT)
            .checked_add(board)?
            .checked_add(rings)?
            .checked_add(self.arena)
    }

    fn params(&self) -> [u64; 6] {
        let mut p = [0u64; 6];
        p[P_WORKERS] = self.workers as u64;
        p[P_CAP] = self.cap as u64;
        p[P_RING] = self.ring as u64;
        p[P_ARENA] = self.arena as u64;
        p
    }

    /// The layout recorded in a segment, checked against its size.
    fn from_params(p: [u64; 6], data_len: usize) -> Result<Layout> {
        let l = Layout {
            workers: p[P_WORKERS] as usize,
            cap: p[P_CAP] as usize,
            ring: p[P_RING] as usize,
            arena: p[P_ARENA] as usize,
        };
        let fits = (1..=MAX_WORKERS).contains(&l.workers)
            && l.cap >= 1
            && l.cap <= 1 << 24
            && l.ring.is_power_of_two()
            && (MIN_CAPACITY..=1 << 30).contains(&l.ring)
            && l.arena % ARENA_UNIT == 0
            && l.bytes().is_some_and(|b| b <= data_len);
        if fits { Ok(l) } else { Err(Error::Corrupt) }
    }
}

/// A process's view of a pool's segment.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) obj: Object<PoolBlock>,
    pub(crate) layout: Layout,
}

impl Shared {
    /// Makes the segment (an anonymous sealed memfd).
    pub(crate) fn create(layout: Layout) -> Result<Shared> {
        let bytes = layout
            .bytes()
            .filter(|&b| b <= 1 << 40)
            .ok_or_else(|| Error::invalid("the pool's rings and arena are too large"))?;
        let obj = Object::create(
            Kind::Pool,
            fingerprint_of::<PoolBlock>(),
            layout.params(),
            bytes,
            None,
        )?;
        Ok(Shared { obj, layout })
    }

    /// Maps a pool's segment from a descriptor (a spawned worker's), checking its layout.
    pub(crate) fn adopt(fd: std::os::fd::OwnedFd) -> Result<Shared> {
        let obj = Object::<PoolBlock>::adopt(fd, Kind::Pool, fingerprint_of::<PoolBlock>())?;
        let layout = Layout::from_params(obj.params(), obj.data().1)?;
        Ok(Shared { obj, layout })
    }

    pub(crate) fn block(&self) -> &PoolBlock {
        self.obj.block()
    }

    pub(crate) fn slot(&self, w: usize) -> &WSlot {
        assert!(w < self.layout.workers);
        // SAFETY: slot `w` lies in the data area (checked layout), 128-aligned; all atomics.
        unsafe { &*(self.obj.data().0.add(self.layout.slots_at() + w * WSLOT) as *const WSlot) }
    }

    fn entry(&self, p: u64) -> &Entry {
        let i = (p % self.layout.cap as u64) as usize;
        // SAFETY: entry `i < cap` lies in the data area (checked layout), 64-aligned; all atomics.
        unsafe { &*(self.obj.data().0.add(self.layout.board_at() + i * ENTRY) as *const Entry) }
    }

    fn lap(&self, p: u64) -> u32 {
        (p / self.layout.cap as u64) as u32
    }

    /// A view of worker `w`'s result ring (one writer: that worker; one reader: the parent's pool
    /// thread).
    pub(crate) fn ring(&self, w: usize) -> Spsc {
        assert!(w < self.layout.workers);
        let at = self.layout.rings_at() + w * self.layout.ring_bytes();
        // SAFETY: the ring's control block and `ring` bytes lie in the data area (checked layout),
        // mapped as long as `obj`, which the caller keeps; the control block starts zeroed; the
        // capacity is a power of two in range (checked).
        unsafe {
            let base = self.obj.data().0.add(at);
            Spsc::new(
                base as *const RingCtl,
                RingBuf::new(base.add(RING_CTL), self.layout.ring),
                self.layout.ring,
            )
        }
    }

    /// The arena: start and length.
    pub(crate) fn arena(&self) -> (*mut u8, usize) {
        // SAFETY: the arena ends the data area (checked layout).
        (
            unsafe { self.obj.data().0.add(self.layout.arena_at()) },
            self.layout.arena,
        )
    }

    /// Copies `dst.len()` bytes of the arena from `off`; `Corrupt` if that is outside it.
    pub(crate) fn read_arena(&self, off: u64, dst: &mut [u8]) -> Result<()> {
        let (base, len) = self.arena();
        let end = off.checked_add(dst.len() as u64).ok_or(Error::Corrupt)?;
        if end > len as u64 {
            return Err(Error::Corrupt);
        }
        // SAFETY: `off..end` lies within the arena (checked above), which the parent wrote before it
        // published the entry naming it and does not change while the chunk lives.
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(off as usize), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    /// In the parent: writes `src` into the arena at `off` (a block it allocated, checked).
    pub(crate) fn write_arena(&self, off: u64, src: &[u8]) -> Result<()> {
        let (base, len) = self.arena();
        let end = off.checked_add(src.len() as u64).ok_or(Error::Corrupt)?;
        if end > len as u64 {
            return Err(Error::Corrupt);
        }
        // SAFETY: in bounds (checked); the block is the parent's and no published entry names it
        // yet.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(off as usize), src.len()) };
        Ok(())
    }
}

/// The board's operations.
pub(crate) trait Board {
    /// In the parent (its lock held): publishes `d` at position `p` if the entry is free for it.
    fn publish(&self, p: u64, d: &Desc) -> bool;
    /// In a worker: takes the oldest published entry as claimer `me`; returns its position and
    /// contents. The worker must [`free`](Board::free) it once it has recorded what it holds.
    fn take(&self, me: u32) -> Option<(u64, Desc)>;
    /// In the worker that took position `p`.
    fn free(&self, p: u64);
    /// In the parent: frees the entries taken by claimers that `alive` says are dead, and returns
    /// what they carried (their chunks must run again).
    fn reclaim(&self, alive: &dyn Fn(u32) -> bool) -> Vec<Desc>;
    /// Whether an entry waits at the consumer position (a snapshot).
    fn has_ready(&self) -> bool;
}

impl Board for Shared {
    fn publish(&self, p: u64, d: &Desc) -> bool {
        let e = self.entry(p);
        let lap = self.lap(p);
        // ORDERING: Acquire pairs with the freeing worker's Release: it is done with the entry.
        if e.ctl.load(Ordering::Acquire) != word(lap, FREE, 0) {
            return false;
        }
        e.chunk.store(d.chunk, Ordering::Relaxed);
        e.range.store(
            u64::from(d.first) << 32 | u64::from(d.count),
            Ordering::Relaxed,
        );
        e.off.store(d.off, Ordering::Relaxed);
        e.len.store(d.len, Ordering::Relaxed);
        e.shim.store(d.shim, Ordering::Relaxed);
        e.func.store(d.func, Ordering::Relaxed);
        // ORDERING: Release publishes the fields to the worker's Acquire CAS.
        e.ctl.store(word(lap, READY, 0), Ordering::Release);
        true
    }

    fn take(&self, me: u32) -> Option<(u64, Desc)> {
        let deq = &self.block().deq;
        // Bounded: no words written by others keep a call looping (the caller retries).
        for _ in 0..2 * self.layout.cap + 64 {
            let p = deq.load(Ordering::Acquire);
            let e = self.entry(p);
            let c = e.ctl.load(Ordering::Acquire);
            let (lap, state, _) = parts(c);
            let want = self.lap(p);
            if lap == want && state == READY {
                // ORDERING: AcqRel: Acquire the parent's fields, Release our claim.
                if e.ctl
                    .compare_exchange(
                        c,
                        word(want, TAKEN, me),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    let _ = deq.compare_exchange(
                        p,
                        p.wrapping_add(1),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    let range = e.range.load(Ordering::Relaxed);
                    let d = Desc {
                        chunk: e.chunk.load(Ordering::Relaxed),
                        first: (range >> 32) as u32,
                        count: range as u32,
                        off: e.off.load(Ordering::Relaxed),
                        len: e.len.load(Ordering::Relaxed),
                        shim: e.shim.load(Ordering::Relaxed),
                        func: e.func.load(Ordering::Relaxed),
                    };
                    return Some((p, d));
                }
                continue;
            }
            if (lap == want && state == TAKEN) || ahead(lap, want) {
                // Taken already (and maybe freed): help the position on.
                let _ =
                    deq.compare_exchange(p, p.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed);
                continue;
            }
            return None; // nothing published at `p` yet
        }
        None
    }

    fn free(&self, p: u64) {
        // ORDERING: Release: we are done reading the entry before the parent reuses it.
        self.entry(p).ctl.store(
            word(self.lap(p).wrapping_add(1), FREE, 0),
            Ordering::Release,
        );
    }

    fn reclaim(&self, alive: &dyn Fn(u32) -> bool) -> Vec<Desc> {
        let mut out = Vec::new();
        for i in 0..self.layout.cap as u64 {
            let e = self.entry(i);
            let c = e.ctl.load(Ordering::Acquire);
            let (lap, state, owner) = parts(c);
            if state != TAKEN || alive(owner) {
                continue;
            }
            let range = e.range.load(Ordering::Relaxed);
            let d = Desc {
                chunk: e.chunk.load(Ordering::Relaxed),
                first: (range >> 32) as u32,
                count: range as u32,
                off: e.off.load(Ordering::Relaxed),
                len: e.len.load(Ordering::Relaxed),
                shim: e.shim.load(Ordering::Relaxed),
                func: e.func.load(Ordering::Relaxed),
            };
            // A CAS from the word we judged: a dead claimer writes nothing more.
            if e.ctl
                .compare_exchange(
                    c,
                    word(lap.wrapping_add(1), FREE, 0),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                out.push(d);
            }
        }
        out
    }

    fn has_ready(&self) -> bool {
        let p = self.block().deq.load(Ordering::Acquire);
        let (lap, state, _) = parts(self.entry(p).ctl.load(Ordering::Acquire));
        lap == self.lap(p) && state == READY
    }
}

/// A result frame's header: the results of tasks `first..first + n` of `chunk`, which follow as
/// `n` entries `[status u32][len u32][value or message]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameHead {
    pub(crate) chunk: u64,
    pub(crate) first: u32,
    pub(crate) n: u32,
}

impl FrameHead {
    pub(crate) fn to_bytes(self) -> [u8; FRAME_HEAD] {
        let mut b = [0u8; FRAME_HEAD];
        b[..8].copy_from_slice(&self.chunk.to_le_bytes());
        b[8..12].copy_from_slice(&self.first.to_le_bytes());
        b[12..].copy_from_slice(&self.n.to_le_bytes());
        b
    }

    pub(crate) fn parse(b: &[u8]) -> Option<FrameHead> {
        Some(FrameHead {
            chunk: u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
            first: u32::from_le_bytes(b.get(8..12)?.try_into().ok()?),
            n: u32::from_le_bytes(b.get(12..16)?.try_into().ok()?),
        })
    }
}

/// Bytes of an entry's header in a result frame.
pub(crate) const ENTRY_HEAD: usize = 8;

/// Appends a result entry to `buf`.
pub(crate) fn push_entry(buf: &mut Vec<u8>, status: u32, value: &[u8]) {
    buf.extend_from_slice(&status.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(value);
}

/// Splits the next entry off `body` (a copy, private): `(status, value, rest)`; `None` if it is
/// malformed.
pub(crate) fn next_entry(body: &[u8]) -> Option<(u32, std::ops::Range<usize>, usize)> {
    let status = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
    let len = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?) as usize;
    let end = ENTRY_HEAD.checked_add(len)?;
    if end > body.len() {
        return None;
    }
    Some((status, ENTRY_HEAD..end, end))
}
