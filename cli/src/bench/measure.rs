//! Round-trip latency and one-way throughput of a [`Link`] pair between a parent and a forked child.

use super::links::Link;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Where the two processes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pin {
    /// Wherever the scheduler puts them.
    Any,
    /// Both on CPU 0 (`taskset -c 0`).
    Same,
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

struct Pinned(Option<libc::cpu_set_t>);

impl Pinned {
    fn new(pin: Pin) -> Pinned {
        if pin == Pin::Any {
            return Pinned(None);
        }
        // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity get valid pointers and sizes.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut one);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
            Pinned(Some(old))
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: restores the mask read in `new`.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old) };
        }
    }
}

/// The parent ends a run with a message whose first byte is 0xff; measured messages start with 0.
fn is_stop(buf: &[u8]) -> bool {
    buf.first() == Some(&0xff)
}

fn stamp(out: &mut [u8], i: u64) {
    let n = out.len().saturating_sub(1).min(7);
    out[1..1 + n].copy_from_slice(&i.to_le_bytes()[..n]);
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)] as f64
}

/// Ping-pong of `size`-byte messages: the child echoes. Measures for about `budget` (at most
/// `max_iters` round trips) after a warm-up.
pub fn rtt<L: Link>(pair: (L, L), size: usize, budget: Duration, max_iters: u64, pin: Pin) -> Lat {
    let _pin = Pinned::new(pin);
    let (mut mine, mut theirs) = pair;
    let child = shmwire::Process::fork(move || {
        let mut buf = vec![0u8; size];
        while theirs.recv(&mut buf) && !is_stop(&buf) {
            theirs.send(&buf);
        }
    })
    .expect("fork");
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    let warm = Instant::now();
    let mut i: u64 = 0;
    while warm.elapsed() < budget / 10 && i < max_iters / 10 + 100 {
        stamp(&mut out, i);
        mine.send(&out);
        mine.recv(&mut back);
        i += 1;
    }
    let mut samples = Vec::with_capacity(max_iters as usize);
    let start = Instant::now();
    while (samples.len() as u64) < max_iters
        && (samples.len() % 64 != 0 || start.elapsed() < budget)
    {
        stamp(&mut out, i);
        let t = Instant::now();
        mine.send(&out);
        mine.recv(&mut back);
        samples.push(t.elapsed().as_nanos() as u64);
        i += 1;
    }
    let total = start.elapsed();
    mine.send(&vec![0xff; size]);
    drop(mine);
    let _ = child
        .join_timeout(Duration::from_secs(10))
        .map_err(|_| child.kill());
    samples.sort_unstable();
    let n = samples.len() as u64;
    Lat {
        iters: n,
        mean_ns: total.as_nanos() as f64 / n as f64,
        p50_ns: percentile(&samples, 0.5),
        p99_ns: percentile(&samples, 0.99),
        p999_ns: percentile(&samples, 0.999),
    }
}

/// One-way stream of `size`-byte messages for about `budget`; the child acknowledges the end.
pub fn throughput<L: Link>(pair: (L, L), size: usize, budget: Duration, pin: Pin) -> Thr {
    let _pin = Pinned::new(pin);
    let (mut mine, mut theirs) = pair;
    let child = shmwire::Process::fork(move || {
        let mut buf = vec![0u8; size];
        while theirs.recv(&mut buf) && !is_stop(&buf) {}
        theirs.send(&[1u8]);
    })
    .expect("fork");
    let mut msg = vec![0x5au8; size];
    msg[0] = 0;
    let start = Instant::now();
    let mut n: u64 = 0;
    loop {
        for _ in 0..64 {
            mine.send(&msg);
        }
        n += 64;
        if start.elapsed() >= budget {
            break;
        }
    }
    mine.send(&vec![0xffu8; size]);
    let mut ack = [0u8; 1];
    mine.recv(&mut ack);
    let secs = start.elapsed().as_secs_f64();
    drop(mine);
    let _ = child
        .join_timeout(Duration::from_secs(10))
        .map_err(|_| child.kill());
    Thr {
        msgs: n,
        msgs_per_s: n as f64 / secs,
        gb_per_s: n as f64 * size as f64 / secs / 1e9,
    }
}
