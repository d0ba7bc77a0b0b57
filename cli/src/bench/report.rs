//! The bench's output: the machine, the tables, and the ratios against the targets.

use super::measure::Pin;
use super::{Ratio, Row};
use std::fmt::Write;

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

fn find<'a>(rows: &'a [Row], group: &str, path_name: &str, size: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.group == group && r.name == path_name && r.size == size)
}

fn p50(rows: &[Row], group: &str, name: &str) -> Option<f64> {
    find(rows, group, name, 8)
        .and_then(|r| r.lat)
        .map(|l| l.p50_ns)
}

fn thr(rows: &[Row], name: &str, size: usize) -> Option<(f64, f64)> {
    find(rows, "throughput", name, size)
        .and_then(|r| r.thr)
        .map(|t| (t.msgs_per_s, t.gb_per_s))
}

/// The ratios the project targets, from this run's figures.
pub fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let mut v = Vec::new();
    let mut push = |what: &str, value: Option<f64>, target: &str, met: fn(f64) -> bool| {
        if let Some(value) = value {
            v.push(Ratio {
                what: what.to_owned(),
                value,
                min: value,
                max: value,
                target: target.to_owned(),
                met: met(value),
            });
        }
    };
    let ours = p50(rows, "rtt", "shmwire, default (adaptive)");
    let div = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    push(
        "RTT 8 B: shmwire default / spinning floor",
        div(ours, p50(rows, "rtt", "shared line, spinning (floor)")),
        "<= 1.5",
        |x| x <= 1.5,
    );
    push(
        "RTT 8 B: shmwire sleep-only / futex floor",
        div(
            p50(rows, "rtt", "shmwire, sleep only"),
            p50(rows, "rtt", "shared line, futex (floor)"),
        ),
        "<= 1.2",
        |x| x <= 1.2,
    );
    push(
        "RTT 8 B, one core: shmwire default / futex floor",
        div(
            p50(rows, "rtt-same-core", "shmwire, default (adaptive)"),
            p50(rows, "rtt-same-core", "shared line, futex (floor)"),
        ),
        "<= 1.5",
        |x| x <= 1.5,
    );
    push(
        "RTT 8 B: Unix socket / shmwire default",
        div(p50(rows, "rtt", "Unix socketpair"), ours),
        ">= 50 (what the floor allows here)",
        |x| x >= 50.0,
    );
    push(
        "RTT 8 B: iceoryx2 / shmwire default",
        div(p50(rows, "rtt", "iceoryx2 0.10 pub/sub, busy-poll"), ours),
        ">= 2",
        |x| x >= 2.0,
    );
    let copy = "shmwire send_bytes/recv_bytes_into";
    push(
        "64 B msgs/s: shmwire / pipe",
        thr(rows, copy, 64)
            .zip(thr(rows, "anonymous pipe", 64))
            .map(|(a, b)| a.0 / b.0),
        ">= 10",
        |x| x >= 10.0,
    );
    push(
        "64 KiB GB/s: shmwire / Unix socket",
        thr(rows, copy, 65536)
            .zip(thr(rows, "Unix socketpair", 65536))
            .map(|(a, b)| a.1 / b.1),
        ">= 2",
        |x| x >= 2.0,
    );
    push(
        "1 MiB GB/s: shmwire / Unix socket",
        thr(rows, copy, 1 << 20)
            .zip(thr(rows, "Unix socketpair", 1 << 20))
            .map(|(a, b)| a.1 / b.1),
        ">= 2",
        |x| x >= 2.0,
    );
    let q = |name: &str| {
        find(rows, "queue", name, 8)
            .and_then(|r| r.thr)
            .map(|t| t.msgs_per_s)
    };
    push(
        "Queue 1P/1C items/s: shmwire / OS pipe + locks",
        q("shmwire Queue 1P/1C")
            .zip(q("OS pipe + locks (CPython's design) 1P/1C"))
            .map(|(a, b)| a / b),
        ">= 20",
        |x| x >= 20.0,
    );
    push(
        "Queue 2P/2C items/s: shmwire / OS pipe + locks",
        q("shmwire Queue 2P/2C")
            .zip(q("OS pipe + locks (CPython's design) 2P/2C"))
            .map(|(a, b)| a / b),
        ">= 20",
        |x| x >= 20.0,
    );
    push(
        "Queue 1P/1C items/s: crossbeam threads / shmwire",
        q("crossbeam-channel, threads (ceiling) 1P/1C")
            .zip(q("shmwire Queue 1P/1C"))
            .map(|(a, b)| a / b),
        "<= 3",
        |x| x <= 3.0,
    );
    let sync = |name: &str| {
        find(rows, "sync", name, 0)
            .and_then(|r| r.lat)
            .map(|l| l.mean_ns)
    };
    push(
        "Lock uncontended acquire+release, ns (absolute)",
        sync("Lock: uncontended acquire + release"),
        "<= 50 ns",
        |x| x <= 50.0,
    );
    push(
        "Lock contended acquisition / futex floor round trip",
        sync("Lock: 2 processes contending, per acquisition")
            .zip(p50(rows, "rtt", "shared line, futex (floor)"))
            .map(|(a, b)| a / b),
        "<= 1",
        |x| x <= 1.0,
    );
    v
}

