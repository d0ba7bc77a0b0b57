//! `shmwire stress`: rounds of load on each primitive while participants are SIGKILLed and
//! SIGSTOPped at random, each round checked (no call past its bound, nothing acknowledged lost or
//! duplicated, `/dev/shm` as found after `cleanup()`, no process left behind).
//!
//! A round forks 2 to `--procs` participants of one primitive (round robin over `--only`), loads it
//! for `--round` (1 s), kills one at a random moment about every `--kill-every`, stops others for 5
//! to 100 ms about every `--stop-every`, then ends it and checks the ledger ([`ledger`]) the
//! participants kept. After a kill, no stop is made until the survivors showed progress (each role
//! one operation) or ended as they should (a pipe's other end, a barrier's parties), within
//! [`round::RECOVERY_BOUND`]: that is a recovery, else a hang.

mod bodies;
mod ctx;
mod ledger;
pub mod procs;
mod round;
pub mod soakplot;
mod tally;

pub use round::PRIMS;
use std::io::Write;
use std::time::{Duration, Instant};
use tally::Counts;

pub struct Options {
    pub duration: Duration,
    /// Stop after this many kills (the tests), whatever the duration.
    pub kills: Option<u64>,
    pub procs: usize,
    pub kill_every: Option<Duration>,
    pub stop_every: Option<Duration>,
    pub only: Vec<String>,
    pub round: Duration,
    pub seed: Option<u64>,
    pub interval: Option<Duration>,
    pub json: bool,
}

/// Parses `500ms`, `10s`, `2m`, `1h` (a bare number is seconds); `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a duration (10s, 2m, 1h, 500ms)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !(0.0..=1e7).contains(&secs) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The live line: on a terminal rewritten in place, else one line per interval.
struct Live {
    tty: bool,
    every: Duration,
    start: Instant,
    last: Instant,
    last_ops: u64,
}

impl Live {
    fn line(&mut self, t: &Counts, prim: &str, force: bool) {
        let now = Instant::now();
        let dt = now.duration_since(self.last);
        if dt < self.every && !force {
            return;
        }
        // The last line gives the run's mean rate; the others the last interval's.
        let rate = if force {
            t.ops as f64 / now.duration_since(self.start).as_secs_f64().max(1e-3)
        } else {
            (t.ops - self.last_ops.min(t.ops)) as f64 / dt.as_secs_f64().max(1e-3)
        };
        self.last = now;
        self.last_ops = t.ops;
        let s = format!(
            "{:>7.1}s  {:>9.0} ops/s  rounds {}  kills {}  stops {}  recoveries {}  in flight {}  \
             hangs {}  lost {}  duplicated {}  leaked {}  wrong {}  [{prim}]",
            now.duration_since(self.start).as_secs_f64(),
            rate,
            t.rounds,
            t.kills,
            t.stops,
            t.recoveries,
            t.in_flight,
            t.hangs,
            t.lost,
            t.duplicated,
            t.leaked,
            t.wrong,
        );
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[2K{s}");
        } else {
            let _ = writeln!(out, "{s}");
        }
        let _ = out.flush();
    }
}

