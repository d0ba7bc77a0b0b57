//! `Barrier`: `parties` processes wait until all of them have arrived; Python's
//! `multiprocessing.Barrier`.
//!
//! One shared word holds the generation and the count of arrivals, so an arrival learns both at once
//! (`fetch_add`). `abort` breaks the barrier for everyone waiting and everyone who comes later, until
//! `reset`; a waiter whose timeout passes breaks it too, as in Python.
//!
//! A party that is gone never arrives, so waiting for it would be waiting forever: the barrier
//! remembers (by participant slot) every process that has waited on it since it was made or reset,
//! and a waiter checks their liveness tokens between sleeps. One that died (or exited) breaks the
//! barrier for the others, within about two `PROBE_INTERVAL`s. A process that dies before it first
//! waits is not known as a party yet: give the waiters a timeout for that case.

use crate::error::{Error, Result};
use crate::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::sync::futex;
use crate::sync::wait::PROBE_INTERVAL;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
pub(crate) struct BarrierBlock {
    /// generation << 16 | arrivals
    state: AtomicU32,
    broken: AtomicU32,
    /// Bumped by `reset`: waiters from before it are told the barrier broke.
    resets: AtomicU32,
    /// The participant slots of the processes that have waited since creation or the last reset.
    waited: [AtomicU64; 4],
}
// SAFETY: repr(C), all atomics.
unsafe impl SharedBlock for BarrierBlock {}

struct BarrierTag;
const PARAM_PARTIES: usize = 0;

/// A barrier for `parties` processes (or threads).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Barrier, Process};
/// let b = Barrier::new(2)?;
/// let b2 = b.clone();
/// let mut p = Process::fork(move || {
///     b2.wait().unwrap();
/// })?;
/// let index = b.wait()?;
/// assert!(index < 2);
/// p.join()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Barrier {
    obj: Object<BarrierBlock>,
    parties: u32,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("broken", &self.broken())
            .finish()
    }
}

impl Barrier {
    fn make(parties: u32, name: Option<&str>) -> Result<Barrier> {
        if parties == 0 || parties > 0xffff {
            return Err(Error::io(
                std::io::ErrorKind::InvalidInput,
                "a barrier has 1 to 65535 parties",
            ));
        }
        let mut p = [0u64; 6];
        p[PARAM_PARTIES] = u64::from(parties);
        Ok(Barrier {
            obj: Object::create(Kind::Sync, fingerprint_of::<BarrierTag>(), p, 0, name)?,
            parties,
        })
    }

    /// A barrier for `parties` (1 to 65535), shared with children forked later.
    pub fn new(parties: u32) -> Result<Barrier> {
        Self::make(parties, None)
    }

    /// A named barrier for `parties`.
    pub fn create(name: &str, parties: u32) -> Result<Barrier> {
        Self::make(parties, Some(name))
    }

    /// Opens the barrier named `name`.
    pub fn open(name: &str) -> Result<Barrier> {
        let obj: Object<BarrierBlock> =
            Object::open(Kind::Sync, fingerprint_of::<BarrierTag>(), name)?;
        let parties = obj.params()[PARAM_PARTIES];
        if parties == 0 || parties > 0xffff {
            return Err(Error::Corrupt);
        }
        Ok(Barrier {
            obj,
            parties: parties as u32,
        })
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many are waiting now.
    pub fn n_waiting(&self) -> u32 {
        self.obj.block().state.load(Ordering::Acquire) & 0xffff
    }

    /// Whether it is broken (aborted, or a waiter timed out) and not yet reset.
    pub fn broken(&self) -> bool {
        self.obj.block().broken.load(Ordering::Acquire) != 0
    }

    /// Waits until every party has arrived; returns this party's arrival index (0 to parties - 1).
    pub fn wait(&self) -> Result<u32> {
        self.wait_until(None)
    }

    /// [`wait`](Self::wait) for at most `timeout`; on timeout the barrier breaks for everyone
    /// ([`Error::BrokenBarrier`]), as in Python.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_until(Some(Instant::now() + timeout))
    }

    fn wait_until(&self, until: Option<Instant>) -> Result<u32> {
        self.obj.me()?;
        let b = self.obj.block();
        if self.broken() {
            return Err(Error::BrokenBarrier);
        }
        let resets = b.resets.load(Ordering::Acquire);
        let me = self.obj.segment().my_slot() as usize;
        if let Some(w) = b.waited.get(me / 64) {
            let bit = 1u64 << (me % 64);
            if w.load(Ordering::Relaxed) & bit == 0 {
                w.fetch_or(bit, Ordering::AcqRel);
            }
        }
        let s = b.state.fetch_add(1, Ordering::AcqRel);
        let (generation, index) = (s >> 16, s & 0xffff);
        if index >= self.parties {
            // More arrivals than parties: the barrier is being misused; break it for all.
            self.abort();
            return Err(Error::BrokenBarrier);
        }
        if index + 1 == self.parties {
            b.state.store(
                (generation.wrapping_add(1) & 0xffff) << 16,
                Ordering::Release,
            );
            futex::wake(&b.state, u32::MAX);
            return Ok(index);
        }
        loop {
            let now = b.state.load(Ordering::Acquire);
            if now >> 16 != generation {
                return Ok(index);
            }
            if self.broken() || b.resets.load(Ordering::Acquire) != resets {
                return Err(Error::BrokenBarrier);
            }
            let mut slice = PROBE_INTERVAL;
            if let Some(u) = until {
                let left = u.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.abort();
                    return Err(Error::BrokenBarrier);
                }
                slice = slice.min(left);
            }
            futex::wait(&b.state, now, Some(slice));
            if b.state.load(Ordering::Acquire) == now && self.a_party_is_gone()? {
                self.abort();
                return Err(Error::BrokenBarrier);
            }
        }
    }

    /// Whether a process that has waited on the barrier (since it was made or reset) is gone.
    fn a_party_is_gone(&self) -> Result<bool> {
        let seg = self.obj.segment();
        for (k, w) in self.obj.block().waited.iter().enumerate() {
            let mut bits = w.load(Ordering::Acquire);
            while bits != 0 {
                let i = bits.trailing_zeros();
                bits &= bits - 1;
                if !seg.slot_alive(k as u32 * 64 + i)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Breaks the barrier: every waiter, and every later arrival, gets [`Error::BrokenBarrier`].
    pub fn abort(&self) {
        let b = self.obj.block();
        b.broken.store(1, Ordering::SeqCst);
        futex::wake(&b.state, u32::MAX);
    }

    /// Makes the barrier usable again (waiters still inside get [`Error::BrokenBarrier`]).
    pub fn reset(&self) -> Result<()> {
        self.reset_with(|| {})
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: [`reset`](Self::reset), raising `signal` in this process between reading the
    /// barrier's state and replacing it.
    pub fn __reset_interrupted(&self, signal: i32) -> Result<()> {
        self.reset_with(|| {
            // SAFETY: plain syscall on ourselves.
            unsafe { libc::kill(libc::getpid(), signal) };
        })
    }

    fn reset_with(&self, mut between: impl FnMut()) -> Result<()> {
        self.obj.me()?;
        let b = self.obj.block();
        b.resets.fetch_add(1, Ordering::SeqCst);
        for w in &b.waited {
            w.store(0, Ordering::Release);
        }
        let s = b.state.load(Ordering::Acquire);
        between();
        b.state.store(
            ((s >> 16).wrapping_add(1) & 0xffff) << 16,
            Ordering::Release,
        );
        b.broken.store(0, Ordering::SeqCst);
        futex::wake(&b.state, u32::MAX);
        Ok(())
    }
}
