//! The ratios the bench reports: which two sides of which group each compares, its target, and how
//! the per-round ratios of paired blocks become one figure (over one run, then over several).

use super::measure::median;
use super::{Figure, Measured, Ratio};

/// Queue groups are told apart by their "size" `10 * producers + consumers`.
const Q11: usize = 11;
const Q22: usize = 22;
const MIB: usize = 1 << 20;
/// Manager groups are told apart by their operation.
const MGET: usize = 10;
const MINS: usize = 20;
const MMOD: usize = 30;

/// Every ratio, in the order printed: (name, group, size, numerator side, denominator side, target).
/// A latency group's figure is a time per operation, a throughput group's a rate; either way the
/// value is `figure(numerator) / figure(denominator)`, per round. Target `-`: for information.
#[rustfmt::skip]
const DEFS: &[(&str, &str, usize, &str, &str, &str)] = &[
    ("RTT 8 B: shmwire default / spinning floor", "rtt", 8, "shm", "spin", "<= 1.5"),
    ("RTT 8 B: shmwire sleep-only / futex floor", "rtt", 8, "shm-sleep", "futex", "<= 1.2"),
    ("RTT 8 B: Unix socket busy-polling / shmwire default", "rtt", 8, "uds-busy", "shm", "-"),
    ("RTT 8 B: Unix socket / shmwire sleep-only (both sleep)", "rtt", 8, "uds", "shm-sleep", "-"),
    ("RTT 8 B: iceoryx2 / shmwire default", "rtt", 8, "iceoryx2", "shm", ">= 2"),
    ("RTT 8 B: Python Pipe / shmwire default", "rtt", 8, "py", "shm", "-"),
    ("RTT 8 B, one core: shmwire default / futex floor", "rtt-same-core", 8, "shm", "futex", "<= 1.5"),
    ("64 B msgs/s: shmwire / pipe", "throughput", 64, "shm", "pipe", ">= 10"),
    ("64 KiB GB/s: shmwire / Unix socket", "throughput", 65536, "shm", "uds", ">= 2"),
    ("1 MiB GB/s: shmwire / Unix socket", "throughput", MIB, "shm", "uds", ">= 2"),
    ("64 B msgs/s: shmwire / Python Pipe", "throughput", 64, "shm", "py", "-"),
    ("Queue 1P/1C items/s: shmwire / OS pipe + locks", "queue", Q11, "shm", "pipe-lock", ">= 20"),
    ("Queue 2P/2C items/s: shmwire / OS pipe + locks", "queue", Q22, "shm", "pipe-lock", ">= 20"),
    ("Queue 1P/1C items/s: crossbeam threads / shmwire", "queue", Q11, "crossbeam", "shm", "<= 2"),
    ("Queue 2P/2C items/s: crossbeam threads / shmwire", "queue", Q22, "crossbeam", "shm", "<= 2.5"),
    ("Queue 1P/1C items/s: crossbeam threads / shmwire serde", "queue", Q11, "crossbeam", "shm-serde", "<= 2"),
    ("Queue 1P/1C items/s: shmwire / Python Queue", "queue", Q11, "shm", "py", ">= 50"),
    ("Queue 2P/2C items/s: shmwire / Python Queue", "queue", Q22, "shm", "py", ">= 50"),
    ("Lock strict hand-off, 2 processes / futex floor round trip", "sync", 2, "shm", "futex", "<= 1"),
    ("Lock strict hand-off, 2 processes: shmwire / pthread mutex", "sync", 2, "shm", "pthread", "-"),
    ("Pool map_chunked(.., 1) tasks/s: shmwire / Python", "pool", 1, "shm", "py", ">= 20"),
    ("Pool map_chunked(.., 1) tasks/s: shmwire / OS-pipe pool", "pool", 1, "shm", "pipe-pool", ">= 5"),
    ("Pool apply_async tasks/s: shmwire / Python", "pool", 2, "shm", "py", ">= 20"),
    ("Pool apply_async tasks/s: shmwire / OS-pipe pool", "pool", 2, "shm", "pipe-pool", ">= 5"),
    ("Pool map of 1,000,000 (default chunks): shmwire / Python", "pool", 1_000_000, "shm", "py", ">= 5"),
    ("Pool map of 1,000,000: threads (ceiling) / shmwire", "pool", 1_000_000, "threads", "shm", "-"),
    ("Pool ~20 us tasks/s: shmwire / threads of one process", "pool", 20, "shm", "threads", ">= 0.85"),
    ("Pool apply round trips/s: shmwire / OS-pipe pool", "pool", 0, "shm", "pipe-pool", "-"),
    ("Pool apply round trips/s: shmwire / Python", "pool", 0, "shm", "py", "-"),
    ("Manager get, 1 process: shmwire / Python Manager", "manager", MGET, "shm", "py", ">= 200"),
    ("Manager insert, 1 process: shmwire / Python Manager", "manager", MINS, "shm", "py", ">= 200"),
    ("Manager modify, 1 process: shmwire / Python Manager", "manager", MMOD, "shm", "py", ">= 200"),
    ("Manager insert, 4 processes: shmwire / Python Manager", "manager", MINS, "shm4", "py4", ">= 50"),
    ("Manager modify, 4 processes: shmwire / Python Manager", "manager", MMOD, "shm4", "py4", ">= 50"),
    ("Manager get, 1 process: Mutex<HashMap> thread / shmwire", "manager", MGET, "mutex", "shm", "<= 3"),
    ("Manager get: 4 reader processes / 1", "manager", MGET, "shm4", "shm", ">= 1.5"),
    ("Manager get, 1 process: shmwire / Unix-socket dict", "manager", MGET, "shm", "uds", "-"),
    ("Manager modify, 4 processes: shmwire / Unix-socket dict", "manager", MMOD, "shm4", "uds4", "-"),
];

