//! `shmwire bench`: shmwire against the floors, the OS paths, Python's `multiprocessing` and
//! iceoryx2, side by side, in one run.
//!
//! **Paired measurement.** The sides of a group (say the round trip's: the two floors, the OS paths,
//! shmwire's modes, Python) are set up once, then run in turn in short blocks ([`BLOCK`] each),
//! forward then backward (ABC CBA ABC ...), after one unrecorded warm-up round. A ratio between two
//! sides is the median of their per-round ratios, so that whatever the machine does meanwhile (the
//! two vCPUs moving apart, a neighbour's build) falls on both sides. Over `--runs N`, a ratio is the
//! median of the runs' medians, with their range. Absolute figures are kept beside the ratios.

mod external;
mod groups;
pub mod links;
pub mod locks;
pub mod manager;
mod manager_group;
pub mod measure;
mod plot;
pub mod pool;
pub mod prims;
mod pymod;
mod ratios;
mod report;
mod scaling;
mod transport;

pub use groups::GROUPS;
use groups::{Sub, selected, subs};
use measure::{Amount, Lat, Pin, Pinned, Sample, Side, Thr};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// One block of a side (the quick run's are a fifth of this).
pub const BLOCK: Duration = Duration::from_millis(25);

/// Options of a run.
pub struct Options {
    /// How many times to run everything (ratios are then the median of the runs, with the range).
    pub runs: usize,
    /// Only the groups whose name starts with one of these (default: all but `scaling`).
    pub only: Vec<String>,
    pub json: bool,
    pub quick: bool,
    /// Where to write the latency-by-size plot.
    pub plot: Option<String>,
    /// Where to write the throughput-by-size plot.
    pub plot_throughput: Option<String>,
    pub iceoryx2: Option<String>,
    /// Run Python's `multiprocessing` sides (when `python3` is there).
    pub python: bool,
}

/// Memory taken by one object, bytes.
#[derive(Serialize, Clone, Copy, Debug)]
pub struct Mem {
    pub mapped: f64,
    pub resident: f64,
}

/// One measured figure.
#[derive(Serialize, Clone)]
pub struct Row {
    pub group: &'static str,
    /// The side's short id (`shm`, `pipe`, `py`, ...).
    pub path: String,
    pub name: String,
    pub size: usize,
    pub pin: Pin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<Lat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thr: Option<Thr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<Mem>,
    /// Lock scaling: hand-offs (acquisitions by another process than the last holder) per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoffs_per_s: Option<f64>,
    /// How many times faster than Python's equivalent in the same group (paired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_python: Option<f64>,
}

impl Row {
    fn new(group: &'static str, path: &str, name: &str, size: usize) -> Row {
        Row {
            group,
            path: path.to_owned(),
            name: name.to_owned(),
            size,
            pin: Pin::Any,
            lat: None,
            thr: None,
            mem: None,
            handoffs_per_s: None,
            vs_python: None,
        }
    }
}

/// A ratio against its target: the median with its range (of the pairs in one run, or of the runs'
/// medians over several).
#[derive(Serialize, Clone, Debug)]
pub struct Ratio {
    pub what: String,
    pub value: f64,
    pub min: f64,
    pub max: f64,
    /// Pairs of blocks it was computed from (all runs).
    pub pairs: usize,
    pub target: String,
    /// `None` when there is no target (the ratio is for information).
    pub met: Option<bool>,
}

/// An absolute figure with a unit and its target.
#[derive(Serialize, Clone, Debug)]
pub struct Figure {
    pub what: String,
    pub value: f64,
    pub unit: String,
    pub target: String,
    /// The figure meets its target at or below this.
    pub limit: f64,
    pub met: bool,
}

/// Whether a group's figure is a time per operation or a rate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Lat,
    Thr,
}

