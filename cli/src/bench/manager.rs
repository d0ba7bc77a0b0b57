//! Manager workloads as [`Side`]s whose processes (or threads) are started once and reused for every
//! block: `get`, `insert` (of a key already there, as `d[k] = v`) and `modify` (`d[k] += 1`) on one
//! dict of [`KEYS`] `u64` keys, by 1 or 4 workers, on
//!
//! * shmwire's `SharedDict<u64, u64>` (forked workers);
//! * a dict served over a Unix socket by a server process with a thread per client (the design of
//!   Python's `Manager`, in Rust: one request and one answer per operation, so what it costs is the
//!   round trip, not the interpreter);
//! * an in-process `Mutex<HashMap>` shared by threads (the ceiling);
//! * Python's `Manager().dict()` (`pymgr_bench.py`, run by `python3`; its `modify` is `d[k] += 1`,
//!   two round trips, not atomic, as Python programs write it).
//!
//! Also compiled into `benches/manager.rs`.

use super::links::{Ref, Shared, Zeroed, futex, publish, wait_until};
use super::measure::{Amount, Sample, Side};
use super::prims::{Kid, MAX_PARTIES, Padded, join, spawn};
use shmwire::{Manager, SharedDict};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Keys of the dict.
pub const KEYS: u64 = 1000;
/// Values stay in this range (their encodings keep one length, as a counter's mostly does).
const BASE: u64 = 1_000_000;

/// One operation of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Insert,
    Modify,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Insert => "insert",
            Op::Modify => "modify",
        }
    }

    /// The group "size" that tells the manager groups apart.
    pub fn code(self) -> usize {
        match self {
            Op::Get => 10,
            Op::Insert => 20,
            Op::Modify => 30,
        }
    }
}

/// The `i`th key worker `k` uses (spread over the dict).
#[inline]
fn key(k: usize, i: u64) -> u64 {
    (i.wrapping_mul(7919) + k as u64 * 131) % KEYS
}

/// A worker's handle on a dict.
pub trait Worker: Send + 'static {
    fn op(&mut self, op: Op, key: u64, i: u64);
}

/// The control block of a dict side, in shared memory.
#[repr(C)]
pub struct Ctl {
    epoch: AtomicU32,
    exit: AtomicU32,
    stop: AtomicU32,
    done: AtomicU32,
    quota: AtomicU64,
    counts: [Padded; MAX_PARTIES],
}
// SAFETY: atomics only, valid at zero.
unsafe impl Zeroed for Ctl {}

/// `n` workers doing `op` on one dict.
pub struct DictSide {
    ctl: Shared<Ctl>,
    kids: Vec<Kid>,
    blocks: u32,
    /// Whatever must outlive the workers (a server process).
    server: Option<Kid>,
}

impl DictSide {
    fn new<W: Worker>(op: Op, n: usize, threads: bool, mut mk: impl FnMut() -> W) -> Self {
        assert!((1..=MAX_PARTIES).contains(&n));
        let ctl: Shared<Ctl> = Shared::new();
        let kids = (0..n)
            .map(|k| {
                let (c, w) = (ctl.at(), mk());
                spawn(threads, move || work(c, k, w, op))
            })
            .collect();
        DictSide {
            ctl,
            kids,
            blocks: 0,
            server: None,
        }
    }
}

fn work(c: Ref<Ctl>, k: usize, mut w: impl Worker, op: Op) {
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
                w.op(op, key(k, total + i), total + i);
                i += 1;
            }
        }
        total += i;
        c.counts[k].0.store(total, Release);
        c.done.fetch_add(1, AcqRel);
        futex(&c.done, libc::FUTEX_WAKE, 1);
    }
}

impl Side for DictSide {
    fn run(&mut self, amount: Amount) -> Sample {
        let c = &self.ctl;
        let n = self.kids.len() as u64;
        let sum = |c: &Ctl| c.counts.iter().map(|p| p.0.load(Acquire)).sum::<u64>();
        let base = sum(c);
        c.stop.store(0, Relaxed);
        c.quota.store(
            match amount {
                Amount::For(_) => u64::MAX / 4,
                Amount::Items(k) => k.div_ceil(n),
            },
            Release,
        );
        self.blocks += 1;
        let start = Instant::now();
        publish(&c.epoch, self.blocks);
        if let Amount::For(d) = amount {
            std::thread::sleep(d);
            c.stop.store(1, Relaxed);
        }
        wait_until(&c.done, self.blocks * n as u32);
        Sample {
            ops: sum(c) - base,
            secs: start.elapsed().as_secs_f64(),
            ..Sample::default()
        }
    }
}

impl Drop for DictSide {
    fn drop(&mut self) {
        self.ctl.exit.store(1, Release);
        publish(&self.ctl.epoch, self.blocks + 1);
        for k in self.kids.drain(..) {
            join(k);
        }
        if let Some(s) = self.server.take() {
            join(s); // its clients are gone: it ends
        }
    }
}

// ---- shmwire ------------------------------------------------------------------------------------

struct Shm(SharedDict<u64, u64>);

