//! The rings of a queue. A bounded queue has one, in its segment. An unbounded one starts with a ring
//! of `FIRST_SLOTS` (1,024) slots and, when the newest ring is full, appends a ring twice as large (up to
//! [`UNBOUNDED_CAPACITY`](super::UNBOUNDED_CAPACITY) slots) to the same file, so a producer never waits
//! for a consumer.
//!
//! Growing: under the queue's grow mutex, the file is extended (and its pages allocated: a full tmpfs
//! is `Error::Io` from that `put`), the ring count is bumped (producers move to the new ring), and the
//! old ring is sealed. Consumers drain a ring up to its seal, then move on to the next, so every
//! producer's items still come out in the order it put them. Every process maps a new ring the first
//! time it meets it, checking that it lies within the file.
//!
//! The memory of a drained ring stays with the queue until the queue goes away: the rings grow by
//! doubling, so a queue holds at most about twice the most items that ever waited in it at once.

use super::QueueBlock;
use crate::error::{Error, Result};
use crate::ring::buf::RingBuf;
use crate::ring::mpmc::Mpmc;
use crate::ring::spill::Spill;
use crate::segment::object::Object;
use crate::wait::Deadline;
use memmap2::MmapRaw;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots of an unbounded queue's first ring.
pub(crate) const FIRST_SLOTS: u64 = 1024;
/// Rings an unbounded queue may have (past the last, a put waits as in a bounded queue).
pub(crate) const MAX_RINGS: usize = 40;
/// Bytes before an appended ring's slots: `enq` and `deq`, each on its own 128-byte line.
const RING_HEAD: usize = 256;
const PAGE: u64 = 4096;

/// Where each ring lives (computed once per handle) and this process's mappings of the appended ones.
pub(crate) struct Chain {
    /// Slots of ring `i`.
    caps: [u64; MAX_RINGS],
    /// File offset of ring `i` (`i >= 1`) and its length in bytes.
    extents: [(u64, usize); MAX_RINGS],
    maps: [OnceLock<MmapRaw>; MAX_RINGS],
    /// Whether the queue may grow (unbounded).
    pub(crate) growable: bool,
    /// Bytes per slot.
    pub(crate) slot: usize,
    /// Units of the spill area (after the first ring's slots).
    spill_units: usize,
}

impl Chain {
    /// The layout of a queue whose first ring has `cap0` slots of `slot` bytes, in a segment of
    /// `base_size` bytes. `max_cap` bounds an appended ring.
    pub(crate) fn new(
        cap0: u64,
        slot: u64,
        spill_units: usize,
        base_size: u64,
        growable: bool,
        max_cap: u64,
    ) -> Self {
        let mut caps = [0u64; MAX_RINGS];
        let mut extents = [(0u64, 0usize); MAX_RINGS];
        caps[0] = cap0;
        let mut off = base_size.div_ceil(PAGE) * PAGE;
        for i in 1..MAX_RINGS {
            caps[i] = (caps[i - 1] * 2).min(max_cap.max(cap0));
            let len = (RING_HEAD as u64 + caps[i] * slot).div_ceil(PAGE) * PAGE;
            extents[i] = (off, len as usize);
            off += len;
        }
        Chain {
            caps,
            extents,
            maps: std::array::from_fn(|_| OnceLock::new()),
            growable,
            slot: slot as usize,
            spill_units,
        }
    }

    /// The spill area, if the queue has one.
    #[inline]
    pub(crate) fn spill<'a>(&'a self, obj: &'a Object<QueueBlock>) -> Option<Spill<'a>> {
        let slots = self.caps[0] as usize * self.slot;
        (self.spill_units > 0).then(|| Spill {
            ctl: &obj.block().spill,
            seg: obj.segment(),
            // SAFETY: the data area holds the first ring's slots, then the spill area (checked on
            // open, sized on create); `slots` is a multiple of 8.
            base: unsafe { obj.data().0.add(slots) },
            units: self.spill_units,
        })
    }

    /// The view of ring `i` (which must exist: `i <= last`).
    #[inline]
    pub(crate) fn ring<'a>(&'a self, obj: &'a Object<QueueBlock>, i: u32) -> Result<Mpmc<'a>> {
        let (slot_size, spill) = (self.slot, self.spill(obj));
        let b = obj.block();
        if i == 0 {
            return Ok(Mpmc {
                enq: &b.enq,
                deq: &b.deq,
                // SAFETY: the data area starts with the first ring's `cap * slot` bytes (checked on
                // open, sized on create), mapped as long as `obj`.
                slots: unsafe { RingBuf::new(obj.data().0, self.caps[0] as usize * slot_size) },
                cap: self.caps[0],
                slot_size,
                spill,
                id: 0,
            });
        }
        let i = i as usize;
        if i >= MAX_RINGS || i as u32 > b.dir.last.load(Ordering::Acquire) {
            return Err(Error::Corrupt);
        }
        let map = match self.maps[i].get() {
            Some(m) => m,
            None => {
                let (off, len) = self.extents[i];
                let m = obj.segment().map_extent(off, len)?;
                let _ = self.maps[i].set(m);
                match self.maps[i].get() {
                    Some(m) => m,
                    None => return Err(Error::Corrupt),
                }
            }
        };
        let p = map.as_mut_ptr();
        // SAFETY: the mapping is `RING_HEAD + cap * slot` bytes or more (sized by `extents`, checked
        // against the file by `map_extent`), page aligned: `enq` at 0 and `deq` at 128 are aligned
        // atomics, the slots follow; the mapping lives as long as `self`.
        unsafe {
            Ok(Mpmc {
                enq: &*(p as *const AtomicU64),
                deq: &*(p.add(128) as *const AtomicU64),
                slots: RingBuf::new(p.add(RING_HEAD), self.caps[i] as usize * slot_size),
                cap: self.caps[i],
                slot_size,
                spill,
                id: i as u64,
            })
        }
    }

    /// Appends ring `last + 1` if `last` is still the newest; then seals `last`. `Ok(false)`: the
    /// queue cannot grow (bounded, or at its last ring).
    pub(crate) fn grow(
        &self,
        obj: &Object<QueueBlock>,
        me: u32,
        last: u32,
        deadline: Deadline,
        seal: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        let next = last as usize + 1;
        if !self.growable || next >= MAX_RINGS {
            return Ok(false);
        }
        let b = obj.block();
        let seg = obj.segment();
        if b.dir.last.load(Ordering::Acquire) == last {
            // Another producer may be growing it right now: even `put_nowait` waits a little for
            // that, since an unbounded queue is never full (a grower stopped for longer makes it
            // `Full`); a call with a timeout waits as long as its timeout allows.
            let floor = std::time::Duration::from_millis(100);
            let deadline = match deadline.remaining() {
                Some(r) if r.is_zero() => Deadline::after(Some(floor)),
                _ => deadline,
            };
            b.grow.lock(seg, me, deadline)?;
            // Each step is idempotent, so a grower that died half way left nothing to undo.
            b.grow.mark_consistent();
            let grown = (|| -> Result<()> {
                if b.dir.last.load(Ordering::Acquire) == last {
                    let (off, len) = self.extents[next];
                    seg.extend(off + len as u64)?;
                    // ORDERING: Release: the new ring's file range exists before anyone reads it.
                    b.dir.last.store(next as u32, Ordering::Release);
                }
                Ok(())
            })();
            b.grow.unlock();
            grown?;
        }
        crate::hooks::hit(crate::hooks::Point::GrowAppended);
        seal()?;
        Ok(true)
    }
}
