//! Queue workloads as [`Side`]s whose processes (or threads) are started once and reused for every
//! block: shmwire's `Queue` (Pod items through `put_pod`/`get_pod`, or serde items through
//! `put`/`get`) against the design CPython uses (an OS pipe whose readers and writers each take a
//! process-shared lock; here a pthread mutex, as fast as C makes it) and crossbeam-channel between
//! threads (the ceiling). Also here: the control block and the workers that the lock workloads
//! (`locks.rs`) share. Also compiled into `benches/queue.rs`.
//!
//! A queue block: the producers put items until told to stop (or until their quota), then each puts
//! one END item; consumers count what they get. The block ends when every END was taken and the
//! consumers' counts add up to what the producers put (so every item is checked to arrive).

use super::links::{Ref, Shared, Zeroed, futex, publish, wait_until};
use super::measure::{Amount, Sample, Side};
use shmwire::{Process, Queue};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

/// Most producers, consumers or lock contenders in one side.
pub const MAX_PARTIES: usize = 16;
const END: u64 = u64::MAX;
const EXIT: u64 = u64::MAX - 1;

/// An atomic on a line of its own.
#[repr(C, align(128))]
pub struct Padded(pub AtomicU64);

/// The control block of a queue or lock side, in shared memory.
#[repr(C)]
pub struct Ctl {
    /// Block number the workers may run (they sleep on it between blocks).
    pub epoch: AtomicU32,
    pub exit: AtomicU32,
    pub stop: AtomicU32,
    /// ENDs taken by consumers (queues), or workers done with the block (locks).
    pub done: AtomicU32,
    pub quota: AtomicU64,
    /// Lock workloads: the last holder and the counts, changed under the lock.
    pub last: AtomicU64,
    pub acquisitions: AtomicU64,
    pub handoffs: AtomicU64,
    /// Strict hand-offs: when the holder released (CLOCK_MONOTONIC ns; 0: not in this block), and
    /// the sum of the times from a release to the next holder's return from `acquire`.
    pub released_at: AtomicU64,
    pub handoff_ns: AtomicU64,
    /// Strict hand-offs: how many times each of the two processes said it wants the lock, and got it.
    pub want: [Padded; 2],
    pub got: [Padded; 2],
    produced: [Padded; MAX_PARTIES],
    counts: [Padded; MAX_PARTIES],
}
// SAFETY: atomics only, valid at zero.
unsafe impl Zeroed for Ctl {}

fn sum(v: &[Padded]) -> u64 {
    v.iter().map(|p| p.0.load(Acquire)).sum()
}

/// A forked child or a thread.
pub enum Kid {
    Proc(Process),
    Thread(std::thread::JoinHandle<()>),
}

pub fn spawn(threads: bool, f: impl FnOnce() + Send + 'static) -> Kid {
    if threads {
        Kid::Thread(std::thread::spawn(f))
    } else {
        Kid::Proc(Process::fork(f).expect("fork"))
    }
}

/// Joins a thread, or a child (killed if it has not ended within 10 s).
pub fn join(kid: Kid) {
    match kid {
        Kid::Thread(h) => {
            let _ = h.join();
        }
        Kid::Proc(p) => {
            if p.join_timeout(Duration::from_secs(10)).is_err() {
                let _ = p.kill();
                let _ = p.join_timeout(Duration::from_secs(5));
            }
        }
    }
}

/// The producing half of a queue.
pub trait Put: Send + 'static {
    fn put(&mut self, v: u64);
}
/// The consuming half of a queue: `None` once the queue is closed.
pub trait Get: Send + 'static {
    fn get(&mut self) -> Option<u64>;
}

/// A queue workload with its producers and consumers.
pub struct QueueSide {
    ctl: Shared<Ctl>,
    producers: Vec<Kid>,
    consumers: Vec<Kid>,
    blocks: u32,
    close: Option<Box<dyn FnOnce()>>,
}

impl QueueSide {
    fn new<P: Put, G: Get>(
        producers: usize,
        consumers: usize,
        threads: bool,
        mk_put: impl Fn() -> P,
        mk_get: impl Fn() -> G,
        close: Box<dyn FnOnce()>,
    ) -> Self {
        assert!((1..=MAX_PARTIES).contains(&producers) && (1..=MAX_PARTIES).contains(&consumers));
        let ctl: Shared<Ctl> = Shared::new();
        let consumers = (0..consumers)
            .map(|k| {
                let (c, mut g) = (ctl.at(), mk_get());
                spawn(threads, move || consume(c, k, &mut g))
            })
            .collect();
        let producers = (0..producers)
            .map(|k| {
                let (c, mut p) = (ctl.at(), mk_put());
                spawn(threads, move || produce(c, k, &mut p))
            })
            .collect();
        QueueSide {
            ctl,
            producers,
            consumers,
            blocks: 0,
            close: Some(close),
        }
    }
}

