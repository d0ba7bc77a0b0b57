//! `Barrier`: `parties` processes wait until all of them have arrived; Python's
//! `multiprocessing.Barrier`.
//!
//! One shared word, `state`, holds the generation, how the generation before it ended, and the count
//! of arrivals, so an arrival learns its generation and its index at once (`fetch_add`). Every
//! change of `state` is a read-modify-write, and a generation ends by exactly one compare-and-swap
//! from a value of that generation: by its last arrival (the round passed) or by `reset` (the round
//! was cancelled). That CAS writes the next generation with `PREV_RESET` saying which it was, so a
//! waiter that sees the generation move on reads its round's outcome from the same load. A waiter
//! that looks only after a later generation has ended too (it was descheduled, or stopped) reads it
//! from `history`: whoever ends generation `g + 1` first copies `g`'s outcome there (it is fixed by
//! then), before its CAS publishes `g + 2`. The record is exact for as long as the generation number
//! is, 2^15 generations.
//!
//! `abort` breaks the barrier for everyone waiting and everyone who comes later, until `reset`; a
//! waiter whose timeout passes breaks it too, as in Python, and hears [`Error::Timeout`] (the others
//! [`Error::BrokenBarrier`]). It does so by cancelling its round with the same CAS `reset` uses, so
//! a round whose last party arrives just as a waiter's time runs out either passes for everyone or
//! breaks for everyone; then it marks the barrier broken. `reset` makes it usable again at once;
//! the parties waiting at that moment get [`Error::BrokenBarrier`], as in Python.
//!
//! A party that is gone never arrives, so waiting for it would be waiting forever: the barrier
//! remembers the claim (participant slot and the slot's generation, so a process that later takes
//! the same slot is not mistaken for it) of every process that has waited on it since it was made or
//! reset, and a waiter checks them between sleeps. One that died (or exited) breaks the barrier for
//! the others within about two `PROBE_INTERVAL`s. A process that dies before it first waits is not
//! known as a party yet: give the waiters a timeout for that case.
//!
//! A waiter first spins as its handle's wait strategy says (the round may end within microseconds
//! when every party runs), then sleeps on `state` in slices of `PROBE_INTERVAL`.

use crate::error::{Error, Result};
use crate::locks::builder::{Built, SyncBuilder};
use crate::segment::object::{OBJECT_SLOTS, Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::sys::futex;
use crate::wait::{Deadline, PROBE_INTERVAL, Spinner, WaitStrategy};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `state`: arrivals in the current generation.
const ARRIVALS: u32 = 0xffff;
/// `state`: the generation before the current one ended by `reset`.
const PREV_RESET: u32 = 1 << 16;
/// `state`: the generation number, in the bits above.
const GEN_SHIFT: u32 = 17;
const GENERATIONS: usize = 1 << (32 - GEN_SHIFT);
const MAX_PARTIES: u32 = ARRIVALS;
const _: () = assert!(PREV_RESET > ARRIVALS && PREV_RESET < 1 << GEN_SHIFT);

#[inline]
fn generation(s: u32) -> u32 {
    s >> GEN_SHIFT
}

/// The first state of the generation after `s`'s.
#[inline]
fn next_generation(s: u32, by_reset: bool) -> u32 {
    let g = generation(s).wrapping_add(1) << GEN_SHIFT;
    if by_reset { g | PREV_RESET } else { g }
}

#[repr(C)]
pub(crate) struct BarrierBlock {
    /// generation << 17 | PREV_RESET | arrivals (module docs); also the futex word.
    state: AtomicU32,
    broken: AtomicU32,
    /// Bit `g`: generation `g` ended by `reset` (written before generation `g + 1` ends).
    history: [AtomicU64; GENERATIONS / 64],
    /// By participant slot, the claim of the process in it that has waited since creation or the
    /// last reset (0: none).
    parties: [AtomicU32; OBJECT_SLOTS as usize],
}
// SAFETY: repr(C), all atomics.
unsafe impl SharedBlock for BarrierBlock {}

struct BarrierTag;
const PARAM_PARTIES: usize = 0;

/// A barrier for `parties` processes (or threads).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Barrier, Error, Process};
/// use std::time::Duration;
/// let b = Barrier::new(2)?;
/// let b2 = b.clone();
/// let p = Process::fork(move || {
///     b2.wait().unwrap();
/// })?;
/// let index = b.wait()?;
/// assert!(index < 2);
/// assert!(p.join()?.success());
/// // The child has exited: a party that is gone would break the next round, so forget it.
/// b.reset()?;
/// // Alone, a timed wait times out, and breaks the barrier for the others until reset.
/// assert!(matches!(b.wait_timeout(Duration::from_millis(10)), Err(Error::Timeout)));
/// assert!(b.broken());
/// b.reset()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Barrier {
    obj: Object<BarrierBlock>,
    parties: u32,
    wait: WaitStrategy,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("broken", &self.broken())
            .finish()
    }
}

