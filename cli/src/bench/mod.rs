//! `shmwire bench`: shmwire against the floors and the OS paths, side by side, in one run.
//!
//! Every figure in the table is measured in this run, so the ratios hold on any machine even when its
//! absolute speed drifts. Latency ratios use medians (robust to the noise of shared machines); the
//! means and tails are shown beside them.

pub mod links;
pub mod measure;
mod plot;
pub mod prims;
mod report;

use links::{ShmLink, fd_pair, floor_pair, shm_pair};
use measure::{Lat, Pin, Thr, rtt, throughput};
use serde::Serialize;
use shmwire::WaitStrategy;
use std::io::Write;
use std::time::Duration;

/// Options of a run.
pub struct Options {
    /// How many times to run everything (ratios are then given as median and range).
    pub runs: usize,
    /// Only the jobs whose group ("rtt", "rtt-same-core", "throughput", "rtt-by-size") starts with this.
    pub only: Option<String>,
    pub json: bool,
    pub quick: bool,
    pub plot: Option<String>,
    pub iceoryx2: Option<String>,
}

/// One measured figure.
#[derive(Serialize, Clone)]
pub struct Row {
    pub group: &'static str,
    pub name: String,
    pub size: usize,
    pub pin: Pin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<Lat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thr: Option<Thr>,
}

/// A ratio against its target (over several runs: the median, and the range).
#[derive(Serialize, Clone)]
pub struct Ratio {
    pub what: String,
    pub value: f64,
    pub min: f64,
    pub max: f64,
    pub target: String,
    pub met: bool,
}

enum Job {
    Lat {
        group: &'static str,
        name: &'static str,
        path: &'static str,
        size: usize,
        pin: Pin,
    },
    Thr {
        name: &'static str,
        path: &'static str,
        size: usize,
    },
    /// Queue throughput: (producers, consumers).
    Queue {
        name: &'static str,
        path: &'static str,
        sides: (usize, usize),
    },
    /// Lock, semaphore and event figures.
    Sync {
        name: &'static str,
        path: &'static str,
    },
}

const LAT_PATHS: [(&str, &str); 8] = [
    ("shared line, spinning (floor)", "spin"),
    ("shared line, futex (floor)", "futex"),
    ("anonymous pipe", "pipe"),
    ("Unix socketpair", "uds"),
    ("TCP loopback, NODELAY", "tcp"),
    ("shmwire, default (adaptive)", "shm"),
    ("shmwire, sleep only", "shm-sleep"),
    ("shmwire, zero-copy", "shm-zc"),
];
const SAME_PATHS: [(&str, &str); 5] = [
    ("shared line, futex (floor)", "futex"),
    ("anonymous pipe", "pipe"),
    ("Unix socketpair", "uds"),
    ("shmwire, default (adaptive)", "shm"),
    ("shmwire, sleep only", "shm-sleep"),
];
const THR_PATHS: [(&str, &str); 4] = [
    ("anonymous pipe", "pipe"),
    ("Unix socketpair", "uds"),
    ("shmwire send_bytes/recv_bytes_into", "shm"),
    ("shmwire send_with/recv_with (zero-copy)", "shm-zc"),
];
const THR_SIZES: [usize; 4] = [64, 4096, 65536, 1 << 20];
const QUEUE_PATHS: [(&str, &str); 3] = [
    ("shmwire Queue", "shm"),
    ("OS pipe + locks (CPython's design)", "pipe-lock"),
    ("crossbeam-channel, threads (ceiling)", "crossbeam"),
];
const SYNC_PATHS: [(&str, &str); 4] = [
    ("Lock: uncontended acquire + release", "lock-free"),
    (
        "Lock: 2 processes contending, per acquisition",
        "lock-contended",
    ),
    ("Semaphore: wake-up round trip", "sem"),
    ("Event: wake-up round trip", "event"),
];
const PLOT_SIZES: [usize; 4] = [64, 512, 4096, 65536];
const PLOT_PATHS: [&str; 4] = ["pipe", "uds", "tcp", "shm"];

