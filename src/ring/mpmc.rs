//! A bounded multi-producer multi-consumer ring of fixed-size slots in shared memory.
//!
//! Dmitry Vyukov's bounded MPMC queue (as crossbeam's `ArrayQueue`), with one change for processes
//! that die: a slot is claimed with a CAS on its own control word that records *who* claimed it, not
//! by advancing the shared position first. So a claim can always be traced to a liveness token.
//!
//! Each slot's 64-bit control word is `lap (32) | state (2) | skip-next (1) | owner (29)`; position `p`
//! lives in slot
//! `p % cap` at lap `p / cap`. States: `EMPTY` (free for lap), `WRITING` (a producer is filling it),
//! `FULL`, `READING` (a consumer is copying it out). A producer takes `(lap, EMPTY)` to
//! `(lap, WRITING, me)`, fills the slot, and publishes `(lap, FULL)` with Release; a consumer takes
//! `(lap, FULL)` to `(lap, READING, me)`, copies, and frees the slot as `(lap + 1, EMPTY)`. Whoever sees
//! a slot claimed for the current position helps move the shared position on, so a claimer that stops
//! (or dies) between its claim and its move never stalls the others.
//!
//! A producer that wraps around onto a slot still being *read* (a slow, stopped or dead consumer) does
//! not wait for it: it flags the slot *skip-next* and moves on to the next position; the consumer that
//! finishes with the slot frees it a lap later, and consumers arriving at the skipped position move on.
//! So a consumer stopped in the middle of a `get` holds up nobody (the ring has one slot less until it
//! goes on).
//!
//! Repairs, once the owner is known dead (its token released): a `WRITING` slot becomes a `FULL` slot
//! marked *skip* (its `put` never returned: that item is lost, nothing else is), and a `READING` slot
//! becomes free (its `get` never returned: that item is lost).
//!
//! A ring can be *sealed* (an unbounded queue that grew moves its producers to a new ring): a flag
//! in `enq` stops new claims. A producer that read `enq` just before the seal may still claim the
//! slot at the sealed position, so the consumers settle that one position (they take its item, or
//! mark it skipped first) and then know the ring is finished.
//!
//! An item larger than a slot lives in a block of the spill area (`ring::spill`), and the slot
//! carries its length with `SPILLED` set and the block's first unit.
//!
//! Every length read from a slot is checked against the slot size before use.

use super::buf::RingBuf;
use super::spill::{Block, SlotNow, Spill};
use crate::error::{Error, Result};
use crate::hooks;
use crate::loom::{AtomicU64, Ordering};

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
const READING: u64 = 3;
const OWNER_BITS: u64 = 29;
const OWNER_MASK: u64 = (1 << OWNER_BITS) - 1;
/// On a `READING` slot: a producer skipped the next lap of this slot.
const SKIP_NEXT: u64 = 1 << OWNER_BITS;
const STATE_SHIFT: u64 = 30;
/// The owner of a `FULL` slot whose producer died: consumers skip it.
const SKIP: u64 = OWNER_MASK;
/// Bytes of a slot's header: the control word and the length.
pub(crate) const SLOT_HEADER: usize = 16;
/// In a slot's length field: the item is in the spill area.
const SPILLED: u64 = 1 << 63;
/// In `enq`: the ring is sealed at the position in the other bits.
const SEALED: u64 = 1 << 63;
/// Items up to this size are copied out of their slot onto the stack (larger ones into a `Vec`).
#[cfg(not(loom))]
const SMALL: usize = 256;
/// A spill block records its ring in the top bits of its position.
const RING_SHIFT: u32 = 48;

#[cfg(not(loom))]
const _: () = assert!(crate::segment::CLAIM_BITS as u64 <= OWNER_BITS);

