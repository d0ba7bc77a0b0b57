//! The bench's output: the machine, the ratios (paired), the absolute figures and the tables.

use super::measure::{lat_of, median, thr_of};
use super::ratios::per_round;
use super::{Figure, Kind, Measured, Ratio, Row};
use std::fmt::Write;
use std::time::Duration;

/// `nproc`, CPU model and kernel, for the record.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{n} CPUs, {cpu}, Linux {}", kernel.trim())
}

/// The rows of this run: per side, its median figures, and how many times faster than Python's
/// side of the same group it is (paired), for shmwire's sides.
pub fn rows(measured: &[Measured]) -> Vec<Row> {
    let mut out = Vec::new();
    for m in measured {
        let has_py = m.sides.iter().any(|s| s.0 == "py");
        for (id, name, samples) in &m.sides {
            let (name, size) = match m.group {
                "queue" => (format!("{name} {}P/{}C", m.size / 10, m.size % 10), 8),
                _ => (name.clone(), m.size),
            };
            let mut row = Row::new(m.group, id, &name, size);
            row.pin = m.pin;
            match m.kind {
                Kind::Lat => row.lat = Some(lat_of(samples)),
                Kind::Thr => row.thr = Some(thr_of(samples, size)),
            }
            if has_py && id.starts_with("shm") {
                // The manager's 4-process sides pair with Python's 4-process side.
                let py = if m.group == "manager" && id.ends_with('4') {
                    "py4"
                } else {
                    "py"
                };
                let v = match m.kind {
                    Kind::Lat => per_round(m, py, id),
                    Kind::Thr => per_round(m, id, py),
                };
                row.vs_python = v.map(|v| median(&v));
            }
            out.push(row);
        }
    }
    out
}

/// A ratio with three significant digits at least (never "0.00").
pub fn ratio(x: f64) -> String {
    match x {
        x if !x.is_finite() || x <= 0.0 => format!("{x}"),
        x if x >= 0.1 => format!("{x:.2}"),
        x => {
            let digits = (-x.log10()).ceil() as usize + 2;
            format!("{x:.digits$}")
        }
    }
}

/// A time with its unit.
pub fn time(ns: f64) -> String {
    match ns {
        x if x.is_nan() => "-".into(),
        x if x < 1_000.0 => format!("{x:.1} ns"),
        x if x < 10_000.0 => format!("{:.2} µs", x / 1e3),
        x if x < 1_000_000.0 => format!("{:.1} µs", x / 1e3),
        x => format!("{:.2} ms", x / 1e6),
    }
}

/// A rate with its unit.
pub fn rate(per_s: f64, what: &str) -> String {
    match per_s {
        x if x.is_nan() => "-".into(),
        x if x >= 1e6 => format!("{:.2} M {what}/s", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k {what}/s", x / 1e3),
        x => format!("{x:.0} {what}/s"),
    }
}

fn bytes(b: f64) -> String {
    match b {
        x if x >= (1 << 20) as f64 => format!("{:.2} MiB", x / (1 << 20) as f64),
        x if x >= 1024.0 => format!("{:.1} KiB", x / 1024.0),
        x => format!("{x:.0} B"),
    }
}

pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1024 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn vs_python(r: &Row) -> String {
    r.vs_python.map_or(String::new(), |x| {
        let p = if x < 10.0 { 1 } else { 0 };
        format!("  {x:.p$}x faster than Python")
    })
}

/// What the table's head says.
pub struct Header<'a> {
    pub rows: &'a [Row],
    pub ratios: &'a [Ratio],
    pub figures: &'a [Figure],
    pub runs: usize,
    pub block: Duration,
    pub python: &'a str,
    pub bufs: (usize, usize),
}

