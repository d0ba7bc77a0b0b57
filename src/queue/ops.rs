//! The machinery under a queue's `put` and `get`: which ring to use, the spill area, waiting while
//! full or empty, and the repair of what dead producers and consumers left.

use super::rings;
use super::{Dir, Queue};
use crate::error::{Error, Result};
use crate::ring::mpmc::{Attempt, Item, Mpmc, SLOT_HEADER};
use crate::ring::spill::{SlotNow, Spill};
use crate::wait::eventcount::EventCount;
use crate::wait::{Deadline, Spinner, block_on};
use std::sync::atomic::Ordering;

/// Rounds one attempt to put or take may make across the rings before it reports "wait".
const RETRIES: usize = 2 * rings::MAX_RINGS + 2;

impl<T> Queue<T> {
    /// Runs `check` until it is ready (`block_on` on `ec`, with this handle's wait strategy and a
    /// repair of what the dead left between sleeps). The first attempt comes before any waiting
    /// state is built: the fast path, a queue neither full nor empty, pays for none of it.
    #[inline(always)]
    pub(super) fn wait_on<R>(
        &self,
        ec: &EventCount,
        deadline: Deadline,
        mut check: impl FnMut() -> Result<Option<R>>,
    ) -> Result<R> {
        match check()? {
            Some(v) => Ok(v),
            None => self.wait_slow(ec, deadline, check),
        }
    }

    #[cold]
    #[inline(never)]
    fn wait_slow<R>(
        &self,
        ec: &EventCount,
        deadline: Deadline,
        check: impl FnMut() -> Result<Option<R>>,
    ) -> Result<R> {
        let mut spinner = Spinner::new(self.wait);
        block_on(&mut spinner, false, ec, deadline, check, || self.repair())
    }

