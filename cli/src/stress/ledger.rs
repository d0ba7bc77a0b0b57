//! The ledger: an anonymous shared mapping, made fresh for each round before the participants are
//! forked, in which they record what the library acknowledged (and what they took), so that the
//! supervisor can check it after the round. It is the stress test's own bookkeeping, independent of
//! the library under test: only atomics are ever referenced in it.
//!
//! Layout: a [`Header`], then [`SLOTS`] [`Slot`]s (one per participant), then one log of
//! [`LOG_CAP`] item ids per slot. A log entry is written, then the slot's `log_len` is published
//! (Release): an id taken from the library but not yet in the log when its process was killed is the
//! one "in flight at kill".

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Participants per round, at most (8 processes, plus a server or pool driver, plus room).
pub const SLOTS: usize = 16;
/// Log entries per slot (ids taken or received in one round).
pub const LOG_CAP: usize = 1 << 20;

/// Round-wide words.
#[repr(C)]
pub struct Header {
    /// 1: the round is over, producers stop; 2: the server stops.
    pub stop: AtomicU32,
    /// 1: consumers may start (the unbounded queue's growth phase is over).
    pub go: AtomicU32,
    /// The served queue's TCP port (0 until the server listens).
    pub port: AtomicU32,
    pub _pad: AtomicU32,
    /// Lock rounds: the count incremented under the lock (a load and a store, not an RMW: mutual
    /// exclusion is what keeps it exact).
    pub counter: AtomicU64,
    /// Lock rounds: slot + 1 of the holder inside the critical section, else 0.
    pub owner: AtomicU64,
    /// Condition rounds: tokens made and not yet taken (changed under the condition's lock).
    pub tokens: AtomicU64,
    /// Mutual-exclusion violations seen inside a critical section.
    pub violations: AtomicU64,
}

/// One participant's counters.
#[repr(C)]
pub struct Slot {
    /// Operations completed (any call that returned a value).
    pub ops: AtomicU64,
    /// Items, messages or updates the library acknowledged to this producer (its next sequence).
    pub acked: AtomicU64,
    /// Second acknowledged count (the dict's `modify` updates).
    pub acked2: AtomicU64,
    /// Bumped by the supervisor before a SIGSTOP and after the SIGCONT: a call that saw it move was
    /// stopped, and its duration says nothing about the library.
    pub stop_gen: AtomicU64,
    /// Calls that blocked past their bound.
    pub hangs: AtomicU64,
    /// Wrong results: an unexpected error, a damaged item, out of order, inconsistent state.
    pub wrong: AtomicU64,
    /// Deaths of peers this participant saw and got past (owner died, peer died, broken barrier,
    /// worker died).
    pub saw_death: AtomicU64,
    /// Tasks lost with a killed worker (`WorkerDied`): the pool's "in flight at kill".
    pub died_tasks: AtomicU64,
    /// Entries published in this slot's log.
    pub log_len: AtomicU64,
    /// 1 once the participant finished its loop and is about to exit normally.
    pub done: AtomicU64,
    /// 1 while a producer idles at its cap (what one consumer's log holds): no progress is due.
    pub capped: AtomicU64,
    pub _pad: [AtomicU64; 5],
}

pub struct Ledger {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is shared memory reached only through atomics; the pointer is valid until
// `unmap`, which only the supervisor calls, after every participant of the round is gone.
unsafe impl Send for Ledger {}
// SAFETY: as above.
unsafe impl Sync for Ledger {}

const fn slots_off() -> usize {
    std::mem::size_of::<Header>().next_multiple_of(64)
}
const fn logs_off() -> usize {
    slots_off() + SLOTS * std::mem::size_of::<Slot>()
}

impl Ledger {
    /// A fresh, zeroed mapping (anonymous and shared: forked children see the same pages).
    pub fn new() -> std::io::Result<Ledger> {
        let len = logs_off() + SLOTS * LOG_CAP * 8;
        // SAFETY: a new anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Ledger {
            base: p.cast(),
            len,
        })
    }

    /// A copy of the pointer for a participant (forked: the mapping is inherited).
    pub fn share(&self) -> Ledger {
        Ledger {
            base: self.base,
            len: self.len,
        }
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a zero-initialised Header (all atomics: any bytes are
        // valid), page-aligned, and lives until `unmap`.
        unsafe { &*(self.base as *const Header) }
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < SLOTS);
        // SAFETY: slot i lies inside the mapping, 8-aligned; all atomics.
        unsafe { &*(self.base.add(slots_off() + i * std::mem::size_of::<Slot>()) as *const Slot) }
    }

    fn log(&self, i: usize) -> &[AtomicU64] {
        assert!(i < SLOTS);
        // SAFETY: log i lies inside the mapping, 8-aligned; atomics over zeroed memory.
        unsafe {
            std::slice::from_raw_parts(
                self.base.add(logs_off() + i * LOG_CAP * 8) as *const AtomicU64,
                LOG_CAP,
            )
        }
    }

    /// Appends `id` to slot `i`'s log (only slot `i`'s process writes it). False when full.
    pub fn record(&self, i: usize, id: u64) -> bool {
        let s = self.slot(i);
        let n = s.log_len.load(Ordering::Relaxed) as usize;
        if n >= LOG_CAP {
            return false;
        }
        self.log(i)[n].store(id, Ordering::Relaxed);
        // ORDERING: Release publishes the entry before the length that covers it.
        s.log_len.store(n as u64 + 1, Ordering::Release);
        true
    }

    /// Slot `i`'s published log.
    pub fn entries(&self, i: usize) -> Vec<u64> {
        let mut v = Vec::new();
        self.for_each_entry(i, |id| v.push(id));
        v
    }

    /// Slot `i`'s published log, entry by entry (no copy of it).
    pub fn for_each_entry(&self, i: usize, mut f: impl FnMut(u64)) {
        let n = (self.slot(i).log_len.load(Ordering::Acquire) as usize).min(LOG_CAP);
        self.log(i)[..n]
            .iter()
            .for_each(|a| f(a.load(Ordering::Relaxed)));
    }

    /// Unmaps (the supervisor, after the round; the participants are gone).
    pub fn unmap(self) {
        // SAFETY: the mapping made in `new`; no reference into it outlives this call (the borrows
        // above end with the calls that made them).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An item id: the producer's slot and its sequence number.
pub fn id(slot: usize, seq: u64) -> u64 {
    ((slot as u64) << 48) | seq
}

pub fn id_slot(id: u64) -> usize {
    (id >> 48) as usize
}

pub fn id_seq(id: u64) -> u64 {
    id & ((1 << 48) - 1)
}
