//! Results: [`AsyncResult`], and the *sinks* through which the pool's result thread hands each
//! task's outcome to the call that asked for it (one `apply_async`, a whole `map`, an `imap`
//! stream).
//!
//! A sink is typed (it knows `R`, and decodes the bytes a worker sent); the result thread sees it as
//! `dyn Sink`. Callbacks (`apply_async_with`) run inside `deliver`, on the result thread, before
//! the result becomes ready, as Python's do; a panicking callback is caught and reported on stderr,
//! and the pool goes on.

use crate::codec;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What became of one task.
pub(crate) enum Outcome<'a> {
    /// The encoded value it returned.
    Value(&'a [u8]),
    Failed(Error),
}

/// Where the outcomes of a job's tasks go.
pub(crate) trait Sink: Send + Sync {
    /// Task `index` of the job ended (called once per task, on the result thread).
    fn deliver(&self, index: u64, out: Outcome<'_>);
    /// Several tasks ended.
    fn deliver_all(&self, outs: &mut dyn Iterator<Item = (u64, Outcome<'_>)>) {
        for (i, o) in outs {
            self.deliver(i, o);
        }
    }
    /// The job will get nothing more: every task without an outcome fails with `err()`.
    fn abort(&self, err: &dyn Fn() -> Error);
}

/// Decodes a value into the caller's `R` on the result thread. `R`'s `Deserialize` is the caller's
/// code: a panic in it is this task's [`Error::Decode`], never the thread's end (every call of the
/// pool would then wait for ever).
fn decode<R: DeserializeOwned>(out: Outcome<'_>) -> Result<R> {
    match out {
        Outcome::Value(b) => {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| codec::decode(b))) {
                Ok(r) => r,
                Err(p) => {
                    let reason = format!(
                        "the result type's Deserialize panicked: {}",
                        super::function::panic_message(&*p)
                    );
                    // Dropping the payload runs the caller's code too: under its own guard.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(p)));
                    Err(Error::Decode {
                        reason,
                        bytes: b.to_vec(),
                    })
                }
            }
        }
        Outcome::Failed(e) => Err(e),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a user callback on the result thread: a panic is reported, never propagated.
fn guarded(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "shmwire Pool: a {what} panicked on the result thread; the pool goes on"
        );
    }
}

thread_local! {
    /// On a pool's result thread: that pool's id ([`pool_id`]); 0 elsewhere.
    static RESULT_THREAD_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A pool's id: the address of what its threads share.
pub(crate) fn pool_id<T>(inner: &Arc<T>) -> usize {
    Arc::as_ptr(inner) as *const u8 as usize
}

/// Marks this thread as pool `id`'s result thread.
pub(crate) fn enter_result_thread(id: usize) {
    RESULT_THREAD_OF.with(|t| t.set(id));
}

/// Whether waiting here for a result of pool `id` would wait for ever: this is its result thread
/// (in a callback), which alone could deliver it.
pub(crate) fn waits_for_itself(id: usize) -> bool {
    RESULT_THREAD_OF.with(|t| t.get()) == id
}

enum Slot<R> {
    Pending,
    Ready(Result<R>),
    /// `get` took it; whether it was a value.
    Taken(bool),
}

pub(crate) struct Cell<R> {
    /// The pool it belongs to ([`pool_id`]).
    pool: usize,
    slot: Mutex<Slot<R>>,
    cv: Condvar,
    /// Threads waiting on `cv` (changed under `slot`'s lock): a result nobody waits for is set
    /// without a system call (`Condvar::notify_all` always makes one).
    waiters: AtomicU32,
}

/// Waits on `cv` as one of `waiters` (until `deadline`, if any).
fn wait_counted<'a, T>(
    cv: &Condvar,
    waiters: &AtomicU32,
    g: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> MutexGuard<'a, T> {
    waiters.fetch_add(1, Ordering::Relaxed);
    let g = match deadline {
        None => cv.wait(g).unwrap_or_else(|p| p.into_inner()),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            cv.wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0
        }
    };
    waiters.fetch_sub(1, Ordering::Relaxed);
    g
}

impl<R> Cell<R> {
    pub(crate) fn new(pool: usize) -> Arc<Cell<R>> {
        Arc::new(Cell {
            pool,
            slot: Mutex::new(Slot::Pending),
            cv: Condvar::new(),
            waiters: AtomicU32::new(0),
        })
    }

    /// Sets the outcome if it is still pending.
    pub(crate) fn set(&self, r: Result<R>) {
        let mut s = lock(&self.slot);
        if matches!(*s, Slot::Pending) {
            *s = Slot::Ready(r);
            // ORDERING: `waiters` changes only under the lock we hold.
            if self.waiters.load(Ordering::Relaxed) > 0 {
                self.cv.notify_all();
            }
        }
    }

    fn is_pending(&self) -> bool {
        matches!(*lock(&self.slot), Slot::Pending)
    }
}