fn jobs() -> Vec<Job> {
    let mut v = Vec::new();
    for (name, path) in LAT_PATHS {
        v.push(Job::Lat {
            group: "rtt",
            name,
            path,
            size: 8,
            pin: Pin::Any,
        });
    }
    for (name, path) in SAME_PATHS {
        v.push(Job::Lat {
            group: "rtt-same-core",
            name,
            path,
            size: 8,
            pin: Pin::Same,
        });
    }
    for size in THR_SIZES {
        for (name, path) in THR_PATHS {
            v.push(Job::Thr { name, path, size });
        }
    }
    for sides in [(1, 1), (2, 2)] {
        for (name, path) in QUEUE_PATHS {
            v.push(Job::Queue { name, path, sides });
        }
    }
    for (name, path) in SYNC_PATHS {
        v.push(Job::Sync { name, path });
    }
    for size in PLOT_SIZES {
        for path in PLOT_PATHS {
            let name = LAT_PATHS.iter().find(|p| p.1 == path).map_or(path, |p| p.0);
            v.push(Job::Lat {
                group: "rtt-by-size",
                name,
                path,
                size,
                pin: Pin::Any,
            });
        }
    }
    v
}

fn shm(path: &str) -> (ShmLink, ShmLink) {
    match path {
        "shm" => shm_pair(WaitStrategy::Adaptive, false),
        "shm-sleep" => shm_pair(WaitStrategy::Sleep, false),
        "shm-zc" => shm_pair(WaitStrategy::Adaptive, true),
        other => panic!("unknown path {other}"),
    }
}

fn run_lat(path: &str, size: usize, pin: Pin, budget: Duration) -> Lat {
    let max = 300_000;
    match path {
        "spin" => rtt(floor_pair(false), size, budget, max, pin),
        "futex" => rtt(floor_pair(true), size, budget, max, pin),
        "pipe" | "uds" | "tcp" => rtt(fd_pair(path), size, budget, max, pin),
        _ => rtt(shm(path), size, budget, max, pin),
    }
}

fn run_thr(path: &str, size: usize, budget: Duration) -> Thr {
    match path {
        "pipe" | "uds" => throughput(fd_pair(path), size, budget, Pin::Any),
        _ => throughput(shm(path), size, budget, Pin::Any),
    }
}

/// Runs the iceoryx2 peer binary (built by `benches/run.sh`) and parses its `lat iceoryx2 ...` line.
fn run_iceoryx2(bin: &str) -> Option<Lat> {
    // iceoryx2 leaves its global management files in /dev/shm; remove the ones this run made.
    let iox = || -> std::collections::BTreeSet<std::ffi::OsString> {
        std::fs::read_dir("/dev/shm")
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.file_name()))
                    .filter(|n| n.to_string_lossy().starts_with("iox2_"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = iox();
    let out = std::process::Command::new(bin).arg("100000").output();
    for name in iox().difference(&before) {
        let _ = std::fs::remove_file(std::path::Path::new("/dev/shm").join(name));
    }
    let out = out.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("lat iceoryx2"))?;
    let field = |k: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.parse().ok()))
    };
    Some(Lat {
        iters: field("iters=")? as u64,
        mean_ns: field("mean_ns=")?,
        p50_ns: field("median_ns=")?,
        p99_ns: field("p99_ns=")?,
        p999_ns: field("p999_ns=").unwrap_or(f64::NAN),
    })
}

