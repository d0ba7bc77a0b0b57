//! The arena's allocator: two-level segregated fit (TLSF, Masmano et al., 2004) over the chunks, under
//! one robust mutex, with an undo log that makes each operation all-or-nothing.
//!
//! A block is a 16-byte header and its payload, 16-aligned, at least 32 bytes:
//!
//! ```text
//! +0  prev_phys   the block just before it (meaningful when PREV_FREE is set)
//! +8  size|flags  bytes of the whole block; FREE, PREV_FREE
//! +16 payload     (a free block keeps its list links here: next, prev)
//! ```
//!
//! Free blocks sit in doubly linked lists, one per size class (16 classes per power of two), found in
//! O(1) through two bitmaps; a freed block merges with free neighbours at once, so two free blocks
//! are never adjacent and freed space is reused for any size. Each chunk ends with a 16-byte epilogue
//! (an allocated block of size 16) that stops merging at its edge. Nothing walks a list: allocation
//! takes the head of a class that fits every block in it, so a hostile list cannot make a call loop.
//!
//! **Crash safety.** Every metadata word the allocator changes is first recorded in the undo log
//! (address, old value), then written. The log is emptied when the operation is done. The next holder
//! of the mutex after a holder died (it is marked inconsistent) writes the old values back, newest
//! first: the dead holder's operation never happened. An allocation stores the new block's `Ref` into
//! a word the caller names (a container's journal) *inside* the operation, and a free clears such a
//! word, so a block is never both allocated and unrecorded, nor freed twice.
//!
//! Growing appends a chunk to the file (see `Guard::grow`): published (`n_chunks`) before its space is
//! put in the free lists, so that a process never maps a chunk whose descriptor could still change; a
//! grower that died in between leaves the chunk marked not inserted, and the recovery inserts it.

use super::arena::{Arena, ArenaCtl, MAX_CHUNKS, PAGE, Ref};
use crate::error::{Error, Result};
use crate::hooks::{Point, hit};
use crate::undo::UndoLog;
use crate::wait::Deadline;
use crate::wait::mutex::RawMutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of a block header.
pub(crate) const HDR: u64 = 16;
/// The smallest block (a header and two list links).
const MIN_BLOCK: u64 = 32;
const FREE: u64 = 1;
const PREV_FREE: u64 = 2;
const FLAGS: u64 = 15;
const SL_LOG: u32 = 4;
const SL: usize = 1 << SL_LOG;
/// Below this, classes are 16 bytes apart (first level 0).
const SMALL: u64 = 256;
/// First-level classes: sizes up to 2^40.
const FL: usize = 33;
/// The largest payload one allocation may ask for.
pub(crate) const MAX_ALLOC: u64 = 1 << 38;
/// Entries of the undo log: the most words one operation changes (a grow and an allocation, with
/// merges and splits, stay well below).
const UNDO_CAP: usize = 128;
/// Chunks grow by at least this much (and by the arena's size so far, up to `MAX_STEP`).
const MIN_STEP: u64 = 1 << 20;
const MAX_STEP: u64 = 64 << 20;

/// The allocator's shared state (in the arena's control block).
#[repr(C)]
pub(crate) struct AllocCtl {
    pub(crate) mutex: RawMutex,
    undo: UndoLog<UNDO_CAP>,
    fl_map: AtomicU64,
    sl_map: [AtomicU64; FL],
    heads: [[AtomicU64; SL]; FL],
    /// Bytes in allocated blocks (headers included) and in free ones. Kept outside the undo log (a
    /// statistic): the recovery recounts them.
    used: AtomicU64,
    free: AtomicU64,
}

/// The size class of a block of `size` bytes.
#[inline]
fn mapping(size: u64) -> (usize, usize) {
    if size < SMALL {
        (0, (size / (SMALL / SL as u64)) as usize)
    } else {
        let f = 63 - size.leading_zeros();
        let sl = ((size >> (f - SL_LOG)) as usize) & (SL - 1);
        ((f - 7) as usize, sl)
    }
}

/// The first class whose every block holds `size` bytes.
#[inline]
fn mapping_search(size: u64) -> (usize, usize) {
    if size < SMALL {
        return mapping(size);
    }
    let round = (1u64 << (63 - size.leading_zeros() - SL_LOG)) - 1;
    mapping(size + round)
}

