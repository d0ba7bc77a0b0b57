//! How a blocked call waits: a short adaptive spin, then sleep on an eventcount in slices, probing the
//! peer's liveness between slices so that a dead peer is noticed within [`PROBE_INTERVAL`] or two.
//! A waiter with no peer to probe sleeps in one piece (`block_on_unprobed`).

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
/// each other in a fraction of a microsecond. Spinning pays only when the peer runs on another CPU at
/// the same time.
///
/// Every handle that blocks takes one: pipes (`Pipe::builder().wait_strategy(..)`,
/// `Connection::set_wait_strategy`), and the locks family (`Lock::builder().wait_strategy(..)` and
/// the other [`SyncBuilder`](crate::SyncBuilder)s, `set_wait_strategy` on a handle). The spin never
/// outlasts the call's timeout. A waiter that has a peer to watch (a lock's holder, a barrier's
/// parties, a pipe's other end) sleeps in slices of [`PROBE_INTERVAL`] and probes it between them;
/// one with nobody to watch (an `Event` or `Semaphore` waiter) sleeps until woken or timed out.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Lock, Process, WaitStrategy};
/// use std::time::Duration;
/// // Spin up to 200 µs (instead of the default 50 µs) before sleeping: for a lock held only for
/// // moments by processes that each have a CPU of their own.
/// let lock = Lock::builder()
///     .wait_strategy(WaitStrategy::SpinThenSleep(Duration::from_micros(200)))
///     .build()?;
/// let mut l = lock.clone();
/// l.set_wait_strategy(WaitStrategy::Sleep); // this handle (in the child) sleeps at once
/// let p = Process::fork(move || drop(l.acquire().unwrap()))?;
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Spin for up to 50 µs, then sleep; but sleep at once when spinning cannot win: when this process
    /// is confined to one CPU and the peer last waited on that same CPU (both pinned to one core, as
    /// with `taskset -c 0`). The default.
    #[default]
    Adaptive,
    /// Always spin for up to this long (any length: the 50 µs of `Adaptive` is only its default),
    /// then sleep.
    SpinThenSleep(Duration),
    /// Sleep at once: the least CPU, and each wake-up costs a futex call.
    Sleep,
}

const ADAPTIVE_SPIN: Duration = Duration::from_micros(50);

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

/// A handle's wait strategy (process-local).
#[derive(Debug, Clone)]
pub(crate) struct Spinner {
    strategy: WaitStrategy,
}

impl Spinner {
    pub(crate) fn new(strategy: WaitStrategy) -> Self {
        Spinner { strategy }
    }

    pub(crate) fn strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// How long to spin before sleeping.
    fn budget(&self) -> Duration {
        match self.strategy {
            WaitStrategy::Sleep => Duration::ZERO,
            WaitStrategy::SpinThenSleep(d) => d,
            WaitStrategy::Adaptive => ADAPTIVE_SPIN,
        }
    }

    /// Whether a wait starts by spinning.
    #[inline]
    pub(crate) fn spins_now(&self) -> bool {
        !self.budget().is_zero()
    }

    /// Whether this waiter rarely sleeps (it spins first), so that the waker's side of the eventcount
    /// should be the cheap one.
    pub(crate) fn prefers_asym(&self) -> bool {
        !cfg!(loom) && self.spins_now()
    }

    /// Spins on `check` for this strategy's budget (not at all for [`WaitStrategy::Sleep`]), for a
    /// waiter that sleeps by other means than [`block_on`] (a barrier on its own futex word).
    /// `Ok(Some)` when it became ready, `Ok(None)` when the budget ran out first.
    pub(crate) fn spin_for<T>(
        &mut self,
        mut check: impl FnMut() -> Result<Option<T>>,
        deadline: Deadline,
    ) -> Result<Option<T>> {
        if !self.spins_now() {
            return check();
        }
        self.spin(&mut check, deadline)
    }

    /// Spins on `check` for the budget, or until `deadline` if that comes first. `Ok(Some)` when it
    /// became ready.
    fn spin<T>(
        &mut self,
        check: &mut impl FnMut() -> Result<Option<T>>,
        deadline: Deadline,
    ) -> Result<Option<T>> {
        let budget = match deadline.remaining() {
            Some(left) => self.budget().min(left),
            None => self.budget(),
        };
        // The clock is read only once spinning has gone on for a while: a peer that answers within a
        // few hundred nanoseconds is seen without paying for it.
        let mut start: Option<Instant> = None;
        let mut i: u32 = 0;
        loop {
            if let Some(v) = check()? {
                return Ok(Some(v));
            }
            crate::loom::spin_hint();
            i = i.wrapping_add(1);
            if i % 64 == 0 && start.get_or_insert_with(Instant::now).elapsed() >= budget {
                return Ok(None);
            }
        }
    }
}