/// Whether lap `a` comes after lap `b` (laps wrap around).
#[inline]
fn ahead(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[inline]
fn word(lap: u32, state: u64, owner: u64) -> u64 {
    (u64::from(lap) << 32) | (state << STATE_SHIFT) | (owner & OWNER_MASK)
}

/// The owner field of a control word.
#[inline]
fn owner_of(w: u64) -> u64 {
    w & OWNER_MASK
}

/// Lap, state and owner (the skip-next flag is read with `w & SKIP_NEXT`).
#[inline]
fn parts(w: u64) -> (u32, u64, u64) {
    ((w >> 32) as u32, (w >> STATE_SHIFT) & 3, w & OWNER_MASK)
}

/// A process-local view of the ring.
pub(crate) struct Mpmc<'a> {
    pub(crate) enq: &'a AtomicU64,
    pub(crate) deq: &'a AtomicU64,
    /// The slots: `cap` of `slot_size` bytes (a multiple of 8, at least `SLOT_HEADER + 8`), each
    /// `[control word][length][payload]`.
    pub(crate) slots: RingBuf,
    pub(crate) cap: u64,
    pub(crate) slot_size: usize,
    /// Where items too big for a slot go (`None`: nowhere, they are `TooLarge`).
    pub(crate) spill: Option<Spill<'a>>,
    /// Which ring of its queue this is (recorded with spilled items).
    pub(crate) id: u64,
}

/// What a put places in its slot.
#[derive(Clone, Copy)]
pub(crate) enum Item<'b> {
    /// The bytes themselves (at most `max_item()`).
    Inline(&'b [u8]),
    /// A spill block this producer allocated and filled with `len` bytes.
    Spilled(Block, usize),
}

/// What a non-blocking attempt found.
pub(crate) enum Attempt<T> {
    Done(T),
    /// Full (put) or empty (get): wait.
    Wait,
    /// The ring is sealed (put) or sealed and drained (get): go to the next ring.
    Sealed,
}

