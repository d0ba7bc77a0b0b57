//! The `shmwire` command, run as a user would: `bench` (quick), `ls`, `clean`.
//!
//! Every run is watched: it has a time limit (its process group is killed and the test fails if it
//! hangs), it must leave no process of its group behind, and nothing with its own `SHMWIRE_PREFIX`
//! in `/dev/shm` (what it left is deleted, named, and fails the test).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `shmwire ARGS` in a process group of its own with a prefix of its own (`tag`), under a
/// watchdog of `limit`; then checks it left nothing.
fn shmwire(tag: &str, args: &[&str], limit: Duration) -> Output {
    shmwire_beside(tag, args, limit, &[])
}

/// The prefix of the runs tagged `tag`: under the run's own `SHMWIRE_PREFIX` (CI's check of
/// `/dev/shm` sees what a run leaves), then this test process and the tag.
fn prefix_of(tag: &str) -> String {
    let run = std::env::var("SHMWIRE_PREFIX").unwrap_or_default();
    format!("{run}clitest{}-{tag}", std::process::id())
}

/// [`shmwire`], while the segments named `kept` (made by the test, under the run's prefix) exist.
fn shmwire_beside(tag: &str, args: &[&str], limit: Duration, kept: &[&str]) -> Output {
    let prefix = prefix_of(tag);
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmwire"))
        .args(args)
        .env("SHMWIRE_PREFIX", &prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run shmwire");
    let pgid = child.id() as i32;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let left = group_members(pgid);
    // SAFETY: plain syscall on the group this test made; everything in it goes.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if status.is_none() {
        let _ = child.wait();
    }
    // What the run left in /dev/shm is deleted (and reported) whatever else went wrong.
    let shm = leftovers(&prefix, kept);
    let status = status.unwrap_or_else(|| {
        panic!("shmwire {args:?} hung: killed after {limit:?}; its group: {left:?}; left in /dev/shm (deleted): {shm:?}")
    });
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        left.is_empty(),
        "shmwire {args:?} left processes: {left:?}; left in /dev/shm (deleted): {shm:?}"
    );
    assert!(
        shm.is_empty(),
        "shmwire {args:?} left in /dev/shm (deleted): {shm:?}"
    );
    output
}

/// The entries of /dev/shm a run with `prefix` left, but for the test's own `kept` ones: deleted,
/// and returned.
fn leftovers(prefix: &str, kept: &[&str]) -> Vec<String> {
    let shm: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("shmwire.{prefix}.")))
        .filter(|n| !kept.iter().any(|k| n.ends_with(&format!(".u.{k}"))))
        .collect();
    for n in &shm {
        let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
    }
    shm
}

/// The processes of group `pgid` (pid and command line), but for zombies.
fn group_members(pgid: i32) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut f = stat.rsplit_once(')').map_or("", |s| s.1).split_whitespace();
        let state = f.next().unwrap_or("?");
        let pgrp: i32 = f.nth(1).and_then(|g| g.parse().ok()).unwrap_or(0);
        if pgrp == pgid && state != "Z" {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            v.push(format!("{pid} [{state}] {}", String::from_utf8_lossy(&cmd)));
        }
    }
    v
}

const BENCH_LIMIT: Duration = Duration::from_secs(300);
const QUICK_LIMIT: Duration = Duration::from_secs(30);