/// What a group measured: per side, its blocks (one per round).
pub struct Measured {
    pub group: &'static str,
    pub size: usize,
    pub pin: Pin,
    pub kind: Kind,
    pub sides: Vec<(&'static str, String, Vec<Sample>)>,
}

impl Measured {
    /// Per-round figures of side `id`: ns per operation (latency) or operations per second.
    pub fn figures(&self, id: &str) -> Option<Vec<f64>> {
        let s = self.sides.iter().find(|s| s.0 == id)?;
        Some(
            s.2.iter()
                .map(|b| match self.kind {
                    Kind::Lat => b.ns_per_op(),
                    Kind::Thr => b.per_s(),
                })
                .collect(),
        )
    }
}

/// The progress line on stderr, drawn only when stderr is a terminal.
pub struct Progress {
    on: bool,
    prefix: String,
}

impl Progress {
    fn new(prefix: String) -> Self {
        Progress {
            on: std::io::stderr().is_terminal(),
            prefix,
        }
    }

    pub fn show(&self, what: &str) {
        if self.on {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[K{}{what}", self.prefix);
            let _ = e.flush();
        }
    }

    fn done(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// Runs `sides` interleaved: one unrecorded warm-up round, then rounds forward and backward in turn
/// until `budget` is spent (at least `min_rounds`).
fn interleave(
    sides: &mut [Box<dyn Side>],
    block: Duration,
    budget: Duration,
    min_rounds: usize,
) -> Vec<Vec<Sample>> {
    let n = sides.len();
    let rounds =
        ((budget.as_secs_f64() / (block.as_secs_f64() * n.max(1) as f64)) as usize).max(min_rounds);
    let mut out = vec![Vec::with_capacity(rounds); n];
    for (k, s) in sides.iter_mut().enumerate() {
        trace(&format!("warm-up side {k}"));
        s.run(Amount::For(block));
    }
    for r in 0..rounds {
        for j in 0..n {
            let k = if r % 2 == 0 { j } else { n - 1 - j };
            trace(&format!("round {r} side {k}"));
            out[k].push(sides[k].run(Amount::For(block)));
        }
    }
    out
}

/// With `SHMWIRE_BENCH_TRACE` set, says on stderr what the bench is about to do (to find a hang).
fn trace(what: &str) {
    if std::env::var_os("SHMWIRE_BENCH_TRACE").is_some() {
        static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let t = T0.get_or_init(std::time::Instant::now).elapsed();
        eprintln!("bench {:>9.3} s: {what}", t.as_secs_f64());
    }
}

/// The result of one run.
#[derive(Serialize, Clone)]
pub struct RunResult {
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    pub figures: Vec<Figure>,
}

fn run_once(opts: &Options, python: bool, run: usize, runs: usize) -> RunResult {
    let scale = if opts.quick { 0.1 } else { 1.0 };
    let block = if opts.quick { BLOCK / 5 } else { BLOCK };
    let min_rounds = if opts.quick { 3 } else { 9 };
    let prefix = if runs > 1 {
        format!("run {}/{runs} ", run + 1)
    } else {
        String::new()
    };
    let progress = Progress::new(prefix);
    let subs: Vec<Sub> = subs(opts, python)
        .into_iter()
        .filter(|s| selected(opts, s.group))
        .collect();
    let total = subs.len();
    let mut measured = Vec::new();
    for (i, sub) in subs.into_iter().enumerate() {
        progress.show(&format!("[{}/{total}] {} {} B", i + 1, sub.group, sub.size));
        let _pin = Pinned::new(sub.pin);
        let iox_before = iox_files();
        let mut made: Vec<(&'static str, String, Box<dyn Side>)> = Vec::new();
        for s in &sub.sides {
            trace(&format!("make {} {}", sub.group, s.id));
            if let Some(side) = (s.make)() {
                made.push((s.id, s.name.clone(), side));
            }
        }
        let (ids, mut sides): (Vec<_>, Vec<_>) =
            made.into_iter().map(|(id, n, s)| ((id, n), s)).unzip();
        let samples = interleave(&mut sides, block, sub.budget.mul_f64(scale), min_rounds);
        drop(sides);
        if sub.sides.iter().any(|s| s.id == "iceoryx2") {
            // iceoryx2 leaves its management files in /dev/shm; remove the ones this run made.
            for name in iox_files().difference(&iox_before) {
                let _ = std::fs::remove_file(std::path::Path::new("/dev/shm").join(name));
            }
        }
        measured.push(Measured {
            group: sub.group,
            size: sub.size,
            pin: sub.pin,
            kind: sub.kind,
            sides: ids
                .into_iter()
                .zip(samples)
                .map(|((id, n), s)| (id, n, s))
                .collect(),
        });
    }
    let mut rows = report::rows(&measured);
    let mut figures = Vec::new();
    if selected(opts, "sync") {
        progress.show("sync: uncontended Lock");
        let ns = locks::lock_uncontended(Duration::from_secs_f64(0.3 * scale));
        figures.push(Figure {
            what: "Lock uncontended acquire + release".into(),
            value: ns,
            unit: "ns".into(),
            target: "<= 50 ns".into(),
            limit: 50.0,
            met: ns <= 50.0,
        });
        let mut row = Row::new(
            "sync",
            "lock-free",
            "Lock: uncontended acquire + release",
            0,
        );
        row.lat = Some(Lat {
            iters: 0,
            mean_ns: ns,
            p50_ns: ns,
            p99_ns: f64::NAN,
            p999_ns: f64::NAN,
        });
        rows.push(row);
    }
    if selected(opts, "scaling") {
        rows.extend(scaling::run(opts.quick, python, &progress));
    }
    if selected(opts, "manager") {
        progress.show("manager: memory per entry");
        rows.push(manager_group::memory(opts.quick));
    }
    progress.done();
    RunResult {
        ratios: ratios::ratios(&measured),
        rows,
        figures,
    }
}

fn iox_files() -> std::collections::BTreeSet<std::ffi::OsString> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| n.to_string_lossy().starts_with("iox2_"))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs everything (`runs` times) and prints the table of the last run with the ratios of every run
/// (median and range), or JSON.
pub fn run(opts: &Options) -> std::io::Result<()> {
    let runs = opts.runs.max(1);
    let python = if opts.python {
        external::python_version()
    } else {
        None
    };
    let python_note = match (&python, opts.python) {
        (Some(v), _) => format!("Python {v}'s multiprocessing runs in the same groups, paired"),
        (None, true) => {
            "python3 (with multiprocessing) not found: the Python rows are skipped".into()
        }
        (None, false) => "--no-python: the Python rows are skipped".into(),
    };
    let mut all = Vec::new();
    for k in 0..runs {
        all.push(run_once(opts, python.is_some(), k, runs));
    }
    let last = all.last().cloned().expect("one run");
    let ratios = ratios::summarize(&all.iter().map(|r| r.ratios.clone()).collect::<Vec<_>>());
    let figures =
        ratios::summarize_figures(&all.iter().map(|r| r.figures.clone()).collect::<Vec<_>>());
    if let Some(path) = &opts.plot {
        std::fs::write(path, plot::latency_svg(&last.rows))?;
    }
    if let Some(path) = &opts.plot_throughput {
        std::fs::write(path, plot::throughput_svg(&last.rows))?;
    }
    let bufs = links::os_buffers();
    let block = if opts.quick { BLOCK / 5 } else { BLOCK };
    if opts.json {
        let doc = serde_json::json!({
            "machine": report::machine(),
            "runs": all.len(),
            "paired": { "block_ms": block.as_secs_f64() * 1e3, "order": "forward then backward, after a warm-up round" },
            "python": python,
            "os_buffers": { "pipe": bufs.0, "socket_sndbuf": bufs.1 },
            "ratios": ratios,
            "figures": figures,
            "rows": last.rows,
            "all_runs": if all.len() > 1 { serde_json::json!(all) } else { serde_json::Value::Null },
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        print!(
            "{}",
            report::table(&report::Header {
                rows: &last.rows,
                ratios: &ratios,
                figures: &figures,
                runs: all.len(),
                block,
                python: &python_note,
                bufs,
            })
        );
    }
    Ok(())
}