fn us(ns: f64) -> String {
    if ns.is_nan() {
        "-".into()
    } else if ns < 10_000.0 {
        format!("{:.2}", ns / 1000.0)
    } else {
        format!("{:.1}", ns / 1000.0)
    }
}

fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1024 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// Per ratio over several runs: the median (which decides "met"), and the range.
pub fn summarize(runs: &[Vec<Ratio>]) -> Vec<Ratio> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|r0| {
            let mut vals: Vec<f64> = runs
                .iter()
                .filter_map(|run| run.iter().find(|r| r.what == r0.what).map(|r| r.value))
                .collect();
            vals.sort_by(f64::total_cmp);
            let median = vals[vals.len() / 2];
            let met = runs
                .iter()
                .filter_map(|run| run.iter().find(|r| r.what == r0.what && r.value == median))
                .any(|r| r.met);
            Ratio {
                what: r0.what.clone(),
                value: median,
                min: vals[0],
                max: vals[vals.len() - 1],
                target: r0.target.clone(),
                met,
            }
        })
        .collect()
}

/// The human-readable tables.
pub fn table(rows: &[Row], ratios: &[Ratio], runs: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "shmwire bench on {}\n", machine());
    if runs > 1 {
        let _ = writeln!(
            s,
            "Ratios over {runs} runs: median [min..max], latency by median; the figures below are the last run's"
        );
    } else {
        let _ = writeln!(s, "Ratios (this run; latency by median)");
    }
    for r in ratios {
        let range = if runs > 1 {
            format!(" [{:.2}..{:.2}]", r.min, r.max)
        } else {
            String::new()
        };
        let verdict = if r.met { "met" } else { "MISSED" };
        let _ = writeln!(
            s,
            "  {:<52} {:>8.2}x{range:<15}  target {:<12} {verdict}",
            r.what, r.value, r.target
        );
    }
    for (group, title, pin) in [
        ("rtt", "Round trip, 8 B, two processes (µs)", Pin::Any),
        (
            "rtt-same-core",
            "Round trip, 8 B, both on CPU 0 (µs)",
            Pin::Same,
        ),
    ] {
        let _ = writeln!(s, "\n{title}");
        let _ = writeln!(
            s,
            "  {:<36} {:>8} {:>8} {:>8} {:>8}",
            "path", "median", "mean", "p99", "p99.9"
        );
        for r in rows.iter().filter(|r| r.group == group && r.pin == pin) {
            if let Some(l) = r.lat {
                let _ = writeln!(
                    s,
                    "  {:<36} {:>8} {:>8} {:>8} {:>8}",
                    r.name,
                    us(l.p50_ns),
                    us(l.mean_ns),
                    us(l.p99_ns),
                    us(l.p999_ns)
                );
            }
        }
    }
    let _ = writeln!(s, "\nOne-way throughput (messages/s, GB/s)");
    let _ = writeln!(
        s,
        "  {:<42} {:>8} {:>12} {:>8}",
        "path", "size", "msgs/s", "GB/s"
    );
    for r in rows.iter().filter(|r| r.group == "throughput") {
        if let Some(t) = r.thr {
            let _ = writeln!(
                s,
                "  {:<42} {:>8} {:>12.0} {:>8.2}",
                r.name,
                size_label(r.size),
                t.msgs_per_s,
                t.gb_per_s
            );
        }
    }
    if rows.iter().any(|r| r.group == "queue") {
        let _ = writeln!(s, "\nQueue of 8-byte items between processes (items/s)");
        for r in rows.iter().filter(|r| r.group == "queue") {
            if let Some(t) = r.thr {
                let _ = writeln!(s, "  {:<52} {:>12.0}", r.name, t.msgs_per_s);
            }
        }
    }
    if rows.iter().any(|r| r.group == "sync") {
        let _ = writeln!(s, "\nLocks and wake-ups (mean, µs)");
        for r in rows.iter().filter(|r| r.group == "sync") {
            if let Some(l) = r.lat {
                let _ = writeln!(s, "  {:<52} {:>12.3}", r.name, l.mean_ns / 1000.0);
            }
        }
    }
    let _ = writeln!(s, "\nRound trip by message size, median (µs)");
    let sizes: Vec<usize> = {
        let mut v: Vec<usize> = rows
            .iter()
            .filter(|r| r.group == "rtt-by-size")
            .map(|r| r.size)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut names: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.group == "rtt-by-size") {
        if !names.contains(&r.name.as_str()) {
            names.push(r.name.as_str());
        }
    }
    let _ = write!(s, "  {:<36}", "path");
    for z in &sizes {
        let _ = write!(s, " {:>8}", size_label(*z));
    }
    let _ = writeln!(s);
    for n in names {
        let _ = write!(s, "  {n:<36}");
        for z in &sizes {
            let v = find(rows, "rtt-by-size", n, *z)
                .and_then(|r| r.lat)
                .map_or(f64::NAN, |l| l.p50_ns);
            let _ = write!(s, " {:>8}", us(v));
        }
        let _ = writeln!(s);
    }
    s
}