impl Worker for Shm {
    #[inline]
    fn op(&mut self, op: Op, k: u64, i: u64) {
        match op {
            Op::Get => {
                let v = self.0.get(&k).expect("get");
                assert!(v.is_some(), "key {k} missing");
            }
            Op::Insert => {
                self.0.insert(k, BASE + i % BASE).expect("insert");
            }
            Op::Modify => self
                .0
                .modify(&k, |v| *v = BASE + (*v + 1) % BASE)
                .expect("modify"),
        }
    }
}

/// A dict of [`KEYS`] keys in a new manager.
pub fn shm_dict() -> (Manager, SharedDict<u64, u64>) {
    let m = Manager::new().expect("manager");
    let d = m.dict_from((0..KEYS).map(|k| (k, BASE + k))).expect("dict");
    (m, d)
}

/// shmwire's `SharedDict`, `n` forked workers.
pub fn shm(op: Op, n: usize) -> DictSide {
    let (_m, d) = shm_dict();
    DictSide::new(op, n, false, || Shm(d.clone()))
}

// ---- a dict served over a Unix socket -------------------------------------------------------------

/// Request: op (1 byte), key, value (8 bytes each). Answer: the value (8 bytes).
const REQ: usize = 17;

struct Client(UnixStream);

impl Worker for Client {
    #[inline]
    fn op(&mut self, op: Op, k: u64, i: u64) {
        let mut req = [0u8; REQ];
        req[0] = op as u8;
        req[1..9].copy_from_slice(&k.to_le_bytes());
        req[9..17].copy_from_slice(&(BASE + i % BASE).to_le_bytes());
        self.0.write_all(&req).expect("request");
        let mut ans = [0u8; 8];
        self.0.read_exact(&mut ans).expect("answer");
        assert_ne!(u64::from_le_bytes(ans), 0, "key {k} missing");
    }
}

fn serve(map: Arc<Mutex<HashMap<u64, u64>>>, mut s: UnixStream) {
    let mut req = [0u8; REQ];
    while s.read_exact(&mut req).is_ok() {
        let k = u64::from_le_bytes(req[1..9].try_into().unwrap_or([0; 8]));
        let v = u64::from_le_bytes(req[9..17].try_into().unwrap_or([0; 8]));
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        let ans = match req[0] {
            x if x == Op::Get as u8 => m.get(&k).copied().unwrap_or(0),
            x if x == Op::Insert as u8 => m.insert(k, v).unwrap_or(0),
            _ => match m.get_mut(&k) {
                Some(x) => {
                    *x = BASE + (*x + 1) % BASE;
                    *x
                }
                None => 0,
            },
        };
        drop(m);
        if s.write_all(&ans.to_le_bytes()).is_err() {
            return;
        }
    }
}

/// A dict in a server process (a thread per client), `n` forked clients each with its own
/// connection.
pub fn uds(op: Op, n: usize) -> DictSide {
    let pairs: Vec<(UnixStream, UnixStream)> = (0..n)
        .map(|_| UnixStream::pair().expect("socketpair"))
        .collect();
    let (clients, servers): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    let server = spawn(false, move || {
        let map: Arc<Mutex<HashMap<u64, u64>>> =
            Arc::new(Mutex::new((0..KEYS).map(|k| (k, BASE + k)).collect()));
        let threads: Vec<_> = servers
            .into_iter()
            .map(|s| {
                let map = map.clone();
                std::thread::spawn(move || serve(map, s))
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    });
    let mut clients = clients.into_iter();
    let mut side = DictSide::new(op, n, false, || {
        Client(clients.next().expect("one connection per worker"))
    });
    side.server = Some(server);
    side
}

// ---- Mutex<HashMap> between threads -----------------------------------------------------------------

struct Local(Arc<Mutex<HashMap<u64, u64>>>);

impl Worker for Local {
    #[inline]
    fn op(&mut self, op: Op, k: u64, i: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match op {
            Op::Get => assert!(m.get(&k).is_some(), "key {k} missing"),
            Op::Insert => {
                m.insert(k, BASE + i % BASE);
            }
            Op::Modify => {
                if let Some(x) = m.get_mut(&k) {
                    *x = BASE + (*x + 1) % BASE;
                }
            }
        }
    }
}

/// An in-process `Mutex<HashMap>` shared by `n` threads (the ceiling).
pub fn mutex(op: Op, n: usize) -> DictSide {
    let map = Arc::new(Mutex::new((0..KEYS).map(|k| (k, BASE + k)).collect()));
    DictSide::new(op, n, true, || Local(map.clone()))
}

// ---- memory -------------------------------------------------------------------------------------

/// Bytes a `SharedDict<String, u64>` of `n` entries (`"k{i}"` keys) uses and maps, per entry.
pub fn bytes_per_entry(n: u64) -> (f64, f64) {
    let m = Manager::new().expect("manager");
    let d = m.dict::<String, u64>().expect("dict");
    let before = m.stats().expect("stats");
    for chunk in (0..n).collect::<Vec<u64>>().chunks(10_000) {
        d.update(chunk.iter().map(|&i| (format!("k{i}"), i)))
            .expect("update");
    }
    let after = m.stats().expect("stats");
    (
        (after.used - before.used) as f64 / n as f64,
        after.mapped as f64 / n as f64,
    )
}
