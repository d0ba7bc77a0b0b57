//! Workers and the zygote.
//!
//! A worker is a long-lived process that takes chunks from the board, runs their tasks one after
//! the other and writes each result to its ring (see `transport`). It holds one participant slot
//! of the pool's segment (its claim id marks the board entries it takes), records in its worker
//! slot what it holds and which task it began, and exits when the pool closes, when it has run
//! `maxtasksperchild` tasks (at the end of a chunk: nothing is cut short), or when the parent dies
//! (`PR_SET_PDEATHSIG`, and a check of the parent's claim between sleeps).
//!
//! **Fork workers come from a zygote**: a process forked by `Pool::new` before the pool starts any
//! thread of its own, which does nothing but fork workers when the pool asks (over a `Pipe`) and
//! reap them. A replacement worker is thus never forked from the parent, which by then runs the
//! pool's result thread (and whatever threads the program started): a fork of a threaded process
//! copies the locks other threads hold. The zygote has exactly one thread, so nothing can hold a
//! lock in it while it forks.
//!
//! **Spawn workers** re-execute the program (`/proc/self/exe`, the very file the parent runs) with
//! the pool's role; `spawn::enter` hands them to [`spawned`] before the program's own roles. They
//! inherit one descriptor of the pool's segment (a description of their own, holding no token)
//! and check that they run the parent's build (see `function`).

use super::function::{self, BuildId, FnRef};
use super::transport::{self, Board, FRAME_HEAD, FrameHead, Shared};
use crate::codec;
use crate::error::{Error, Result};
use crate::process::Process;
use crate::ring::spsc::{Spsc, TAG_CONT, TAG_HEAD, TAG_WHOLE};
use crate::wait::{Deadline, Spinner, WaitStrategy, block_on};
use crate::{Connection, Pipe};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The spawn role of a pool worker (handled by `spawn::enter` itself).
pub(crate) const WORKER_ROLE: &str = "__shmwire_pool_worker";

/// What a worker is told when it starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Start {
    pub(crate) index: u32,
    pub(crate) incarnation: u64,
    /// Tasks to run before retiring (0: no limit).
    pub(crate) maxtasks: u64,
    /// How it waits for tasks (see [`encode_wait`]).
    pub(crate) wait: u64,
    /// Spawned workers: the parent's build, and the descriptor of the segment they inherit.
    pub(crate) build: Option<BuildId>,
    pub(crate) fd: i32,
}

/// A wait strategy as a number: 0 sleep, 1 adaptive, else spin that many µs minus 2.
pub(crate) fn encode_wait(w: WaitStrategy) -> u64 {
    match w {
        WaitStrategy::Sleep => 0,
        WaitStrategy::Adaptive => 1,
        WaitStrategy::SpinThenSleep(d) => (d.as_micros() as u64).saturating_add(2),
    }
}

fn decode_wait(w: u64) -> WaitStrategy {
    match w {
        0 => WaitStrategy::Sleep,
        1 => WaitStrategy::Adaptive,
        us => WaitStrategy::SpinThenSleep(Duration::from_micros(us - 2)),
    }
}

/// Exit codes of a worker.
const EXIT_OK: i32 = 0;
const EXIT_NO_SEGMENT: i32 = 3;
const EXIT_INCOMPATIBLE: i32 = 4;
const EXIT_INIT: i32 = 5;

/// A spawned worker's life (from `spawn::enter`): its exit code.
pub(crate) fn spawned(args: &[u8]) -> i32 {
    let Ok(start) = codec::decode::<Start>(args) else {
        return EXIT_NO_SEGMENT;
    };
    let Some(fd) = crate::segment::registry::take_inherited(start.fd) else {
        return EXIT_NO_SEGMENT;
    };
    match Shared::adopt(fd) {
        Ok(shared) => run(&shared, &start),
        Err(_) => EXIT_NO_SEGMENT,
    }
}