    pub(super) fn spill(&self) -> Option<Spill<'_>> {
        self.chain.spill(&self.obj)
    }

    /// Ring `i` of the queue.
    pub(super) fn ring_at(&self, i: u32) -> Result<Mpmc<'_>> {
        self.chain.ring(&self.obj, i)
    }

    /// Ring `i`, from `cache` when it holds that ring (a blocked call retries without rebuilding it).
    pub(super) fn ring_cached<'s, 'c>(
        &'s self,
        i: u32,
        cache: &'c mut Option<(u32, Mpmc<'s>)>,
    ) -> Result<&'c Mpmc<'s>> {
        if cache.as_ref().is_none_or(|(j, _)| *j != i) {
            *cache = Some((i, self.ring_at(i)?));
        }
        // A `match`, not `ok_or`: the fast path builds and drops no `Error` (an out-of-line drop).
        match cache {
            Some((_, r)) => Ok(r),
            None => Err(Error::Corrupt),
        }
    }

    /// The largest item a slot holds.
    pub(super) fn max_inline(&self) -> usize {
        self.chain.slot - SLOT_HEADER
    }

    pub(super) fn dir(&self) -> &Dir {
        &self.obj.block().dir
    }

    pub(super) fn closed(&self) -> bool {
        self.dir().closed.load(Ordering::Acquire) != 0
    }

    /// The rings in use, `head..=last`, checked: a scribbled directory is `Corrupt`, never a long
    /// walk.
    pub(super) fn span(&self) -> Result<(u32, u32)> {
        if !self.chain.growable {
            return Ok((0, 0)); // one ring, whatever the directory says
        }
        let (head, last) = (
            self.dir().head.load(Ordering::Acquire),
            self.dir().last.load(Ordering::Acquire),
        );
        if head > last || last as usize >= rings::MAX_RINGS {
            return Err(Error::Corrupt);
        }
        Ok((head, last))
    }

    /// Repairs what dead producers and consumers left, in every ring in use and the spill area.
    pub(super) fn repair(&self) -> Result<()> {
        let seg = self.obj.segment();
        let alive = |id| seg.claim_alive(id);
        let (head, last) = self.span()?;
        for i in head..=last {
            let lost = self.ring_at(i)?.repair(alive)?;
            if self.obj.block().joinable.load(Ordering::Relaxed) != 0 {
                self.obj.block().held.lost(lost);
            }
        }
        if let Some(spill) = self.spill() {
            spill.repair(self.obj.me()?, alive, |pos| {
                let (ring, p) = Mpmc::split_spill_pos(pos);
                match u32::try_from(ring).map(|r| self.ring_at(r)) {
                    Ok(Ok(r)) => r.slot_now(p, alive),
                    _ => SlotNow::InUse,
                }
            })?;
        }
        Ok(())
    }

    pub(super) fn put_bytes_at(&self, bytes: &[u8], deadline: Deadline) -> Result<()> {
        if bytes.len() > self.max_inline() {
            return self.put_spilled(
                bytes.len(),
                |buf| {
                    buf.copy_from_slice(bytes);
                    Ok(())
                },
                deadline,
            );
        }
        let me = self.obj.me()?;
        self.publish(me, Item::Inline(bytes), deadline)
    }

    /// Puts an item of `len` bytes (more than a slot holds) that `fill` writes into a spill block:
    /// waits for room in the spill area, fills the block before claiming a slot, then publishes.
    pub(super) fn put_spilled(
        &self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
        deadline: Deadline,
    ) -> Result<()> {
        let me = self.obj.me()?;
        let Some(spill) = self.spill() else {
            return Err(Error::TooLarge);
        };
        if len > spill.max_item() {
            return Err(Error::TooLarge);
        }
        let b = self.obj.block();
        let alloc = || -> Result<Option<_>> {
            if self.closed() {
                return Err(Error::Closed);
            }
            spill.alloc(me, len, deadline)
        };
        let block = self.wait_on(&b.not_full, deadline, alloc)?;
        crate::hooks::hit(crate::hooks::Point::SpillAllocated);
        let out = spill
            .fill(block, len, fill)
            .and_then(|()| self.publish(me, Item::Spilled(block, len), deadline));
        if out.is_err() {
            spill.free(me, block)?;
            let _ = b.not_full.notify();
        }
        out
    }

    /// One attempt to put `item` into the newest ring; an unbounded queue whose newest ring is full
    /// grows. `Ok(None)`: full.
    pub(super) fn try_place<'s>(
        &'s self,
        me: u32,
        item: Item<'_>,
        deadline: Deadline,
        cache: &mut Option<(u32, Mpmc<'s>)>,
    ) -> Result<Option<()>> {
        // Each round moves to a newer ring, so an honest queue needs at most one per ring; words a
        // peer rewrites between rounds must not keep this loop going (the caller waits, with its
        // deadline, and tries again).
        for _ in 0..RETRIES {
            if self.closed() {
                return Err(Error::Closed);
            }
            let last = self.span()?.1;
            let ring = self.ring_cached(last, cache)?;
            match ring.try_put(me, item)? {
                Attempt::Done(()) => return Ok(Some(())),
                // Sealed: a newer ring exists (unless the queue is damaged: then wait). The newer
                // ring is what `span` says, checked (a queue that cannot grow has one ring,
                // whatever its directory says).
                Attempt::Sealed if self.span()?.1 != last => {}
                Attempt::Sealed => return Ok(None),
                Attempt::Wait => {
                    let seal = || {
                        ring.seal();
                        Ok(())
                    };
                    if !self.chain.grow(&self.obj, me, last, deadline, seal)? {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Claims a slot for `item` and publishes it, waiting while the queue is full.
    pub(super) fn publish(&self, me: u32, item: Item<'_>, deadline: Deadline) -> Result<()> {
        let b = self.obj.block();
        let mut cache = None;
        let attempt = || self.try_place(me, item, deadline, &mut cache);
        self.wait_on(&b.not_full, deadline, attempt)?;
        let _ = b.not_empty.notify();
        Ok(())
    }

    /// One attempt to take the oldest item: from the head ring, moving on to the next ring once the
    /// head is sealed and drained. `Ok(None)`: empty.
    pub(super) fn try_take<'s, R>(
        &'s self,
        me: u32,
        read: &mut impl FnMut(&[u8]) -> R,
        cache: &mut Option<(u32, Mpmc<'s>)>,
        mut claimed: impl FnMut(),
    ) -> Result<Option<R>> {
        let dir = self.dir();
        // Bounded as `try_place`'s rounds: one per ring an honest queue moves past.
        for _ in 0..RETRIES {
            let (head, last) = self.span()?;
            let ring = self.ring_cached(head, cache)?;
            let newer = head < last;
            match ring.try_get(me, newer, &mut *read, &mut claimed)? {
                Attempt::Done(v) => return Ok(Some(v)),
                Attempt::Sealed if newer => {
                    let _ = dir.head.compare_exchange(
                        head,
                        head + 1,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
                // Producers moved to a newer ring: make sure this one ends (a grower that died
                // before sealing it), then look again.
                Attempt::Wait if newer && ring.seal() => {}
                Attempt::Wait if !newer && self.closed() && !ring.has_pending() => {
                    return Err(Error::Eof);
                }
                Attempt::Wait | Attempt::Sealed => return Ok(None),
            }
        }
        Ok(None)
    }

    pub(super) fn get_with<R>(
        &self,
        deadline: Deadline,
        mut read: impl FnMut(&[u8]) -> R,
    ) -> Result<R> {
        let me = self.obj.me()?;
        let b = self.obj.block();
        let mut cache = None;
        // A JoinableQueue's consumer counts the item as held *before* it claims it (and takes the
        // count back if it finds nothing), so that `join` never sees an item in neither place.
        let out = if b.joinable.load(Ordering::Relaxed) == 0 {
            let attempt = || self.try_take(me, &mut read, &mut cache, || {});
            self.wait_on(&b.not_empty, deadline, attempt)?
        } else {
            let slot = self.obj.segment().my_slot();
            let attempt = || {
                b.held.hold(slot, me);
                let mut claimed = false;
                let got = self.try_take(me, &mut read, &mut cache, || {
                    claimed = true;
                    b.held.claimed(slot, me);
                });
                if !matches!(got, Ok(Some(_))) {
                    b.held.unhold(slot, me, claimed);
                }
                got
            };
            self.wait_on(&b.not_empty, deadline, attempt)?
        };
        let _ = b.not_full.notify();
        Ok(out)
    }
}