/// The human-readable tables.
pub fn table(h: &Header) -> String {
    let (rows, runs) = (h.rows, h.runs);
    let mut s = String::new();
    let _ = writeln!(s, "shmwire bench on {}", machine());
    let _ = writeln!(
        s,
        "Paired: the sides of each group ran in turn in blocks of {} ms (forward, then backward), and a \
         ratio is the median of its per-round ratios.",
        h.block.as_millis()
    );
    let _ = writeln!(
        s,
        "OS paths given shmwire's ring size: pipe buffer {}, socket SO_SNDBUF {} (as the kernel reports it).",
        bytes(h.bufs.0 as f64),
        bytes(h.bufs.1 as f64)
    );
    let _ = writeln!(s, "{}\n", h.python);
    if h.ratios.is_empty() {
    } else if runs > 1 {
        let _ = writeln!(
            s,
            "Ratios over {runs} runs: median of the runs' medians [min..max of them]; the figures below are the last run's"
        );
    } else {
        let _ = writeln!(s, "Ratios: median of the pairs [min..max of the pairs]");
    }
    for r in h.ratios {
        let verdict = match r.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        let range = format!("[{}..{}]", ratio(r.min), ratio(r.max));
        let _ = writeln!(
            s,
            "  {:<60} {:>8}x {range:<18} target {:<7} {verdict}",
            r.what,
            ratio(r.value),
            r.target
        );
    }
    if !h.figures.is_empty() {
        let _ = writeln!(s, "\nAbsolute figures");
        for f in h.figures {
            let _ = writeln!(
                s,
                "  {:<60} {:>8.1} {:<4} target {:<8} {}",
                f.what,
                f.value,
                f.unit,
                f.target,
                if f.met { "met" } else { "MISSED" }
            );
        }
    }
    for (group, title) in [
        (
            "rtt",
            "Round trip, 8 B, parent on CPU 0, child on CPU 1 (median of the blocks' medians of 16-trip batches; tails timed one by one)",
        ),
        ("rtt-same-core", "Round trip, 8 B, both on CPU 0"),
        (
            "transport",
            "Round trip, 8 B, by transport: one Connection API over shared memory, Unix socket, TCP (beside the raw OS paths and Python's multiprocessing.connection)",
        ),
    ] {
        if !rows.iter().any(|r| r.group == group) {
            continue;
        }
        let _ = writeln!(s, "\n{title}");
        let _ = writeln!(
            s,
            "  {:<44} {:>10} {:>10} {:>10} {:>10}",
            "path", "median", "mean", "p99", "p99.9"
        );
        for r in rows.iter().filter(|r| r.group == group) {
            if let Some(l) = r.lat {
                let _ = writeln!(
                    s,
                    "  {:<44} {:>10} {:>10} {:>10} {:>10}{}",
                    r.name,
                    time(l.p50_ns),
                    time(l.mean_ns),
                    time(l.p99_ns),
                    time(l.p999_ns),
                    vs_python(r)
                );
            }
        }
    }
    for (group, title) in [
        (
            "throughput",
            "One-way stream, counted at the receiver (median of blocks)",
        ),
        (
            "transport-thr",
            "One-way stream by transport, counted at the receiver (median of blocks)",
        ),
    ] {
        if !rows.iter().any(|r| r.group == group) {
            continue;
        }
        let _ = writeln!(s, "\n{title}");
        let _ = writeln!(
            s,
            "  {:<56} {:>8} {:>16} {:>10}",
            "path", "size", "messages", "GB/s"
        );
        for r in rows.iter().filter(|r| r.group == group) {
            if let Some(t) = r.thr {
                let _ = writeln!(
                    s,
                    "  {:<56} {:>8} {:>16} {:>10.2}{}",
                    r.name,
                    size_label(r.size),
                    rate(t.msgs_per_s, "msg"),
                    t.gb_per_s,
                    vs_python(r)
                );
            }
        }
    }
    if rows.iter().any(|r| r.group == "queue") {
        let _ = writeln!(
            s,
            "\nQueue of u64 items between processes, counted at the consumers"
        );
        for r in rows.iter().filter(|r| r.group == "queue") {
            if let Some(t) = r.thr {
                let _ = writeln!(
                    s,
                    "  {:<56} {:>16}{}",
                    r.name,
                    rate(t.msgs_per_s, "item"),
                    vs_python(r)
                );
            }
        }
    }
    if rows.iter().any(|r| r.group == "sync") {
        let _ = writeln!(s, "\nLocks and wake-ups (time per operation)");
        for r in rows.iter().filter(|r| r.group == "sync") {
            if let Some(l) = r.lat {
                let what = match (r.size, r.path.as_str()) {
                    (2, "futex") => r.name.clone(),
                    (2, _) => format!("{}: strict hand-off between 2 processes", r.name),
                    _ => r.name.clone(),
                };
                let _ = writeln!(s, "  {:<64} {:>12}", what, time(l.p50_ns));
            }
        }
    }
    by_size(&mut s, rows);
    super::manager_group::tables(&mut s, rows);
    super::scaling::tables(&mut s, rows);
    s
}

fn by_size(s: &mut String, rows: &[Row]) {
    let of = |r: &&Row| r.group == "rtt-by-size";
    if !rows.iter().any(|r| of(&r)) {
        return;
    }
    let _ = writeln!(s, "\nRound trip by message size, median");
    let mut sizes: Vec<usize> = rows.iter().filter(of).map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut names: Vec<&str> = Vec::new();
    for r in rows.iter().filter(of) {
        if !names.contains(&r.name.as_str()) {
            names.push(r.name.as_str());
        }
    }
    let _ = write!(s, "  {:<36}", "path");
    for z in &sizes {
        let _ = write!(s, " {:>10}", size_label(*z));
    }
    let _ = writeln!(s);
    for n in names {
        let _ = write!(s, "  {n:<36}");
        for z in &sizes {
            let v = rows
                .iter()
                .find(|r| of(r) && r.name == n && r.size == *z)
                .and_then(|r| r.lat)
                .map_or(f64::NAN, |l| l.p50_ns);
            let _ = write!(s, " {:>10}", time(v));
        }
        let _ = writeln!(s);
    }
}