/// Whether the pool's parent still lives.
fn parent_alive(shared: &Shared) -> bool {
    let id = shared.block().parent_claim.load(Ordering::Acquire);
    shared.obj.segment().claim_alive(id).unwrap_or(true)
}

fn gone() -> Error {
    Error::io(std::io::ErrorKind::Other, "the pool's parent is gone")
}

/// Writes one result frame (several pieces for a large one), waiting for room.
fn send(shared: &Shared, ring: &Spsc, head: FrameHead, body: &[u8]) -> Result<()> {
    // A full ring means the parent is behind: spinning would take the CPU it needs.
    let mut spinner = Spinner::new(WaitStrategy::Sleep);
    let reserve = |len: usize, spinner: &mut Spinner| {
        block_on(
            spinner,
            false,
            &ring.ctl().space,
            Deadline::NEVER,
            || ring.try_reserve(len),
            || {
                if parent_alive(shared) {
                    Ok(())
                } else {
                    Err(gone())
                }
            },
        )
    };
    let total = FRAME_HEAD + body.len();
    let max = ring.max_payload();
    if total <= max {
        let r = reserve(total, &mut spinner)?;
        ring.write_payload(&r, 0, &head.to_bytes());
        ring.write_payload(&r, FRAME_HEAD, body);
        ring.commit(r, TAG_WHOLE);
    } else {
        // `[total u64][header][first bytes]`, then pieces.
        let first = max - 8 - FRAME_HEAD;
        let r = reserve(max, &mut spinner)?;
        ring.write_payload(&r, 0, &(total as u64).to_le_bytes());
        ring.write_payload(&r, 8, &head.to_bytes());
        ring.write_payload(&r, 8 + FRAME_HEAD, &body[..first]);
        ring.commit(r, TAG_HEAD);
        let _ = shared.block().results.notify();
        for piece in body[first..].chunks(max) {
            let r = reserve(piece.len(), &mut spinner)?;
            ring.write_payload(&r, 0, piece);
            ring.commit(r, TAG_CONT);
            let _ = shared.block().results.notify();
        }
    }
    let _ = shared.block().results.notify();
    Ok(())
}

/// Results of consecutive tasks of one chunk, not yet published.
struct Batch {
    chunk: u64,
    first: u32,
    n: u32,
    buf: Vec<u8>,
    since: Option<Instant>,
}

/// A batch is published once it holds this many results...
const BATCH_MAX: u32 = 64;
/// ... or this many bytes ...
const BATCH_BYTES: usize = 8 << 10;
/// ... or its oldest result is this old.
const BATCH_AGE: Duration = Duration::from_micros(50);

impl Batch {
    fn new() -> Batch {
        Batch {
            chunk: 0,
            first: 0,
            n: 0,
            buf: Vec::new(),
            since: None,
        }
    }

    /// Task `i` begins now: a batch's age counts from its first task's start (so a long task's
    /// result is published as soon as it ends).
    fn begin(&mut self) {
        if self.n == 0 {
            self.since = Some(Instant::now());
        }
    }

    /// Adds task `i`'s result, publishing as the rules above say.
    fn push(
        &mut self,
        shared: &Shared,
        ring: &Spsc,
        chunk: u64,
        i: u32,
        st: u32,
        v: &[u8],
    ) -> Result<()> {
        if self.n > 0 && (self.chunk != chunk || self.first + self.n != i) {
            self.flush(shared, ring)?;
        }
        if self.n == 0 {
            self.chunk = chunk;
            self.first = i;
            self.since = self.since.or_else(|| Some(Instant::now()));
        }
        transport::push_entry(&mut self.buf, st, v);
        self.n += 1;
        // The clock is read after the 1st and the 8th result only (clock reads cost as much as a
        // trivial task here): a long task's result is published at once, a short one's within
        // the age or 64 results.
        let old = matches!(self.n, 1 | 8) && self.since.is_some_and(|t| t.elapsed() >= BATCH_AGE);
        if self.n >= BATCH_MAX || self.buf.len() >= BATCH_BYTES || old {
            self.flush(shared, ring)?;
        }
        Ok(())
    }

