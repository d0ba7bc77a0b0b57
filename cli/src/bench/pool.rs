//! The `pool` group's sides: shmwire's [`Pool`] against a pool built on OS pipes here (Python's
//! design at C speed: one `write` per task to a worker, one `read` per result), Python's
//! `multiprocessing.Pool` (in `pymp_bench.py`), and threads of one process (the ceiling).
//!
//! Workloads (a block repeats one call until its time is spent; the figure is tasks per second,
//! or the time of one `apply` round trip):
//! * `map1`: `map_chunked(sq, 0..2000, 1)`, one dispatch per task;
//! * `apply`: 2,000 `apply_async(sq, i)`, then every `get`;
//! * `map`: `map(sq, 0..1,000,000)` with the default chunks;
//! * `work`: `map` of 2,000 tasks of about 20 µs of arithmetic each (the iteration count is
//!   measured once, so every side does the same work);
//! * `rtt`: one `apply(sq, i)` at a time.

use super::measure::{Amount, Sample, Side};
use shmwire::{Pool, Process};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Tasks per call of the one-dispatch-per-task workloads.
pub const BATCH: u64 = 2000;
/// Tasks of the big `map`.
pub const BIG: u64 = 1_000_000;
/// Tasks per call of the `work` workload.
pub const WORK_TASKS: u64 = 2000;

/// The trivial task.
pub fn sq(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// About 20 µs of arithmetic for `iters` from [`work_iters`].
pub fn work(iters: u64) -> u64 {
    let mut h = iters;
    for _ in 0..iters {
        h = h
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        h = std::hint::black_box(h);
    }
    h
}

/// The iteration count that takes [`work`] about 20 µs here (measured once).
pub fn work_iters() -> u64 {
    static ITERS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ITERS.get_or_init(|| {
        let probe = 100_000;
        let t = Instant::now();
        std::hint::black_box(work(probe));
        let ns = t.elapsed().as_nanos().max(1) as u64;
        (probe * 20_000 / ns).max(100)
    })
}

/// What a pool side runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Map1,
    Apply,
    Map,
    Work,
    Rtt,
}

/// How many workers the pool sides run: the CPUs (at least 2).
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

fn block(amount: Amount, mut once: impl FnMut() -> u64) -> Sample {
    let t = Instant::now();
    let mut ops = 0;
    match amount {
        Amount::Items(n) => {
            while ops < n {
                ops += once();
            }
        }
        Amount::For(d) => {
            while ops == 0 || t.elapsed() < d {
                ops += once();
            }
        }
    }
    Sample {
        ops,
        secs: t.elapsed().as_secs_f64(),
        ..Sample::default()
    }
}

/// shmwire's pool.
pub struct ShmPool {
    pool: Pool,
    mode: Mode,
    i: u64,
}

impl ShmPool {
    pub fn new(mode: Mode) -> ShmPool {
        let pool = Pool::new(workers()).expect("pool");
        pool.map(sq, 0..100u64).expect("warm-up");
        ShmPool { pool, mode, i: 0 }
    }
}

impl Side for ShmPool {
    fn run(&mut self, amount: Amount) -> Sample {
        let (pool, mode) = (&self.pool, self.mode);
        let i = &mut self.i;
        let iters = work_iters();
        block(amount, || match mode {
            Mode::Map1 => {
                let r = pool.map_chunked(sq, 0..BATCH, 1).expect("map");
                assert_eq!(r[7], 49);
                BATCH
            }
            Mode::Apply => {
                let rs: Vec<_> = (0..BATCH)
                    .map(|x| pool.apply_async(sq, x).expect("apply_async"))
                    .collect();
                for (x, r) in rs.iter().enumerate() {
                    assert_eq!(r.get().expect("get"), sq(x as u64));
                }
                BATCH
            }
            Mode::Map => {
                let r = pool.map(sq, 0..BIG).expect("map");
                assert_eq!(r.len() as u64, BIG);
                BIG
            }
            Mode::Work => {
                let r = pool
                    .map(work, vec![iters; WORK_TASKS as usize])
                    .expect("map");
                assert_eq!(r[0], work(iters));
                WORK_TASKS
            }
            Mode::Rtt => {
                *i += 1;
                assert_eq!(pool.apply(sq, *i).expect("apply"), sq(*i));
                1
            }
        })
    }
}

/// Threads of this process, each taking tasks from a shared counter (the ceiling).
pub struct Threads {
    mode: Mode,
}

impl Threads {
    pub fn new(mode: Mode) -> Threads {
        Threads { mode }
    }
}

