//! `Event`: a flag processes can wait for, Python's `multiprocessing.Event`.
//!
//! One shared word: the flag in bit 0, and above it the number of `set` calls (wrapping, 31 bits).
//! `set` raises the flag and counts itself in one read-modify-write, then wakes the waiters (an
//! eventcount); `clear` lowers the flag only. A waiter that finds the flag clear sleeps until the
//! flag is up *or the count moved*: so a `set()` followed at once by `clear()` still releases every
//! process that was waiting at that moment, as in Python. (A waiter would miss one only if exactly
//! 2^31 `set` calls came, each followed by a `clear`, between two of its looks at the word.)
//!
//! A waiter has nobody to probe (no holder can die with the flag), so it sleeps until a `set` wakes
//! it or its deadline passes, without waking in between.

use crate::error::Result;
use crate::locks::builder::{Built, SyncBuilder};
use crate::segment::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::wait::eventcount::EventCount;
use crate::wait::{Deadline, Spinner, WaitStrategy, block_on_unprobed};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// `state`: the flag.
const FLAG: u32 = 1;
/// `state`: one `set` call, counted in the bits above the flag.
const ONE_SET: u32 = 2;

#[repr(C)]
pub(crate) struct EventBlock {
    /// The `set` count << 1 | the flag (module docs).
    state: AtomicU32,
    ec: EventCount,
}
// SAFETY: repr(C), all atomics.
unsafe impl SharedBlock for EventBlock {}

struct EventTag;

/// A flag shared by processes: `set`, `clear`, `is_set`, and `wait` until it is set.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Event, Process};
/// let ready = Event::new()?;
/// let r = ready.clone();
/// let p = Process::fork(move || r.set().unwrap())?;
/// ready.wait()?;
/// assert!(ready.is_set());
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Event {
    obj: Object<EventBlock>,
    wait: WaitStrategy,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

impl Built for Event {
    type Init = ();
}

impl SyncBuilder<Event> {
    /// Creates the event, clear.
    pub fn build(self) -> Result<Event> {
        Ok(Event {
            obj: self.create(|name| {
                Object::create(Kind::Sync, fingerprint_of::<EventTag>(), [0; 6], 0, name)
            })?,
            wait: self.wait,
        })
    }
}

impl Event {
    /// A new, clear event shared with children forked later.
    pub fn new() -> Result<Event> {
        Self::builder().build()
    }

    /// A new, clear event named `name`.
    pub fn create(name: &str) -> Result<Event> {
        Self::builder().name(name).build()
    }

    /// Options: a name, a wait strategy (see [`SyncBuilder`]).
    pub fn builder() -> SyncBuilder<Event> {
        SyncBuilder::new(())
    }

    /// Opens the event named `name`, with the default wait strategy.
    pub fn open(name: &str) -> Result<Event> {
        Ok(Event {
            obj: Object::open(Kind::Sync, fingerprint_of::<EventTag>(), name)?,
            wait: WaitStrategy::default(),
        })
    }

    /// How this handle's blocked calls wait.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.wait
    }

    /// Changes how this handle's blocked calls wait (its clones keep theirs).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Sets the flag and wakes every process waiting for it.
    pub fn set(&self) -> Result<()> {
        self.obj.me()?;
        let b = self.obj.block();
        // ORDERING: SeqCst RMW: the publish half of the eventcount's Dekker pair (see `notify`).
        let _ = b
            .state
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |s| {
                Some((s | FLAG).wrapping_add(ONE_SET))
            });
        let _ = b.ec.notify();
        Ok(())
    }

    /// Clears the flag. The processes a `set` just before it released still return from their wait.
    pub fn clear(&self) -> Result<()> {
        self.obj.me()?;
        self.obj.block().state.fetch_and(!FLAG, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.obj.block().state.load(Ordering::Acquire) & FLAG != 0
    }

    /// Waits until the flag is set: returns at once if it is, else once some process calls
    /// [`set`](Self::set). The flag may be clear again by the time it returns, if someone called
    /// [`clear`](Self::clear) right after that `set` (Python's `wait()` returns then too).
    pub fn wait(&self) -> Result<()> {
        self.wait_at(Deadline::NEVER)
    }

    /// Waits until the flag is set or `timeout` passes, and returns the flag as it is then, as
    /// `multiprocessing.Event.wait(timeout)` does: `false` after a timeout, and also when a `set`
    /// released this waiter but a `clear` came before it looked. (`threading.Event` answers `true`
    /// in that second case.)
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        match self.wait_at(Deadline::after(Some(timeout))) {
            Ok(()) | Err(crate::Error::Timeout) => Ok(self.is_set()),
            Err(e) => Err(e),
        }
    }

    fn wait_at(&self, deadline: Deadline) -> Result<()> {
        self.obj.me()?;
        let b = self.obj.block();
        let first = b.state.load(Ordering::Acquire);
        let released = || {
            let s = b.state.load(Ordering::Acquire);
            s & FLAG != 0 || s & !FLAG != first & !FLAG
        };
        let mut spinner = Spinner::new(self.wait);
        block_on_unprobed(&mut spinner, false, &b.ec, deadline, || {
            Ok(released().then_some(()))
        })
    }
}
