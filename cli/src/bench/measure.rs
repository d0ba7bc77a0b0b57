//! Sides of a measurement: a workload set up once (its children forked once and reused), then run in
//! blocks ([`Side::run`]), either for a while (the CLI's interleaved blocks) or for an exact number of
//! operations (criterion's `iters`). Here: the round trip ([`Echo`]) and the one-way stream
//! ([`Sink`]) over any [`Link`].
//!
//! A round trip's time is taken over batches of [`BATCH`] trips (two clock reads per batch: the
//! timer adds ~2 ns a trip, not ~50), and every echo is checked against what was sent. Each block
//! also times some trips one by one, for the tails only. A stream counts what the receiver got,
//! not what was sent, and the clock stops when the receiver has acknowledged the last message.
//!
//! Between blocks the child *parks* (sleeps on a futex word), so that a spinning side never takes
//! a CPU from the other side's block.

use super::links::{Link, Ref, Shared, publish, wait_until};
use serde::Serialize;
use shmwire::Process;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

/// Where the processes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pin {
    /// Wherever the scheduler puts them.
    Any,
    /// The parent on CPU 0, the Link children on CPU 1 (as `../shared/baselines/ipc.c` pins them):
    /// a child woken from its park would otherwise often be put on its waker's CPU, and two
    /// processes spinning on one CPU measure the scheduler, not the path.
    Split,
    /// Both on CPU 0 (`taskset -c 0`).
    Same,
}

/// The CPU a Link child pins itself to (-1: none), set while a [`Pinned`] split is alive.
static CHILD_CPU: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// The CPU the children should take under the current pinning (for external sides), if any.
pub fn child_cpu() -> Option<usize> {
    let c = CHILD_CPU.load(std::sync::atomic::Ordering::Relaxed);
    (c >= 0).then_some(c as usize)
}

/// Sets this process's CPU mask to `cpu` alone.
pub fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity gets a valid pointer and size.
    unsafe {
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
    }
}

/// In a Link child: takes the CPU a split pinning gives children.
fn pin_child() {
    if let Some(cpu) = child_cpu() {
        pin_to(cpu);
    }
}

/// Latency figures in nanoseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Lat {
    pub iters: u64,
    pub mean_ns: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
}

/// Throughput figures.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Thr {
    pub msgs: u64,
    pub msgs_per_s: f64,
    pub gb_per_s: f64,
}

/// How much one block does: for about this long, or exactly this many operations.
#[derive(Clone, Copy, Debug)]
pub enum Amount {
    For(Duration),
    #[allow(dead_code)] // what the criterion benches use
    Items(u64),
}

/// What one block measured.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Operations completed (round trips, messages received, items received, hand-offs).
    pub ops: u64,
    /// Wall time of the block, seconds.
    pub secs: f64,
    /// Latency sides: ns per operation of each timed batch.
    pub batch_ns: Vec<f64>,
    /// Latency sides: operations timed one by one (for the tails; each includes the timer).
    pub single_ns: Vec<f64>,
}

impl Sample {
    /// Nanoseconds per operation: the median batch when batches were timed, else the block's mean.
    pub fn ns_per_op(&self) -> f64 {
        if self.batch_ns.is_empty() {
            self.secs * 1e9 / self.ops.max(1) as f64
        } else {
            median(&self.batch_ns)
        }
    }

    /// Operations per second over the block.
    pub fn per_s(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-12)
    }
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// The `p` quantile of `v` (nearest rank; NaN when empty).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 * p) as usize).min(s.len() - 1)]
}

/// A workload measured in blocks; dropping it ends its children.
pub trait Side {
    fn run(&mut self, amount: Amount) -> Sample;
}

/// Round trips timed together.
pub const BATCH: u64 = 16;
/// First byte of a measured message.
const DATA: u8 = 0;
/// First byte of the message that ends a stream block (the sink answers with its count).
const SYNC: u8 = 1;
/// First byte of the message that parks an echo child until the next block.
const PARK: u8 = 0xfe;
/// First byte of the message that ends the child.
const STOP: u8 = 0xff;

/// Pins this process (and the children it forks meanwhile) to CPU 0 while alive.
pub struct Pinned(Option<libc::cpu_set_t>);