/// The result of an `apply_async`, `map_async` or `starmap_async`: Python's `AsyncResult`.
///
/// `Send + Sync`; `get` takes the value out (a second `get` is [`Error::Misuse`]), the other calls
/// only look.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let pool = shmwire::Pool::new(2)?;
/// let r = pool.apply_async(|x: u64| x * x, 7)?;
/// assert!(r.wait_timeout(std::time::Duration::from_secs(30)));
/// assert!(r.ready() && r.successful()?);
/// assert_eq!(r.get()?, 49);
/// # Ok(()) }
/// ```
pub struct AsyncResult<R> {
    cell: Arc<Cell<R>>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(cell: Arc<Cell<R>>) -> Self {
        AsyncResult { cell }
    }

    /// Waits until the outcome is known or `deadline`; on the pool's own result thread (a
    /// callback) a pending outcome never comes: it does not wait (`get` says [`Error::Misuse`]).
    fn wait_until(&self, deadline: Option<Instant>) -> MutexGuard<'_, Slot<R>> {
        let mut s = lock(&self.cell.slot);
        while matches!(*s, Slot::Pending) && !waits_for_itself(self.cell.pool) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            s = wait_counted(&self.cell.cv, &self.cell.waiters, s, deadline);
        }
        s
    }

    fn take(&self, mut s: MutexGuard<'_, Slot<R>>) -> Result<R> {
        match std::mem::replace(&mut *s, Slot::Taken(false)) {
            Slot::Pending => {
                *s = Slot::Pending;
                if waits_for_itself(self.cell.pool) {
                    return Err(Error::Misuse);
                }
                Err(Error::Timeout)
            }
            Slot::Ready(r) => {
                *s = Slot::Taken(r.is_ok());
                r
            }
            Slot::Taken(ok) => {
                *s = Slot::Taken(ok);
                Err(Error::Misuse)
            }
        }
    }

    /// Waits for the outcome and returns it: the task's value, or why it has none
    /// ([`Error::TaskPanicked`], [`Error::WorkerDied`], [`Error::Closed`] after `terminate`, ...).
    /// The value is taken: a second call is [`Error::Misuse`]. So is a wait in a callback of the
    /// same pool for an outcome not yet known (the callback runs on the thread that would deliver
    /// it: Python's pool waits for ever there); `wait` then returns at once.
    pub fn get(&self) -> Result<R> {
        self.take(self.wait_until(None))
    }

    /// [`get`](Self::get), giving up with [`Error::Timeout`] after `timeout` (the task runs on).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        self.take(self.wait_until(Instant::now().checked_add(timeout)))
    }

    /// Waits until the outcome is known.
    pub fn wait(&self) {
        drop(self.wait_until(None));
    }

    /// [`wait`](Self::wait) at most `timeout`; whether the outcome is known.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let far = Instant::now() + Duration::from_secs(100 * 365 * 86_400);
        !matches!(
            *self.wait_until(Some(Instant::now().checked_add(timeout).unwrap_or(far))),
            Slot::Pending
        )
    }

    /// Whether the outcome is known.
    pub fn ready(&self) -> bool {
        !self.cell.is_pending()
    }

    /// Whether the task returned a value (rather than failing); [`Error::Misuse`] while it is not
    /// [`ready`](Self::ready) (Python's `ValueError`).
    pub fn successful(&self) -> Result<bool> {
        match &*lock(&self.cell.slot) {
            Slot::Pending => Err(Error::Misuse),
            Slot::Ready(r) => Ok(r.is_ok()),
            Slot::Taken(ok) => Ok(*ok),
        }
    }
}

pub(crate) type Callback<R> = Box<dyn FnOnce(&R) + Send>;
pub(crate) type ErrCallback = Box<dyn FnOnce(&Error) + Send>;

/// The sink of one task (`apply_async`).
pub(crate) struct OneSink<R> {
    cell: Arc<Cell<R>>,
    callbacks: Mutex<(Option<Callback<R>>, Option<ErrCallback>)>,
}

impl<R> OneSink<R> {
    pub(crate) fn new(
        cell: Arc<Cell<R>>,
        cb: Option<Callback<R>>,
        err_cb: Option<ErrCallback>,
    ) -> Self {
        OneSink {
            cell,
            callbacks: Mutex::new((cb, err_cb)),
        }
    }

    fn finish(&self, r: Result<R>) {
        let (cb, ecb) = std::mem::take(&mut *lock(&self.callbacks));
        match (&r, cb, ecb) {
            (Ok(v), Some(cb), _) => guarded("callback", || cb(v)),
            (Err(e), _, Some(ecb)) => guarded("error callback", || ecb(e)),
            _ => {}
        }
        self.cell.set(r);
    }
}

impl<R: DeserializeOwned + Send + 'static> Sink for OneSink<R> {
    fn deliver(&self, _index: u64, out: Outcome<'_>) {
        if self.cell.is_pending() {
            self.finish(decode(out));
        }
    }

    fn abort(&self, err: &dyn Fn() -> Error) {
        if self.cell.is_pending() {
            self.finish(Err(err()));
        }
    }
}