/// The block size that holds a payload of `payload` bytes.
#[inline]
pub(crate) fn block_size(payload: u64) -> Result<u64> {
    if payload > MAX_ALLOC {
        return Err(Error::invalid(format!(
            "a value of {payload} bytes is larger than a manager holds ({MAX_ALLOC} bytes)"
        )));
    }
    Ok((payload + HDR).div_ceil(16).max(MIN_BLOCK / 16) * 16)
}

/// Writes chunk 0's heap of a new arena as one free block and the epilogue.
///
/// # Safety
/// `base..base + len` is the new arena's chunk 0, seen by nobody else yet.
pub(crate) unsafe fn format_fresh(ctl: &ArenaCtl, base: *mut u8, len: u64) {
    let start = Arena::heap_start(0);
    let size = (len - HDR - start) / 16 * 16;
    let w = |off: u64| {
        // SAFETY: `off + 8 <= len` for every offset below; 8-aligned; all atomics.
        unsafe { &*(base.add(off as usize) as *const AtomicU64) }
    };
    let r = Ordering::Relaxed;
    w(start).store(0, r);
    w(start + 8).store(size | FREE, r);
    w(start + 16).store(0, r);
    w(start + 24).store(0, r);
    w(start + size).store(start, r);
    w(start + size + 8).store(HDR | PREV_FREE, r);
    let (fl, sl) = mapping(size);
    ctl.alloc.heads[fl][sl].store(Ref::new(0, start).0, r);
    ctl.alloc.sl_map[fl].store(1 << sl, r);
    ctl.alloc.fl_map.store(1 << fl, r);
    ctl.alloc.free.store(size, r);
    ctl.alloc.used.store(0, r);
}

/// The allocator's mutex, held; released on drop.
pub(crate) struct Guard<'a> {
    a: &'a Arena,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.a.ctl().alloc.mutex.unlock();
    }
}

impl Arena {
    /// Bytes in allocated and in free blocks, as the allocator counts them (no lock: a snapshot).
    pub(crate) fn alloc_counts(&self) -> (u64, u64) {
        let c = &self.ctl().alloc;
        (
            c.used.load(Ordering::Relaxed),
            c.free.load(Ordering::Relaxed),
        )
    }

    /// Takes the allocator's mutex (until `deadline`); if its holder died, rolls its operation back.
    pub(crate) fn lock_alloc(&self, me: u32, deadline: Deadline) -> Result<Guard<'_>> {
        let m = &self.ctl().alloc.mutex;
        m.lock(&self.seg, me, deadline)?;
        let g = Guard { a: self };
        if m.is_inconsistent() {
            g.recover()?;
            m.mark_consistent();
        }
        Ok(g)
    }
}

/// A block's header, read and checked.
#[derive(Clone, Copy, Debug)]
struct Block {
    at: Ref,
    size: u64,
    flags: u64,
}

