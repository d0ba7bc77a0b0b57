//! How a blocked call waits: a short adaptive spin, then sleep on an eventcount in slices, probing the
//! peer's liveness between slices so that a dead peer is noticed within [`PROBE_INTERVAL`] or two.

use super::eventcount::EventCount;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// How long a blocked call sleeps before it checks that the peer is still alive. A peer killed with
/// SIGKILL is therefore noticed within about two intervals (200 ms) of its death.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// How a blocked call waits for its peer.
///
/// On a multi-core machine a wake-up through the kernel costs tens of microseconds (about 35 µs each
/// way on the VMs this crate is measured on), while two processes spinning on a shared cache line see
/// each other in a fraction of a microsecond. Spinning only pays when the peer runs on another core at
/// the same time; [`WaitStrategy::Adaptive`] measures that and stops spinning when it does not pay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin (up to 50 µs) while spinning succeeds; after consecutive spins that end in sleep anyway
    /// (the peer shares our core, or is simply slow), sleep at once and only retry spinning now and
    /// then. The default.
    #[default]
    Adaptive,
    /// Always spin for up to this long, then sleep.
    SpinThenSleep(Duration),
    /// Sleep at once: the least CPU, and each wake-up costs a futex call.
    Sleep,
}

const ADAPTIVE_SPIN: Duration = Duration::from_micros(50);
/// A sleep after a failed spin that ends this soon says the peer was waiting for our CPU (it ran only
/// once we stopped spinning); a longer one says it was merely busy or idle.
const SHORT_SLEEP: Duration = Duration::from_micros(10);
/// Consecutive failed spins after which the adaptive strategy stops spinning.
const GIVE_UP_AFTER: u32 = 3;
/// Waits skipped before the first retry of spinning; doubles on each failed retry, up to `MAX_SKIP`.
const FIRST_SKIP: u32 = 16;
const MAX_SKIP: u32 = 4096;

/// A point in time after which a blocking call gives up; `None` means never.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    pub(crate) const NEVER: Deadline = Deadline(None);

    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.map(|d| Instant::now().checked_add(d).unwrap_or_else(far_future)))
    }

    /// Time left, `None` if unbounded.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0.map(|t| t.saturating_duration_since(Instant::now()))
    }

    pub(crate) fn is_immediate_or_past(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
}

/// Per-handle spin state (process-local).
#[derive(Debug, Clone)]
pub(crate) struct Spinner {
    strategy: WaitStrategy,
    fails: u32,
    skip_left: u32,
    skip_len: u32,
}

impl Spinner {
    pub(crate) fn new(strategy: WaitStrategy) -> Self {
        Spinner {
            strategy,
            fails: 0,
            skip_left: 0,
            skip_len: FIRST_SKIP,
        }
    }

    pub(crate) fn strategy(&self) -> WaitStrategy {
        self.strategy
    }

    fn budget(&mut self) -> Duration {
        match self.strategy {
            WaitStrategy::Sleep => Duration::ZERO,
            WaitStrategy::SpinThenSleep(d) => d,
            WaitStrategy::Adaptive => {
                if self.skip_left > 0 {
                    self.skip_left -= 1;
                    Duration::ZERO
                } else {
                    ADAPTIVE_SPIN
                }
            }
        }
    }

    /// Whether the next wait would start by spinning.
    #[inline]
    pub(crate) fn spins_now(&self) -> bool {
        match self.strategy {
            WaitStrategy::Sleep => false,
            WaitStrategy::SpinThenSleep(d) => !d.is_zero(),
            WaitStrategy::Adaptive => self.skip_left == 0,
        }
    }

    /// Whether this waiter rarely sleeps (it spins first and spinning works), so that the waker's side
    /// of the eventcount should be the cheap one.
    pub(crate) fn prefers_asym(&self) -> bool {
        !cfg!(loom)
            && match self.strategy {
                WaitStrategy::Sleep => false,
                WaitStrategy::SpinThenSleep(d) => !d.is_zero(),
                WaitStrategy::Adaptive => self.skip_left == 0,
            }
    }

    /// A spin that saw the condition come true: spinning pays.
    fn spin_succeeded(&mut self) {
        self.fails = 0;
        self.skip_len = FIRST_SKIP;
    }