/// Whether `x` meets `target` (`<= A` or `>= A`); `None` for `-`.
fn met(target: &str, x: f64) -> Option<bool> {
    let (op, a) = target.split_once(' ')?;
    let a: f64 = a.parse().ok()?;
    match op {
        "<=" => Some(x <= a),
        ">=" => Some(x >= a),
        _ => None,
    }
}

/// Per round, `num`'s figure over `den`'s (the rounds where both are finite and positive).
pub fn per_round(m: &Measured, num: &str, den: &str) -> Option<Vec<f64>> {
    let (a, b) = (m.figures(num)?, m.figures(den)?);
    let v: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| a / b)
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    (!v.is_empty()).then_some(v)
}

/// This run's ratios: each the median of its per-round ratios, with their range.
pub fn ratios(measured: &[Measured]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for &(what, group, size, num, den, target) in DEFS
        .iter()
        .chain(super::transport::RATIOS)
        .chain(super::pymod::RATIOS)
    {
        let Some(m) = measured.iter().find(|m| m.group == group && m.size == size) else {
            continue;
        };
        let Some(v) = per_round(m, num, den) else {
            continue;
        };
        let value = median(&v);
        out.push(Ratio {
            what: what.to_owned(),
            value,
            min: v.iter().copied().fold(f64::MAX, f64::min),
            max: v.iter().copied().fold(0.0, f64::max),
            pairs: v.len(),
            target: target.to_owned(),
            met: met(target, value),
        });
    }
    out
}

/// Per ratio over several runs: the median of the runs' medians (which decides "met"), and their
/// range; over one run, that run's ratio and its pairs' range.
pub fn summarize(runs: &[Vec<Ratio>]) -> Vec<Ratio> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    if runs.len() == 1 {
        return first.clone();
    }
    first
        .iter()
        .map(|r0| {
            let same: Vec<&Ratio> = runs
                .iter()
                .filter_map(|run| run.iter().find(|r| r.what == r0.what))
                .collect();
            let vals: Vec<f64> = same.iter().map(|r| r.value).collect();
            let value = median(&vals);
            let met = met(&r0.target, value);
            Ratio {
                what: r0.what.clone(),
                value,
                min: vals.iter().copied().fold(f64::MAX, f64::min),
                max: vals.iter().copied().fold(0.0, f64::max),
                pairs: same.iter().map(|r| r.pairs).sum(),
                target: r0.target.clone(),
                met,
            }
        })
        .collect()
}

/// Absolute figures over several runs: the median.
pub fn summarize_figures(runs: &[Vec<Figure>]) -> Vec<Figure> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|f0| {
            let vals: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.iter().find(|f| f.what == f0.what).map(|f| f.value))
                .collect();
            let value = median(&vals);
            Figure {
                value,
                met: value <= f0.limit,
                ..f0.clone()
            }
        })
        .collect()
}
