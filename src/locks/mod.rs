//! The locks and shared values: `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`,
//! `Condition`, `Barrier`, `Value`, `Array` and `SharedMemory`, each a typed object in a segment of
//! its own (see `segment::object`), all `Clone + Send + Sync`, shared with forked children and
//! `create(name)`/`open(name)` for unrelated processes. Each is built the same way
//! ([`SyncBuilder`]: a name, a wait strategy), and every blocking call has a `_timeout` form.

pub mod array;
pub mod barrier;
pub mod builder;
pub mod condition;
pub mod event;
pub mod lock;
pub mod semaphore;
pub mod shared_memory;
pub mod value;

pub use array::Array;
pub use barrier::Barrier;
pub use builder::SyncBuilder;
pub use condition::Condition;
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphorePermit};
pub use shared_memory::{SharedMemory, SharedMemoryBuilder};
pub use value::{AtomicInt, Value, ValueGuard};
