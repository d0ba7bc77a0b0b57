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
    let prefix = format!("clitest{}-{tag}", std::process::id());
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
    let status = status.unwrap_or_else(|| {
        let _ = child.wait();
        panic!("shmwire {args:?} hung: killed after {limit:?}; its group: {left:?}")
    });
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(left.is_empty(), "shmwire {args:?} left processes: {left:?}");
    let shm: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("shmwire.{prefix}.")))
        .collect();
    for n in &shm {
        let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
    }
    assert!(
        shm.is_empty(),
        "shmwire {args:?} left in /dev/shm (deleted): {shm:?}"
    );
    output
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

/// Every ratio the bench reports without the iceoryx2 peer.
const RATIOS: [&str; 12] = [
    "RTT 8 B: shmwire default / spinning floor",
    "RTT 8 B: shmwire sleep-only / futex floor",
    "RTT 8 B, one core: shmwire default / futex floor",
    "RTT 8 B: Unix socket / shmwire default",
    "64 B msgs/s: shmwire / pipe",
    "64 KiB GB/s: shmwire / Unix socket",
    "1 MiB GB/s: shmwire / Unix socket",
    "Queue 1P/1C items/s: shmwire / OS pipe + locks",
    "Queue 2P/2C items/s: shmwire / OS pipe + locks",
    "Queue 1P/1C items/s: crossbeam threads / shmwire",
    "Lock uncontended acquire+release, ns (absolute)",
    "Lock contended acquisition / futex floor round trip",
];

#[test]
fn bench_quick_json_has_every_ratio() {
    let out = shmwire("json", &["bench", "--quick", "--json"], BENCH_LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
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
    // Every row measured something.
    for r in rows {
        let lat = r["lat"]["p50_ns"].as_f64().unwrap_or(0.0);
        let thr = r["thr"]["msgs_per_s"].as_f64().unwrap_or(0.0);
        assert!(lat > 0.0 || thr > 0.0, "a row without a figure: {r}");
    }
    let ratios = doc["ratios"].as_array().unwrap();
    let names: Vec<&str> = ratios.iter().map(|r| r["what"].as_str().unwrap()).collect();
    assert_eq!(names, RATIOS, "the ratios, in order");
    for r in ratios {
        let v = r["value"].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{r}");
        assert!(r["min"].as_f64().unwrap() <= v && v <= r["max"].as_f64().unwrap());
        assert!(!r["target"].as_str().unwrap().is_empty(), "{r}");
        assert!(r["met"].is_boolean(), "{r}");
    }
    assert!(doc["machine"].as_str().unwrap().contains("CPUs"));
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
fn ls_and_clean_on_an_empty_prefix() {
    let out = shmwire("ls", &["ls"], QUICK_LIMIT);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no shmwire segments"));
    let out = shmwire("ls", &["clean", "--dry-run"], QUICK_LIMIT);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 stale segment(s)"));
}

#[test]
fn bad_usage_is_exit_code_2() {
    let out = shmwire("usage", &["frobnicate"], QUICK_LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
