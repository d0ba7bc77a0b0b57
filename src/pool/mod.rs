//! `Pool`: long-lived worker processes fed through shared memory, Python's
//! `multiprocessing.Pool`.
//!
//! * `transport`: the segment (task board, result rings, argument arena) and its protocol.
//! * `function`: how a task's `fn(T) -> R` crosses into a worker (forked or re-executed).
//! * `worker`: the workers' loop and the zygote that forks them.
//! * `dispatch`: the parent's ledger, the board's producer, and the pool thread (results, deaths,
//!   successors).
//! * `result`: [`AsyncResult`] and the sinks that deliver outcomes.

mod dispatch;
mod function;
mod result;
mod transport;
mod worker;

pub use result::AsyncResult;
pub(crate) use worker::WORKER_ROLE;

use crate::WaitStrategy;
use crate::codec;
use crate::error::{Error, Result};
use dispatch::{Config, End, Inner, State, Thread};
use function::FnRef;
use result::{Cell, MapSink, OneSink, Outcome, Sink, StreamSink};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// In a spawned worker: its whole life (called by `spawn::enter`).
pub(crate) fn spawned_worker(args: &[u8]) -> i32 {
    worker::spawned(args)
}

/// How a pool starts its workers.
///
/// ```
/// # #![allow(clippy::needless_doctest_main)]
/// fn cube(x: i64) -> i64 {
///     x * x * x
/// }
///
/// fn main() -> shmwire::Result<()> {
///     // A spawned worker runs this program again: `enter` hands it to the pool first thing.
///     shmwire::spawn::enter(|_role, _args| 2);
///     let pool = shmwire::Pool::builder()
///         .processes(2)
///         .start_method(shmwire::StartMethod::Spawn)
///         .build()?;
///     assert_eq!(pool.map(cube, [1i64, 2, 3])?, [1, 8, 27]);
///     Ok(())
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartMethod {
    /// Forked, from a zygote process forked by [`Pool::new`] (the default; nothing else to do).
    #[default]
    Fork,
    /// Re-executed: the program runs again as a worker. `main` must call
    /// [`spawn::enter`](crate::spawn::enter) first thing, as for
    /// [`Process::spawn`](crate::Process::spawn). Safe in a program that runs many threads. (A
    /// program that forgets `enter` has its workers run `main`: a spawn pool made there is refused
    /// with [`Error::Invalid`], and a worker that has not begun within 20 s is killed; six such in a
    /// row break the pool.)
    Spawn,
}

/// Default board entries (chunks waiting at once before the rest waits in the parent).
pub const DEFAULT_TASK_SLOTS: usize = 1024;
/// Default bytes of each worker's result ring.
pub const DEFAULT_RESULT_RING: usize = 64 << 10;
/// Default bytes of the argument arena (its pages are allocated as they are first used).
pub const DEFAULT_ARENA: usize = 64 << 20;

/// Options of a [`Pool`].
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// static OFFSET: AtomicU64 = AtomicU64::new(0);
/// fn set_offset(v: u64) {
///     OFFSET.store(v, Ordering::Relaxed);
/// }
/// fn shifted(x: u64) -> u64 {
///     x + OFFSET.load(Ordering::Relaxed)
/// }
/// # fn main() -> shmwire::Result<()> {
/// let pool = shmwire::Pool::builder()
///     .processes(2)
///     .initializer(set_offset, 100) // in every worker, before its first task
///     .maxtasksperchild(50)
///     .retries(1)
///     .build()?;
/// assert_eq!(pool.map(shifted, 0..3u64)?, [100, 101, 102]);
/// # Ok(()) }
/// ```
#[must_use]
pub struct PoolBuilder {
    processes: usize,
    method: StartMethod,
    init: Option<(FnRef, Vec<u8>)>,
    init_err: Option<Error>,
    maxtasks: u64,
    retries: u32,
    task_slots: usize,
    result_ring: usize,
    arena: usize,
    wait: WaitStrategy,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("method", &self.method)
            .field("maxtasks", &self.maxtasks)
            .field("retries", &self.retries)
            .finish()
    }
}