impl Guard<'_> {
    fn c(&self) -> &AllocCtl {
        &self.a.ctl().alloc
    }

    // ---- the undo log -------------------------------------------------------------------------

    /// Records the old value of the word at `r`, then writes `v` there (see [`UndoLog::set`]).
    fn set(&self, r: Ref, v: u64) -> Result<()> {
        let w = self.a.word(r)?;
        self.c().undo.set(r.0, w, v).map_err(|_| Error::Corrupt)
    }

    fn set_ctl(&self, w: &AtomicU64, v: u64) -> Result<()> {
        self.set(self.a.ctl_ref(w), v)
    }

    /// The operation is done: empties the log.
    fn commit(&self) {
        self.c().undo.commit();
    }

    /// Undoes what a dead holder left half done, finishes a grow it published, and recounts.
    fn recover(&self) -> Result<()> {
        self.rollback()?;
        let (used, free) = self.recount()?;
        self.c().used.store(used, Ordering::Relaxed);
        self.c().free.store(free, Ordering::Relaxed);
        Ok(())
    }

    /// Writes back the old values the undo log holds, newest first, and inserts a published chunk
    /// whose space is in no free list yet.
    fn rollback(&self) -> Result<()> {
        self.c().undo.rollback(|r| self.a.word(Ref(r)).ok());
        let ctl = self.a.ctl();
        let chunks = ctl.n_chunks.load(Ordering::Acquire);
        if chunks == 0 || chunks > MAX_CHUNKS as u64 {
            return Err(Error::Corrupt);
        }
        let last = chunks as usize - 1;
        if last > 0 && ctl.chunks[last].inserted.load(Ordering::Acquire) == 0 {
            self.insert_chunk(last)?;
        }
        Ok(())
    }

    // ---- blocks -------------------------------------------------------------------------------

    /// Reads and checks the header of the block at `at`: aligned, at least the smallest block, and
    /// lying within its chunk's heap (before the epilogue).
    fn block(&self, at: Ref) -> Result<Block> {
        let sf = self.a.load(at.add(8))?;
        let (size, flags) = (sf & !FLAGS, sf & FLAGS);
        let (_, clen) = self.a.chunk(at.chunk())?;
        let off = at.offset();
        let ok = off % 16 == 0
            && off >= Arena::heap_start(at.chunk())
            && size >= MIN_BLOCK
            && (clen as u64)
                .checked_sub(HDR)
                .is_some_and(|end| off.checked_add(size).is_some_and(|e| e <= end));
        if !ok {
            return Err(Error::Corrupt);
        }
        Ok(Block { at, size, flags })
    }

    /// The header word after block `b` (the next block's, or the epilogue's).
    fn next_of(&self, b: &Block) -> Ref {
        b.at.add(b.size)
    }

    fn head(&self, fl: usize, sl: usize) -> &AtomicU64 {
        &self.c().heads[fl][sl]
    }

    fn insert_free(&self, b: Ref, size: u64) -> Result<()> {
        let (fl, sl) = mapping(size);
        if fl >= FL {
            return Err(Error::Corrupt);
        }
        let head = self.head(fl, sl).load(Ordering::Relaxed);
        self.set(b.add(16), head)?;
        self.set(b.add(24), 0)?;
        if head != 0 {
            self.set(Ref(head).add(24), b.0)?;
        }
        self.set_ctl(self.head(fl, sl), b.0)?;
        let c = self.c();
        let slm = c.sl_map[fl].load(Ordering::Relaxed);
        if slm & 1 << sl == 0 {
            self.set_ctl(&c.sl_map[fl], slm | 1 << sl)?;
        }
        let flm = c.fl_map.load(Ordering::Relaxed);
        if flm & 1 << fl == 0 {
            self.set_ctl(&c.fl_map, flm | 1 << fl)?;
        }
        Ok(())
    }

    fn remove_free(&self, b: &Block) -> Result<()> {
        let (fl, sl) = mapping(b.size);
        if fl >= FL || b.flags & FREE == 0 {
            return Err(Error::Corrupt);
        }
        let next = self.a.load(b.at.add(16))?;
        let prev = self.a.load(b.at.add(24))?;
        if next != 0 {
            self.set(Ref(next).add(24), prev)?;
        }
        if prev != 0 {
            self.set(Ref(prev).add(16), next)?;
        } else {
            let head = self.head(fl, sl);
            if head.load(Ordering::Relaxed) != b.at.0 {
                return Err(Error::Corrupt);
            }
            self.set_ctl(head, next)?;
            if next == 0 {
                let c = self.c();
                let slm = c.sl_map[fl].load(Ordering::Relaxed) & !(1 << sl);
                self.set_ctl(&c.sl_map[fl], slm)?;
                if slm == 0 {
                    let flm = c.fl_map.load(Ordering::Relaxed);
                    self.set_ctl(&c.fl_map, flm & !(1 << fl))?;
                }
            }
        }
        Ok(())
    }

    /// A free block of at least `size` bytes, if a class holds one: the head of the first class
    /// whose every block fits, else one of the first few blocks of `size`'s own class that fits (so
    /// that a block freed just now is reused for the same size, even in a full arena).
    fn find(&self, size: u64) -> Result<Option<Block>> {
        if let Some(b) = self.find_good(size)? {
            return Ok(Some(b));
        }
        let (fl, sl) = mapping(size);
        if fl >= FL {
            return Ok(None);
        }
        let mut at = self.head(fl, sl).load(Ordering::Relaxed);
        for _ in 0..16 {
            if at == 0 {
                break;
            }
            let b = self.block(Ref(at))?;
            if b.flags & FREE == 0 {
                return Err(Error::Corrupt);
            }
            if b.size >= size {
                return Ok(Some(b));
            }
            at = self.a.load(b.at.add(16))?;
        }
        Ok(None)
    }

    fn find_good(&self, size: u64) -> Result<Option<Block>> {
        let (fl, sl) = mapping_search(size);
        if fl >= FL {
            return Ok(None);
        }
        let c = self.c();
        let mut fl = fl;
        let mut slm = c.sl_map[fl].load(Ordering::Relaxed) & (!0u64 << sl);
        if slm == 0 {
            let flm =
                c.fl_map.load(Ordering::Relaxed) & (!0u64).checked_shl(fl as u32 + 1).unwrap_or(0);
            if flm == 0 {
                return Ok(None);
            }
            fl = flm.trailing_zeros() as usize;
            if fl >= FL {
                return Err(Error::Corrupt);
            }
            slm = c.sl_map[fl].load(Ordering::Relaxed);
        }
        let sl = slm.trailing_zeros() as usize;
        if sl >= SL {
            return Err(Error::Corrupt);
        }
        let head = self.head(fl, sl).load(Ordering::Relaxed);
        let b = self.block(Ref(head))?;
        if b.flags & FREE == 0 || b.size < size {
            return Err(Error::Corrupt);
        }
        Ok(Some(b))
    }

    // ---- allocation and free ------------------------------------------------------------------

    /// Allocates a block for `payload` bytes and stores its payload's `Ref` in the word `into` (in the
    /// same all-or-nothing operation). Grows the arena if no free block fits; [`Error::Full`] past
    /// `max_bytes`, [`Error::Io`] if the file system has no room.
    pub(crate) fn alloc(&self, payload: u64, into: Ref) -> Result<Ref> {
        let size = block_size(payload)?;
        let b = match self.find(size)? {
            Some(b) => b,
            None => {
                if let Err(e) = self.grow(size) {
                    self.rollback()?;
                    return Err(e);
                }
                self.find(size)?.ok_or(Error::Full)?
            }
        };
        let r = self.take(b, size, into);
        if r.is_err() {
            self.rollback()?; // a broken list met half way: nothing of it stays
        }
        r
    }

    fn take(&self, b: Block, size: u64, into: Ref) -> Result<Ref> {
        self.remove_free(&b)?;
        hit(Point::ManagerAllocMid);
        let next = self.next_of(&b);
        let keep = b.flags & PREV_FREE;
        let got = if b.size - size >= MIN_BLOCK {
            let rest = b.at.add(size);
            let rest_size = b.size - size;
            self.set(rest.add(8), rest_size | FREE)?;
            self.set(next, rest.0)?; // `next` keeps PREV_FREE: its neighbour is still free
            self.insert_free(rest, rest_size)?;
            self.set(b.at.add(8), size | keep)?;
            size
        } else {
            let nsf = self.a.load(next.add(8))?;
            self.set(next.add(8), nsf & !PREV_FREE)?;
            self.set(b.at.add(8), b.size | keep)?;
            b.size
        };
        let payload = b.at.add(HDR);
        self.set(into, payload.0)?;
        self.commit();
        let c = self.c();
        c.used.fetch_add(got, Ordering::Relaxed);
        c.free
            .fetch_sub(got.min(c.free.load(Ordering::Relaxed)), Ordering::Relaxed);
        Ok(payload)
    }

    /// Frees the block whose payload is at `payload`, merging it with free neighbours, and clears
    /// the word `clear` (if any) in the same all-or-nothing operation. A `Ref` that is not an
    /// allocated block is [`Error::Corrupt`] (and nothing changes).
    pub(crate) fn free(&self, payload: Ref, clear: Option<Ref>) -> Result<()> {
        let r = self.free_inner(payload, clear);
        if r.is_err() {
            self.rollback()?;
        }
        r
    }

    fn free_inner(&self, payload: Ref, clear: Option<Ref>) -> Result<()> {
        if payload.offset() < HDR {
            return Err(Error::Corrupt);
        }
        let b = self.block(Ref::new(payload.chunk(), payload.offset() - HDR))?;
        if b.flags & FREE != 0 {
            return Err(Error::Corrupt);
        }
        let freed = b.size;
        let (mut start, mut total, mut flags) = (b.at, b.size, b.flags & PREV_FREE);
        if b.flags & PREV_FREE != 0 {
            let prev = self.block(Ref(self.a.load(b.at)?))?;
            if prev.at.chunk() != b.at.chunk()
                || prev.flags & FREE == 0
                || prev.at.offset() + prev.size != b.at.offset()
            {
                return Err(Error::Corrupt);
            }
            self.remove_free(&prev)?;
            start = prev.at;
            total += prev.size;
            flags = prev.flags & PREV_FREE;
        }
        hit(Point::ManagerAllocMid);
        let next = self.next_of(&b);
        let nsf = self.a.load(next.add(8))?;
        if nsf & FREE != 0 {
            let n = self.block(next)?;
            self.remove_free(&n)?;
            total += n.size;
        }
        self.set(start.add(8), total | FREE | flags)?;
        let after = start.add(total);
        let asf = self.a.load(after.add(8))?;
        self.set(after, start.0)?;
        self.set(after.add(8), asf | PREV_FREE)?;
        self.insert_free(start, total)?;
        if let Some(c) = clear {
            self.set(c, 0)?;
        }
        self.commit();
        let c = self.c();
        c.used
            .fetch_sub(freed.min(c.used.load(Ordering::Relaxed)), Ordering::Relaxed);
        c.free.fetch_add(freed, Ordering::Relaxed);
        Ok(())
    }

    // ---- growth -------------------------------------------------------------------------------

    /// Appends a chunk that holds a block of `size` bytes.
    fn grow(&self, size: u64) -> Result<()> {
        let ctl = self.a.ctl();
        let n = ctl.n_chunks.load(Ordering::Acquire) as usize;
        if n == 0 || n > MAX_CHUNKS {
            return Err(Error::Corrupt);
        }
        if n == MAX_CHUNKS {
            return Err(Error::Full);
        }
        // The whole file: the segment's header and participant table, then the chunks.
        let mapped = self
            .a
            .seg
            .header()
            .kind_offset
            .saturating_add(self.a.mapped());
        let want = (size + HDR).div_ceil(PAGE) * PAGE;
        let mut len = want.max(mapped.clamp(MIN_STEP, MAX_STEP));
        let max = ctl.max_bytes.load(Ordering::Relaxed);
        if max != 0 {
            let room = max.saturating_sub(mapped) / PAGE * PAGE;
            if room < want {
                return Err(Error::Full);
            }
            len = len.min(room);
        }
        let prev = &ctl.chunks[n - 1];
        let off = prev
            .off
            .load(Ordering::Relaxed)
            .checked_add(prev.len.load(Ordering::Relaxed))
            .filter(|o| o % PAGE == 0)
            .ok_or(Error::Corrupt)?;
        let end = off.checked_add(len).ok_or(Error::Corrupt)?;
        self.a.seg.extend(end)?;
        let d = &ctl.chunks[n];
        d.off.store(off, Ordering::Relaxed);
        d.len.store(len, Ordering::Relaxed);
        d.inserted.store(0, Ordering::Relaxed);
        // ORDERING: Release publishes the descriptor (written just above, never again) to whoever
        // Acquires the count before mapping the chunk.
        ctl.n_chunks.store(n as u64 + 1, Ordering::Release);
        hit(Point::ManagerGrowing);
        self.insert_chunk(n)
    }

    /// Formats published chunk `i` as one free block and its epilogue, and puts the block in the free
    /// lists (all-or-nothing, with the `inserted` mark).
    fn insert_chunk(&self, i: usize) -> Result<()> {
        let (_, len) = self.a.chunk(i)?;
        let size = (len as u64 - HDR) / 16 * 16;
        let b = Ref::new(i, 0);
        // Nobody can reach these words before the block is in a list: plain stores.
        let r = Ordering::Relaxed;
        self.a.word(b)?.store(0, r);
        self.a.word(b.add(8))?.store(size | FREE, r);
        self.a.word(b.add(size))?.store(b.0, r);
        self.a.word(b.add(size + 8))?.store(HDR | PREV_FREE, r);
        self.insert_free(b, size)?;
        self.set_ctl(&self.a.ctl().chunks[i].inserted, 1)?;
        self.commit();
        self.c().free.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    // ---- statistics and audit -----------------------------------------------------------------

    /// Bytes in allocated and in free blocks (headers included).
    #[cfg(feature = "test-hooks")]
    fn counts(&self) -> (u64, u64) {
        (
            self.c().used.load(Ordering::Relaxed),
            self.c().free.load(Ordering::Relaxed),
        )
    }

    /// Walks every chunk's blocks: bytes allocated and free. A broken chain is `Corrupt`. Bounded:
    /// each step moves forward by at least the smallest block.
    fn recount(&self) -> Result<(u64, u64)> {
        let (mut used, mut free) = (0u64, 0u64);
        self.walk(|b| {
            if b.flags & FREE != 0 {
                free += b.size;
            } else {
                used += b.size;
            }
            Ok(())
        })?;
        Ok((used, free))
    }

    fn walk(&self, mut f: impl FnMut(&Block) -> Result<()>) -> Result<()> {
        let n = (self.a.ctl().n_chunks.load(Ordering::Acquire) as usize).min(MAX_CHUNKS);
        for i in 0..n {
            let (_, clen) = self.a.chunk(i)?;
            let end = clen as u64 - HDR;
            let mut at = Ref::new(i, Arena::heap_start(i));
            while at.offset() < end {
                let b = self.block(at)?;
                f(&b)?;
                at = self.next_of(&b);
            }
            if at.offset() != end {
                return Err(Error::Corrupt);
            }
        }
        Ok(())
    }

    /// Checks the whole heap (test hook): the physical chain of every chunk, the flags of neighbours,
    /// every free list, and the counters. Returns the payloads of the allocated blocks.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn audit(&self) -> std::result::Result<Vec<Ref>, String> {
        let mut allocated = Vec::new();
        let mut free_blocks = std::collections::HashSet::new();
        let (mut used, mut free) = (0u64, 0u64);
        let mut prev: Option<Block> = None;
        let mut bad = None;
        self.walk(|b| {
            let prev_free =
                prev.is_some_and(|p| p.at.chunk() == b.at.chunk() && p.flags & FREE != 0);
            if (b.flags & PREV_FREE != 0) != prev_free {
                bad = Some(format!(
                    "{:?}: PREV_FREE does not match its neighbour",
                    b.at
                ));
            }
            if prev_free && b.flags & FREE != 0 {
                bad = Some(format!("{:?}: two free blocks side by side", b.at));
            }
            if prev_free && self.a.load(b.at).ok() != prev.map(|p| p.at.0) {
                bad = Some(format!("{:?}: prev_phys is wrong", b.at));
            }
            if b.flags & FREE != 0 {
                free += b.size;
                free_blocks.insert(b.at.0);
            } else {
                used += b.size;
                allocated.push(b.at.add(HDR));
            }
            prev = Some(*b);
            Ok(())
        })
        .map_err(|e| format!("walk: {e}"))?;
        if let Some(b) = bad {
            return Err(b);
        }
        let mut listed = 0usize;
        for fl in 0..FL {
            for sl in 0..SL {
                let mut at = self.head(fl, sl).load(Ordering::Relaxed);
                let mut back = 0u64;
                let nonempty = at != 0;
                if nonempty != (self.c().sl_map[fl].load(Ordering::Relaxed) & 1 << sl != 0) {
                    return Err(format!("class ({fl}, {sl}): bitmap does not match"));
                }
                while at != 0 {
                    if !free_blocks.contains(&at) || listed > free_blocks.len() {
                        return Err(format!("class ({fl}, {sl}): {at:#x} is not a free block"));
                    }
                    let b = self.block(Ref(at)).map_err(|e| e.to_string())?;
                    if mapping(b.size) != (fl, sl) {
                        return Err(format!("{at:#x} in the wrong class"));
                    }
                    if self.a.load(Ref(at).add(24)).ok() != Some(back) {
                        return Err(format!("{at:#x}: back link is wrong"));
                    }
                    listed += 1;
                    back = at;
                    at = self.a.load(Ref(at).add(16)).map_err(|e| e.to_string())?;
                }
            }
            let any = self.c().sl_map[fl].load(Ordering::Relaxed) != 0;
            if any != (self.c().fl_map.load(Ordering::Relaxed) & 1 << fl != 0) {
                return Err(format!("first level {fl}: bitmap does not match"));
            }
        }
        if listed != free_blocks.len() {
            return Err(format!(
                "{} free blocks, {listed} in the lists",
                free_blocks.len()
            ));
        }
        if self.counts() != (used, free) {
            return Err(format!(
                "counters say {:?}, the heap holds {:?}",
                self.counts(),
                (used, free)
            ));
        }
        if !self.c().undo.is_empty() {
            return Err("the undo log is not empty".into());
        }
        Ok(allocated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_hold_what_they_promise() {
        for size in (32..1 << 20).step_by(16) {
            let (fl, sl) = mapping(size);
            assert!(fl < FL && sl < SL);
            let (sfl, ssl) = mapping_search(size);
            // Every block of the searched class, and of any class above, is at least `size`.
            let smallest = |fl: usize, sl: usize| -> u64 {
                if fl == 0 {
                    sl as u64 * 16
                } else {
                    let f = fl as u32 + 7;
                    (1u64 << f) + ((sl as u64) << (f - SL_LOG))
                }
            };
            assert!(smallest(sfl, ssl) >= size, "{size}");
            assert!((sfl, ssl) >= (fl, sl));
        }
    }
}
