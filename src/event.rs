//! `Event`: a flag processes can wait for, Python's `multiprocessing.Event`.

use crate::error::Result;
use crate::object::{Object, SharedBlock};
use crate::segment::{Kind, fingerprint_of};
use crate::sync::eventcount::EventCount;
use crate::sync::wait::{Deadline, Spinner, WaitStrategy, block_on};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[repr(C)]
pub(crate) struct EventBlock {
    flag: AtomicU32,
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
/// let mut p = Process::fork(move || r.set().unwrap())?;
/// ready.wait()?;
/// assert!(ready.is_set());
/// p.join()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Event {
    obj: Object<EventBlock>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

impl Event {
    /// A new, clear event shared with children forked later.
    pub fn new() -> Result<Event> {
        Ok(Event {
            obj: Object::create(Kind::Sync, fingerprint_of::<EventTag>(), [0; 6], 0, None)?,
        })
    }

    /// A new, clear event named `name`.
    pub fn create(name: &str) -> Result<Event> {
        Ok(Event {
            obj: Object::create(
                Kind::Sync,
                fingerprint_of::<EventTag>(),
                [0; 6],
                0,
                Some(name),
            )?,
        })
    }

    /// Opens the event named `name`.
    pub fn open(name: &str) -> Result<Event> {
        Ok(Event {
            obj: Object::open(Kind::Sync, fingerprint_of::<EventTag>(), name)?,
        })
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<()> {
        self.obj.me()?;
        self.obj.block().flag.store(1, Ordering::SeqCst);
        let _ = self.obj.block().ec.notify();
        Ok(())
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<()> {
        self.obj.me()?;
        self.obj.block().flag.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.obj.block().flag.load(Ordering::Acquire) != 0
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<()> {
        self.wait_at(Deadline::NEVER)
    }

    /// Waits until the flag is set or `timeout` passes: whether it is set (Python's `wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        match self.wait_at(Deadline::after(Some(timeout))) {
            Ok(()) => Ok(true),
            Err(crate::Error::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn wait_at(&self, deadline: Deadline) -> Result<()> {
        self.obj.me()?;
        let mut spinner = Spinner::new(WaitStrategy::Adaptive);
        block_on(
            &mut spinner,
            false,
            &self.obj.block().ec,
            deadline,
            || Ok(self.is_set().then_some(())),
            || Ok(()),
        )
    }
}
