//! The locks and shared values: `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`,
//! `Condition`, `Barrier`, `Value`, `Array` and `SharedMemory`, each a typed object in a segment of
//! its own (see `segment::object`), all `Clone + Send + Sync`, shared with forked children and
//! `create(name)`/`open(name)` for unrelated processes. Each is built the same way
//! ([`SyncBuilder`]: a name, a wait strategy), and every blocking call has a `_timeout` form.

mod array;
mod barrier;
mod builder;
mod condition;
mod event;
mod lock;
mod semaphore;
mod shared_memory;
mod value;

pub use array::Array;
pub use barrier::Barrier;
pub use builder::SyncBuilder;
pub use condition::Condition;
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphorePermit};
pub use shared_memory::SharedMemory;
pub use value::{AtomicInt, Value, ValueGuard};