/// Runs everything (`runs` times) and prints the table of the last run with the ratios of every run
/// (median and range), or JSON.
pub fn run(opts: &Options) -> std::io::Result<()> {
    let runs = opts.runs.max(1);
    let mut all = Vec::new();
    for k in 0..runs {
        all.push(run_once(opts, k, runs));
    }
    let rows = all.last().cloned().unwrap_or_default();
    let per_run: Vec<Vec<Ratio>> = all.iter().map(|r| report::ratios(r)).collect();
    let summary = report::summarize(&per_run);
    if let Some(path) = &opts.plot {
        std::fs::write(path, plot::svg(&rows))?;
    }
    if opts.json {
        let doc = serde_json::json!({
            "machine": report::machine(),
            "runs": all.len(),
            "ratios": summary,
            "rows": rows,
            "all_runs": if all.len() > 1 { serde_json::json!(all) } else { serde_json::Value::Null },
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        print!("{}", report::table(&rows, &summary, all.len()));
    }
    Ok(())
}

fn run_once(opts: &Options, run: usize, runs: usize) -> Vec<Row> {
    let scale = if opts.quick { 0.1 } else { 1.0 };
    let lat_budget = Duration::from_secs_f64(1.2 * scale);
    let same_budget = Duration::from_secs_f64(0.8 * scale);
    let thr_budget = Duration::from_secs_f64(0.8 * scale);
    let size_budget = Duration::from_secs_f64(0.35 * scale);
    let jobs: Vec<Job> = jobs()
        .into_iter()
        .filter(|j| {
            let g = match j {
                Job::Lat { group, .. } => *group,
                Job::Thr { .. } => "throughput",
                Job::Queue { .. } => "queue",
                Job::Sync { .. } => "sync",
            };
            opts.only.as_deref().is_none_or(|o| g.starts_with(o))
        })
        .collect();
    let total = jobs.len() + opts.iceoryx2.is_some() as usize;
    let mut rows = Vec::new();
    let mut err = std::io::stderr();
    let prefix = if runs > 1 {
        format!("run {}/{runs} ", run + 1)
    } else {
        String::new()
    };
    for (i, job) in jobs.iter().enumerate() {
        let (label, row) = match *job {
            Job::Lat {
                group,
                name,
                path,
                size,
                pin,
            } => {
                let budget = match group {
                    "rtt" => lat_budget,
                    "rtt-same-core" => same_budget,
                    _ => size_budget,
                };
                let lat = run_lat(path, size, pin, budget);
                let row = Row {
                    group,
                    name: name.to_owned(),
                    size,
                    pin,
                    lat: Some(lat),
                    thr: None,
                };
                (format!("{group} {name} {size} B"), row)
            }
            Job::Queue { name, path, sides } => {
                let thr = match path {
                    "shm" => prims::shm_queue(sides.0, sides.1, prims::Amount::For(thr_budget)),
                    "pipe-lock" => {
                        prims::pipe_lock_queue(sides.0, sides.1, prims::Amount::For(thr_budget))
                    }
                    _ => prims::crossbeam(sides.0, sides.1, prims::Amount::For(thr_budget)),
                };
                let name = format!("{name} {}P/{}C", sides.0, sides.1);
                let row = Row {
                    group: "queue",
                    name: name.clone(),
                    size: 8,
                    pin: Pin::Any,
                    lat: None,
                    thr: Some(thr),
                };
                (format!("queue {name}"), row)
            }
            Job::Sync { name, path } => {
                let lat = match path {
                    "lock-free" => prims::lock_uncontended(same_budget),
                    "lock-contended" => prims::lock_contended(same_budget),
                    "sem" => prims::wake_pingpong(false, same_budget),
                    _ => prims::wake_pingpong(true, same_budget),
                };
                let row = Row {
                    group: "sync",
                    name: name.to_owned(),
                    size: 0,
                    pin: Pin::Any,
                    lat: Some(lat),
                    thr: None,
                };
                (format!("sync {name}"), row)
            }
            Job::Thr { name, path, size } => {
                let thr = run_thr(path, size, thr_budget);
                let row = Row {
                    group: "throughput",
                    name: name.to_owned(),
                    size,
                    pin: Pin::Any,
                    lat: None,
                    thr: Some(thr),
                };
                (format!("throughput {name} {size} B"), row)
            }
        };
        let _ = write!(err, "\r\x1b[K{prefix}[{}/{}] {label}", i + 1, total);
        let _ = err.flush();
        rows.push(row);
    }
    if let Some(bin) = &opts.iceoryx2 {
        let _ = write!(err, "\r\x1b[K{prefix}[{total}/{total}] iceoryx2 peer");
        let _ = err.flush();
        match run_iceoryx2(bin) {
            Some(lat) => rows.push(Row {
                group: "rtt",
                name: "iceoryx2 0.10 pub/sub, busy-poll".to_owned(),
                size: 8,
                pin: Pin::Any,
                lat: Some(lat),
                thr: None,
            }),
            None => eprintln!("\nthe iceoryx2 peer at {bin} did not run; skipped"),
        }
    }
    let _ = writeln!(err, "\r\x1b[K");
    rows
}