/// The sink of a whole `map`: the values in order, or the first failure (the result is ready at
/// once then, as Python's; the other tasks run on and their outcomes are dropped).
pub(crate) struct MapSink<R> {
    cell: Arc<Cell<Vec<R>>>,
    state: Mutex<(Vec<Option<R>>, usize)>,
}

impl<R> MapSink<R> {
    pub(crate) fn new(cell: Arc<Cell<Vec<R>>>, n: usize) -> Self {
        let mut v = Vec::new();
        v.resize_with(n, || None);
        if n == 0 {
            cell.set(Ok(Vec::new()));
        }
        MapSink {
            cell,
            state: Mutex::new((v, n)),
        }
    }
}

impl<R> MapSink<R> {
    /// Stores the values (one lock for all); the first failure makes the whole map fail.
    fn store(&self, outs: &mut dyn Iterator<Item = (u64, Result<R>)>) {
        let mut s = lock(&self.state);
        for (index, r) in outs {
            match r {
                Err(e) => {
                    drop(s);
                    self.cell.set(Err(e));
                    return;
                }
                Ok(v) => {
                    let (vals, left) = &mut *s;
                    if let Some(slot) = vals.get_mut(index as usize) {
                        if slot.is_none() {
                            *slot = Some(v);
                            *left -= 1;
                        }
                    }
                }
            }
        }
        let (vals, left) = &mut *s;
        if *left == 0 && !vals.is_empty() {
            let all: Vec<R> = std::mem::take(vals).into_iter().flatten().collect();
            drop(s);
            self.cell.set(Ok(all));
        }
    }
}

impl<R: DeserializeOwned + Send + 'static> Sink for MapSink<R> {
    fn deliver(&self, index: u64, out: Outcome<'_>) {
        self.deliver_all(&mut std::iter::once((index, out)));
    }

    fn deliver_all(&self, outs: &mut dyn Iterator<Item = (u64, Outcome<'_>)>) {
        if self.cell.is_pending() {
            self.store(&mut outs.map(|(i, o)| (i, decode::<R>(o))));
        }
    }

    fn abort(&self, err: &dyn Fn() -> Error) {
        self.cell.set(Err(err()));
    }
}

/// The sink of an `imap` or `imap_unordered`: outcomes wait here until the iterator takes them.
pub(crate) struct StreamSink<R> {
    /// The pool it belongs to ([`pool_id`]).
    pool: usize,
    state: Mutex<Stream<R>>,
    cv: Condvar,
    waiters: AtomicU32,
    /// `imap`: outcomes are taken by task index; `imap_unordered`: as they arrive.
    in_order: bool,
}

struct Stream<R> {
    ordered: BTreeMap<u64, Result<R>>,
    arrived: VecDeque<Result<R>>,
    aborted: Option<Error>,
    ended: bool,
}

impl<R> StreamSink<R> {
    pub(crate) fn new(in_order: bool, pool: usize) -> Arc<Self> {
        Arc::new(StreamSink {
            pool,
            in_order,
            waiters: AtomicU32::new(0),
            state: Mutex::new(Stream {
                ordered: BTreeMap::new(),
                arrived: VecDeque::new(),
                aborted: None,
                ended: false,
            }),
            cv: Condvar::new(),
        })
    }

    /// Waits for task `index`'s outcome (`Some(i)`), or any outcome (`None`), until `deadline`.
    /// The outer `Err`: none came (`Timeout`), or none will (the pool ended: its error, then
    /// `Closed`).
    pub(crate) fn next(
        &self,
        index: Option<u64>,
        deadline: Option<Instant>,
    ) -> std::result::Result<Result<R>, Error> {
        let mut s = lock(&self.state);
        loop {
            let got = match index {
                Some(i) => s.ordered.remove(&i),
                None => s.arrived.pop_front(),
            };
            if let Some(r) = got {
                return Ok(r);
            }
            if s.ended {
                return Err(s.aborted.take().unwrap_or(Error::Closed));
            }
            if waits_for_itself(self.pool) {
                return Err(Error::Misuse); // in a callback of this pool: none would come
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout);
            }
            s = wait_counted(&self.cv, &self.waiters, s, deadline);
        }
    }
}

impl<R: DeserializeOwned + Send + 'static> Sink for StreamSink<R> {
    fn deliver(&self, index: u64, out: Outcome<'_>) {
        self.deliver_all(&mut std::iter::once((index, out)));
    }

    fn deliver_all(&self, outs: &mut dyn Iterator<Item = (u64, Outcome<'_>)>) {
        let mut s = lock(&self.state);
        for (index, out) in outs {
            let r = decode::<R>(out);
            if self.in_order {
                s.ordered.insert(index, r);
            } else {
                s.arrived.push_back(r);
            }
        }
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.cv.notify_all();
        }
    }

    fn abort(&self, err: &dyn Fn() -> Error) {
        let mut s = lock(&self.state);
        if !s.ended {
            s.ended = true;
            s.aborted = Some(err());
        }
        self.cv.notify_all();
    }
}