/// Every ratio the bench reports without the iceoryx2 peer, in order; `true`: a Python ratio.
const RATIOS: [(&str, bool); 44] = [
    ("RTT 8 B: shmwire default / spinning floor", false),
    ("RTT 8 B: shmwire sleep-only / futex floor", false),
    ("RTT 8 B: Unix socket busy-polling / shmwire default", false),
    (
        "RTT 8 B: Unix socket / shmwire sleep-only (both sleep)",
        false,
    ),
    ("RTT 8 B: Python Pipe / shmwire default", true),
    ("RTT 8 B, one core: shmwire default / futex floor", false),
    ("64 B msgs/s: shmwire / pipe", false),
    ("64 KiB GB/s: shmwire / Unix socket", false),
    ("1 MiB GB/s: shmwire / Unix socket", false),
    ("64 B msgs/s: shmwire / Python Pipe", true),
    ("Queue 1P/1C items/s: shmwire / OS pipe + locks", false),
    ("Queue 2P/2C items/s: shmwire / OS pipe + locks", false),
    ("Queue 1P/1C items/s: crossbeam threads / shmwire", false),
    ("Queue 2P/2C items/s: crossbeam threads / shmwire", false),
    (
        "Queue 1P/1C items/s: crossbeam threads / shmwire serde",
        false,
    ),
    ("Queue 1P/1C items/s: shmwire / Python Queue", true),
    ("Queue 2P/2C items/s: shmwire / Python Queue", true),
    (
        "Lock strict hand-off, 2 processes / futex floor round trip",
        false,
    ),
    (
        "Lock strict hand-off, 2 processes: shmwire / pthread mutex",
        false,
    ),
    ("Pool map_chunked(.., 1) tasks/s: shmwire / Python", true),
    (
        "Pool map_chunked(.., 1) tasks/s: shmwire / OS-pipe pool",
        false,
    ),
    ("Pool apply_async tasks/s: shmwire / Python", true),
    ("Pool apply_async tasks/s: shmwire / OS-pipe pool", false),
    (
        "Pool map of 1,000,000 (default chunks): shmwire / Python",
        true,
    ),
    ("Pool map of 1,000,000: threads (ceiling) / shmwire", false),
    (
        "Pool ~20 us tasks/s: shmwire / threads of one process",
        false,
    ),
    ("Pool apply round trips/s: shmwire / OS-pipe pool", false),
    ("Pool apply round trips/s: shmwire / Python", true),
    ("Manager get, 1 process: shmwire / Python Manager", true),
    ("Manager insert, 1 process: shmwire / Python Manager", true),
    ("Manager modify, 1 process: shmwire / Python Manager", true),
    (
        "Manager insert, 4 processes: shmwire / Python Manager",
        true,
    ),
    (
        "Manager modify, 4 processes: shmwire / Python Manager",
        true,
    ),
    (
        "Manager get, 1 process: Mutex<HashMap> thread / shmwire",
        false,
    ),
    ("Manager get: 4 reader processes / 1", false),
    ("Manager get, 1 process: shmwire / Unix-socket dict", false),
    (
        "Manager modify, 4 processes: shmwire / Unix-socket dict",
        false,
    ),
    ("Transport RTT 8 B: our TCP Connection / raw TCP", false),
    (
        "Transport RTT 8 B: our Unix-socket Connection / raw socketpair",
        false,
    ),
    (
        "Transport RTT 8 B: our TCP Connection / shared memory",
        false,
    ),
    (
        "Transport RTT 8 B: Python multiprocessing.connection TCP / ours",
        true,
    ),
    (
        "Transport 64 KiB msgs/s: our TCP Connection / raw TCP",
        false,
    ),
    (
        "Transport 64 KiB msgs/s: shared memory / our TCP Connection",
        false,
    ),
    (
        "Transport 64 KiB msgs/s: ours / Python multiprocessing.connection, TCP",
        true,
    ),
];

