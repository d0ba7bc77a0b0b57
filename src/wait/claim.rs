//! Claim words: who is using one side of a ring right now.
//!
//! An SPSC ring has one reader and one writer. Several processes may *hold* the same end (a forked
//! copy), and may take turns with it, but two of them using it at once would corrupt the ring. Each
//! operation therefore claims its side with one CAS (on a cache line the side owns anyway) and
//! releases it with one store. A claim held by a dead process is taken over; one held by a live
//! process (running or stopped) is [`Error::Busy`].

use crate::error::{Error, Result};
use crate::loom::{AtomicU32, Ordering};

/// Releases the claim when dropped (also on unwind).
pub(crate) struct ClaimGuard<'a> {
    word: &'a AtomicU32,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        // ORDERING: Release, so the next claimer sees everything done under this claim.
        self.word.store(0, Ordering::Release);
    }
}

/// Claims `word` for `me` (never 0). `alive(id)` says whether the current claimer is a live process.
#[inline]
pub(crate) fn claim<'a>(
    word: &'a AtomicU32,
    me: u32,
    alive: impl FnOnce(u32) -> Result<bool>,
) -> Result<ClaimGuard<'a>> {
    match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
        Ok(_) => Ok(ClaimGuard { word }),
        Err(other) => take_over(word, me, other, alive),
    }
}

#[cold]
fn take_over<'a>(
    word: &'a AtomicU32,
    me: u32,
    other: u32,
    alive: impl FnOnce(u32) -> Result<bool>,
) -> Result<ClaimGuard<'a>> {
    if other == me || alive(other)? {
        // Ourselves (a re-entrant call) or another live process using this side right now.
        return Err(Error::Busy);
    }
    match word.compare_exchange(other, me, Ordering::Acquire, Ordering::Relaxed) {
        Ok(_) => Ok(ClaimGuard { word }),
        Err(_) => Err(Error::Busy),
    }
}