    /// A spin that ran out, followed by a sleep of `slept`. Only a *short* sleep says that spinning
    /// cannot win (the peer runs only once we stop, as when both share one CPU): the condition came
    /// true right after we gave up. A longer sleep says the peer was merely busy or idle, and a later
    /// burst should be spun for again.
    fn spin_failed_then_slept(&mut self, slept: Duration) {
        if self.strategy != WaitStrategy::Adaptive {
            return;
        }
        if slept >= SHORT_SLEEP {
            self.fails = 0;
            return;
        }
        self.fails += 1;
        if self.fails >= GIVE_UP_AFTER {
            self.skip_left = self.skip_len;
            self.skip_len = (self.skip_len * 2).min(MAX_SKIP);
            self.fails = GIVE_UP_AFTER - 1; // one more failure after the skip window: skip again
        }
    }

    /// The spin budget the next [`spin`](Self::spin) will use, without consuming a skip.
    fn budget_now(&self) -> Duration {
        match self.strategy {
            WaitStrategy::Sleep => Duration::ZERO,
            WaitStrategy::SpinThenSleep(d) => d,
            WaitStrategy::Adaptive if self.skip_left > 0 => Duration::ZERO,
            WaitStrategy::Adaptive => ADAPTIVE_SPIN,
        }
    }

    /// Spins on `check` for the current budget. `Ok(Some)` when it became ready.
    fn spin<T>(&mut self, check: &mut impl FnMut() -> Result<Option<T>>) -> Result<Option<T>> {
        let budget = self.budget();
        if budget.is_zero() {
            return Ok(None);
        }
        // The clock is read only once spinning has gone on for a while: a peer that answers within a
        // few hundred nanoseconds is seen without paying for it.
        let mut start: Option<Instant> = None;
        let mut i: u32 = 0;
        loop {
            if let Some(v) = check()? {
                self.spin_succeeded();
                return Ok(Some(v));
            }
            crate::loom::spin_hint();
            i = i.wrapping_add(1);
            if i % 64 == 0 {
                let t0 = *start.get_or_insert_with(Instant::now);
                if t0.elapsed() >= budget {
                    return Ok(None);
                }
            }
        }
    }
}

/// Blocks until `check` returns `Ok(Some(_))` or an error, or the deadline passes (`Error::Timeout`).
///
/// `co_located`: the peer last waited on this CPU, so spinning cannot win this time.
/// `check` is the whole condition, including "the peer closed" (it returns the error then). It is
/// called after registering on `ec`, so a notify between the check and the sleep is never lost. Between
/// sleeps of at most [`PROBE_INTERVAL`], `probe` checks that the peer lives (it reaps dead peers so
/// that the next `check` sees them closed, or returns an error itself).
pub(crate) fn block_on<T>(
    spinner: &mut Spinner,
    co_located: bool,
    ec: &EventCount,
    deadline: Deadline,
    mut check: impl FnMut() -> Result<Option<T>>,
    mut probe: impl FnMut() -> Result<()>,
) -> Result<T> {
    if let Some(v) = check()? {
        return Ok(v);
    }
    if deadline.is_immediate_or_past() {
        return Err(Error::Timeout);
    }
    // A peer that last waited on our CPU cannot answer while we spin: sleep at once.
    let spun = !co_located && spinner.budget_now() > Duration::ZERO;
    if spun {
        if let Some(v) = spinner.spin(&mut check)? {
            return Ok(v);
        }
    }
    let slept_from = Instant::now();
    let mut last_probe = slept_from;
    let done = |spinner: &mut Spinner| {
        if spun {
            spinner.spin_failed_then_slept(slept_from.elapsed());
        }
    };
    loop {
        let key = ec.prepare(!co_located && spinner.prefers_asym());
        match check() {
            Ok(None) => {}
            Ok(Some(v)) => {
                ec.cancel(key);
                done(spinner);
                return Ok(v);
            }
            Err(e) => {
                ec.cancel(key);
                return Err(e);
            }
        }
        let slice = match deadline.remaining() {
            Some(r) if r.is_zero() => {
                ec.cancel(key);
                return Err(Error::Timeout);
            }
            Some(r) => r.min(PROBE_INTERVAL),
            None => PROBE_INTERVAL,
        };
        ec.wait(key, Some(slice));
        if let Some(v) = check()? {
            done(spinner);
            return Ok(v);
        }
        if last_probe.elapsed() >= PROBE_INTERVAL {
            probe()?;
            last_probe = Instant::now();
        }
    }
}