impl PoolBuilder {
    /// Worker processes (0, the default: as many as there are CPUs).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n;
        self
    }

    /// How workers start ([`StartMethod::Fork`] by default).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.method = m;
        self
    }

    /// A function each worker runs once with `arg` before its first task. If it panics, the pool
    /// is broken: pending and later tasks fail with [`Error::TaskPanicked`] naming the
    /// initializer (Python's pool would start workers for ever).
    pub fn initializer<A: Serialize + DeserializeOwned>(mut self, f: fn(A), arg: A) -> Self {
        match codec::encode(&arg) {
            Ok(b) => self.init = Some((function::init_ref(f), b)),
            Err(e) => self.init_err = Some(e),
        }
        self
    }

    /// A worker exits after this many tasks (at the end of the chunk it is running: no task is cut
    /// short, lost or repeated) and a new one takes its place; 0 (the default): never.
    pub fn maxtasksperchild(mut self, k: u64) -> Self {
        self.maxtasks = k;
        self
    }

    /// How many times a task whose worker died while running it runs again before its result is
    /// [`Error::WorkerDied`] (default 0).
    pub fn retries(mut self, k: u32) -> Self {
        self.retries = k;
        self
    }

    /// How idle workers wait for tasks, and the result thread for results. The default,
    /// [`WaitStrategy::Sleep`], sleeps at once: a pool runs more processes than a machine has
    /// CPUs, and a waiter that spins takes the CPU a busy one needs (measured on 2 CPUs: spinning
    /// halved the throughput and tripled the `apply` round trip). Spinning pays only when every
    /// worker and the parent have a CPU of their own.
    pub fn wait_strategy(mut self, w: WaitStrategy) -> Self {
        self.wait = w;
        self
    }

    /// Entries of the task board: chunks waiting for a worker at once (the rest waits in the
    /// parent); default [`DEFAULT_TASK_SLOTS`].
    pub fn task_slots(mut self, n: usize) -> Self {
        self.task_slots = n;
        self
    }

    /// Bytes of each worker's result ring (a power of two, at least 4096; default
    /// [`DEFAULT_RESULT_RING`]). Larger results go through it in pieces.
    pub fn result_ring_size(mut self, bytes: usize) -> Self {
        self.result_ring = bytes;
        self
    }

    /// Bytes of the arena that holds the arguments of the tasks not yet done (default
    /// [`DEFAULT_ARENA`]); it bounds one chunk's arguments ([`Error::TooLarge`] beyond), less
    /// the initializer's argument, which it holds for the pool's life.
    pub fn arena_size(mut self, bytes: usize) -> Self {
        self.arena = bytes;
        self
    }

    /// Creates the pool and starts its workers.
    pub fn build(self) -> Result<Pool> {
        if let Some(e) = self.init_err {
            return Err(e);
        }
        let n = match self.processes {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        if n > transport::MAX_WORKERS {
            return Err(Error::invalid(format!(
                "a pool has at most {} processes, not {n}",
                transport::MAX_WORKERS
            )));
        }
        if !self.result_ring.is_power_of_two() || !(4096..=1 << 30).contains(&self.result_ring) {
            return Err(Error::invalid(
                "result_ring_size must be a power of two from 4096 to 1 GiB",
            ));
        }
        if self.task_slots == 0 || self.task_slots > 1 << 24 {
            return Err(Error::invalid("task_slots must be from 1 to 16,777,216"));
        }
        let arena = self.arena.div_ceil(transport::ARENA_UNIT) * transport::ARENA_UNIT;
        let layout = transport::Layout {
            workers: n,
            cap: self.task_slots,
            ring: self.result_ring,
            arena,
        };
        let shared = transport::Shared::create(layout)?;
        let blk = shared.block();
        blk.parent_claim.store(shared.obj.me()?, Ordering::Release);
        let mut state = State::new(arena);
        if let Some((f, arg)) = &self.init {
            let (off, len) = state.reserve(&shared, arg)?;
            for (w, v) in blk.init.iter().zip([f.shim, f.func, off, len]) {
                w.store(v, Ordering::Release);
            }
        }
        if self.method == StartMethod::Spawn && crate::process::spawn::role_unentered() {
            // A worker of a spawn pool whose program does not call `enter`: it ran `main`, which
            // would start workers of its own, without end.
            return Err(Error::invalid(
                "this process was started as a spawned child, and its main did not call \
                 shmwire::spawn::enter first: call it at the top of main",
            ));
        }
        let (zygote, program, build) = match self.method {
            // Before the pool starts any thread of its own (see `worker`).
            StartMethod::Fork => (Some(worker::zygote(&shared)?), Default::default(), None),
            StartMethod::Spawn => (
                None,
                std::path::PathBuf::from("/proc/self/exe"),
                Some(function::BuildId::current()?),
            ),
        };
        #[cfg(feature = "test-hooks")]
        let program = test_program().unwrap_or(program);
        let inner = Arc::new(Inner {
            shared,
            state: Mutex::new(state),
            idle: Condvar::new(),
            cfg: Config {
                processes: n,
                method: self.method,
                retries: self.retries,
                maxtasks: self.maxtasks,
                wait: self.wait,
            },
            stop: AtomicBool::new(false),
            pids: Mutex::new(vec![0; n]),
        });
        let mut thread = Thread::new(inner.clone(), zygote, program, build);
        let started = (0..n).try_for_each(|w| thread.start(w));
        let handle = std::thread::Builder::new()
            .name("shmwire-pool".into())
            .spawn(move || thread.run())?;
        let pool = Pool {
            thread_id: handle.thread().id(),
            thread: Mutex::new(Some(handle)),
            inner,
            owner: std::process::id(),
        };
        started?; // a failure drops `pool`, which ends what did start
        Ok(pool)
    }
}