impl Built for Barrier {
    type Init = u32;
}

impl SyncBuilder<Barrier> {
    /// Creates the barrier; [`Error::Invalid`] unless it has 1 to 65535 parties.
    pub fn build(self) -> Result<Barrier> {
        let parties = self.init;
        if parties == 0 || parties > MAX_PARTIES {
            return Err(Error::invalid(format!(
                "a barrier needs 1 to 65535 parties, not {parties}; pass a count in that range"
            )));
        }
        let mut p = [0u64; 6];
        p[PARAM_PARTIES] = u64::from(parties);
        Ok(Barrier {
            obj: self.create(|name| {
                Object::create(Kind::Sync, fingerprint_of::<BarrierTag>(), p, 0, name)
            })?,
            parties,
            wait: self.wait,
        })
    }
}

impl Barrier {
    /// A barrier for `parties` (1 to 65535), shared with children forked later.
    pub fn new(parties: u32) -> Result<Barrier> {
        Self::builder(parties).build()
    }

    /// A named barrier for `parties`.
    pub fn create(name: &str, parties: u32) -> Result<Barrier> {
        Self::builder(parties).name(name).build()
    }

    /// Options for a barrier of `parties`: a name, a wait strategy (see [`SyncBuilder`]).
    pub fn builder(parties: u32) -> SyncBuilder<Barrier> {
        SyncBuilder::new(parties)
    }

    /// How this handle's blocked calls wait.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Changes how this handle's blocked calls wait (its clones keep theirs).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Opens the barrier named `name`, with the default wait strategy.
    pub fn open(name: &str) -> Result<Barrier> {
        let obj: Object<BarrierBlock> =
            Object::open(Kind::Sync, fingerprint_of::<BarrierTag>(), name)?;
        let parties = obj.params()[PARAM_PARTIES];
        if parties == 0 || parties > u64::from(MAX_PARTIES) {
            return Err(Error::Corrupt);
        }
        Ok(Barrier {
            obj,
            parties: parties as u32,
            wait: WaitStrategy::default(),
        })
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many are waiting now.
    pub fn n_waiting(&self) -> u32 {
        self.obj.block().state.load(Ordering::Acquire) & ARRIVALS
    }

    /// Whether it is broken (aborted, or a waiter timed out) and not yet reset.
    pub fn broken(&self) -> bool {
        self.obj.block().broken.load(Ordering::Acquire) != 0
    }

    /// Waits until every party has arrived; returns this party's arrival index (0 to parties - 1).
    pub fn wait(&self) -> Result<u32> {
        self.wait_until(None, None)
    }

    /// [`wait`](Self::wait) for at most `timeout`. When it passes, this call returns
    /// [`Error::Timeout`] and breaks the barrier, as in Python: the parties waiting with it, and
    /// later arrivals until [`reset`](Self::reset), get [`Error::BrokenBarrier`]. (If the round
    /// passed at that very moment, it passed for everyone, and this call returns its index.)
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        // A timeout past the end of time is none.
        self.wait_until(Instant::now().checked_add(timeout), None)
    }

    /// The current generation: the number of the round now filling (15 bits, wrapping). A round
    /// that passes, is cancelled by [`reset`](Self::reset) while parties wait in it, or breaks,
    /// moves it on. With [`wait_in`](Self::wait_in), a party can tell a round it meant to join
    /// from a later one.
    pub fn generation(&self) -> u32 {
        generation(self.obj.block().state.load(Ordering::Acquire))
    }