impl Pinned {
    /// Pins (for `Split`, only when this process may run on CPUs 0 and 1).
    pub fn new(pin: Pin) -> Pinned {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity gets a valid pointer and size.
        let old = unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
            old
        };
        // SAFETY: reads the set filled above.
        let both = unsafe { libc::CPU_ISSET(0, &old) && libc::CPU_ISSET(1, &old) };
        match pin {
            Pin::Any => return Pinned(None),
            Pin::Split if !both => return Pinned(None),
            Pin::Split => CHILD_CPU.store(1, std::sync::atomic::Ordering::Relaxed),
            Pin::Same => {}
        }
        pin_to(0);
        Pinned(Some(old))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        CHILD_CPU.store(-1, std::sync::atomic::Ordering::Relaxed);
        if let Some(old) = &self.0 {
            // SAFETY: restores the mask read in `new`.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old) };
        }
    }
}

/// The parking word of a Link child: the parent publishes the number of the block it releases.
struct Parking {
    shared: Shared<AtomicU32>,
    /// Blocks the child was told to park after (it waits until the word reaches this).
    parks: u32,
    parked: bool,
}

impl Parking {
    fn new() -> Self {
        Parking {
            shared: Shared::new(),
            parks: 0,
            parked: false,
        }
    }

    fn resume(&mut self) {
        if self.parked {
            publish(&self.shared, self.parks);
            self.parked = false;
        }
    }
}

fn child_park(word: Ref<AtomicU32>, parks: &mut u32) {
    *parks += 1;
    wait_until(&word, *parks);
}

fn end_child<L: Link>(mine: &mut L, parking: &mut Parking, size: usize, child: &Process) {
    parking.resume();
    let mut stop = vec![STOP; size.max(8)];
    stop.truncate(size.max(1));
    mine.send(&stop);
    if child.join_timeout(Duration::from_secs(10)).is_err() {
        let _ = child.kill();
        let _ = child.join_timeout(Duration::from_secs(5));
    }
}

/// Ping-pong of `size`-byte messages with a forked child that echoes them.
pub struct Echo<L: Link> {
    mine: L,
    child: Process,
    parking: Parking,
    size: usize,
    out: Vec<u8>,
    back: Vec<u8>,
    i: u64,
}

impl<L: Link> Echo<L> {
    /// Forks the echo child (it takes the children's CPU of a split pinning, or inherits this
    /// process's mask).
    pub fn new(pair: (L, L), size: usize) -> Self {
        assert!(size >= 8, "messages carry a mark and a stamp");
        let parking = Parking::new();
        let word = parking.shared.at();
        let (mine, mut theirs) = pair;
        let child = Process::fork(move || {
            pin_child();
            let mut buf = vec![0u8; size];
            let mut parks = 0;
            while theirs.recv(&mut buf) {
                match buf[0] {
                    DATA => theirs.send(&buf),
                    PARK => {
                        // Acknowledged, so that the next block's first message cannot overwrite
                        // it on a one-slot path (the floors).
                        theirs.send(&buf);
                        child_park(word, &mut parks);
                    }
                    _ => break,
                }
            }
        })
        .expect("fork");
        Echo {
            mine,
            child,
            parking,
            size,
            out: vec![0u8; size],
            back: vec![0u8; size],
            i: 0,
        }
    }

    /// One round trip, its echo checked (mark and an 7-byte stamp).
    fn trip(&mut self) {
        self.i += 1;
        self.out[1..8].copy_from_slice(&self.i.to_le_bytes()[..7]);
        self.mine.send(&self.out);
        assert!(self.mine.recv(&mut self.back), "the echo child is gone");
        assert!(
            self.back[..8] == self.out[..8],
            "round trip {}: the echo is not what was sent",
            self.i
        );
    }
}

impl<L: Link> Side for Echo<L> {
    fn run(&mut self, amount: Amount) -> Sample {
        self.parking.resume();
        let mut s = Sample::default();
        match amount {
            Amount::Items(n) => {
                let t = Instant::now();
                for _ in 0..n {
                    self.trip();
                }
                s.secs = t.elapsed().as_secs_f64();
                s.ops = n;
                return s; // no park: criterion calls again at once
            }
            Amount::For(d) => {
                // Warm-up: the child was asleep, and its CPU may have been.
                let warm = Instant::now();
                let mut k = 0;
                while k < 8 || warm.elapsed() < d / 10 {
                    self.trip();
                    k += 1;
                }
                let start = Instant::now();
                while start.elapsed() < d {
                    let t = Instant::now();
                    for _ in 0..BATCH {
                        self.trip();
                    }
                    s.batch_ns
                        .push(t.elapsed().as_nanos() as f64 / BATCH as f64);
                    let t = Instant::now();
                    self.trip();
                    s.single_ns.push(t.elapsed().as_nanos() as f64);
                    s.ops += BATCH + 1;
                }
                s.secs = start.elapsed().as_secs_f64();
            }
        }
        let mut park = vec![0u8; self.size];
        park[0] = PARK;
        self.mine.send(&park);
        assert!(self.mine.recv(&mut self.back), "the echo child is gone");
        self.parking.parked = true;
        self.parking.parks += 1;
        s
    }
}

