//! Fault injection: `shmwire stress` run as a user runs it, on every primitive, with random SIGKILLs
//! and SIGSTOPs (50 kills in all; 1,000 with `SHMWIRE_LONG=1`). The stress checks each round itself
//! (no call past 10x its bound, survivors past a kill within 10x the documented detection time,
//! every acknowledged item exactly once but one in flight per killed consumer, `/dev/shm` as found
//! after `cleanup()`, no process left); these tests read its JSON summary, require the kills and
//! stops to have happened and every failure count to be 0, and watch the run from outside too (a
//! time limit, no process of its group left, nothing left under its `SHMWIRE_PREFIX`). Two more runs
//! plant a loss and a hang and require the stress to fail: its checks can fail.
//!
//! The runs go one at a time (each loads both cores).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn long() -> bool {
    std::env::var("SHMWIRE_LONG").is_ok_and(|v| v == "1")
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `shmwire stress ARGS --json` in a process group of its own, with its own prefix, under a
/// watchdog of `limit`; checks that it left no process and nothing in /dev/shm.
fn stress(tag: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run_prefix = std::env::var("SHMWIRE_PREFIX").unwrap_or_default();
    let prefix = format!("{run_prefix}faults{}-{tag}", std::process::id());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shmwire"));
    cmd.arg("stress")
        .args(args)
        .arg("--json")
        .env("SHMWIRE_PREFIX", &prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run shmwire stress");
    let pgid = child.id() as i32;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let left = group_members(pgid);
    // SAFETY: plain syscall on the group this test made.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if status.is_none() {
        let _ = child.wait();
    }
    let shm: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("shmwire.{prefix}.")))
        .collect();
    for n in &shm {
        let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
    }
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "shmwire stress {args:?} hung: killed after {limit:?}; stderr:\n{}",
        run.stderr
    );
    assert!(
        left.is_empty(),
        "shmwire stress {args:?} left processes: {left:?}"
    );
    assert!(
        shm.is_empty(),
        "shmwire stress {args:?} left in /dev/shm (deleted): {shm:?}"
    );
    run
}

/// The processes of group `pgid`, but for zombies.
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
            v.push(format!("{pid} [{state}]"));
        }
    }
    v
}

/// The JSON summary at the end of stdout.
fn summary(r: &Run) -> serde_json::Value {
    let at = r.stdout.find("\n{").map(|i| i + 1).unwrap_or_else(|| {
        panic!(
            "no JSON summary; stdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        )
    });
    serde_json::from_str(&r.stdout[at..]).expect("the summary parses")
}

fn count(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no count {k} in {v}"))
}

/// Kills `kills` participants of each primitive of `prims` (one stress run per primitive, so each
/// gets its kills whatever the random schedule does), stopping others, and requires a clean bill:
/// every failure count 0, exit status 0.
fn faults_on(tag: &str, prims: &str, kills: u64) {
    let mut stops = 0;
    for prim in prims.split(',') {
        stops += faults_on_one(&format!("{tag}-{prim}"), prim, kills);
    }
    // Stops land at random on whoever is running, and a run of a few rounds may draw none (a
    // pipe round's two processes are often the one being killed and its peer): counted over the
    // group.
    assert!(stops > 0, "no stop was made in {prims}");
}

/// One stress run of `prims`; returns the stops it made.
fn faults_on_one(tag: &str, prims: &str, kills: u64) -> u64 {
    let k = kills.to_string();
    let limit = if long() { 3600 } else { 150 };
    let r = stress(
        tag,
        &[
            "--only",
            prims,
            "--kills",
            &k,
            "--duration",
            "50m",
            "--procs",
            "4",
            "--stop-every",
            "150ms",
            // Shorter than a round's window for kills: (almost) every round has one or two, so
            // every primitive gets its share of the kills.
            "--kill-every",
            "400ms",
        ],
        &[],
        Duration::from_secs(limit),
    );
    let s = summary(&r);
    let t = &s["totals"];
    for what in ["hangs", "lost", "duplicated", "leaked", "wrong"] {
        assert_eq!(
            count(t, what),
            0,
            "{what} in {prims}: {t}\nstderr:\n{}",
            r.stderr
        );
    }
    assert_eq!(r.code, Some(0), "exit status; stderr:\n{}", r.stderr);
    assert!(count(t, "kills") >= kills, "{t}");
    // Every kill that left someone to carry on was followed by progress (or the right ends).
    assert!(count(t, "recoveries") > 0, "{t}");
    for p in s["by_primitive"].as_array().unwrap() {
        let c = &p["counts"];
        assert!(
            count(c, "kills") >= 1,
            "{} was never killed: {c}",
            p["primitive"]
        );
        assert!(count(c, "ops") > 0, "{} did nothing: {c}", p["primitive"]);
    }
    count(t, "stops")
}

/// Kills per primitive: 12 primitives x 5 = 60 in CI, x 84 = 1,008 under `SHMWIRE_LONG=1`.
fn kills_per_group() -> u64 {
    if long() { 84 } else { 5 }
}

#[test]
fn faults_pipe_and_queues() {
    faults_on("pq", "pipe,queue,queue-spill,queue-grow", kills_per_group());
}

#[test]
fn faults_locks_condition_barrier() {
    faults_on("lcb", "lock,rlock,condition,barrier", kills_per_group());
}

#[test]
fn faults_manager_pool_and_served_queue() {
    faults_on("mpt", "dict,list,pool,tcp-queue", kills_per_group());
}

/// A two-second stress of the queue alone, no kills or stops, with `sabotage` planted in it: it must
/// count `what` (`lost`, `hangs`), say `said` on stderr and exit 1.
fn planted_fails_the_stress(sabotage: &str, what: &str, said: &str) {
    let r = stress(
        sabotage,
        &[
            "--only",
            "queue",
            "--duration",
            "2s",
            "--kill-every",
            "0",
            "--stop-every",
            "0",
        ],
        &[("SHMWIRE_STRESS_SABOTAGE", sabotage)],
        Duration::from_secs(60),
    );
    let t = &summary(&r)["totals"];
    assert!(count(t, what) > 0, "{t}");
    assert_eq!(r.code, Some(1), "stderr:\n{}", r.stderr);
    assert!(r.stderr.contains(said), "{}", r.stderr);
}

/// A consumer that forgets items it took: the stress must count them lost and fail.
#[test]
fn a_planted_loss_fails_the_stress() {
    planted_fails_the_stress("drop", "lost", "LOST");
}

/// A get that takes 3 s (15x its 200 ms timeout): the stress must count a hang and fail.
#[test]
fn a_planted_hang_fails_the_stress() {
    planted_fails_the_stress("hang", "hangs", "HANG");
}