    /// [`wait`](Self::wait) (for at most `timeout`, if given), arriving only in round
    /// `generation` (see [`generation`](Self::generation)): [`Error::BrokenBarrier`], without
    /// arriving, if that round has ended (passed, reset or broken). A two-phase barrier uses it so
    /// that a party whose round was reset does not arrive in the next one.
    pub fn wait_in(&self, generation: u32, timeout: Option<Duration>) -> Result<u32> {
        let until = timeout.and_then(|t| Instant::now().checked_add(t));
        self.wait_until(until, Some(generation))
    }

    /// Counts this process as a party without arriving: from now until the next
    /// [`reset`](Self::reset), its death (or exit) breaks the waits, as for a process that has
    /// waited on the barrier before. For a party that will wait later, after work the others wait
    /// for (the action of a two-phase barrier), so that its death before then is noticed.
    pub fn enrol(&self) -> Result<()> {
        let me = self.obj.me()?;
        self.take_seat(me);
        Ok(())
    }

    /// Puts `me` in this process's seat (if its slot has one), unless it is there already.
    fn take_seat(&self, me: u32) {
        let seat = self
            .obj
            .block()
            .parties
            .get(self.obj.segment().my_slot() as usize);
        if let Some(seat) = seat {
            if seat.load(Ordering::Acquire) != me {
                seat.store(me, Ordering::Release);
            }
        }
    }