    fn flush(&mut self, shared: &Shared, ring: &Spsc) -> Result<()> {
        if self.n == 0 {
            return Ok(());
        }
        let head = FrameHead {
            chunk: self.chunk,
            first: self.first,
            n: self.n,
        };
        send(shared, ring, head, &self.buf)?;
        self.buf.clear();
        self.n = 0;
        self.since = None;
        Ok(())
    }
}

/// Marks the slot with a state the parent must see at once, and wakes it.
fn announce(shared: &Shared, index: usize, state: u32) {
    // ORDERING: Release: the frames written before are published before the parent sees it.
    shared.slot(index).state.store(state, Ordering::Release);
    shared.block().events.fetch_add(1, Ordering::AcqRel);
    let _ = shared.block().results.notify_all_always();
}

/// Runs the pool's initializer, if it has one; the failure message if it panicked.
fn initialize(shared: &Shared, main_only: bool) -> std::result::Result<(), String> {
    let init = &shared.block().init;
    let f = FnRef {
        shim: init[0].load(Ordering::Acquire),
        func: init[1].load(Ordering::Acquire),
    };
    let (off, len) = (
        init[2].load(Ordering::Acquire),
        init[3].load(Ordering::Acquire),
    );
    if f.shim == 0 && f.func == 0 {
        return Ok(());
    }
    if !function::callable(f, main_only) {
        return Err("the initializer is not callable in this worker".into());
    }
    // The words are shared: the block is checked against the arena before anything is allocated.
    let outside = || "the initializer's argument lies outside the arena".to_owned();
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| {
            off.checked_add(l as u64)
                .is_some_and(|e| e <= shared.arena().1 as u64)
        })
        .ok_or_else(outside)?;
    let mut arg = vec![0u8; len];
    shared.read_arena(off, &mut arg).map_err(|_| outside())?;
    let mut out = Vec::new();
    // SAFETY: made by `FnRef::of` in the parent (same build: checked for spawned workers, a
    // copy for forked ones), checked callable above.
    match unsafe { function::call(f, &arg, &mut out) } {
        transport::S_OK => Ok(()),
        _ => Err(String::from_utf8_lossy(&out).into_owned()),
    }
}