/// Whether `python3` with `multiprocessing` is here (then the bench runs Python's sides).
fn python_here() -> bool {
    Command::new("python3")
        .args(["-c", "import multiprocessing"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether python3 imports the Python module (`pip install ./python`): the bench's
/// `python-module` group runs only then.
fn python_module_here() -> bool {
    Command::new("python3")
        .args(["-c", "import shmwire"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `python-module` group's ratios, in order.
const PYMOD_RATIOS: [&str; 3] = [
    "Python module: Pipe send/recv round trip, multiprocessing / shmwire",
    "Python module: Queue 1P/1C items/s, shmwire / multiprocessing",
    "Python module: Manager dict set+get ops/s, shmwire / multiprocessing",
];

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn ratio_names(doc: &serde_json::Value) -> Vec<String> {
    doc["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["what"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn bench_quick_json_has_every_ratio() {
    let out = shmwire("json", &["bench", "--quick", "--json"], BENCH_LIMIT);
    let doc = json_of(&out);
    let rows = doc["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["name"] == "shmwire, default (adaptive)"
                && r["lat"]["p50_ns"].as_f64().unwrap() > 0.0)
    );
    assert!(
        rows.iter()
            .any(|r| r["group"] == "throughput" && r["thr"]["msgs_per_s"].as_f64().unwrap() > 0.0)
    );
    // Every row measured something (a time, a rate, or memory).
    for r in rows {
        let lat = r["lat"]["p50_ns"].as_f64().unwrap_or(0.0);
        let thr = r["thr"]["msgs_per_s"].as_f64().unwrap_or(0.0);
        let mem = r["mem"]["mapped"].as_f64().unwrap_or(0.0);
        assert!(
            lat > 0.0 || thr > 0.0 || mem > 0.0,
            "a row without a figure: {r}"
        );
    }
    let python = python_here();
    let mut want: Vec<&str> = RATIOS
        .iter()
        .filter(|(_, py)| python || !py)
        .map(|(n, _)| *n)
        .collect();
    if python && python_module_here() {
        want.extend(PYMOD_RATIOS);
    }
    assert_eq!(ratio_names(&doc), want, "the ratios, in order");
    for r in doc["ratios"].as_array().unwrap() {
        let v = r["value"].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{r}");
        assert!(r["min"].as_f64().unwrap() <= v && v <= r["max"].as_f64().unwrap());
        assert!(r["pairs"].as_u64().unwrap() >= 1, "paired over rounds: {r}");
        assert!(!r["target"].as_str().unwrap().is_empty(), "{r}");
        assert!(r["met"].is_boolean() || r["met"].is_null(), "{r}");
    }
    // Python's rows are there exactly when python3 is, each shmwire row beside one says how much
    // faster it is.
    assert_eq!(doc["python"].is_string(), python);
    assert_eq!(rows.iter().any(|r| r["path"] == "py"), python);
    assert_eq!(
        rows.iter()
            .any(|r| r["group"] == "queue" && r["vs_python"].as_f64().is_some_and(|x| x > 0.0)),
        python
    );
    // The absolute figure has a unit, not an "x".
    let figs = doc["figures"].as_array().unwrap();
    assert!(
        figs.iter()
            .any(|f| f["what"] == "Lock uncontended acquire + release" && f["unit"] == "ns"),
        "{figs:?}"
    );
    assert!(doc["paired"]["block_ms"].as_f64().unwrap() > 0.0);
    assert!(doc["machine"].as_str().unwrap().contains("CPUs"));
}

#[test]
fn bench_no_python_skips_python() {
    let out = shmwire(
        "nopy",
        &[
            "bench",
            "--quick",
            "--json",
            "--no-python",
            "--only",
            "queue",
        ],
        BENCH_LIMIT,
    );
    let doc = json_of(&out);
    assert!(doc["python"].is_null());
    let rows = doc["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .all(|r| r["group"] == "queue" && r["path"] != "py")
    );
    assert!(rows.iter().all(|r| r["vs_python"].is_null()));
    let want: Vec<&str> = RATIOS
        .iter()
        .filter(|(n, py)| !py && n.starts_with("Queue"))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(ratio_names(&doc), want);
    // The table says so in one line.
    let out = shmwire(
        "nopy",
        &["bench", "--quick", "--no-python", "--only", "sync"],
        BENCH_LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("Python rows are skipped").count(), 1, "{text}");
}

#[test]
fn bench_table_and_plot() {
    let plot = std::env::temp_dir().join(format!("shmwire-plot-{}.svg", std::process::id()));
    let out = shmwire(
        "plot",
        &[
            "bench",
            "--quick",
            "--only",
            "rtt-by-size",
            "--plot",
            plot.to_str().unwrap(),
        ],
        BENCH_LIMIT,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Round trip by message size"), "{text}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let _ = std::fs::remove_file(plot);
}

#[test]
fn throughput_plot() {
    let plot = std::env::temp_dir().join(format!("shmwire-tplot-{}.svg", std::process::id()));
    let out = shmwire(
        "tplot",
        &[
            "bench",
            "--quick",
            "--no-python",
            "--only",
            "throughput",
            "--plot-throughput",
            plot.to_str().unwrap(),
        ],
        BENCH_LIMIT,
    );
    assert!(out.status.success());
    let svg = std::fs::read_to_string(&plot).unwrap();
    let _ = std::fs::remove_file(&plot);
    assert!(svg.starts_with("<svg") && svg.contains("GB/s"), "{svg}");
    // One line per path, through every size.
    assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
    assert!(svg.contains(">1 MiB<") && svg.contains(">64 B<"), "{svg}");
}

#[test]
fn ls_and_clean_on_an_empty_prefix() {
    let out = shmwire("ls", &["ls"], QUICK_LIMIT);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no shmwire segments"));
    let out = shmwire("ls", &["clean", "--dry-run"], QUICK_LIMIT);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 stale segment(s)"));
}

#[test]
fn ls_json_lists_a_live_segment() {
    let out = shmwire("lsempty", &["ls", "--json"], QUICK_LIMIT);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v, serde_json::json!([]));
    // A child holds a named lock under the run's prefix while `ls --json` looks.
    let (here, there) = shmwire::Pipe::new().unwrap();
    let prefix = prefix_of("lsjson");
    let child = shmwire::Process::fork(move || {
        // SAFETY: the forked child has one thread.
        unsafe { std::env::set_var("SHMWIRE_PREFIX", &prefix) };
        let lock = shmwire::Lock::create("held").unwrap();
        there.send(&1u8).unwrap();
        let _ = there.recv::<u8>();
        drop(lock);
    })
    .unwrap();
    assert_eq!(here.recv_timeout::<u8>(Duration::from_secs(10)).unwrap(), 1);
    let out = shmwire_beside("lsjson", &["ls", "--json"], QUICK_LIMIT, &["held"]);
    here.send(&0u8).unwrap();
    assert!(
        child
            .join_timeout(Duration::from_secs(10))
            .unwrap()
            .success()
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let segs = v.as_array().unwrap();
    assert_eq!(segs.len(), 1, "{v}");
    let s = &segs[0];
    assert!(s["name"].as_str().unwrap().ends_with(".u.held"), "{s}");
    assert_eq!(s["kind"], "sync", "{s}");
    assert!(s["bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["stale"], false);
    assert!(
        s["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == child.pid() && p["alive"] == true),
        "{s}"
    );
}

#[test]
fn bad_usage_is_exit_code_2() {
    for args in [
        &["frobnicate"][..],
        &[],
        &["bench", "--frobnicate"],
        &["bench", "--runs", "zero"],
        &["bench", "--runs", "0"],
        &["bench", "--only", "nosuchgroup"],
        &["bench", "--plot"],
        &["ls", "--all"],
        &["clean", "extra"],
    ] {
        let out = shmwire("usage", args, QUICK_LIMIT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        // A bad input says what is wrong; a missing command shows the usage.
        assert!(
            err.contains("error:") || err.contains("Usage"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn help_and_version() {
    let out = shmwire("help", &["--version"], QUICK_LIMIT);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("shmwire {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [&["--help"][..], &["bench", "--help"], &["help", "ls"]] {
        let out = shmwire("help", args, QUICK_LIMIT);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage"), "{args:?}: {text}");
    }
    let text = String::from_utf8_lossy(&shmwire("help", &["bench", "--help"], QUICK_LIMIT).stdout)
        .into_owned();
    for flag in [
        "--json",
        "--quick",
        "--runs",
        "--only",
        "--no-python",
        "--plot-throughput",
    ] {
        assert!(text.contains(flag), "{flag} in {text}");
    }
}

#[test]
fn no_progress_line_when_stderr_is_not_a_terminal() {
    let out = shmwire(
        "progress",
        &["bench", "--quick", "--no-python", "--only", "sync"],
        BENCH_LIMIT,
    );
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\r') && !err.contains("\x1b["), "{err:?}");
    assert!(err.trim().is_empty(), "{err:?}");
}

/// `shmwire stress` for a few seconds, not on a terminal: a live line per interval (no carriage
/// returns), then the table; exit status 0 (the run found nothing wrong).
#[test]
fn stress_short_run_prints_live_lines_and_the_table() {
    let out = shmwire(
        "stress",
        &[
            "stress",
            "--duration",
            "3s",
            "--procs",
            "3",
            "--only",
            "lock,queue",
            "--interval",
            "1s",
            "--kill-every",
            "500ms",
            "--stop-every",
            "100ms",
        ],
        Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    assert!(!text.contains('\r') && !text.contains("\x1b["), "{text:?}");
    let live: Vec<&str> = text.lines().filter(|l| l.contains("ops/s")).collect();
    assert!(live.len() >= 2, "{text}");
    for field in [
        "kills",
        "recoveries",
        "hangs 0",
        "lost 0",
        "duplicated 0",
        "leaked 0",
    ] {
        assert!(live.last().unwrap().contains(field), "{field}: {text}");
    }
    assert!(
        text.contains("| lock ") && text.contains("| queue ") && text.contains("| all "),
        "{text}"
    );
}

#[test]
fn stress_bad_usage_is_exit_code_2() {
    for args in [
        &["stress", "--procs", "9"][..],
        &["stress", "--procs", "1"],
        &["stress", "--duration", "10x"],
        &["stress", "--kill-every", "soon"],
        &["stress", "--only", "nosuchprimitive"],
        &["stress", "--kills", "0"],
    ] {
        let out = shmwire("stressusage", args, QUICK_LIMIT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