    fn wait_until(&self, until: Option<Instant>, only: Option<u32>) -> Result<u32> {
        let me = self.obj.me()?;
        let b = self.obj.block();
        if self.broken() {
            return Err(Error::BrokenBarrier);
        }
        if only.is_some_and(|g| self::generation(b.state.load(Ordering::Acquire)) != g) {
            // That round ended: not a party of the current one (a seat taken now would make this
            // process's exit break it).
            return Err(Error::BrokenBarrier);
        }
        self.take_seat(me);
        // ORDERING: AcqRel, like every change of `state`: the word carries the protocol.
        let s = match only {
            None => b.state.fetch_add(1, Ordering::AcqRel),
            Some(g) => {
                let mut s = b.state.load(Ordering::Acquire);
                loop {
                    if self::generation(s) != g {
                        return Err(Error::BrokenBarrier); // that round ended: not arrived
                    }
                    if s & ARRIVALS >= self.parties {
                        self.abort(); // more arrivals than parties: misuse, as below
                        return Err(Error::BrokenBarrier);
                    }
                    match b.state.compare_exchange_weak(
                        s,
                        s + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => break s,
                        Err(now) => s = now,
                    }
                }
            }
        };
        // A reset that forgot the parties just before our arrival: be remembered in the new round.
        // (Its CAS came before our fetch_add, so its clearing of the seats is visible here.)
        self.take_seat(me);
        let (generation, index) = (generation(s), s & ARRIVALS);
        if index >= self.parties {
            // More arrivals than parties: the barrier is being misused; break it for all.
            self.abort();
            return Err(Error::BrokenBarrier);
        }
        if index + 1 == self.parties {
            // The round passes, unless a reset ended it first.
            if self.end_generation(generation, false) {
                futex::wake(&b.state, u32::MAX);
                return Ok(index);
            }
            return self.outcome(generation).map(|()| index);
        }
        // The round may end within microseconds when every party runs: spin first, as the handle's
        // strategy says (never past the deadline).
        let deadline = Deadline::after(until.map(|u| u.saturating_duration_since(Instant::now())));
        let ended = || self::generation(b.state.load(Ordering::Acquire)) != generation;
        Spinner::new(self.wait)
            .spin_for(|| Ok((ended() || self.broken()).then_some(())), deadline)?;
        loop {
            let now = b.state.load(Ordering::Acquire);
            if self::generation(now) != generation {
                return self.outcome(generation).map(|()| index);
            }
            if self.broken() {
                // Unless our round passed just before the barrier broke.
                return self.outcome(generation).map(|()| index);
            }
            let mut slice = PROBE_INTERVAL;
            if let Some(u) = until {
                let left = u.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // Python: the party whose wait times out breaks the barrier.
                    if self.break_round(generation) {
                        return Err(Error::Timeout);
                    }
                    return self.outcome(generation).map(|()| index);
                }
                slice = slice.min(left);
            }
            futex::wait(&b.state, now, Some(slice));
            if b.state.load(Ordering::Acquire) == now && self.a_party_is_gone()? {
                self.break_round(generation);
                return self.outcome(generation).map(|()| index);
            }
        }
    }

    /// Breaks the barrier from inside round `generation`: cancels the round (the CAS `reset` uses,
    /// so the round's parties all get [`Error::BrokenBarrier`]) and marks the barrier broken for
    /// later arrivals. `false` if the round had ended first (passed, or reset): then nothing is
    /// broken, and the round's outcome stands.
    fn break_round(&self, generation: u32) -> bool {
        if !self.end_generation(generation, true) {
            return false;
        }
        self.abort();
        true
    }

    /// Ends `generation` if it is still the current one (see the module docs): passed, or cancelled
    /// `by_reset`. Whether this call ended it.
    fn end_generation(&self, generation: u32, by_reset: bool) -> bool {
        let b = self.obj.block();
        let mut s = b.state.load(Ordering::Acquire);
        while self::generation(s) == generation {
            self.record_outcome(generation.wrapping_sub(1), s & PREV_RESET != 0);
            // ORDERING: Release publishes the record above to whoever sees a later generation.
            match b.state.compare_exchange_weak(
                s,
                next_generation(s, by_reset),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    /// Records in `history` how `generation` ended.
    fn record_outcome(&self, generation: u32, by_reset: bool) {
        let g = generation as usize % GENERATIONS;
        let (word, bit) = (&self.obj.block().history[g / 64], 1u64 << (g % 64));
        if (word.load(Ordering::Relaxed) & bit != 0) != by_reset {
            if by_reset {
                word.fetch_or(bit, Ordering::Relaxed);
            } else {
                word.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    /// The outcome of `generation` for a party that arrived in it: `Ok` if the round passed,
    /// [`Error::BrokenBarrier`] if a reset cancelled it or the barrier broke while it ran.
    fn outcome(&self, generation: u32) -> Result<()> {
        let b = self.obj.block();
        let now = b.state.load(Ordering::Acquire);
        let by_reset = if self::generation(now) == generation {
            return Err(Error::BrokenBarrier); // still running: the barrier is broken
        } else if self::generation(now) == generation.wrapping_add(1) % GENERATIONS as u32 {
            now & PREV_RESET != 0
        } else {
            let g = generation as usize % GENERATIONS;
            b.history[g / 64].load(Ordering::Relaxed) & (1u64 << (g % 64)) != 0
        };
        if by_reset {
            Err(Error::BrokenBarrier)
        } else {
            Ok(())
        }
    }

    /// Whether a process that has waited on the barrier (since it was made or reset) is gone.
    fn a_party_is_gone(&self) -> Result<bool> {
        let seg = self.obj.segment();
        for seat in &self.obj.block().parties {
            let id = seat.load(Ordering::Acquire);
            if id != 0 && !seg.claim_alive(id)? {
                return Ok(true);
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

    /// Makes the barrier usable again: the parties waiting in it now get [`Error::BrokenBarrier`]
    /// (as in Python), the next arrivals start a new round, and the processes that waited before are
    /// forgotten (a dead one no longer breaks it).
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

    fn reset_with(&self, between: impl FnOnce()) -> Result<()> {
        self.obj.me()?;
        let b = self.obj.block();
        for seat in &b.parties {
            seat.store(0, Ordering::Release);
        }
        let mut s = b.state.load(Ordering::Acquire);
        between();
        loop {
            let arrivals = s & ARRIVALS;
            let generation = generation(s);
            let next = if arrivals == 0 {
                s // nobody to cancel: the CAS only orders us after every arrival so far
            } else {
                // Everyone arrived: the round has passed, its last arrival is only slow to say so.
                let by_reset = arrivals < self.parties;
                self.record_outcome(generation.wrapping_sub(1), s & PREV_RESET != 0);
                next_generation(s, by_reset)
            };
            // ORDERING: as in `end_generation`; after our clearing of the seats, for arrivals.
            match b
                .state
                .compare_exchange(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        b.broken.store(0, Ordering::SeqCst);
        futex::wake(&b.state, u32::MAX);
        Ok(())
    }
}
