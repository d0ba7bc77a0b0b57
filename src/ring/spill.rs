//! The spill area of a slot ring: items too big for a slot live in a block of their own, and the slot
//! carries only the block's offset.
//!
//! The area is `n` units of `UNIT` (256) bytes with a bitmap of the units in use. Blocks are runs of units
//! that start with a 32-byte header: a control word `state (2) | owner (32)`, the ring position the
//! item was published at, its length, and the units it spans. The bitmap changes only under a robust
//! mutex, and each change is first written as a redo record (`intent`), so the next holder after a
//! holder died finishes the change it left half done.
//!
//! A block's life: `WRITING` (allocated by a producer, filled before the producer even claims a
//! slot), `QUEUED` (its position recorded; then the slot is published), `READING` (a consumer took the
//! slot and the block), `RELEASED` (done with), free. Releasing is one CAS on the block's control
//! word, with no lock, so that a consumer never waits for the allocator's mutex (whose holder may be
//! stopped); the units of a released block go back to the bitmap right away if the mutex is free, else
//! at the next sweep (an allocation that finds no room, or a repair). Who releases a block:
//! * the consumer that read it, before it frees the slot (or the producer whose put failed);
//! * the consumer that meets the slot of a producer that died after claiming it (a *skipped* slot), if
//!   the slot points to a block recorded at that position;
//! * `repair`, under the mutex: a `WRITING` or `READING` block whose owner is dead, and
//!   a `QUEUED` block whose slot has moved on without it (a consumer died between taking the slot and
//!   the block). Repair only tries the mutex: a stopped holder makes it skip the spill area, never
//!   wait.
//!
//! Every offset, length and unit count read from shared memory is checked before use.

use crate::error::{Error, Result};
use crate::segment::Segment;
use crate::wait::Deadline;
use crate::wait::mutex::RawMutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes per unit of the spill area.
pub(crate) const UNIT: usize = 256;
/// Bytes of a block header.
const HDR: usize = 32;

const FREE: u64 = 0;
const WRITING: u64 = 1;
const QUEUED: u64 = 2;
const READING: u64 = 3;
const RELEASED: u64 = 4;

const OP_NONE: u64 = 0;
const OP_SET: u64 = 1;
const OP_CLEAR: u64 = 2;

#[inline]
fn ctl_word(state: u64, owner: u32) -> u64 {
    (state << 32) | u64::from(owner)
}

/// The shared control words of a spill area (in the queue's control block).
#[repr(C)]
pub(crate) struct SpillCtl {
    mutex: RawMutex,
    /// Redo record: the bitmap change in progress (`OP_*`), its first unit and its length.
    intent_op: AtomicU64,
    intent_start: AtomicU64,
    intent_units: AtomicU64,
    /// Units in use.
    used: AtomicU64,
    /// Units from the start whose pages are allocated (a named queue's spill area is allocated as
    /// it is first used).
    reserved: AtomicU64,
}

/// Units reserved at a time (1 MiB).
const RESERVE_UNITS: usize = 4096;

#[repr(C)]
struct Header {
    ctl: AtomicU64,
    pos: AtomicU64,
    len: AtomicU64,
    units: AtomicU64,
}

/// Bytes of data area a spill of `units` units takes (bitmap, then units).
pub(crate) fn area_bytes(units: usize) -> usize {
    bitmap_bytes(units) + units * UNIT
}

fn bitmap_bytes(units: usize) -> usize {
    (units.div_ceil(64) * 8).div_ceil(UNIT) * UNIT
}

/// A block allocated by a producer: the unit it starts at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block(pub(crate) u64);

/// What the ring says about the slot of a position (for [`Spill::repair`]).
pub(crate) enum SlotNow {
    /// The item there is still waiting or being written or read by a live process.
    InUse,
    /// The slot has moved on: nobody will read this position's block.
    Done,
}