impl Mpmc<'_> {
    /// Offset of the slot of position `p`.
    #[inline]
    fn slot(&self, p: u64) -> usize {
        (p % self.cap) as usize * self.slot_size
    }

    #[inline]
    fn ctl(&self, p: u64) -> &AtomicU64 {
        // SAFETY: `slot(p) + 8 <= cap * slot_size`, 8-aligned (slot sizes are multiples of 8).
        unsafe { self.slots.word(self.slot(p)) }
    }

    /// The length word of the slot of `p` (the slot must be this caller's: WRITING or READING).
    #[inline]
    fn read_len(&self, p: u64) -> u64 {
        let mut w = [0u8; 8];
        // SAFETY: the length field is bytes 8..16 of the slot, in bounds; the slot is ours.
        unsafe { self.slots.read(self.slot(p) + 8, &mut w) };
        u64::from_ne_bytes(w)
    }

    #[inline]
    fn write_len(&self, p: u64, len: u64) {
        // SAFETY: as in `read_len`.
        unsafe { self.slots.write(self.slot(p) + 8, &len.to_ne_bytes()) };
    }

    /// The largest item a slot holds.
    pub(crate) fn max_item(&self) -> usize {
        self.slot_size - SLOT_HEADER
    }

    #[inline]
    fn lap(&self, p: u64) -> u32 {
        (p / self.cap) as u32
    }

    /// Iterations one attempt may take before it reports `Wait` (the caller then checks its deadline
    /// and retries): far more than honest contention needs, so that no sequence of words written by
    /// others keeps a call looping.
    #[inline]
    fn budget(&self) -> u64 {
        // Under loom a small budget keeps the models finite (a retry is the caller's).
        if cfg!(loom) {
            2 * self.cap + 2
        } else {
            2 * self.cap + 1024
        }
    }

    /// Whether a producer at `p` may skip the slot a consumer is still reading: only when the
    /// positions after `p` hold a free slot (some item before `p` was taken), else the skip would
    /// only leave a hole in front of a full ring. A stale view errs either way, harmlessly: a skip
    /// that finds the ring full waits, a wait retries.
    #[inline]
    fn room_to_skip(&self, p: u64) -> bool {
        p.saturating_sub(self.deq.load(Ordering::Acquire)) + 1 < self.cap
    }

    /// One attempt to put `item` as claimer `me`.
    pub(crate) fn try_put(&self, me: u32, item: Item<'_>) -> Result<Attempt<()>> {
        let mut budget = self.budget();
        loop {
            budget = match budget.checked_sub(1) {
                Some(b) => b,
                None => return Ok(Attempt::Wait),
            };
            let p = self.enq.load(Ordering::Acquire);
            if p & SEALED != 0 {
                return Ok(Attempt::Sealed);
            }
            let ctl = self.ctl(p);
            let c = ctl.load(Ordering::Acquire);
            let (lap, state, _) = parts(c);
            let want = self.lap(p);
            if lap == want && state == EMPTY {
                if ctl
                    .compare_exchange(
                        c,
                        word(want, WRITING, u64::from(me)),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_err()
                {
                    continue;
                }
                hooks::hit(hooks::Point::PutClaimedUnmoved);
                let _ = self.enq.compare_exchange(
                    p,
                    p.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                hooks::hit(hooks::Point::PutClaimed);
                self.fill(p, me, item);
                hooks::hit(hooks::Point::PutFilled);
                // ORDERING: Release publishes the item to the consumer that Acquires FULL.
                ctl.store(word(want, FULL, 0), Ordering::Release);
                return Ok(Attempt::Done(()));
            }
            if lap == want {
                // Claimed (or skipped) at this lap by someone else: help move the position on.
                let _ = self.enq.compare_exchange(
                    p,
                    p.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                continue;
            }
            if lap.wrapping_add(1) == want {
                // The previous lap's item is still here. Being read (by a slow, stopped or dead
                // consumer): skip this position rather than wait, if the ring has room further on.
                // The CAS from the word we read (whose lap is `want - 1`, which a slot never returns
                // to) means `p` is still unclaimed, so a stale producer cannot move a lap backwards;
                // the lap field records the last lap skipped, and the consumer frees the slot for
                // the lap after it.
                if state == READING && self.room_to_skip(p) {
                    let skip = word(want, READING, owner_of(c)) | SKIP_NEXT;
                    if ctl
                        .compare_exchange(c, skip, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        let _ = self.enq.compare_exchange(
                            p,
                            p.wrapping_add(1),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                    }
                    continue;
                }
                // Not yet taken, or nowhere to skip to: full.
                if self.enq.load(Ordering::Acquire) == p {
                    return Ok(Attempt::Wait);
                }
                continue;
            }
            if ahead(lap, want) {
                // Taken at this lap and already consumed: its claimer moved on without moving the
                // position (it died between its two CASes, and a repair let the consumers take its
                // slot). Move the position on for it, as the consumers do.
                let _ = self.enq.compare_exchange(
                    p,
                    p.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                continue;
            }
            if self.enq.load(Ordering::Acquire) == p {
                return Err(Error::Corrupt); // a lap that cannot be at the producers' position
            }
        }
    }

    /// Writes `item` into the slot of `p`, which `me` claimed.
    #[inline]
    fn fill(&self, p: u64, me: u32, item: Item<'_>) {
        match item {
            Item::Inline(bytes) => {
                // The caller checked the size; an oversized item here is a bug, not input.
                let bytes = &bytes[..bytes.len().min(self.max_item())];
                self.write_len(p, bytes.len() as u64);
                // SAFETY: the slot is ours (WRITING): nobody reads it; the bytes fit after the
                // slot header.
                unsafe { self.slots.write(self.slot(p) + SLOT_HEADER, bytes) };
            }
            Item::Spilled(block, len) => {
                self.write_len(p, len as u64 | SPILLED);
                // SAFETY: ours as above; a slot holds at least 8 payload bytes.
                unsafe {
                    self.slots
                        .write(self.slot(p) + SLOT_HEADER, &block.0.to_ne_bytes())
                };
                if let Some(spill) = &self.spill {
                    spill.queued(block, self.spill_pos(p), me);
                }
            }
        }
    }

    /// One attempt to take an item as claimer `me`; `read` gets its bytes. `may_be_sealed`: a newer
    /// ring exists, so this one may be sealed (otherwise an empty ring does not look at `enq`, which
    /// the producers write, at all).
    ///
    /// `claimed` runs right after this consumer claims an item (not a skipped one), before anything
    /// else: a `JoinableQueue` counts the item as held there.
    pub(crate) fn try_get<R>(
        &self,
        me: u32,
        may_be_sealed: bool,
        mut read: impl FnMut(&[u8]) -> R,
        mut claimed: impl FnMut(),
    ) -> Result<Attempt<R>> {
        let mut budget = self.budget();
        loop {
            budget = match budget.checked_sub(1) {
                Some(b) => b,
                None => return Ok(Attempt::Wait),
            };
            let p = self.deq.load(Ordering::Acquire);
            let ctl = self.ctl(p);
            let c = ctl.load(Ordering::Acquire);
            let (lap, state, owner) = parts(c);
            let want = self.lap(p);
            if lap == want && state == FULL {
                // ORDERING: AcqRel: what this consumer did before (a JoinableQueue's hold) is
                // visible to whoever sees the slot taken.
                if ctl
                    .compare_exchange(
                        c,
                        word(want, READING, u64::from(me)),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_err()
                {
                    continue;
                }
                if owner != SKIP {
                    claimed();
                }
                let _ = self.deq.compare_exchange(
                    p,
                    p.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                hooks::hit(hooks::Point::GetClaimed);
                let out = self.take(p, me, owner == SKIP, &mut read);
                hooks::hit(hooks::Point::GetRead);
                self.free(ctl, me);
                match out {
                    Ok(Some(v)) => return Ok(Attempt::Done(v)),
                    Ok(None) => continue, // a skipped item
                    Err(e) => return Err(e),
                }
            }
            if (lap == want && state == READING) || ahead(lap, want) {
                // Taken at this position by another consumer, or skipped by the producers, or
                // done with and reused by a later lap: move on.
                let _ = self.deq.compare_exchange(
                    p,
                    p.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                continue;
            }
            if self.deq.load(Ordering::Acquire) != p {
                continue;
            }
            if lap != want && !(lap.wrapping_add(1) == want && state == READING) {
                // Only two words can stand at the consumers' position: this lap's (empty or being
                // written), or the previous lap's item still being read (producers will skip it).
                return Err(Error::Corrupt);
            }
            // Nothing to take yet, unless the ring is sealed.
            let e = if may_be_sealed {
                self.enq.load(Ordering::Acquire)
            } else {
                0
            };
            if e & SEALED != 0 {
                let end = e & !SEALED;
                if p > end {
                    return Ok(Attempt::Sealed);
                }
                if p == end && self.settle(p, c) {
                    continue;
                }
            }
            return Ok(Attempt::Wait);
        }
    }

    /// Reads the item of the slot of `p`, which `me` took (`READING`); `skipped`: its producer died
    /// before publishing it (only its spill block, if any, is freed). `Ok(None)`: skipped.
    fn take<R>(
        &self,
        p: u64,
        me: u32,
        skipped: bool,
        read: &mut impl FnMut(&[u8]) -> R,
    ) -> Result<Option<R>> {
        let raw = self.read_len(p);
        if raw & SPILLED != 0 {
            let mut unit = [0u8; 8];
            // SAFETY: a slot holds at least 8 payload bytes; ours (READING).
            unsafe { self.slots.read(self.slot(p) + SLOT_HEADER, &mut unit) };
            let len = usize::try_from(raw & !SPILLED).map_err(|_| Error::Corrupt)?;
            return self.read_spilled(me, skipped, u64::from_ne_bytes(unit), p, len, read);
        }
        if skipped {
            return Ok(None);
        }
        let len = usize::try_from(raw).map_err(|_| Error::Corrupt)?;
        if len > self.max_item() {
            return Err(Error::Corrupt);
        }
        // The bytes are copied out before anything reads them: the slot is shared memory, which a
        // scribbling peer could change under a decoder.
        let off = self.slot(p) + SLOT_HEADER;
        #[cfg(not(loom))]
        if len <= SMALL {
            let mut small = std::mem::MaybeUninit::<[u8; SMALL]>::uninit();
            // SAFETY: `len` bytes after the slot header lie within the slot (checked just above),
            // which is ours (READING); they are copied into the first `len` bytes of `small`, which
            // are then initialised, and only those are read.
            let bytes = unsafe {
                self.slots.read_raw(off, small.as_mut_ptr().cast(), len);
                std::slice::from_raw_parts(small.as_ptr().cast::<u8>(), len)
            };
            return Ok(Some(read(bytes)));
        }
        let mut buf = vec![0u8; len];
        // SAFETY: as above, into a private buffer of `len` bytes.
        unsafe { self.slots.read(off, &mut buf) };
        Ok(Some(read(&buf)))
    }

    /// Model hook: claims the producers' next slot as `me` and stops there (a producer that dies
    /// before moving the position past its claim).
    #[cfg(all(test, loom))]
    pub(crate) fn __claim_only(&self, me: u32) {
        let p = self.enq.load(Ordering::Acquire);
        let ctl = self.ctl(p);
        let c = ctl.load(Ordering::Acquire);
        ctl.compare_exchange(
            c,
            word(self.lap(p), WRITING, u64::from(me)),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .unwrap();
    }

    /// Seals the ring (idempotent): no producer claims a position past the current one. Whether this
    /// call sealed it.
    pub(crate) fn seal(&self) -> bool {
        self.enq.fetch_or(SEALED, Ordering::AcqRel) & SEALED == 0
    }

    /// At the sealed position `p` (the consumers' next), whose slot word was `c`: makes sure no late
    /// producer can still claim it. Whether anything changed (look again).
    fn settle(&self, p: u64, c: u64) -> bool {
        let want = self.lap(p);
        let (lap, state, owner) = parts(c);
        let ctl = self.ctl(p);
        if lap == want && state == EMPTY {
            // Nobody claimed it: claim it as a skipped item (the consumers then pass it).
            let _ = ctl.compare_exchange(
                c,
                word(want, FULL, SKIP),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
            return true;
        }
        if state == READING && lap.wrapping_add(1) == want {
            // The previous lap's item is still being read: skip this position as a producer would
            // (no producer comes after the seal, so no room is needed beyond it).
            let skip = word(want, READING, owner) | SKIP_NEXT;
            if ctl
                .compare_exchange(c, skip, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                let _ = self.deq.compare_exchange(
                    p,
                    p.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            return true;
        }
        false
    }

    #[inline]
    fn spill_pos(&self, p: u64) -> u64 {
        (self.id << RING_SHIFT) | p
    }

    /// The ring and position a spill block's recorded position names.
    pub(crate) fn split_spill_pos(pos: u64) -> (u64, u64) {
        (pos >> RING_SHIFT, pos & ((1 << RING_SHIFT) - 1))
    }

    /// Reads (or, for a skipped slot, only frees) the spill block an item at `p` points to.
    /// `Ok(None)`: skipped.
    fn read_spilled<R>(
        &self,
        me: u32,
        skipped: bool,
        unit: u64,
        p: u64,
        len: usize,
        read: &mut impl FnMut(&[u8]) -> R,
    ) -> Result<Option<R>> {
        let Some(spill) = &self.spill else {
            return if skipped {
                Ok(None)
            } else {
                Err(Error::Corrupt)
            };
        };
        let pos = self.spill_pos(p);
        if skipped {
            spill.free_skipped(me, unit, pos, len)?;
            return Ok(None);
        }
        let mut bytes = Vec::new();
        let taken = spill.take(me, unit, pos, len, &mut bytes);
        spill.free(me, Block(unit))?;
        taken?;
        Ok(Some(read(&bytes)))
    }

    /// What became of the slot of position `p` (for the spill area's repair).
    pub(crate) fn slot_now(&self, p: u64, alive: impl Fn(u32) -> Result<bool>) -> SlotNow {
        if p >= self.deq.load(Ordering::Acquire) {
            return SlotNow::InUse;
        }
        let (lap, state, owner) = parts(self.ctl(p).load(Ordering::Acquire));
        let in_use = (state == READING && alive(owner as u32).unwrap_or(true))
            || (lap == self.lap(p) && (state == FULL || state == WRITING));
        if in_use {
            SlotNow::InUse
        } else {
            SlotNow::Done
        }
    }

    /// Frees the slot a consumer is done with: ready for the lap after the one it read, or after the
    /// last lap producers skipped while it was reading.
    /// If the slot is no longer `me`'s (a repair judged us dead: it cannot be, while we live, but a
    /// scribbler could have written it), nothing is done.
    fn free(&self, ctl: &AtomicU64, me: u32) {
        let mut c = ctl.load(Ordering::Acquire);
        loop {
            let (lap, state, owner) = parts(c);
            if state != READING || owner != u64::from(me) {
                return;
            }
            // ORDERING: Release: we are done with the bytes before a producer reuses the slot.
            match ctl.compare_exchange(
                c,
                word(lap.wrapping_add(1), EMPTY, 0),
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => c = now, // a producer skipped one more lap meanwhile
            }
        }
    }

    /// Repairs what dead claimers left (`alive` says who lives): a dead producer's slot at `deq`
    /// becomes a skipped item; any slot a dead consumer was reading is freed. Runs only while some
    /// caller is blocked, between sleeps, so its cost (one pass over the slots, a liveness check per
    /// slot being read) stays off the fast path.
    ///
    /// Returns how many slots of dead consumers it freed (items lost with them).
    pub(crate) fn repair(&self, alive: impl Fn(u32) -> Result<bool>) -> Result<u64> {
        let p = self.deq.load(Ordering::Acquire);
        let ctl = self.ctl(p);
        let c = ctl.load(Ordering::Acquire);
        let (lap, state, owner) = parts(c);
        if lap == self.lap(p)
            && state == WRITING
            && !alive(owner as u32)?
            && ctl
                .compare_exchange(
                    c,
                    word(lap, FULL, SKIP),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            // The producer may have died before moving the position past its claim.
            let _ = self.enq.compare_exchange(
                p,
                p.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        let mut freed = 0;
        // Only slots ever used (never touch, and so allocate, the rest of a large ring).
        let used = (self.enq.load(Ordering::Acquire) & !SEALED).min(self.cap);
        for i in 0..used {
            let ctl = self.ctl(i);
            let c = ctl.load(Ordering::Acquire);
            let (lap, state, owner) = parts(c);
            if state == READING
                && !alive(owner as u32)?
                && ctl
                    .compare_exchange(
                        c,
                        word(lap.wrapping_add(1), EMPTY, 0),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                freed += 1;
            }
        }
        Ok(freed)
    }

    /// Whether the slot at `deq` has a finished item or one being written (so a closed queue still
    /// has something to give).
    pub(crate) fn has_pending(&self) -> bool {
        let p = self.deq.load(Ordering::Acquire);
        let (lap, state, _) = parts(self.ctl(p).load(Ordering::Acquire));
        lap == self.lap(p) && (state == FULL || state == WRITING)
    }

    /// Items in the ring (a snapshot): positions between the consumers' and the producers' whose slot
    /// holds an item or one being written (skipped positions and skipped items are not counted). At
    /// most `cap` slots are looked at, whatever the positions say.
    pub(crate) fn len(&self) -> u64 {
        let d = self.deq.load(Ordering::Acquire);
        let e = self.enq.load(Ordering::Acquire) & !SEALED;
        (d..e.min(d.saturating_add(self.cap)))
            .filter(|&p| {
                let (lap, state, owner) = parts(self.ctl(p).load(Ordering::Acquire));
                lap == self.lap(p) && (state == WRITING || (state == FULL && owner != SKIP))
            })
            .count() as u64
    }
}
