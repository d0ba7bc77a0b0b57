//! The parent's side of a pool: the ledger of chunks (what each is and which of its tasks have an
//! outcome), the board's producer with its backlog, the arena's allocator, and the pool thread,
//! which reads results, hands them to their sinks, notices dead and retired workers, runs what they
//! left again and starts their successors.
//!
//! **Liveness bound.** The pool thread sleeps on the results' eventcount at most
//! [`PROBE_INTERVAL`](crate::PROBE_INTERVAL) at a time and then checks its workers (a `poll` of
//! their pidfds): a worker that dies is noticed within one interval, its task fails (or runs again)
//! and its successor is started right after; so a task whose worker was killed has its outcome
//! within 2 × `PROBE_INTERVAL` (200 ms) of the death, plus the successor's start.
//!
//! **Recovery of a dead worker `w`** (see `transport`): its ring is drained first (every result it
//! published is delivered), then its slot says which chunk it held and which task it began: that
//! task fails with [`Error::WorkerDied`] (or runs again, `retries`), the tasks after it run again
//! elsewhere, and so do those before it whose results it had not yet published (they had ended: a
//! task may thus run twice, but only the one running at the death fails); board entries taken by a
//! dead claimer (a worker killed between its claim and its record) run again whole. A task whose
//! outcome is known is never delivered twice.

use super::StartMethod;
use super::function::FnRef;
use super::result::{Outcome, Sink};
use super::transport::{self, Board, Desc, FrameHead, Shared};
use super::worker::{self, Start, ZygoteCmd, ZygoteReply};
use crate::Connection;
use crate::error::{Error, Result};
use crate::process::Process;
use crate::ring::spsc::{Spsc, TAG_CONT, TAG_HEAD, TAG_WHOLE};
use crate::wait::{Deadline, PROBE_INTERVAL, Spinner, WaitStrategy, block_on};
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A chunk's first task (in its job), its task count, and its encoded arguments.
pub(crate) type ChunkArgs = (u64, u32, Vec<u8>);

/// How the pool ended (or broke).
#[derive(Clone, Debug)]
pub(crate) enum End {
    Terminated,
    Incompatible,
    InitFailed(String),
    NoWorkers(String),
}

impl End {
    pub(crate) fn error(&self) -> Error {
        match self {
            End::Terminated => Error::Closed,
            End::Incompatible => Error::Incompatible,
            End::InitFailed(m) => Error::TaskPanicked {
                message: format!("the pool's initializer panicked: {m}"),
            },
            End::NoWorkers(m) => Error::io(
                std::io::ErrorKind::Other,
                format!("the pool cannot start workers: {m}"),
            ),
        }
    }
}

pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: StartMethod,
    pub(crate) retries: u32,
    pub(crate) maxtasks: u64,
    /// How the result thread and the workers wait.
    pub(crate) wait: WaitStrategy,
}

/// What the parent's threads share.
pub(crate) struct Inner {
    pub(crate) shared: Shared,
    pub(crate) state: Mutex<State>,
    /// Notified when the ledger empties or the pool ends.
    pub(crate) idle: Condvar,
    pub(crate) cfg: Config,
    /// Tells the pool thread to finish.
    pub(crate) stop: AtomicBool,
    /// The workers' pids now.
    pub(crate) pids: Mutex<Vec<u32>>,
}

/// A block of the arena.
#[derive(Clone, Copy, Debug)]
struct Block {
    off: u64,
    len: u64,
}

/// The arena's allocator (in the parent alone): first fit over free runs of units.
struct Arena {
    free: BTreeMap<u64, u64>,
    /// Units a chunk may have: the arena's, less the blocks held for the pool's life (the
    /// initializer's argument). Once every chunk is done they are free, and in one run (the
    /// held block comes first).
    units: u64,
}

impl Arena {
    fn new(bytes: usize) -> Arena {
        let units = (bytes / transport::ARENA_UNIT) as u64;
        let mut free = BTreeMap::new();
        if units > 0 {
            free.insert(0, units);
        }
        Arena { free, units }
    }