fn consume(c: Ref<Ctl>, k: usize, g: &mut impl Get) {
    let mut n = 0u64;
    while let Some(v) = g.get() {
        if v == END {
            c.done.fetch_add(1, AcqRel);
            futex(&c.done, libc::FUTEX_WAKE, 1);
        } else {
            n += 1;
            c.counts[k].0.store(n, Release);
        }
    }
}

fn produce(c: Ref<Ctl>, k: usize, p: &mut impl Put) {
    let mut block = 0;
    let mut total = 0u64;
    loop {
        block += 1;
        wait_until(&c.epoch, block);
        if c.exit.load(Acquire) != 0 {
            return;
        }
        let quota = c.quota.load(Acquire);
        let mut i = 0u64;
        while i < quota && c.stop.load(Relaxed) == 0 {
            for _ in 0..64.min(quota - i) {
                p.put(i);
                i += 1;
            }
        }
        total += i;
        c.produced[k].0.store(total, Release);
        p.put(END);
    }
}

impl Side for QueueSide {
    fn run(&mut self, amount: Amount) -> Sample {
        let c = &self.ctl;
        let (p, base) = (self.producers.len() as u64, sum(&c.counts));
        c.stop.store(0, Relaxed);
        let quota = match amount {
            Amount::For(_) => u64::MAX / 4,
            Amount::Items(n) => n.div_ceil(p),
        };
        c.quota.store(quota, Release);
        self.blocks += 1;
        let start = Instant::now();
        publish(&c.epoch, self.blocks);
        if let Amount::For(d) = amount {
            std::thread::sleep(d);
            c.stop.store(1, Relaxed);
        }
        wait_until(&c.done, self.blocks * p as u32);
        let give_up = Instant::now() + Duration::from_secs(10);
        while sum(&c.counts) != sum(&c.produced) {
            assert!(
                Instant::now() < give_up,
                "queue: {} items put, {} received",
                sum(&c.produced),
                sum(&c.counts)
            );
            std::thread::yield_now();
        }
        Sample {
            ops: sum(&c.counts) - base,
            secs: start.elapsed().as_secs_f64(),
            ..Sample::default()
        }
    }
}

impl Drop for QueueSide {
    fn drop(&mut self) {
        self.ctl.exit.store(1, Release);
        publish(&self.ctl.epoch, self.blocks + 1);
        for k in self.producers.drain(..) {
            join(k);
        }
        if let Some(close) = self.close.take() {
            close();
        }
        for k in self.consumers.drain(..) {
            join(k);
        }
    }
}

// ---- the queues -----------------------------------------------------------------------------------

/// shmwire's `Queue<u64>` of `maxsize` 4096: Pod items (`put_pod`/`get_pod`), or serde (`put`/`get`).
pub fn shm_queue(producers: usize, consumers: usize, pod: bool) -> QueueSide {
    struct H(Queue<u64>, bool);
    impl Put for H {
        fn put(&mut self, v: u64) {
            if self.1 {
                self.0.put_pod(&v).expect("put_pod");
            } else {
                self.0.put(v).expect("put");
            }
        }
    }
    impl Get for H {
        fn get(&mut self) -> Option<u64> {
            if self.1 {
                self.0.get_pod().ok()
            } else {
                self.0.get().ok()
            }
        }
    }
    let q = Queue::<u64>::new(4096).expect("queue");
    let (q1, q2) = (q.clone(), q.clone());
    QueueSide::new(
        producers,
        consumers,
        false,
        move || H(q1.clone(), pod),
        move || H(q2.clone(), pod),
        Box::new(move || q.close().expect("close")),
    )
}

