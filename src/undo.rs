//! An undo log in shared memory: what makes an operation of several word stores under a robust
//! mutex all-or-nothing when its holder dies part way (the manager's allocator, `manager::alloc`).
//!
//! **Protocol.** Before the holder changes a word, it records the word's address and old value in
//! the next entry, then raises the count (Release), then writes the new value ([`set`](UndoLog::set)).
//! When the operation is whole, one store of 0 to the count is its commit point
//! ([`commit`](UndoLog::commit)). The next holder after a holder died (the mutex says so) writes
//! the recorded old values back, newest first, and empties the log ([`rollback`](UndoLog::rollback)):
//! the dead holder's operation never happened, however far it got. An entry whose word was not
//! written yet holds the word's current value, so writing it back changes nothing. The count is
//! the only thing that says how far the log goes, and it is raised only once the entry is whole.
//!
//! The log lives in the shared control block (a `#[repr(C)]` field): its bytes are a count and
//! `N` pairs of words, all atomics, valid for any bytes; a hostile count is clamped to `N`, a
//! hostile address is the caller's to check (`rollback` asks it for each word).
//!
//! Under `--cfg loom` the atomics are loom's, and each step of `set` and `commit` is a point where
//! the model's holder may die (`crate::loom::crash_point`): see `undo::loom_tests`.

use crate::loom::{AtomicU64, Ordering};

/// The undo log of `N` entries (address, old value).
#[repr(C)]
pub(crate) struct UndoLog<const N: usize> {
    len: AtomicU64,
    entries: [[AtomicU64; 2]; N],
}

/// The log is full: the operation changes more words than it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl<const N: usize> UndoLog<N> {
    /// An empty log on the heap (the models; in shared memory zeroed bytes are an empty log).
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        UndoLog {
            len: AtomicU64::new(0),
            entries: std::array::from_fn(|_| [AtomicU64::new(0), AtomicU64::new(0)]),
        }
    }

    /// Records the old value of `w` (whose address the caller names `addr`), then writes `v` there.
    pub(crate) fn set(&self, addr: u64, w: &AtomicU64, v: u64) -> Result<(), Full> {
        let n = self.len.load(Ordering::Relaxed) as usize;
        if n >= N {
            return Err(Full);
        }
        self.entries[n][0].store(addr, Ordering::Relaxed);
        crate::loom::crash_point();
        self.entries[n][1].store(w.load(Ordering::Relaxed), Ordering::Relaxed);
        crate::loom::crash_point();
        // ORDERING: Release: the entry is in the log before the count says so, and the count before
        // the word changes (a dead holder's stores are all visible to the recoverer: its exit is a
        // full barrier; these keep the compiler from reordering them).
        self.len.store(n as u64 + 1, Ordering::Release);
        crate::loom::crash_point();
        w.store(v, Ordering::Release);
        crate::loom::crash_point();
        Ok(())
    }

    /// The operation is whole: empties the log (its commit point).
    pub(crate) fn commit(&self) {
        self.len.store(0, Ordering::Release);
        crate::loom::crash_point();
    }

    /// Whether the log is empty (no operation under way, or one committed). (For the audit hook and
    /// the models.)
    #[cfg(any(loom, feature = "test-hooks"))]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// Writes back the old values the log holds, newest first (`word(addr)` gives the word at a
    /// recorded address, `None` for one that is not a word: skipped), then empties the log.
    pub(crate) fn rollback<'a>(&self, word: impl Fn(u64) -> Option<&'a AtomicU64>) {
        let n = (self.len.load(Ordering::Acquire) as usize).min(N);
        for i in (0..n).rev() {
            let addr = self.entries[i][0].load(Ordering::Relaxed);
            let old = self.entries[i][1].load(Ordering::Relaxed);
            if let Some(w) = word(addr) {
                w.store(old, Ordering::Relaxed);
            }
        }
        self.len.store(0, Ordering::Release);
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