    fn units_for(len: usize) -> u64 {
        (len.max(1).div_ceil(transport::ARENA_UNIT)) as u64
    }

    fn alloc(&mut self, len: usize) -> Option<Block> {
        let need = Self::units_for(len);
        let (&at, &n) = self.free.iter().find(|(_, n)| **n >= need)?;
        self.free.remove(&at);
        if n > need {
            self.free.insert(at + need, n - need);
        }
        Some(Block {
            off: at * transport::ARENA_UNIT as u64,
            len: len as u64,
        })
    }

    fn release(&mut self, b: Block) {
        let mut at = b.off / transport::ARENA_UNIT as u64;
        let mut n = Self::units_for(b.len as usize);
        if let Some((&p, &pn)) = self.free.range(..at).next_back() {
            if p + pn == at {
                self.free.remove(&p);
                at = p;
                n += pn;
            }
        }
        if let Some(&nn) = self.free.get(&(at + n)) {
            self.free.remove(&(at + n));
            n += nn;
        }
        self.free.insert(at, n);
    }

    fn fits(&self, len: usize) -> bool {
        Self::units_for(len) <= self.units
    }

    /// Allocates a block held for the pool's life (no chunk can have its room).
    fn alloc_for_good(&mut self, len: usize) -> Option<Block> {
        let b = self.alloc(len)?;
        self.units -= Self::units_for(len);
        Some(b)
    }
}

/// A chunk of a job: tasks `base..base + count` of it, their arguments, which have an outcome.
struct Chunk {
    sink: Arc<dyn Sink>,
    base: u64,
    count: u32,
    finals: Vec<u64>,
    n_final: u32,
    block: Option<Block>,
    /// The arguments, while the arena has no room for them.
    bytes: Option<Vec<u8>>,
    f: FnRef,
    /// Tasks that ran again after their worker died: (index, tries).
    tries: Vec<(u32, u32)>,
}

impl Chunk {
    fn is_final(&self, i: u32) -> bool {
        self.finals[i as usize / 64] & 1 << (i % 64) != 0
    }

    fn set_final(&mut self, i: u32) -> bool {
        if i >= self.count || self.is_final(i) {
            return false;
        }
        self.finals[i as usize / 64] |= 1 << (i % 64);
        self.n_final += 1;
        true
    }

    fn first_open(&self, from: u32) -> Option<u32> {
        (from..self.count).find(|&i| !self.is_final(i))
    }
}

/// The chunks not yet done, by id (ids are handed out in order, so a deque indexed from the
/// oldest live id: no hashing on the hot path).
#[derive(Default)]
struct Ledger {
    base: u64,
    slots: VecDeque<Option<Chunk>>,
    live: usize,
}

impl Ledger {
    fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn index(&self, id: &u64) -> Option<usize> {
        id.checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.slots.len())
    }

    fn get(&self, id: &u64) -> Option<&Chunk> {
        self.slots.get(self.index(id)?)?.as_ref()
    }

    fn get_mut(&mut self, id: &u64) -> Option<&mut Chunk> {
        let i = self.index(id)?;
        self.slots.get_mut(i)?.as_mut()
    }

    /// Adds chunk `id`, the next id after every one added before.
    fn insert(&mut self, id: u64, c: Chunk) {
        if self.slots.is_empty() {
            self.base = id;
        }
        debug_assert_eq!(id, self.base + self.slots.len() as u64);
        self.slots.push_back(Some(c));
        self.live += 1;
    }

    fn remove(&mut self, id: &u64) -> Option<Chunk> {
        let i = self.index(id)?;
        let c = self.slots.get_mut(i)?.take()?;
        self.live -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(c)
    }

    fn drain(&mut self) -> impl Iterator<Item = Chunk> + '_ {
        self.live = 0;
        self.slots.drain(..).flatten()
    }
}

/// An outcome on its way to its sink.
pub(crate) enum Res {
    /// The value's bytes, at this range of the batch buffer.
    Value(std::ops::Range<usize>),
    Failed(Error),
}

/// Outcomes on their way: per sink, a range of `Out::flat`.
pub(crate) struct Out {
    flat: Vec<(u64, Res)>,
    runs: Vec<(Arc<dyn Sink>, std::ops::Range<usize>)>,
}