impl Side for Threads {
    fn run(&mut self, amount: Amount) -> Sample {
        let mode = self.mode;
        let iters = work_iters();
        block(amount, || {
            let (n, f): (u64, fn(u64) -> u64) = match mode {
                Mode::Work => (WORK_TASKS, work),
                _ => (BIG, sq),
            };
            let next = std::sync::atomic::AtomicU64::new(0);
            let chunk = if mode == Mode::Work { 1 } else { 4096 };
            let mut out = vec![0u64; n as usize];
            let slots: Vec<std::sync::atomic::AtomicU64> = (0..n)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect();
            std::thread::scope(|s| {
                for _ in 0..workers() {
                    s.spawn(|| {
                        loop {
                            let a = next.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
                            if a >= n {
                                break;
                            }
                            for x in a..(a + chunk).min(n) {
                                let arg = if mode == Mode::Work { iters } else { x };
                                slots[x as usize]
                                    .store(f(arg), std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
            for (o, s) in out.iter_mut().zip(&slots) {
                *o = s.load(std::sync::atomic::Ordering::Relaxed);
            }
            std::hint::black_box(&out);
            n
        })
    }
}

/// A pool over OS pipes: a task pipe per worker, one result pipe; one `write` per task (16 bytes:
/// index and argument) and one `read` per result, as CPython's pool moves them (without pickle).
pub struct PipePool {
    tasks: Vec<RawFd>,
    results: RawFd,
    kids: Vec<Process>,
    mode: Mode,
    i: u64,
}

fn write_all(fd: RawFd, b: &[u8]) {
    let mut off = 0;
    while off < b.len() {
        // SAFETY: writes from a valid buffer to our pipe.
        let n = unsafe { libc::write(fd, b[off..].as_ptr().cast(), b.len() - off) };
        assert!(n > 0, "pipe pool: write failed");
        off += n as usize;
    }
}

fn read_all(fd: RawFd, b: &mut [u8]) -> bool {
    let mut off = 0;
    while off < b.len() {
        // SAFETY: reads into a valid buffer from our pipe.
        let n = unsafe { libc::read(fd, b[off..].as_mut_ptr().cast(), b.len() - off) };
        if n <= 0 {
            return false;
        }
        off += n as usize;
    }
    true
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: valid out-array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

impl PipePool {
    pub fn new(mode: Mode) -> PipePool {
        let (rr, rw) = pipe();
        let mut tasks = Vec::new();
        let mut kids = Vec::new();
        for _ in 0..workers() {
            let (tr, tw) = pipe();
            let kid = Process::fork(move || {
                let mut b = [0u8; 16];
                while read_all(tr, &mut b) {
                    let i = u64::from_le_bytes(b[..8].try_into().unwrap());
                    if i == u64::MAX {
                        break;
                    }
                    let x = u64::from_le_bytes(b[8..].try_into().unwrap());
                    b[8..].copy_from_slice(&sq(x).to_le_bytes());
                    write_all(rw, &b); // 16 bytes: atomic on a pipe
                }
            })
            .expect("fork");
            // SAFETY: the child's end, closed once here.
            unsafe { libc::close(tr) };
            tasks.push(tw);
            kids.push(kid);
        }
        // SAFETY: the workers' end, closed once here.
        unsafe { libc::close(rw) };
        PipePool {
            tasks,
            results: rr,
            kids,
            mode,
            i: 0,
        }
    }

    fn send(&self, i: u64, x: u64) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&i.to_le_bytes());
        b[8..].copy_from_slice(&x.to_le_bytes());
        write_all(self.tasks[(i as usize) % self.tasks.len()], &b);
    }

    fn recv(&self) -> (u64, u64) {
        let mut b = [0u8; 16];
        assert!(
            read_all(self.results, &mut b),
            "pipe pool: a worker is gone"
        );
        (
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            u64::from_le_bytes(b[8..].try_into().unwrap()),
        )
    }

    /// `n` tasks, at most a pipe's worth in flight; results in order.
    fn map(&self, n: u64) -> Vec<u64> {
        let window = 1024;
        let mut out = vec![0u64; n as usize];
        let (mut sent, mut got) = (0, 0);
        while got < n {
            while sent < n && sent - got < window {
                self.send(sent, sent);
                sent += 1;
            }
            let (i, v) = self.recv();
            out[i as usize] = v;
            got += 1;
        }
        out
    }
}

impl Side for PipePool {
    fn run(&mut self, amount: Amount) -> Sample {
        let mode = self.mode;
        let me = &*self;
        let mut i = self.i;
        let s = block(amount, || match mode {
            Mode::Rtt => {
                i += 1;
                me.send(0, i);
                assert_eq!(me.recv(), (0, sq(i)));
                1
            }
            _ => {
                let r = me.map(BATCH);
                assert_eq!(r[7], 49);
                BATCH
            }
        });
        self.i = i;
        s
    }
}

impl Drop for PipePool {
    fn drop(&mut self) {
        for &t in &self.tasks {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            write_all(t, &b);
            // SAFETY: our end, closed once.
            unsafe { libc::close(t) };
        }
        for k in &self.kids {
            let _ = k.join_timeout(Duration::from_secs(10));
        }
        // SAFETY: our end, closed once.
        unsafe { libc::close(self.results) };
    }
}