impl<L: Link> Drop for Echo<L> {
    fn drop(&mut self) {
        end_child(&mut self.mine, &mut self.parking, self.size, &self.child);
    }
}

/// A one-way stream of `size`-byte messages to a forked child that counts what it receives.
pub struct Sink<L: Link> {
    mine: L,
    child: Process,
    parking: Parking,
    size: usize,
}

impl<L: Link> Sink<L> {
    pub fn new(pair: (L, L), size: usize) -> Self {
        let parking = Parking::new();
        let word = parking.shared.at();
        let (mine, mut theirs) = pair;
        let child = Process::fork(move || {
            pin_child();
            let mut buf = vec![0u8; size];
            let mut parks = 0;
            let mut count = 0u64;
            while theirs.recv(&mut buf) {
                match buf[0] {
                    DATA => count += 1,
                    SYNC => {
                        theirs.send(&count.to_le_bytes());
                        count = 0;
                        child_park(word, &mut parks);
                    }
                    _ => break,
                }
            }
        })
        .expect("fork");
        Sink {
            mine,
            child,
            parking,
            size,
        }
    }
}

impl<L: Link> Side for Sink<L> {
    fn run(&mut self, amount: Amount) -> Sample {
        self.parking.resume();
        let mut msg = vec![0x5au8; self.size];
        msg[0] = DATA;
        let (limit, n) = match amount {
            Amount::For(d) => (Some(d), u64::MAX),
            Amount::Items(n) => (None, n),
        };
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < n {
            for _ in 0..64.min(n - sent) {
                self.mine.send(&msg);
                sent += 1;
            }
            if limit.is_some_and(|d| start.elapsed() >= d) {
                break;
            }
        }
        msg[0] = SYNC;
        self.mine.send(&msg);
        let mut count = [0u8; 8];
        assert!(self.mine.recv(&mut count), "the sink child is gone");
        let secs = start.elapsed().as_secs_f64();
        self.parking.parked = true;
        self.parking.parks += 1;
        let got = u64::from_le_bytes(count);
        assert_eq!(got, sent, "the sink received {got} of {sent} messages");
        Sample {
            ops: got,
            secs,
            ..Sample::default()
        }
    }
}

impl<L: Link> Drop for Sink<L> {
    fn drop(&mut self) {
        end_child(&mut self.mine, &mut self.parking, self.size, &self.child);
    }
}

/// Figures over blocks: latency (the median of the blocks' medians, the mean over all trips, the
/// tails from the trips timed alone).
pub fn lat_of(samples: &[Sample]) -> Lat {
    let singles: Vec<f64> = samples.iter().flat_map(|s| s.single_ns.clone()).collect();
    let ops: u64 = samples.iter().map(|s| s.ops).sum();
    let secs: f64 = samples.iter().map(|s| s.secs).sum();
    // Each block weighs the same (a fast block has more batches than a slow one).
    let p50 = median(&samples.iter().map(Sample::ns_per_op).collect::<Vec<_>>());
    Lat {
        iters: ops,
        mean_ns: secs * 1e9 / ops.max(1) as f64,
        p50_ns: p50,
        p99_ns: percentile(&singles, 0.99),
        p999_ns: percentile(&singles, 0.999),
    }
}

/// Median rate over blocks; `bytes` per operation for GB/s.
pub fn thr_of(samples: &[Sample], bytes: usize) -> Thr {
    let rate = median(&samples.iter().map(Sample::per_s).collect::<Vec<_>>());
    Thr {
        msgs: samples.iter().map(|s| s.ops).sum(),
        msgs_per_s: rate,
        gb_per_s: rate * bytes as f64 / 1e9,
    }
}