#[cfg(feature = "test-hooks")]
static TEST_PROGRAM: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

#[cfg(feature = "test-hooks")]
fn test_program() -> Option<std::path::PathBuf> {
    TEST_PROGRAM
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// A pool of worker processes that run plain functions, Python's `multiprocessing.Pool`.
///
/// A task is a `fn(T) -> R` (a closure that captures nothing coerces to one) with serde `T` and
/// `R`: it runs the same in a forked or a re-executed worker (see [`StartMethod`]). Work is cut
/// into chunks; a chunk goes through a task board in shared memory to whichever worker takes it,
/// and each task's result comes back through that worker's own ring, in shared memory too. The
/// pool's thread (the *result thread*) hands results to the call that asked, and runs
/// `apply_async_with`'s callbacks.
///
/// **Failure never hangs**: a task that panics is [`Error::TaskPanicked`] with its message and the
/// worker goes on; a worker killed while running a task makes that task [`Error::WorkerDied`] (or
/// runs it again, [`PoolBuilder::retries`]), a new worker takes its place, and every other task
/// completes (the tasks of its chunk that had not begun run elsewhere, and so do those that had
/// ended with their results not yet published: such a task runs twice), within 2 ×
/// [`PROBE_INTERVAL`](crate::PROBE_INTERVAL) of the death. A program built with
/// `panic = "abort"` loses the worker with the panic: its task is then `WorkerDied`.
/// [`terminate`](Self::terminate) fails pending results with [`Error::Closed`]; work submitted
/// after [`close`](Self::close) is refused with [`Error::Closed`]. The workers die with the parent
/// process, and nothing of a pool is left in `/dev/shm` (its memory has no name).
///
/// `Send + Sync`: threads of the parent may use one pool at once. It belongs to the process that
/// made it: calls from a forked child are [`Error::Misuse`].
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let pool = shmwire::Pool::new(4)?;
/// let squares = pool.map(|x: u64| x * x, 0..10u64)?;
/// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// assert_eq!(pool.apply(|s: String| s.len(), "four".to_string())?, 4);
/// pool.close();
/// pool.join()?;
/// # Ok(()) }
/// ```
pub struct Pool {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    thread_id: std::thread::ThreadId,
    owner: u32,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.inner.cfg.processes)
            .field("start_method", &self.inner.cfg.method)
            .finish()
    }
}

