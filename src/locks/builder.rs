//! [`SyncBuilder`]: the one builder shape of the family. Each handle's `builder(..)` takes what the
//! handle cannot do without (a semaphore's count, a barrier's parties, a value's first value); the
//! builder adds a name and a wait strategy, and `build()` makes the handle.

use crate::error::Result;
use crate::segment::object::{Object, SharedBlock};
use crate::wait::WaitStrategy;

mod sealed {
    /// What a [`SyncBuilder`](super::SyncBuilder) can build, and what it needs to start (sealed:
    /// the handles of this crate's locks family).
    pub trait Built {
        /// What `builder(..)` takes.
        type Init;
    }
}
pub(crate) use sealed::Built;

/// Options for a [`Lock`](crate::Lock), [`RLock`](crate::RLock), [`Semaphore`](crate::Semaphore),
/// [`BoundedSemaphore`](crate::BoundedSemaphore), [`Event`](crate::Event),
/// [`Condition`](crate::Condition), [`Barrier`](crate::Barrier), [`Value`](crate::Value) or
/// [`Array`](crate::Array): start from the handle's `builder(..)`, finish with `build()`.
///
/// * [`name`](Self::name): create it under a name other processes can `open` (else it is shared with
///   children forked later).
/// * [`mode`](Self::mode): let the users of its group open it by name too (default: this user
///   only).
/// * [`wait_strategy`](Self::wait_strategy): how this handle's blocked calls wait (default
///   [`WaitStrategy::Adaptive`]: spin up to 50 µs, then sleep). The strategy belongs to the handle
///   (and its clones), not to the shared object: a handle from `open` starts with the default, and
///   `set_wait_strategy` changes it.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Lock, Process, Semaphore, WaitStrategy};
/// use std::time::Duration;
/// let name = format!("doc-builder-{}", std::process::id());
/// let lock = Lock::builder()
///     .name(&name)
///     .wait_strategy(WaitStrategy::Sleep)
///     .build()?;
/// assert_eq!(lock.wait_strategy(), WaitStrategy::Sleep);
/// let slots = Semaphore::builder(2)
///     .wait_strategy(WaitStrategy::SpinThenSleep(Duration::from_micros(200)))
///     .build()?;
/// let s = slots.clone();
/// let p = Process::fork(move || {
///     let mut other = Lock::open(&name).unwrap(); // by name, as an unrelated process would
///     other.set_wait_strategy(WaitStrategy::Sleep);
///     let _permit = s.acquire_permit().unwrap();
///     drop(other.acquire().unwrap());
/// })?;
/// assert!(p.join()?.success());
/// assert_eq!(slots.value(), 2);
/// # drop(lock);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build()`"]
pub struct SyncBuilder<K: Built> {
    pub(crate) name: Option<String>,
    pub(crate) wait: WaitStrategy,
    pub(crate) init: K::Init,
    pub(crate) mode: Option<u32>,
}

impl<K: Built> SyncBuilder<K> {
    pub(crate) fn new(init: K::Init) -> Self {
        SyncBuilder {
            name: None,
            wait: WaitStrategy::default(),
            init,
            mode: None,
        }
    }

    /// Creates the object under `name` (1 to 200 characters from `[A-Za-z0-9._-]`), which other
    /// processes of this user can `open`; a name in use is [`Error::Exists`](crate::Error::Exists).
    /// The name goes away when the last process using it drops it.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Who may open it by name besides this user: `0o660` also lets in the users of its group
    /// (the creating process's effective group), `0o600` (the default) nobody else; others never
    /// (any other mode is [`Error::Invalid`](crate::Error::Invalid)). A process of another user
    /// opens such an object only if it is in that group; without this, it is refused. (A
    /// condition's lock, `NAME.lock`, gets the same mode.)
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// How the handle's blocked calls wait (default [`WaitStrategy::Adaptive`]).
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Makes the object with `create` (given the builder's name), under the builder's mode: every
    /// kind's `build` goes through here. The mode is checked before anything is made, and given
    /// to the named segment as soon as it is (a failure then drops the object, name and all).
    pub(crate) fn create<T: SharedBlock>(
        &self,
        create: impl FnOnce(Option<&str>) -> Result<Object<T>>,
    ) -> Result<Object<T>> {
        self.mode.map_or(Ok(()), crate::segment::check_mode)?;
        let obj = create(self.name.as_deref())?;
        if let Some(m) = self.mode {
            obj.segment().set_mode(m)?;
        }
        Ok(obj)
    }
}

impl<K: Built> std::fmt::Debug for SyncBuilder<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncBuilder")
            .field("kind", &std::any::type_name::<K>())
            .field("name", &self.name)
            .field("wait", &self.wait)
            .field("mode", &self.mode)
            .finish()
    }
}