/// Process-local: when each object (known by the address of its eventcount) was last probed. A loop of
/// short waits on one object thus still probes it every [`PROBE_INTERVAL`], while a busy object whose
/// waits are short and frequent pays for a probe at most that often.
#[cfg(not(loom))]
static LAST_PROBES: std::sync::Mutex<Vec<(usize, Instant)>> = std::sync::Mutex::new(Vec::new());
/// Objects remembered at once (the oldest entry goes first; forgetting one only makes its next
/// probe come early).
#[cfg(not(loom))]
const PROBES_KEPT: usize = 64;

/// Whether the object whose eventcount is `ec` is due for a probe; if so, records it as probed now.
#[cfg(not(loom))]
fn probe_due(ec: &EventCount) -> bool {
    let key = ec as *const EventCount as usize;
    let now = Instant::now();
    // Never blocks: a child forked while another thread held the lock finds it locked for ever.
    let mut last = match LAST_PROBES.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return true,
    };
    match last.iter().position(|(k, _)| *k == key) {
        Some(i) if now.duration_since(last[i].1) < PROBE_INTERVAL => false,
        Some(i) => {
            last[i].1 = now;
            true
        }
        None => {
            if last.len() >= PROBES_KEPT {
                last.remove(0);
            }
            last.push((key, now));
            true
        }
    }
}

/// Under loom every slice probes (the model has no clock).
#[cfg(loom)]
fn probe_due(_ec: &EventCount) -> bool {
    true
}

/// Blocks until `check` returns `Ok(Some(_))` or an error, or the deadline passes (`Error::Timeout`).
///
/// `co_located`: the peer last waited on this CPU, so spinning cannot win this time.
/// `check` is the whole condition, including "the peer closed" (it returns the error then). It is
/// called after registering on `ec`, so a notify between the check and the sleep is never lost. After a
/// sleep (of at most [`PROBE_INTERVAL`]), if this process has not probed the object for that long (in
/// this call or an earlier one), `probe` checks that the peer lives (it reaps dead peers so that the
/// next `check` sees them closed, or returns an error itself).
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
        // A call that may not wait still probes now and then, so that a loop of them (`get_nowait`
        // every millisecond) repairs what the dead left.
        if probe_due(ec) {
            probe()?;
            if let Some(v) = check()? {
                return Ok(v);
            }
        }
        return Err(Error::Timeout);
    }
    // A peer that last waited on our CPU cannot answer while we spin: sleep at once.
    let spin = !co_located && spinner.spins_now();
    if spin {
        if let Some(v) = spinner.spin(&mut check, deadline)? {
            return Ok(v);
        }
    }
    loop {
        let key = ec.prepare(spin && spinner.prefers_asym());
        match check() {
            Ok(None) => {}
            Ok(Some(v)) => {
                ec.cancel(key);
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
            return Ok(v);
        }
        if probe_due(ec) {
            probe()?;
        }
    }
}

/// [`block_on`] for a waiter with nothing to probe: nobody it waits on can die unnoticed (an `Event`
/// waiter, a `Semaphore` waiter: there is no holder to find dead, and a process that dies never
/// sets, nor gives back, anything anyway). It spins as `spinner` says, then sleeps until `check`
/// holds, a notify comes or the deadline passes, in one sleep rather than slices of
/// [`PROBE_INTERVAL`]: an idle waiter costs no wake-ups.
pub(crate) fn block_on_unprobed<T>(
    spinner: &mut Spinner,
    co_located: bool,
    ec: &EventCount,
    deadline: Deadline,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    if let Some(v) = check()? {
        return Ok(v);
    }
    if deadline.is_immediate_or_past() {
        return Err(Error::Timeout);
    }
    let spin = !co_located && spinner.spins_now();
    if spin {
        if let Some(v) = spinner.spin(&mut check, deadline)? {
            return Ok(v);
        }
    }
    loop {
        let key = ec.prepare(spin && spinner.prefers_asym());
        match check() {
            Ok(None) => {}
            Ok(Some(v)) => {
                ec.cancel(key);
                return Ok(v);
            }
            Err(e) => {
                ec.cancel(key);
                return Err(e);
            }
        }
        // The whole time left in one sleep (`None`: until notified).
        let left = deadline.remaining();
        if left.is_some_and(|r| r.is_zero()) {
            ec.cancel(key);
            return Err(Error::Timeout);
        }
        ec.wait(key, left);
        if let Some(v) = check()? {
            return Ok(v);
        }
    }
}