/// What a task takes and returns: any serde type (blanket-implemented).
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Job {
///     name: String,
///     n: u32,
/// }
/// fn shout(j: Job) -> String {
///     j.name.to_uppercase().repeat(j.n as usize)
/// }
/// # fn main() -> shmwire::Result<()> {
/// let pool = shmwire::Pool::new(1)?;
/// assert_eq!(pool.apply(shout, Job { name: "ab".into(), n: 2 })?, "ABAB");
/// # Ok(()) }
/// ```
pub trait TaskValue: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> TaskValue for T {}

impl Pool {
    /// A pool of `n` forked workers (0: as many as there are CPUs).
    pub fn new(n: usize) -> Result<Pool> {
        Self::builder().processes(n).build()
    }

    /// Options: processes, start method, initializer, maxtasksperchild, retries, ring sizes, wait
    /// strategy.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: 0,
            method: StartMethod::Fork,
            init: None,
            init_err: None,
            maxtasks: 0,
            retries: 0,
            task_slots: DEFAULT_TASK_SLOTS,
            result_ring: DEFAULT_RESULT_RING,
            arena: DEFAULT_ARENA,
            wait: WaitStrategy::Sleep,
        }
    }

    /// Test hook: the program spawned workers run (a copy of the test binary, to see a worker of
    /// another build refuse to run tasks). `None`: `/proc/self/exe`.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __set_spawn_program(path: Option<std::path::PathBuf>) {
        *TEST_PROGRAM.lock().unwrap_or_else(|p| p.into_inner()) = path;
    }

    /// Test hook, in a task running in a pool's worker: writes a raw frame (`tag` 1: whole, 2:
    /// head, 3: piece) into the worker's result ring, as a lying worker could. False outside a
    /// worker.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __worker_raw_frame(tag: u32, payload: &[u8]) -> bool {
        worker::raw_frame(tag, payload)
    }

    /// Test hook, in a task running in a pool's worker: writes `len` as the length of the
    /// initializer's argument (what the next worker to start reads), as a lying worker could.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __worker_scribble_init_len(len: u64) -> bool {
        worker::scribble_init_len(len)
    }

    /// How many worker processes it runs.
    pub fn processes(&self) -> usize {
        self.inner.cfg.processes
    }

    /// The start method.
    pub fn start_method(&self) -> StartMethod {
        self.inner.cfg.method
    }

    /// The process ids of its workers now (one per worker; a replaced worker's successor has
    /// another).
    pub fn pids(&self) -> Vec<u32> {
        self.inner
            .pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn mine(&self) -> Result<()> {
        if std::process::id() != self.owner {
            return Err(Error::Misuse);
        }
        Ok(())
    }

    fn fn_ref(&self, f: FnRef) -> Result<FnRef> {
        self.mine()?;
        if self.inner.cfg.method == StartMethod::Spawn {
            function::check_for_spawn(f)?;
        }
        Ok(f)
    }

    /// The largest chunk's arguments, in bytes (a chunk is cut short beyond).
    fn chunk_bytes(&self) -> usize {
        (self.inner.shared.layout.arena / 8).max(4096)
    }

    /// Encodes `args` into chunks of at most `chunksize` tasks, `(base, count, payload)`, and hands
    /// them to `emit` in batches (a few thousand tasks at a time: workers start on the first ones
    /// while the rest are encoded). An item that cannot be encoded ends the call with its error,
    /// or, given `bad`, is handed to it with its index (after every chunk before it went to
    /// `emit`) and the rest go on. Returns how many items there were.
    fn chunks<T: Serialize, B: Borrow<T>>(
        &self,
        args: impl IntoIterator<Item = B>,
        base: u64,
        chunksize: usize,
        emit: &mut dyn FnMut(Vec<dispatch::ChunkArgs>) -> Result<()>,
        mut bad: Option<&mut dyn FnMut(u64, Error)>,
    ) -> Result<u64> {
        const BATCH_TASKS: u64 = 4096;
        /// Encodes into a borrowed buffer (postcard's `to_extend` drops what it owns on failure).
        struct Ext<'a>(&'a mut Vec<u8>);
        impl Extend<u8> for Ext<'_> {
            fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
                self.0.extend(iter);
            }
        }
        let max = self.chunk_bytes();
        let mut out = Vec::new();
        let (mut cur, mut count, mut start, mut n) = (Vec::new(), 0u32, base, base);
        let mut batch_from = base;
        for a in args {
            if count > 0 && (count as usize >= chunksize || cur.len() >= max) {
                out.push((start, count, std::mem::take(&mut cur)));
                start = n;
                count = 0;
                if n - batch_from >= BATCH_TASKS || out.len() >= 256 {
                    emit(std::mem::take(&mut out))?;
                    batch_from = n;
                }
            }
            // `[len u32][value]`, encoded in place (the length is patched in after).
            let at = cur.len();
            cur.extend_from_slice(&[0; 4]);
            let len = match postcard::to_extend(a.borrow(), Ext(&mut cur)) {
                Ok(_) => u32::try_from(cur.len() - at - 4).map_err(|_| Error::TooLarge),
                Err(e) => Err(Error::Encode(e.to_string())),
            };
            match (len, bad.as_deref_mut()) {
                (Ok(len), _) => {
                    cur[at..at + 4].copy_from_slice(&len.to_le_bytes());
                    count += 1;
                }
                (Err(e), None) => return Err(e),
                (Err(e), Some(bad)) => {
                    // Its place stays its own: what came before goes first, then its error.
                    cur.truncate(at);
                    if count > 0 {
                        out.push((start, count, std::mem::take(&mut cur)));
                        count = 0;
                    }
                    if !out.is_empty() {
                        emit(std::mem::take(&mut out))?;
                    }
                    bad(n, e);
                    start = n + 1;
                    batch_from = n + 1;
                }
            }
            n += 1;
        }
        if count > 0 {
            out.push((start, count, cur));
        }
        if !out.is_empty() {
            emit(out)?;
        }
        Ok(n - base)
    }

    /// Submits `args` as chunks of `job`; if it fails part way, the part submitted runs on but
    /// `job` is ended (nobody will wait for it: the caller gets the error).
    fn submit_all<T: Serialize, B: Borrow<T>>(
        &self,
        job: &Arc<dyn Sink>,
        f: FnRef,
        args: impl IntoIterator<Item = B>,
        base: u64,
        chunksize: usize,
    ) -> Result<u64> {
        let mut any = false;
        let r = self.chunks::<T, B>(
            args,
            base,
            chunksize,
            &mut |c| {
                self.inner.submit(job.clone(), f, c)?;
                any = true;
                Ok(())
            },
            None,
        );
        if r.is_err() && any {
            job.abort(&|| Error::Closed);
        }
        r
    }

    /// Python's default chunk size: `len / (4 * processes)`, rounded up.
    fn default_chunksize(&self, len: usize) -> usize {
        len.div_ceil(4 * self.inner.cfg.processes).max(1)
    }

    fn map_job<T: Serialize, B: Borrow<T>, R: DeserializeOwned + Send + 'static>(
        &self,
        f: FnRef,
        args: Vec<B>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>> {
        let f = self.fn_ref(f)?;
        let chunksize = chunksize.unwrap_or_else(|| self.default_chunksize(args.len()));
        if chunksize == 0 {
            return Err(Error::invalid("chunksize must be at least 1"));
        }
        let cell = Cell::new(result::pool_id(&self.inner));
        let sink: Arc<dyn Sink> = Arc::new(MapSink::<R>::new(cell.clone(), args.len()));
        if args.is_empty() {
            self.inner.lock().open()?;
        } else {
            self.submit_all::<T, B>(&sink, f, args, 0, chunksize)?;
        }
        Ok(AsyncResult::new(cell))
    }

    /// Applies `f` to every item, in parallel, and returns the results in order (Python's `map`,
    /// with its default chunks). The first failed task's error is returned (as Python raises it).
    pub fn map<T, R, B>(&self, f: fn(T) -> R, iter: impl IntoIterator<Item = B>) -> Result<Vec<R>>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
        B: Borrow<T>,
    {
        self.map_async(f, iter)?.get()
    }

    /// [`map`](Self::map) with `chunksize` tasks per chunk (1: one dispatch per task).
    pub fn map_chunked<T, R, B>(
        &self,
        f: fn(T) -> R,
        iter: impl IntoIterator<Item = B>,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
        B: Borrow<T>,
    {
        self.map_job::<T, B, R>(FnRef::of(f), iter.into_iter().collect(), Some(chunksize))?
            .get()
    }

    /// [`map`](Self::map) without waiting: the results come in an [`AsyncResult`].
    pub fn map_async<T, R, B>(
        &self,
        f: fn(T) -> R,
        iter: impl IntoIterator<Item = B>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
        B: Borrow<T>,
    {
        self.map_job::<T, B, R>(FnRef::of(f), iter.into_iter().collect(), None)
    }

    /// [`map`](Self::map) of a two-argument function over pairs (Python's `starmap`; for more
    /// arguments, take a tuple and use `map`).
    pub fn starmap<A, B, R, P>(
        &self,
        f: fn(A, B) -> R,
        iter: impl IntoIterator<Item = P>,
    ) -> Result<Vec<R>>
    where
        A: TaskValue,
        B: TaskValue,
        R: TaskValue + Send + 'static,
        P: Borrow<(A, B)>,
    {
        self.starmap_async(f, iter)?.get()
    }

    /// [`starmap`](Self::starmap) without waiting.
    pub fn starmap_async<A, B, R, P>(
        &self,
        f: fn(A, B) -> R,
        iter: impl IntoIterator<Item = P>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: TaskValue,
        B: TaskValue,
        R: TaskValue + Send + 'static,
        P: Borrow<(A, B)>,
    {
        self.map_job::<(A, B), P, R>(FnRef::of2(f), iter.into_iter().collect(), None)
    }

    /// A lazy, ordered [`map`](Self::map): an iterator yielding each task's result (or error) in
    /// the order of `iter`, taking items from `iter` as results are consumed (one task per chunk,
    /// as Python's default). A failed task yields its error in its place and the rest go on (an
    /// item that cannot be encoded too: [`Error::Encode`]).
    pub fn imap<T, R, I>(&self, f: fn(T) -> R, iter: I) -> Imap<'_, T, R, I::IntoIter>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        Imap::new(self, FnRef::of(f), iter.into_iter(), 1, true)
    }

    /// [`imap`](Self::imap) with `chunksize` tasks per chunk.
    pub fn imap_chunked<T, R, I>(
        &self,
        f: fn(T) -> R,
        iter: I,
        chunksize: usize,
    ) -> Imap<'_, T, R, I::IntoIter>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        Imap::new(self, FnRef::of(f), iter.into_iter(), chunksize, true)
    }

    /// [`imap`](Self::imap), yielding results in the order the tasks complete.
    pub fn imap_unordered<T, R, I>(&self, f: fn(T) -> R, iter: I) -> Imap<'_, T, R, I::IntoIter>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        Imap::new(self, FnRef::of(f), iter.into_iter(), 1, false)
    }

    /// Runs `f(arg)` in a worker and waits for its result.
    pub fn apply<T, R>(&self, f: fn(T) -> R, arg: impl Borrow<T>) -> Result<R>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
    {
        self.apply_async(f, arg)?.get()
    }

    /// Runs `f(arg)` in a worker; the result comes in an [`AsyncResult`].
    pub fn apply_async<T, R>(&self, f: fn(T) -> R, arg: impl Borrow<T>) -> Result<AsyncResult<R>>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
    {
        self.apply_job(f, arg.borrow(), None, None)
    }

    /// [`apply_async`](Self::apply_async) with callbacks, run in this process on the pool's result
    /// thread (as Python's): `callback` with the value when the task returns one, else
    /// `error_callback` with the error; before the result is ready. They must not block for long
    /// (every other result waits meanwhile); a panic in one is reported on stderr. One that waits
    /// for an outcome of this pool not yet known (`get`, `map`, `apply`, `imap`, `join`) is
    /// refused with [`Error::Misuse`]: the callback's thread is the one that would deliver it.
    pub fn apply_async_with<T, R>(
        &self,
        f: fn(T) -> R,
        arg: impl Borrow<T>,
        callback: impl FnOnce(&R) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<R>>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
    {
        self.apply_job(
            f,
            arg.borrow(),
            Some(Box::new(callback)),
            Some(Box::new(error_callback)),
        )
    }

    fn apply_job<T, R>(
        &self,
        f: fn(T) -> R,
        arg: &T,
        cb: Option<result::Callback<R>>,
        ecb: Option<result::ErrCallback>,
    ) -> Result<AsyncResult<R>>
    where
        T: TaskValue,
        R: TaskValue + Send + 'static,
    {
        let f = self.fn_ref(FnRef::of(f))?;
        let cell = Cell::new(result::pool_id(&self.inner));
        let sink: Arc<dyn Sink> = Arc::new(OneSink::new(cell.clone(), cb, ecb));
        self.submit_all::<T, &T>(&sink, f, [arg], 0, 1)?;
        Ok(AsyncResult::new(cell))
    }

    /// Takes no more work: later calls fail with [`Error::Closed`]; what was submitted runs to the
    /// end. Then [`join`](Self::join).
    pub fn close(&self) {
        self.inner.lock().closed = true;
    }

    /// After [`close`](Self::close) (or [`terminate`](Self::terminate)): waits for the submitted
    /// work to finish and the workers to exit, and reaps them. [`Error::Misuse`] on a pool still
    /// open (as Python's `ValueError`), and in a callback of this pool while work is pending (the
    /// callback's thread is the one that would deliver it).
    pub fn join(&self) -> Result<()> {
        self.mine()?;
        {
            let mut st = self.inner.lock();
            if !st.closed && st.ended.is_none() {
                return Err(Error::Misuse);
            }
            while !st.idle() && st.ended.is_none() {
                if result::waits_for_itself(result::pool_id(&self.inner)) {
                    return Err(Error::Misuse); // a callback: the work waits for this very thread
                }
                st = self.inner.idle.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        let blk = self.inner.shared.block();
        blk.flags.fetch_or(transport::CLOSING, Ordering::AcqRel);
        let _ = blk.board.notify_all_always();
        self.inner.stop.store(true, Ordering::Release);
        let _ = blk.results.notify_all_always();
        self.join_thread();
        Ok(())
    }

    /// Ends every worker now (SIGKILL): pending results fail with [`Error::Closed`]. Reaps the
    /// workers before it returns (unless called from a callback, on the result thread itself: then
    /// right after the callback).
    pub fn terminate(&self) {
        if std::process::id() != self.owner {
            return;
        }
        self.inner.end(End::Terminated, true);
        self.join_thread();
    }

    fn join_thread(&self) {
        if std::thread::current().id() == self.thread_id {
            return;
        }
        // The lock is held while the thread is joined: a second caller (another thread's `join`
        // or `terminate`) waits for the first to finish reaping, not just for the handle.
        let mut g = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = g.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Pool {
    /// Terminates the pool and reaps its workers.
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: one `Result<R>` per item.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let pool = shmwire::Pool::new(2)?;
/// let mut it = pool.imap(|x: u32| 10 / x, [5u32, 0, 2]);
/// assert_eq!(it.next().unwrap()?, 2);
/// assert!(matches!(it.next(), Some(Err(shmwire::Error::TaskPanicked { .. }))));
/// assert_eq!(it.next_timeout(std::time::Duration::from_secs(30)).unwrap()?, 5);
/// assert!(it.next().is_none());
/// # Ok(()) }
/// ```
pub struct Imap<'p, T, R, I> {
    pool: &'p Pool,
    f: FnRef,
    input: I,
    chunksize: usize,
    sink: Arc<StreamSink<R>>,
    submitted: u64,
    yielded: u64,
    window: u64,
    exhausted: bool,
    done: bool,
    in_order: bool,
    _t: PhantomData<fn(T)>,
}

impl<T, R, I> std::fmt::Debug for Imap<'_, T, R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("submitted", &self.submitted)
            .field("yielded", &self.yielded)
            .finish()
    }
}

impl<'p, T, R, I> Imap<'p, T, R, I>
where
    T: TaskValue,
    R: TaskValue + Send + 'static,
    I: Iterator,
    I::Item: Borrow<T>,
{
    fn new(pool: &'p Pool, f: FnRef, input: I, chunksize: usize, in_order: bool) -> Self {
        let chunksize = chunksize.max(1);
        let window = (8 * pool.processes() * chunksize).max(256) as u64;
        Imap {
            pool,
            f,
            input,
            chunksize,
            sink: StreamSink::new(in_order, result::pool_id(&pool.inner)),
            submitted: 0,
            yielded: 0,
            window,
            exhausted: false,
            done: false,
            in_order,
            _t: PhantomData,
        }
    }

    /// Submits items while fewer than the window are in flight.
    fn top_up(&mut self) -> Result<()> {
        let f = self.pool.fn_ref(self.f)?;
        while !self.exhausted && self.submitted - self.yielded < self.window {
            let room = (self.window - (self.submitted - self.yielded)) as usize;
            let take = room.min(self.chunksize * 64).max(1);
            let items: Vec<I::Item> = self.input.by_ref().take(take).collect();
            if items.len() < take {
                self.exhausted = true;
            }
            if items.is_empty() {
                break;
            }
            let sink: Arc<dyn Sink> = self.sink.clone();
            let pool = self.pool;
            // The index of the next item: what went, and the items that could not be encoded
            // (their errors are in the stream, in their places).
            let next = std::cell::Cell::new(self.submitted);
            let r = pool.chunks::<T, I::Item>(
                items,
                next.get(),
                self.chunksize,
                &mut |c| {
                    let n: u64 = c.iter().map(|c| u64::from(c.1)).sum();
                    pool.inner.submit(sink.clone(), f, c)?;
                    next.set(next.get() + n); // only what went: the results to wait for
                    Ok(())
                },
                Some(&mut |i, e| {
                    sink.deliver(i, Outcome::Failed(e));
                    next.set(next.get() + 1);
                }),
            );
            self.submitted = next.get();
            r?;
        }
        Ok(())
    }

    /// The next result, waiting at most `timeout` ([`Error::Timeout`]: nothing is lost, call
    /// again). `None` at the end.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(Instant::now().checked_add(timeout))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        if self.done {
            return None;
        }
        if let Err(e) = self.top_up() {
            if self.yielded == self.submitted {
                self.done = true;
                return Some(Err(e));
            }
        }
        if self.yielded == self.submitted {
            self.done = true;
            return None;
        }
        let index = self.in_order.then_some(self.yielded);
        match self.sink.next(index, deadline) {
            Ok(r) => {
                self.yielded += 1;
                Some(r)
            }
            Err(Error::Timeout) => Some(Err(Error::Timeout)),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<T, R, I> Iterator for Imap<'_, T, R, I>
where
    T: TaskValue,
    R: TaskValue + Send + 'static,
    I: Iterator,
    I::Item: Borrow<T>,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None)
    }
}