/// A worker's life; its exit code.
pub(crate) fn run(shared: &Shared, start: &Start) -> i32 {
    let w = start.index as usize;
    if w >= shared.layout.workers {
        return EXIT_NO_SEGMENT;
    }
    let Ok(me) = shared.obj.me() else {
        return EXIT_NO_SEGMENT;
    };
    let slot = shared.slot(w);
    slot.claim.store(me, Ordering::Relaxed);
    slot.pid.store(std::process::id(), Ordering::Relaxed);
    slot.incarnation.store(start.incarnation, Ordering::Relaxed);
    slot.tasks.store(0, Ordering::Relaxed);
    slot.state.store(transport::W_RUNNING, Ordering::Release);
    let main_only = start.build.is_some();
    if let Some(b) = start.build {
        if BuildId::current().ok() != Some(b) {
            announce(shared, w, transport::W_INCOMPATIBLE);
            return EXIT_INCOMPATIBLE;
        }
    }
    let ring = shared.ring(w);
    if ring.recover_tail().is_err() {
        return EXIT_NO_SEGMENT;
    }
    #[cfg(feature = "test-hooks")]
    {
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some((shared.clone(), w));
    }
    if let Err(msg) = initialize(shared, main_only) {
        let mut b = Batch::new();
        let _ = b
            .push(
                shared,
                &ring,
                u64::MAX,
                0,
                transport::S_INIT,
                msg.as_bytes(),
            )
            .and_then(|()| b.flush(shared, &ring));
        announce(shared, w, transport::W_INIT_FAILED);
        return EXIT_INIT;
    }
    let blk = shared.block();
    let mut spinner = Spinner::new(decode_wait(start.wait));
    let (mut out, mut arg, mut batch) = (Vec::new(), Vec::new(), Batch::new());
    let mut done = 0u64;
    loop {
        let take = || {
            if let Some(t) = shared.take(me) {
                return Ok(Some(Some(t)));
            }
            if blk.flags.load(Ordering::Acquire) & transport::CLOSING != 0 && !shared.has_ready() {
                return Ok(Some(None));
            }
            Ok(None)
        };
        let probe = || {
            if parent_alive(shared) {
                Ok(())
            } else {
                Err(gone())
            }
        };
        let (p, d) = match block_on(
            &mut spinner,
            false,
            &blk.board,
            Deadline::NEVER,
            take,
            probe,
        ) {
            Ok(Some(t)) => t,
            Ok(None) => return EXIT_OK, // closing
            Err(_) => return EXIT_OK,   // the parent is gone
        };
        // "Began none" first, then the chunk: a worker killed between the two leaves "none
        // held" (the entry, still taken by it, runs again whole), never the new chunk with the
        // count of tasks its previous chunk began (which failed that many tasks that never ran).
        slot.started.store(0, Ordering::Relaxed);
        crate::hooks::hit(crate::hooks::Point::PoolRecording);
        slot.range.store(
            u64::from(d.first) << 32 | u64::from(d.count),
            Ordering::Relaxed,
        );
        // ORDERING: Release orders the reset above before it.
        slot.chunk.store(d.chunk.wrapping_add(1), Ordering::Release);
        shared.free(p); // Release: the record above is visible before the entry is reused
        let bufs = (&mut arg, &mut out, &mut batch);
        if run_chunk(shared, &ring, w, &d, main_only, bufs, &mut done).is_err() {
            return EXIT_OK; // the parent is gone
        }
        // ORDERING: Release: every frame of the chunk is published before it reads "none held".
        slot.chunk.store(0, Ordering::Release);
        if start.maxtasks > 0 && done >= start.maxtasks {
            announce(shared, w, transport::W_RETIRED);
            return EXIT_OK;
        }
    }
}

/// The pool and index of the worker this process is (test hooks only).
#[cfg(feature = "test-hooks")]
static CURRENT: std::sync::Mutex<Option<(Shared, usize)>> = std::sync::Mutex::new(None);

/// Test hook, in a task running in a worker: writes a frame of `tag` (1 whole, 2 head, 3 piece)
/// and `payload` into this worker's result ring, as a lying worker could. False outside a worker
/// or when the ring has no room.
#[cfg(feature = "test-hooks")]
pub(crate) fn raw_frame(tag: u32, payload: &[u8]) -> bool {
    let cur = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some((shared, w)) = cur else {
        return false;
    };
    let ring = shared.ring(w);
    if payload.len() > ring.max_payload() {
        return false;
    }
    let Ok(Some(r)) = ring.try_reserve(payload.len()) else {
        return false;
    };
    ring.write_payload(&r, 0, payload);
    ring.commit(r, tag);
    let _ = shared.block().results.notify();
    true
}

/// Test hook, in a task running in a worker: writes `len` as the length of the initializer's
/// argument, as a lying worker could (the next worker to start reads it).
#[cfg(feature = "test-hooks")]
pub(crate) fn scribble_init_len(len: u64) -> bool {
    let cur = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some((shared, _)) = cur else {
        return false;
    };
    shared.block().init[3].store(len, Ordering::Release);
    true
}