/// A process-local view of a spill area.
pub(crate) struct Spill<'a> {
    pub(crate) ctl: &'a SpillCtl,
    pub(crate) seg: &'a Segment,
    /// Start of the area (the bitmap, then the units), 8-aligned.
    pub(crate) base: *mut u8,
    pub(crate) units: usize,
}

/// The mutex held; releases on drop.
struct Held<'s, 'a> {
    spill: &'s Spill<'a>,
}

impl Drop for Held<'_, '_> {
    fn drop(&mut self) {
        self.spill.ctl.mutex.unlock();
    }
}

impl<'a> Spill<'a> {
    /// The largest item the area can hold.
    pub(crate) fn max_item(&self) -> usize {
        (self.units * UNIT).saturating_sub(HDR)
    }

    fn bit_word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.units.div_ceil(64));
        // SAFETY: `i` indexes the bitmap, which starts the area (8-aligned) and holds
        // `units.div_ceil(64)` words; atomics may alias shared memory.
        unsafe { &*(self.base.add(i * 8) as *const AtomicU64) }
    }

    fn unit_ptr(&self, u: u64) -> *mut u8 {
        debug_assert!((u as usize) < self.units);
        // SAFETY: `u < units` (checked by every caller): the unit lies in the area.
        unsafe { self.base.add(bitmap_bytes(self.units) + u as usize * UNIT) }
    }

    fn header(&self, u: u64) -> &Header {
        // SAFETY: a unit is 256 bytes, 8-aligned, and the header is its first 32: in bounds; all
        // atomics, valid for any bytes.
        unsafe { &*(self.unit_ptr(u) as *const Header) }
    }

    fn is_set(&self, u: usize) -> bool {
        self.bit_word(u / 64).load(Ordering::Relaxed) & (1 << (u % 64)) != 0
    }

    /// Sets or clears the bits of `[start, start + n)` (the mutex held; in range).
    fn mark(&self, start: usize, n: usize, set: bool) {
        for u in start..start + n {
            let w = self.bit_word(u / 64);
            let bit = 1u64 << (u % 64);
            if set {
                w.fetch_or(bit, Ordering::Relaxed);
            } else {
                w.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    /// Takes the mutex; if a holder died, finishes the bitmap change it left.
    fn lock(&self, me: u32, deadline: Deadline) -> Result<Held<'_, 'a>> {
        self.ctl.mutex.lock(self.seg, me, deadline)?;
        Ok(self.held())
    }

    /// Takes the mutex if it is free now, or (with `take_over`) if its holder died, which costs a
    /// system call to ask the kernel.
    fn try_lock(&self, me: u32, take_over: bool) -> Result<Option<Held<'_, 'a>>> {
        let m = &self.ctl.mutex;
        if m.try_lock(me) || (take_over && m.take_over_if_holder_died(self.seg, me)?) {
            return Ok(Some(self.held()));
        }
        Ok(None)
    }

    fn held(&self) -> Held<'_, 'a> {
        let held = Held { spill: self };
        if self.ctl.mutex.is_inconsistent() {
            self.redo();
            self.ctl.mutex.mark_consistent();
        }
        held
    }

    /// Units marked in the bitmap.
    fn count_bits(&self) -> u64 {
        (0..self.units.div_ceil(64))
            .map(|i| u64::from(self.bit_word(i).load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Applies the redo record, if any, and recounts the units in use (a holder that died in the
    /// middle of a change may have counted it or not).
    fn redo(&self) {
        let op = self.ctl.intent_op.load(Ordering::Acquire);
        let start = self.ctl.intent_start.load(Ordering::Relaxed) as usize;
        let n = self.ctl.intent_units.load(Ordering::Relaxed) as usize;
        if op != OP_NONE && n >= 1 && start < self.units && n <= self.units - start {
            if op == OP_CLEAR {
                self.header(start as u64)
                    .ctl
                    .store(ctl_word(FREE, 0), Ordering::Release);
            }
            // A half-done change is redone whole; `used` may drift by what the dead holder had
            // already counted, which only affects the statistics.
            self.mark(start, n, op == OP_SET);
        }
        self.ctl.intent_op.store(OP_NONE, Ordering::Release);
        self.ctl.used.store(self.count_bits(), Ordering::Relaxed);
    }

    fn change(&self, start: usize, n: usize, set: bool) {
        self.ctl.intent_start.store(start as u64, Ordering::Relaxed);
        self.ctl.intent_units.store(n as u64, Ordering::Relaxed);
        self.ctl
            .intent_op
            .store(if set { OP_SET } else { OP_CLEAR }, Ordering::Release);
        if !set {
            self.header(start as u64)
                .ctl
                .store(ctl_word(FREE, 0), Ordering::Release);
        }
        if n > 1 {
            self.mark(start, n / 2, set);
            crate::hooks::hit(crate::hooks::Point::SpillMidChange);
        }
        self.mark(start, n, set);
        if set {
            self.ctl.used.fetch_add(n as u64, Ordering::Relaxed);
        } else {
            let _ = self
                .ctl
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(n as u64))
                });
        }
        self.ctl.intent_op.store(OP_NONE, Ordering::Release);
    }

    /// The first free run of `n` units (the mutex held). First fit keeps the blocks in use packed at
    /// the start of the area, so the pages behind it are only touched when many items wait at once.
    fn find(&self, n: usize) -> Option<usize> {
        let (mut start, mut run, mut u) = (0, 0, 0);
        while u < self.units {
            if u % 64 == 0 && self.bit_word(u / 64).load(Ordering::Relaxed) == !0 {
                u += 64;
                start = u;
                run = 0;
                continue;
            }
            if self.is_set(u) {
                run = 0;
                start = u + 1;
            } else {
                run += 1;
                if run == n {
                    return Some(start);
                }
            }
            u += 1;
        }
        None
    }

    /// Allocates a block for `len` bytes as producer `me`. `Ok(None)`: no room now.
    pub(crate) fn alloc(&self, me: u32, len: usize, deadline: Deadline) -> Result<Option<Block>> {
        if len > self.max_item() {
            return Err(Error::TooLarge);
        }
        let n = (len + HDR).div_ceil(UNIT);
        // The mutex guards a short critical section: even a call that may not wait (`put_nowait`)
        // waits that long for it, so that only a spill area with no room, not a busy allocator,
        // says `Full` (a holder preempted for a few milliseconds is no reason; one stopped costs the
        // call that much, then `Full`).
        let floor = std::time::Duration::from_millis(20);
        let deadline = match deadline.remaining() {
            Some(r) if r < floor => Deadline::after(Some(floor)),
            _ => deadline,
        };
        let _held = self.lock(me, deadline)?;
        let found = match self.find(n) {
            Some(start) => Some(start),
            None => {
                self.sweep(|_, _| Ok(false))?;
                self.find(n)
            }
        };
        let Some(start) = found else {
            return Ok(None);
        };
        self.reserve_to(start + n)?;
        let h = self.header(start as u64);
        h.pos.store(u64::MAX, Ordering::Relaxed);
        h.len.store(len as u64, Ordering::Relaxed);
        h.units.store(n as u64, Ordering::Relaxed);
        h.ctl.store(ctl_word(WRITING, me), Ordering::Release);
        self.change(start, n, true);
        Ok(Some(Block(start as u64)))
    }

    /// Makes sure the pages of units `[0, end)` are allocated (named segments; the mutex held).
    fn reserve_to(&self, end: usize) -> Result<()> {
        let reserved = (self.ctl.reserved.load(Ordering::Relaxed) as usize).min(self.units);
        if end <= reserved {
            return Ok(());
        }
        let new = (end.div_ceil(RESERVE_UNITS) * RESERVE_UNITS).min(self.units);
        let offset = self.unit_ptr(reserved as u64) as usize - self.seg.kind_area().0 as usize;
        self.seg.reserve(offset, (new - reserved) * UNIT)?;
        self.ctl.reserved.store(new as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Lets `f` write the bytes of a block this process allocated (`WRITING`, ours). The block's
    /// bounds come from `alloc`, not from shared memory. `f` gets a private buffer when the block may
    /// be written by others (never for an honest peer): it writes through a raw copy.
    pub(crate) fn fill<R>(
        &self,
        b: Block,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> Result<R>,
    ) -> Result<R> {
        let n = (len + HDR).div_ceil(UNIT);
        if b.0 as usize >= self.units || n > self.units - b.0 as usize {
            return Err(Error::Corrupt);
        }
        // The item is encoded into private memory and then copied in: no Rust reference is formed
        // over the shared block, which a scribbling peer could write while we hold it.
        let mut buf = vec![0u8; len];
        let out = f(&mut buf)?;
        // SAFETY: checked just above: the block's `n` units lie in the area and hold `HDR + len`
        // bytes; the copy goes through raw pointers.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.unit_ptr(b.0).add(HDR), len) };
        Ok(out)
    }

    /// Records that the block's item is published at position `pos` (before the slot is).
    pub(crate) fn queued(&self, b: Block, pos: u64, me: u32) {
        let h = self.header(b.0);
        h.pos.store(pos, Ordering::Relaxed);
        // ORDERING: Release (and the slot's own Release after it) publishes the bytes and the position.
        h.ctl.store(ctl_word(QUEUED, me), Ordering::Release);
    }

    /// Checks that `unit` starts a block of `len` bytes recorded at `pos` in one of `states`; gives
    /// its header and the control word seen.
    fn check(&self, unit: u64, pos: u64, len: usize, states: &[u64]) -> Option<(&Header, u64)> {
        if unit as usize >= self.units {
            return None;
        }
        let h = self.header(unit);
        let c = h.ctl.load(Ordering::Acquire);
        let units = h.units.load(Ordering::Relaxed);
        let fits = units >= 1
            && units as usize <= self.units - unit as usize
            && (len + HDR).div_ceil(UNIT) as u64 == units;
        (states.contains(&(c >> 32))
            && h.pos.load(Ordering::Relaxed) == pos
            && h.len.load(Ordering::Relaxed) == len as u64
            && fits)
            .then_some((h, c))
    }

    /// Takes the block of the item at `pos` (a `FULL` slot this consumer took) and copies its bytes
    /// into `out` (a private copy: the block is shared memory). A block that does not match is
    /// [`Error::Corrupt`]. Release it with [`free`](Self::free) after.
    pub(crate) fn take(
        &self,
        me: u32,
        unit: u64,
        pos: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let (h, c) = self
            .check(unit, pos, len, &[QUEUED])
            .ok_or(Error::Corrupt)?;
        h.ctl
            .compare_exchange(
                c,
                ctl_word(READING, me),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .map_err(|_| Error::Corrupt)?;
        out.clear();
        out.reserve_exact(len);
        // SAFETY: checked: the block's units lie in the area and hold `HDR + len` bytes (`len` was
        // checked against the block's units, themselves bounded by the area, so this allocation is
        // bounded by the spill area's size, not by a peer); copied through raw pointers into spare
        // capacity of `out`, then the length is set to what was written.
        unsafe {
            std::ptr::copy_nonoverlapping(self.unit_ptr(unit).add(HDR), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        Ok(())
    }

    /// Releases a block this process holds (`WRITING` or `READING`): one CAS, then its units go back
    /// to the bitmap if the mutex is free now (else at the next sweep). Never waits.
    pub(crate) fn free(&self, me: u32, b: Block) -> Result<()> {
        if b.0 as usize >= self.units {
            return Err(Error::Corrupt);
        }
        let h = self.header(b.0);
        let c = h.ctl.load(Ordering::Acquire);
        if c & 0xffff_ffff == u64::from(me) && matches!(c >> 32, WRITING | READING) {
            self.release(me, b.0, c)?;
        }
        Ok(())
    }

    /// Releases the block a skipped slot (its producer died) points to, if it is that position's.
    pub(crate) fn free_skipped(&self, me: u32, unit: u64, pos: u64, len: usize) -> Result<()> {
        if let Some((_, c)) = self.check(unit, pos, len, &[WRITING, QUEUED]) {
            self.release(me, unit, c)?;
        }
        Ok(())
    }

    /// Moves block `u`'s control word from `c` to `RELEASED`, then reclaims it if the mutex is free.
    fn release(&self, me: u32, u: u64, c: u64) -> Result<()> {
        let h = self.header(u);
        // ORDERING: Release: we are done with the bytes before anyone reuses the units.
        if h.ctl
            .compare_exchange(
                c,
                ctl_word(RELEASED, 0),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Ok(()); // repaired meanwhile
        }
        // Only a free mutex: a busy one is no reason for a system call here (the units come back
        // at the next sweep).
        if let Some(_held) = self.try_lock(me, false)? {
            self.reclaim(u as usize);
        }
        Ok(())
    }

    /// Gives a released block's units back to the bitmap (the mutex held).
    fn reclaim(&self, u: usize) {
        let h = self.header(u as u64);
        let units = h.units.load(Ordering::Relaxed) as usize;
        if h.ctl.load(Ordering::Acquire) >> 32 == RELEASED
            && self.is_set(u)
            && units >= 1
            && units <= self.units - u
        {
            self.change(u, units, false);
        }
    }

    /// Walks the blocks in use (the mutex held) and gives back those released, and those for which
    /// `orphan(state, header)` says so. A walk that meets a broken header stops: `Corrupt`.
    fn sweep(&self, orphan: impl Fn(u64, &Header) -> Result<bool>) -> Result<()> {
        let mut u = 0usize;
        while u < self.units {
            if u % 64 == 0 && self.bit_word(u / 64).load(Ordering::Relaxed) == 0 {
                u += 64;
                continue;
            }
            if !self.is_set(u) {
                u += 1;
                continue;
            }
            let h = self.header(u as u64);
            let units = h.units.load(Ordering::Relaxed) as usize;
            if units == 0 || units > self.units - u {
                return Err(Error::Corrupt);
            }
            let state = h.ctl.load(Ordering::Acquire) >> 32;
            if state == RELEASED || orphan(state, h)? {
                self.change(u, units, false);
            }
            u += units;
        }
        Ok(())
    }

    /// Gives back blocks that dead processes left, and released ones: `alive` says who lives,
    /// `slot(pos)` what became of the slot a `QUEUED` block was published at. Only tries the mutex:
    /// if a live (perhaps stopped) process holds it, the repair waits for another time.
    pub(crate) fn repair(
        &self,
        me: u32,
        alive: impl Fn(u32) -> Result<bool>,
        slot: impl Fn(u64) -> SlotNow,
    ) -> Result<()> {
        let Some(_held) = self.try_lock(me, true)? else {
            return Ok(());
        };
        self.sweep(|state, h| {
            let owner = (h.ctl.load(Ordering::Acquire) & 0xffff_ffff) as u32;
            Ok(match state {
                WRITING | READING => !alive(owner)?,
                QUEUED => matches!(slot(h.pos.load(Ordering::Relaxed)), SlotNow::Done),
                _ => false,
            })
        })
    }

    /// Bytes in use, after giving back released blocks (waits for the mutex).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn in_use(&self, me: u32) -> Result<u64> {
        let _held = self.lock(me, Deadline::NEVER)?;
        self.sweep(|_, _| Ok(false))?;
        Ok(self.count_bits() * UNIT as u64)
    }
}
