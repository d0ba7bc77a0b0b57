//! What a participant has: its slot in the ledger, the round's flags, and [`Ctx::call`], which
//! times a blocking call against its bound.

use super::ledger::{Ledger, Slot, now_ns};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The timeout every participant gives a blocking call.
pub const T: Duration = Duration::from_millis(200);
/// A call is a hang when it takes longer than this many times its documented bound (the bound the
/// project's tests may assert: 10x).
pub const HANG_FACTOR: u32 = 10;

pub struct Ctx {
    pub l: Ledger,
    pub slot: usize,
    pub prim: &'static str,
    pub rng: Rng,
}

impl Ctx {
    pub fn s(&self) -> &Slot {
        self.l.slot(self.slot)
    }

    /// The round is over (producers stop).
    pub fn stopping(&self) -> bool {
        self.l.header().stop.load(Ordering::Acquire) >= 1
    }

    pub fn op(&self) {
        self.s().ops.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f`, a blocking call whose documented bound is `bound`; when it took more than
    /// [`HANG_FACTOR`] x `bound` while this process was not stopped, counts and reports a hang.
    pub fn call<R>(&self, what: &str, bound: Duration, f: impl FnOnce() -> R) -> R {
        let gen0 = self.s().stop_gen.load(Ordering::Acquire);
        let t0 = now_ns();
        let r = f();
        let took = Duration::from_nanos(now_ns() - t0);
        let stopped = self.s().stop_gen.load(Ordering::Acquire) != gen0 || gen0 % 2 == 1;
        if took > bound * HANG_FACTOR && !stopped {
            self.s().hangs.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "stress: HANG {} slot {}: {what} took {took:?} (bound {bound:?})",
                self.prim, self.slot
            );
        }
        r
    }

    /// Counts and reports a wrong result.
    pub fn wrong(&self, what: std::fmt::Arguments) {
        self.s().wrong.fetch_add(1, Ordering::Relaxed);
        eprintln!("stress: WRONG {} slot {}: {what}", self.prim, self.slot);
    }

    pub fn saw_death(&self) {
        self.s().saw_death.fetch_add(1, Ordering::Relaxed);
    }

    /// A lock taken over from a dead holder: counted, and marked consistent. Whether it was.
    pub fn recover(&self, g: &shmwire::LockGuard<'_>) -> bool {
        let died = g.owner_died();
        if died {
            self.saw_death();
            g.mark_consistent();
        }
        died
    }
}

/// xorshift64*: the participants' and the supervisor's randomness (seeded, reproducible).
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// An item: its id (8 bytes, little-endian), then `len - 8` bytes derived from it.
pub fn make_item(id: u64, len: usize) -> Vec<u8> {
    let len = len.max(8);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&id.to_le_bytes());
    let f = fill(id);
    v.resize(len, f);
    v
}

fn fill(id: u64) -> u8 {
    (id ^ (id >> 48) ^ 0x5a) as u8
}

/// The id of an intact item, or `None` if damaged.
pub fn check_item(v: &[u8]) -> Option<u64> {
    let id = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
    let f = fill(id);
    v[8..].iter().all(|&b| b == f).then_some(id)
}