impl Out {
    fn new() -> Out {
        Out {
            flat: Vec::new(),
            runs: Vec::new(),
        }
    }
}

/// The parent's bookkeeping, under `Inner::state`.
pub(crate) struct State {
    pub(crate) closed: bool,
    pub(crate) ended: Option<End>,
    enq: u64,
    next_chunk: u64,
    ledger: Ledger,
    backlog: VecDeque<Desc>,
    arena: Arena,
}

impl State {
    pub(crate) fn new(arena_bytes: usize) -> State {
        State {
            closed: false,
            ended: None,
            enq: 0,
            next_chunk: 0,
            ledger: Ledger::default(),
            backlog: VecDeque::new(),
            arena: Arena::new(arena_bytes),
        }
    }

    /// Whether work may be submitted.
    pub(crate) fn open(&self) -> Result<()> {
        if let Some(e) = &self.ended {
            return Err(e.error());
        }
        if self.closed {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Puts `bytes` in the arena for good (the initializer's argument): `(offset, length)`.
    pub(crate) fn reserve(&mut self, shared: &Shared, bytes: &[u8]) -> Result<(u64, u64)> {
        let b = self
            .arena
            .alloc_for_good(bytes.len())
            .ok_or(Error::TooLarge)?;
        shared.write_arena(b.off, bytes)?;
        Ok((b.off, b.len))
    }

    /// Whether nothing is pending.
    pub(crate) fn idle(&self) -> bool {
        self.ledger.is_empty()
    }

    /// Publishes what waits in the backlog while the board and the arena have room.
    fn pump(&mut self, shared: &Shared) -> bool {
        let mut any = false;
        while let Some(d) = self.backlog.front().copied() {
            let Some(c) = self.ledger.get_mut(&d.chunk) else {
                self.backlog.pop_front();
                continue;
            };
            let block = match c.block {
                Some(b) => b,
                None => {
                    let bytes = c.bytes.as_deref().unwrap_or(&[]);
                    let Some(b) = self.arena.alloc(bytes.len()) else {
                        break;
                    };
                    if shared.write_arena(b.off, bytes).is_err() {
                        self.arena.release(b);
                        break;
                    }
                    c.block = Some(b);
                    c.bytes = None;
                    b
                }
            };
            let d = Desc {
                off: block.off,
                len: block.len,
                ..d
            };
            if !shared.publish(self.enq, &d) {
                break;
            }
            self.enq += 1;
            self.backlog.pop_front();
            any = true;
        }
        any
    }

    /// Registers a chunk and queues its dispatch.
    fn add(&mut self, sink: Arc<dyn Sink>, base: u64, count: u32, f: FnRef, payload: Vec<u8>) {
        let id = self.next_chunk;
        self.next_chunk += 1;
        self.ledger.insert(
            id,
            Chunk {
                sink,
                base,
                count,
                finals: vec![0; (count as usize).div_ceil(64)],
                n_final: 0,
                block: None,
                bytes: Some(payload),
                f,
                tries: Vec::new(),
            },
        );
        self.backlog.push_back(Desc {
            chunk: id,
            first: 0,
            count,
            off: 0,
            len: 0,
            shim: f.shim,
            func: f.func,
        });
    }

    /// Records tasks `first..` of `chunk` as done with `results` (in order); frees the chunk once
    /// all its tasks are. A task already decided is left as it was.
    fn finish(
        &mut self,
        chunk: u64,
        first: u32,
        results: impl IntoIterator<Item = Res>,
        out: &mut Out,
    ) {
        let Some(c) = self.ledger.get_mut(&chunk) else {
            return; // late results of tasks already decided
        };
        let at = out.flat.len();
        for (k, res) in results.into_iter().enumerate() {
            let Some(i) = u32::try_from(k).ok().and_then(|k| first.checked_add(k)) else {
                break;
            };
            if c.set_final(i) {
                out.flat.push((c.base + u64::from(i), res));
            }
        }
        if out.flat.len() > at {
            out.runs.push((c.sink.clone(), at..out.flat.len()));
        }
        if c.n_final == c.count {
            if let Some(c) = self.ledger.remove(&chunk) {
                if let Some(b) = c.block {
                    self.arena.release(b);
                }
            }
        }
    }

    /// Runs the tasks of `from..to` of `chunk` that have no outcome again: one dispatch per run of
    /// them (a dispatch carries a range, and a task with an outcome must not run inside one: a
    /// task that failed with `WorkerDied` may kill every worker that runs it).
    fn rerun(&mut self, chunk: u64, from: u32, to: u32) {
        let Some(c) = self.ledger.get(&chunk) else {
            return;
        };
        let to = to.min(c.count);
        let mut runs = Vec::new();
        let mut at = from;
        while let Some(first) = c.first_open(at).filter(|&i| i < to) {
            let end = (first..to).find(|&i| c.is_final(i)).unwrap_or(to);
            runs.push(Desc {
                chunk,
                first,
                count: end,
                off: 0,
                len: 0,
                shim: c.f.shim,
                func: c.f.func,
            });
            at = end;
        }
        for d in runs.into_iter().rev() {
            if !self.backlog.contains(&d) {
                self.backlog.push_front(d);
            }
        }
    }

    /// What dead worker `w` held: the task it was running fails (or runs again), the rest runs
    /// again.
    fn recover(&mut self, shared: &Shared, w: usize, retries: u32, out: &mut Out) {
        let s = shared.slot(w);
        let held = s.chunk.load(Ordering::Acquire);
        let started = s.started.load(Ordering::Acquire);
        let range = s.range.load(Ordering::Relaxed);
        s.chunk.store(0, Ordering::Relaxed);
        s.started.store(0, Ordering::Relaxed);
        if held == 0 {
            return;
        }
        let chunk = held - 1;
        let Some(c) = self.ledger.get_mut(&chunk) else {
            return;
        };
        // Its part of the chunk (the rest may be running elsewhere); the whole of it if the slot
        // says what no worker writes.
        let (first, end) = ((range >> 32) as u32, range as u32);
        let (first, end) = if first < end && end <= c.count {
            (first, end)
        } else {
            (0, c.count)
        };
        if started <= u64::from(first) || started > u64::from(end) {
            self.rerun(chunk, first, end);
            return;
        }
        // Task `started - 1` was running when the worker died (or had just ended, its result not
        // yet published): it runs again while it has tries left, else fails with `WorkerDied`.
        // The tasks of its part before it without a result had ended, their results not yet
        // published (a frame carries several): they run again, charged nothing (a worker's death
        // is not theirs). Those from `started` on never began.
        let running = started as u32 - 1;
        if c.is_final(running) {
            self.rerun(chunk, first, end);
            return;
        }
        let t = match c.tries.iter_mut().find(|t| t.0 == running) {
            Some(t) => t,
            None => {
                c.tries.push((running, 0));
                c.tries.last_mut().expect("just pushed")
            }
        };
        t.1 += 1;
        if t.1 > retries {
            self.finish(chunk, running, [Res::Failed(Error::WorkerDied)], out);
        }
        self.rerun(chunk, first, end);
    }

    /// The pool ends (or broke): every pending job fails with `end`'s error.
    fn end(&mut self, end: End) -> Vec<Arc<dyn Sink>> {
        if self.ended.is_none() {
            self.ended = Some(end);
        }
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        for c in self.ledger.drain() {
            if !sinks.iter().any(|s| Arc::ptr_eq(s, &c.sink)) {
                sinks.push(c.sink);
            }
        }
        self.backlog.clear();
        sinks
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues chunks `(base, count, payload)` of one job and publishes what fits.
    pub(crate) fn submit(
        &self,
        sink: Arc<dyn Sink>,
        f: FnRef,
        chunks: Vec<ChunkArgs>,
    ) -> Result<()> {
        let mut st = self.lock();
        st.open()?;
        if chunks.iter().any(|c| !st.arena.fits(c.2.len())) {
            return Err(Error::TooLarge);
        }
        for (base, count, payload) in chunks {
            st.add(sink.clone(), base, count, f, payload);
        }
        let published = st.pump(&self.shared);
        drop(st);
        if published {
            let _ = self.shared.block().board.notify();
        }
        Ok(())
    }

    /// Ends the pool: pending jobs fail with `end`'s error. `stop`: the pool thread finishes too.
    pub(crate) fn end(&self, end: End, stop: bool) {
        let sinks = self.lock().end(end);
        let e = self.lock().ended.clone();
        if let Some(e) = e {
            for s in sinks {
                s.abort(&|| e.error());
            }
        }
        if stop {
            self.stop.store(true, Ordering::Release);
        }
        self.idle.notify_all();
        let _ = self.shared.block().results.notify_all_always();
    }
}

/// How long a worker may take to begin (a spawned one whose program never calls `spawn::enter`
/// runs `main` instead: it is killed, and counts as a failed start).
const START_LIMIT: Duration = Duration::from_secs(20);

/// A worker process as the parent knows it.
struct Proc {
    pid: u32,
    /// When it was started (one that has not begun within [`START_LIMIT`] is killed).
    since: Instant,
    /// For a worker forked by the zygote (the parent's handle on it).
    pidfd: Option<OwnedFd>,
    /// For a spawned worker (our child).
    process: Option<Process>,
}

impl Proc {
    fn exited(&self) -> bool {
        if let Some(fd) = &self.pidfd {
            return poll_in(fd.as_raw_fd());
        }
        match &self.process {
            Some(p) => p
                .exit_fd()
                .map_or_else(|| !p.is_alive(), |fd| poll_in(fd.as_raw_fd())),
            None => false,
        }
    }

    fn kill(&self) {
        if let Some(p) = &self.process {
            let _ = p.kill();
        } else if let Some(fd) = &self.pidfd {
            // SAFETY: plain syscall on our pidfd (no siginfo, no flags).
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }

    /// Reaps a spawned worker (a forked one is the zygote's to reap).
    fn reap(self) {
        if let Some(p) = self.process {
            let _ = p.join();
        }
    }
}

fn poll_in(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
}

/// A worker's result ring, as the pool thread reads it.
struct Reader {
    ring: Spsc,
    /// A result larger than a frame, being put together: its total and the bytes so far.
    partial: Option<(usize, Vec<u8>)>,
}

/// One result read from a ring.
struct Got {
    head: FrameHead,
    body: std::ops::Range<usize>,
}

/// The pool thread's own state.
pub(crate) struct Thread {
    inner: Arc<Inner>,
    readers: Vec<Reader>,
    procs: Vec<Option<Proc>>,
    retiring: Vec<Proc>,
    incarnations: Vec<u64>,
    zygote: Option<(Process, Connection)>,
    program: std::path::PathBuf,
    build: Option<super::function::BuildId>,
    seen_events: u32,
    /// Workers that died before they started, in a row.
    failed_starts: u32,
    init_failure: Option<String>,
}

impl Thread {
    pub(crate) fn new(
        inner: Arc<Inner>,
        zygote: Option<(Process, Connection)>,
        program: std::path::PathBuf,
        build: Option<super::function::BuildId>,
    ) -> Thread {
        let n = inner.cfg.processes;
        let readers = (0..n)
            .map(|w| Reader {
                ring: inner.shared.ring(w),
                partial: None,
            })
            .collect();
        Thread {
            inner,
            readers,
            procs: (0..n).map(|_| None).collect(),
            retiring: Vec::new(),
            incarnations: vec![0; n],
            zygote,
            program,
            build,
            seen_events: 0,
            failed_starts: 0,
            init_failure: None,
        }
    }

    /// Starts (or restarts) worker `w`.
    pub(crate) fn start(&mut self, w: usize) -> Result<()> {
        let shared = &self.inner.shared;
        self.incarnations[w] += 1;
        let s = shared.slot(w);
        s.chunk.store(0, Ordering::Relaxed);
        s.started.store(0, Ordering::Relaxed);
        s.claim.store(0, Ordering::Relaxed);
        s.state.store(transport::W_EMPTY, Ordering::Release);
        let mut start = Start {
            index: w as u32,
            incarnation: self.incarnations[w],
            maxtasks: self.inner.cfg.maxtasks,
            wait: worker::encode_wait(self.inner.cfg.wait),
            build: None,
            fd: -1,
        };
        let proc = match self.inner.cfg.method {
            StartMethod::Fork => {
                let (_, conn) = self
                    .zygote
                    .as_ref()
                    .ok_or_else(|| Error::io(std::io::ErrorKind::Other, "no zygote"))?;
                conn.send(&ZygoteCmd::Fork(start))?;
                match conn.recv_timeout::<ZygoteReply>(Duration::from_secs(30))? {
                    ZygoteReply::Forked(pid) => {
                        // Opened before the next command: the zygote reaps only while it handles
                        // one, so the pid still names our worker (or its zombie).
                        let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|p| {
                            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                                .ok()
                        });
                        Proc {
                            pid,
                            since: Instant::now(),
                            pidfd,
                            process: None,
                        }
                    }
                    ZygoteReply::Failed(m) => {
                        return Err(Error::io(std::io::ErrorKind::Other, m));
                    }
                }
            }
            StartMethod::Spawn => {
                // A description of our own for the child (holding no token: it takes its own).
                let fd = crate::segment::reopen(shared.obj.segment().descriptor())?;
                start.build = self.build;
                start.fd = fd.as_raw_fd();
                let args = crate::codec::encode(&start)?;
                let p = crate::process::spawn::spawn_raw(
                    &self.program,
                    worker::WORKER_ROLE,
                    &args,
                    &[fd.as_raw_fd()],
                )?;
                drop(fd);
                Proc {
                    pid: p.pid(),
                    since: Instant::now(),
                    pidfd: None,
                    process: Some(p),
                }
            }
        };
        self.inner.pids.lock().unwrap_or_else(|p| p.into_inner())[w] = proc.pid;
        self.procs[w] = Some(proc);
        Ok(())
    }

    /// Reads every frame waiting in ring `w` (at most `limit`) into `batch`; false when the ring
    /// holds what no worker writes (a bad frame, a piece header too short for its total): its
    /// writer is then killed and recovered as dead. Nothing in the ring can make this panic.
    fn drain(&mut self, w: usize, limit: usize, batch: &mut Vec<u8>, got: &mut Vec<Got>) -> bool {
        let r = &mut self.readers[w];
        for _ in 0..limit {
            let f = match r.ring.try_peek() {
                Ok(Some(f)) => f,
                Ok(None) => return true,
                Err(_) => return false,
            };
            let at = batch.len();
            batch.resize(at + f.len, 0);
            r.ring.read_payload(&f, 0, &mut batch[at..]);
            r.ring.consume(f);
            match f.tag {
                TAG_WHOLE => {
                    if let Some(head) = FrameHead::parse(&batch[at..]) {
                        got.push(Got {
                            head,
                            body: at + transport::FRAME_HEAD..batch.len(),
                        });
                        continue;
                    }
                    batch.truncate(at);
                }
                TAG_HEAD => {
                    // `[total u64]`, then the frame's first bytes (its header among them): a
                    // shorter one is no worker's.
                    let head = batch.get(at..at + 8 + transport::FRAME_HEAD).is_some();
                    let total = batch
                        .get(at..at + 8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes)
                        .and_then(|t| usize::try_from(t).ok());
                    let (true, Some(total)) = (head, total) else {
                        batch.truncate(at);
                        return false;
                    };
                    r.partial = Some((total, batch[at + 8..].to_vec()));
                    batch.truncate(at);
                }
                TAG_CONT => {
                    let piece = batch.split_off(at);
                    if let Some((total, mut bytes)) = r.partial.take() {
                        bytes.extend_from_slice(&piece);
                        if bytes.len() < total {
                            r.partial = Some((total, bytes));
                        } else if let Some(head) = FrameHead::parse(&bytes) {
                            let at = batch.len();
                            batch.extend_from_slice(&bytes);
                            got.push(Got {
                                head,
                                body: at + transport::FRAME_HEAD..batch.len(),
                            });
                        }
                    }
                }
                _ => return false,
            }
        }
        true
    }

    /// Whether anything waits for the pool thread.
    fn pending(&self) -> bool {
        self.inner.stop.load(Ordering::Acquire)
            || self.inner.shared.block().events.load(Ordering::Acquire) != self.seen_events
            || self
                .readers
                .iter()
                .any(|r| matches!(r.ring.try_peek(), Ok(Some(_))))
    }

    /// The pool thread's loop.
    pub(crate) fn run(mut self) {
        super::result::enter_result_thread(super::result::pool_id(&self.inner));
        let inner = self.inner.clone();
        let shared = inner.shared.clone();
        let blk = shared.block();
        let mut spinner = Spinner::new(inner.cfg.wait);
        let mut last_probe = Instant::now();
        let (mut batch, mut got, mut out) = (Vec::new(), Vec::new(), Out::new());
        while !inner.stop.load(Ordering::Acquire) {
            let left = PROBE_INTERVAL.saturating_sub(last_probe.elapsed());
            let check = || Ok(self.pending().then_some(()));
            let _ = block_on(
                &mut spinner,
                false,
                &blk.results,
                Deadline::after(Some(left)),
                check,
                || Ok(()),
            );
            let events = blk.events.load(Ordering::Acquire);
            let mut dead = Vec::new();
            let mut retired = Vec::new();
            let mut broke = None;
            let mut init_failed = false;
            if events != self.seen_events || last_probe.elapsed() >= PROBE_INTERVAL {
                self.seen_events = events;
                last_probe = Instant::now();
                for w in 0..self.procs.len() {
                    let Some(p) = &self.procs[w] else { continue };
                    match shared.slot(w).state.load(Ordering::Acquire) {
                        transport::W_RETIRED => retired.push(w),
                        transport::W_INCOMPATIBLE => broke = Some(End::Incompatible),
                        // Its message is in its ring: read below.
                        transport::W_INIT_FAILED if p.exited() => init_failed = true,
                        transport::W_RUNNING if !p.exited() => self.failed_starts = 0,
                        st if p.exited() => {
                            if st == transport::W_EMPTY {
                                self.failed_starts += 1;
                            }
                            dead.push(w);
                        }
                        transport::W_EMPTY if p.since.elapsed() > START_LIMIT => p.kill(),
                        _ => {}
                    }
                }
            }
            batch.clear();
            got.clear();
            let mut corrupt = Vec::new();
            for w in 0..self.readers.len() {
                let limit = if dead.contains(&w) { usize::MAX } else { 4096 };
                if !self.drain(w, limit, &mut batch, &mut got) {
                    corrupt.push(w);
                }
            }
            for g in &got {
                if g.head.chunk == u64::MAX {
                    if let Some((transport::S_INIT, v, _)) =
                        transport::next_entry(&batch[g.body.clone()])
                    {
                        let at = g.body.start;
                        self.init_failure = Some(
                            String::from_utf8_lossy(&batch[at + v.start..at + v.end]).into_owned(),
                        );
                    }
                }
            }
            if init_failed {
                let m = self.init_failure.clone().unwrap_or_default();
                broke = Some(End::InitFailed(m));
            }
            out.flat.clear();
            out.runs.clear();
            let published;
            {
                let mut st = inner.lock();
                for g in got.drain(..) {
                    let results = entries(&batch, g.body, g.head.n);
                    st.finish(g.head.chunk, g.head.first, results, &mut out);
                }
                for &w in &dead {
                    st.recover(&shared, w, inner.cfg.retries, &mut out);
                }
                if !dead.is_empty() {
                    let seg = shared.obj.segment();
                    for d in shared.reclaim(&|id| seg.claim_alive(id).unwrap_or(true)) {
                        st.rerun(d.chunk, d.first, d.count);
                    }
                }
                published = st.pump(&shared);
            }
            if published {
                let _ = blk.board.notify();
            }
            let mut flat = std::mem::take(&mut out.flat).into_iter();
            for (sink, range) in out.runs.drain(..) {
                let mut outcomes = flat.by_ref().take(range.len()).map(|(i, res)| match res {
                    Res::Value(r) => (i, Outcome::Value(&batch[r])),
                    Res::Failed(e) => (i, Outcome::Failed(e)),
                });
                sink.deliver_all(&mut outcomes);
                // A sink may stop early (a failed map ignores the rest): the rest of its run is
                // still its own, not the next sink's.
                outcomes.for_each(drop);
            }
            if inner.lock().idle() {
                inner.idle.notify_all();
            }
            if self.failed_starts > 5 && broke.is_none() {
                broke = Some(End::NoWorkers(
                    "workers keep dying before they start".into(),
                ));
            }
            if let Some(b) = broke {
                inner.end(b, false);
            }
            for w in corrupt {
                if let Some(p) = &self.procs[w] {
                    p.kill(); // it wrote what no worker writes: treat it as dead from here
                }
            }
            for w in dead {
                let r = &mut self.readers[w];
                r.partial = None;
                // The dead writer's ring: empty from where we read (nothing it half wrote counts,
                // nor a frame we could not step over: its successor must find a sound ring).
                r.ring.reset_after_writer();
                if let Some(p) = self.procs[w].take() {
                    p.reap();
                }
                self.restart(w);
            }
            for w in retired {
                if let Some(p) = self.procs[w].take() {
                    self.retiring.push(p);
                }
                self.restart(w);
            }
            let retiring = std::mem::take(&mut self.retiring);
            for p in retiring {
                if p.exited() {
                    p.reap();
                } else {
                    self.retiring.push(p);
                }
            }
        }
        self.shutdown();
    }

    fn restart(&mut self, w: usize) {
        if self.inner.lock().ended.is_some() {
            return;
        }
        if let Err(e) = self.start(w) {
            self.inner.end(End::NoWorkers(e.to_string()), false);
        }
    }

    /// Ends every worker and the zygote, and reaps them.
    fn shutdown(&mut self) {
        let terminated = matches!(self.inner.lock().ended, Some(End::Terminated));
        let mut all: Vec<Proc> = self.procs.iter_mut().filter_map(Option::take).collect();
        all.append(&mut self.retiring);
        if terminated {
            for p in &all {
                p.kill();
            }
        } else {
            // Closing: they exit once the board is empty; kill those that do not within a while.
            let until = Instant::now() + Duration::from_secs(10);
            while all.iter().any(|p| !p.exited()) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            for p in all.iter().filter(|p| !p.exited()) {
                p.kill();
            }
        }
        for p in all {
            p.reap();
        }
        if let Some((z, conn)) = self.zygote.take() {
            let _ = conn.send(&ZygoteCmd::Quit);
            drop(conn);
            if z.join_timeout(Duration::from_secs(10)).is_err() {
                let _ = z.kill();
                let _ = z.join();
            }
        }
    }
}

/// The `n` results of a frame's body (at `body` in `batch`), each a value's range in `batch` or a
/// failure; a malformed entry ends the list (its tasks stay undecided, as if unpublished).
fn entries(batch: &[u8], body: std::ops::Range<usize>, n: u32) -> Vec<Res> {
    // `n` is the worker's word: no more entries than the body can hold.
    let mut out = Vec::with_capacity((n as usize).min(body.len() / transport::ENTRY_HEAD));
    let mut at = body.start;
    for _ in 0..n {
        let Some((status, v, next)) = transport::next_entry(&batch[at..body.end]) else {
            break;
        };
        let value = at + v.start..at + v.end;
        out.push(match status {
            transport::S_OK => Res::Value(value),
            s => Res::Failed(failure(s, &batch[value])),
        });
        at += next;
    }
    out
}

/// The error a failure frame stands for.
fn failure(status: u32, msg: &[u8]) -> Error {
    let msg = String::from_utf8_lossy(msg).into_owned();
    match status {
        transport::S_PANICKED => Error::TaskPanicked { message: msg },
        transport::S_DECODE => Error::Decode {
            reason: msg,
            bytes: Vec::new(),
        },
        transport::S_ENCODE => Error::Encode(msg),
        transport::S_INCOMPATIBLE => Error::Incompatible,
        _ => Error::Corrupt,
    }
}