pub fn run(o: &Options) -> std::io::Result<()> {
    if std::env::var("SHMWIRE_PREFIX").map_or(true, |p| p.is_empty()) {
        // SAFETY: single-threaded here (nothing has started a thread yet): the run's names are its
        // own, so its leak check sees only what it made.
        unsafe { std::env::set_var("SHMWIRE_PREFIX", format!("stress{}", std::process::id())) };
    }
    let prims: Vec<&'static str> = if o.only.is_empty() {
        PRIMS.to_vec()
    } else {
        PRIMS
            .iter()
            .copied()
            .filter(|p| o.only.iter().any(|q| q == p))
            .collect()
    };
    let seed = o
        .seed
        .unwrap_or_else(|| ledger::now_ns() ^ u64::from(std::process::id()) << 32);
    let mut rng = ctx::Rng(seed | 1);
    // SAFETY: plain syscall.
    let tty = unsafe { libc::isatty(1) } == 1;
    let start = Instant::now();
    let mut live = Live {
        tty,
        every: o.interval.unwrap_or(if tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        }),
        start,
        last: start,
        last_ops: 0,
    };
    println!(
        "shmwire stress: {} for {:?}{}, up to {} processes, a kill every {}, a stop every {}; seed {seed}",
        prims.join(","),
        o.duration,
        o.kills.map_or(String::new(), |k| format!(" or {k} kills")),
        o.procs,
        o.kill_every.map_or("never".into(), |d| format!("{d:?}")),
        o.stop_every.map_or("never".into(), |d| format!("{d:?}")),
    );
    let mut totals = Counts::default();
    let mut by_prim: Vec<(&str, Counts)> = prims.iter().map(|p| (*p, Counts::default())).collect();
    let mut kill_due = start + o.kill_every.map_or(Duration::ZERO, |d| d / 2);
    let mut k = 0usize;
    loop {
        let done_kills = o.kills.is_some_and(|n| totals.kills >= n);
        let done_time = o.kills.is_none() && start.elapsed() >= o.duration;
        if done_kills || done_time || (o.kills.is_some() && start.elapsed() >= o.duration) {
            break;
        }
        let prim = prims[k % prims.len()];
        k += 1;
        let mut n = rng.range(2, o.procs as u64) as usize;
        if prim == "pipe" && n % 2 == 1 {
            n -= 1;
        }
        let before = round::shm_names();
        let mut plan = round::Plan {
            len: o.round,
            kill_every: o.kill_every,
            stop_every: o.stop_every,
            kills_left: o.kills.map(|n| n.saturating_sub(totals.kills)),
        };
        let mut r = round::Round::start(prim, n, &format!("st{k}"), &mut rng)?;
        let base = totals.clone();
        r.drive(&mut plan, &mut kill_due, &mut |c, ops| {
            let mut t = base.clone();
            t.add(c);
            t.ops += ops;
            live.line(&t, prim, false);
        });
        let c = r.finish(&before);
        totals.add(&c);
        if let Some(e) = by_prim.iter_mut().find(|e| e.0 == prim) {
            e.1.add(&c);
        }
        live.line(&totals, prim, false);
    }
    live.line(&totals, "end", true);
    if tty {
        println!();
    }
    let took = start.elapsed();
    if o.json {
        let v = serde_json::json!({
            "seconds": took.as_secs_f64(),
            "seed": seed,
            "totals": totals,
            "by_primitive": by_prim.iter().map(|(p, c)| serde_json::json!({"primitive": p, "counts": c})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        print_table(&by_prim, &totals, took);
    }
    if totals.failures() > 0 {
        return Err(std::io::Error::other(format!(
            "{} hang(s), {} lost, {} duplicated, {} leaked, {} wrong (see the lines above; seed {seed})",
            totals.hangs, totals.lost, totals.duplicated, totals.leaked, totals.wrong
        )));
    }
    Ok(())
}

fn print_table(by_prim: &[(&str, Counts)], t: &Counts, took: Duration) {
    println!("\n{:.0} s", took.as_secs_f64());
    println!(
        "| {:<11} | {:>6} | {:>5} | {:>5} | {:>10} | {:>9} | {:>5} | {:>4} | {:>10} | {:>6} | {:>5} | {:>10} |",
        "primitive",
        "rounds",
        "kills",
        "stops",
        "recoveries",
        "in flight",
        "hangs",
        "lost",
        "duplicated",
        "leaked",
        "wrong",
        "ops"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (p, c) in by_prim
        .iter()
        .map(|(p, c)| (*p, c))
        .chain(std::iter::once(("all", t)))
    {
        println!(
            "| {:<11} | {:>6} | {:>5} | {:>5} | {:>10} | {:>9} | {:>5} | {:>4} | {:>10} | {:>6} | {:>5} | {:>10} |",
            p,
            c.rounds,
            c.kills,
            c.stops,
            c.recoveries,
            c.in_flight,
            c.hangs,
            c.lost,
            c.duplicated,
            c.leaked,
            c.wrong,
            c.ops
        );
    }
}