/// crossbeam-channel (bounded, 4096) between threads of this process: the ceiling.
pub fn crossbeam(producers: usize, consumers: usize) -> QueueSide {
    struct Tx(crossbeam_channel::Sender<u64>);
    struct Rx(crossbeam_channel::Receiver<u64>);
    impl Put for Tx {
        fn put(&mut self, v: u64) {
            self.0.send(v).expect("send");
        }
    }
    impl Get for Rx {
        fn get(&mut self) -> Option<u64> {
            self.0.recv().ok()
        }
    }
    let (tx, rx) = crossbeam_channel::bounded::<u64>(4096);
    // The producers hold the only senders: once they are joined, the consumers see the end.
    QueueSide::new(
        producers,
        consumers,
        true,
        move || Tx(tx.clone()),
        move || Rx(rx.clone()),
        Box::new(|| {}),
    )
}

/// A process-shared pthread mutex in an anonymous shared mapping (never unmapped: a few per run).
#[derive(Clone, Copy)]
pub struct PMutex(*mut libc::pthread_mutex_t);

// SAFETY: the mutex lives in shared memory for the whole run; it is used through its own API.
unsafe impl Send for PMutex {}

impl PMutex {
    pub fn new() -> PMutex {
        // SAFETY: a fresh shared anonymous mapping large enough for the mutex, initialised once with
        // process-shared attributes before any process uses it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut libc::pthread_mutex_t;
            assert!(p as *mut libc::c_void != libc::MAP_FAILED);
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutex_init(p, &attr);
            PMutex(p)
        }
    }

    /// Locks it.
    pub fn lock(&self) {
        // SAFETY: an initialised process-shared mutex.
        unsafe { libc::pthread_mutex_lock(self.0) };
    }

    /// Unlocks it.
    ///
    /// # Safety
    /// This thread holds it (locked by [`lock`](Self::lock), not unlocked since).
    pub unsafe fn unlock(&self) {
        // SAFETY: an initialised mutex this thread holds (the caller's contract).
        unsafe { libc::pthread_mutex_unlock(self.0) };
    }

    pub fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: an initialised process-shared mutex.
        unsafe { libc::pthread_mutex_lock(self.0) };
        let r = f();
        // SAFETY: as above; we hold it.
        unsafe { libc::pthread_mutex_unlock(self.0) };
        r
    }
}

impl Default for PMutex {
    fn default() -> Self {
        Self::new()
    }
}

fn read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: valid buffer range, open descriptor.
        let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        if n <= 0 {
            return false;
        }
        off += n as usize;
    }
    true
}

fn write_record(fd: RawFd, v: u64) {
    let mut rec = [0u8; 12];
    rec[..4].copy_from_slice(&8u32.to_le_bytes());
    rec[4..].copy_from_slice(&v.to_le_bytes());
    // SAFETY: writes a valid 12-byte buffer (atomic on a pipe: under PIPE_BUF).
    assert_eq!(unsafe { libc::write(fd, rec.as_ptr().cast(), 12) }, 12);
}

/// The same items through CPython's design: one OS pipe (64 KiB, more than the 4096 items of 12
/// bytes the others hold); a writer takes the write lock and writes `[len: u32][payload]`; a reader
/// takes the read lock and reads the length, then the payload.
pub fn pipe_lock_queue(producers: usize, consumers: usize) -> QueueSide {
    struct W(RawFd, PMutex);
    struct R(RawFd, PMutex);
    impl Put for W {
        fn put(&mut self, v: u64) {
            let fd = self.0;
            self.1.with(|| write_record(fd, v));
        }
    }
    impl Get for R {
        fn get(&mut self) -> Option<u64> {
            let (mut len, mut item) = ([0u8; 4], [0u8; 8]);
            let fd = self.0;
            let ok = self
                .1
                .with(|| read_exact(fd, &mut len) && read_exact(fd, &mut item));
            let v = u64::from_le_bytes(item);
            (ok && v != EXIT).then_some(v)
        }
    }
    let mut fds = [0; 2];
    // SAFETY: valid out-array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rfd, wfd) = (fds[0], fds[1]);
    let (rlock, wlock) = (PMutex::new(), PMutex::new());
    // Ended by one EXIT record per consumer (not by EOF: children of other sides may hold the
    // write end).
    QueueSide::new(
        producers,
        consumers,
        false,
        move || W(wfd, wlock),
        move || R(rfd, rlock),
        Box::new(move || {
            for _ in 0..consumers {
                wlock.with(|| write_record(wfd, EXIT));
            }
            // SAFETY: our ends, closed once, after the last use.
            unsafe {
                libc::close(wfd);
                libc::close(rfd);
            }
        }),
    )
}