/// Runs tasks `d.first..d.count` of a chunk as worker `w`, publishing their results (all of them
/// before it returns).
fn run_chunk(
    shared: &Shared,
    ring: &Spsc,
    w: usize,
    d: &transport::Desc,
    main_only: bool,
    (arg, out, batch): (&mut Vec<u8>, &mut Vec<u8>, &mut Batch),
    done: &mut u64,
) -> Result<()> {
    let slot = shared.slot(w);
    let f = FnRef {
        shim: d.shim,
        func: d.func,
    };
    // Each task has a 4-byte length before its argument: a count the block cannot hold is not a
    // chunk the parent published (a scribbled entry): nothing of it runs.
    if d.first > d.count || u64::from(d.count) * 4 > d.len {
        return Ok(());
    }
    let callable = function::callable(f, main_only);
    let mut at = 0u64; // within the block
    for i in 0..d.count {
        let mut lenb = [0u8; 4];
        let arg_ok = at + 4 <= d.len
            && shared.read_arena(d.off + at, &mut lenb).is_ok()
            && at + 4 + u64::from(u32::from_le_bytes(lenb)) <= d.len;
        let len = u32::from_le_bytes(lenb) as usize;
        if i < d.first {
            if !arg_ok {
                break;
            }
            at += 4 + len as u64;
            continue;
        }
        // ORDERING: Release, after the previous task's result: see `transport` (the parent reads
        // it once this worker is dead).
        slot.started.store(u64::from(i) + 1, Ordering::Release);
        batch.begin();
        let status = if !arg_ok {
            out.clear();
            out.extend_from_slice(b"the task's argument block is corrupt");
            transport::S_DECODE
        } else if !callable {
            out.clear();
            out.extend_from_slice(b"the task's function is not callable in this worker");
            transport::S_INCOMPATIBLE
        } else {
            arg.resize(len, 0);
            shared.read_arena(d.off + at + 4, arg)?;
            // SAFETY: made by `FnRef::of` in the parent for this build (checked for spawned
            // workers; a forked one is a copy), and checked callable here.
            unsafe { function::call(f, arg, out) }
        };
        batch.push(shared, ring, d.chunk, i, status, out)?;
        *done += 1;
        slot.tasks.store(*done, Ordering::Relaxed);
        if arg_ok {
            at += 4 + len as u64;
        }
    }
    batch.flush(shared, ring)
}

// ---- the zygote ------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ZygoteCmd {
    Fork(Start),
    Quit,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ZygoteReply {
    Forked(u32),
    Failed(String),
}

/// Forks the zygote: a single-threaded process that forks workers on request.
pub(crate) fn zygote(shared: &Shared) -> Result<(Process, Connection)> {
    let (mine, theirs) = Pipe::new()?;
    let shared = shared.clone();
    let p = Process::fork_with(move || zygote_main(&shared, &theirs))?;
    Ok((p, mine))
}

fn zygote_main(shared: &Shared, conn: &Connection) -> i32 {
    let mut kids: Vec<Process> = Vec::new();
    while let Ok(cmd) = conn.recv::<ZygoteCmd>() {
        // Reap the workers that ended. (The parent opened a pidfd on each as soon as it learnt its
        // pid, before it sent this command: reaping frees no pid it may still name.)
        kids.retain(|k| !matches!(k.try_join(), Ok(Some(_))));
        match cmd {
            ZygoteCmd::Fork(start) => {
                let s = shared.clone();
                // The unchecked fork is safe here: the zygote runs one thread (it is a forked
                // child, and starts none), so no lock can be held by another thread at the fork.
                let forked = Process::fork_with(move || run(&s, &start));
                let reply = match forked {
                    Ok(p) => {
                        let pid = p.pid();
                        kids.push(p);
                        ZygoteReply::Forked(pid)
                    }
                    Err(e) => ZygoteReply::Failed(e.to_string()),
                };
                if conn.send(&reply).is_err() {
                    break;
                }
            }
            ZygoteCmd::Quit => break,
        }
    }
    // The pool ends: its workers are told to exit (or were killed); wait for them.
    for k in &kids {
        let _ = k.join();
    }
    0
}
