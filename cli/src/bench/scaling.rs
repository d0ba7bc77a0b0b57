//! The `scaling` group (`shmwire bench --only scaling`, not in the default run): how cost grows.
//!
//! * Queue items/s with 1..8 producers x 1..8 consumers (more processes than CPUs included).
//! * `wait()` over 1..4,096 connections with nothing ready (small rings; `RLIMIT_NOFILE` raised).
//! * Lock acquisitions and hand-offs with 2..16 processes, beside a process-shared pthread mutex
//!   (interleaved blocks).
//! * The cost to create and drop each primitive, beside Python's.
//! * Bytes mapped and resident per Pipe, Queue and Lock, and for 1,000 Pipes, after one use each.

use super::links::{Shared, Zeroed};
use super::locks::LockSide;
use super::measure::{Amount, Lat, Side, Thr, median};
use super::prims::{PMutex, shm_queue};
use super::report::{rate, time};
use super::{BLOCK, Mem, Progress, Row, external};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const QUEUE_SIDES: [usize; 4] = [1, 2, 4, 8];
const WAIT_COUNTS: [usize; 5] = [1, 16, 256, 1024, 4096];
const LOCK_PROCS: [usize; 4] = [2, 4, 8, 16];

fn lat(ns: f64, iters: u64) -> Lat {
    Lat {
        iters,
        mean_ns: ns,
        p50_ns: ns,
        p99_ns: f64::NAN,
        p999_ns: f64::NAN,
    }
}

fn thr(per_s: f64, n: u64) -> Thr {
    Thr {
        msgs: n,
        msgs_per_s: per_s,
        gb_per_s: per_s * 8.0 / 1e9,
    }
}

/// Every scaling row.
pub fn run(quick: bool, python: bool, progress: &Progress) -> Vec<Row> {
    let block = if quick { BLOCK / 5 } else { BLOCK };
    let rounds = if quick { 2 } else { 8 };
    let mut rows = Vec::new();
    for p in QUEUE_SIDES {
        for c in QUEUE_SIDES {
            progress.show(&format!("scaling: Queue {p}P/{c}C"));
            let mut q = shm_queue(p, c, true);
            q.run(Amount::For(block));
            let v: Vec<f64> = (0..rounds)
                .map(|_| q.run(Amount::For(block)).per_s())
                .collect();
            let mut row = Row::new("scaling-queue", "shm", &format!("{p}P/{c}C"), p * 10 + c);
            row.thr = Some(thr(median(&v), 0));
            rows.push(row);
        }
    }
    raise_nofile();
    for n in WAIT_COUNTS {
        progress.show(&format!("scaling: wait() over {n} connections"));
        if let Some(ns) = wait_cost(n, Duration::from_millis(if quick { 20 } else { 200 })) {
            let mut row = Row::new("scaling-wait", "shm", "wait(), nothing ready", n);
            row.lat = Some(lat(ns, 0));
            rows.push(row);
        }
    }
    for n in LOCK_PROCS {
        progress.show(&format!("scaling: Lock with {n} processes"));
        let mut sides = [
            LockSide::new(shmwire::Lock::new().expect("lock"), n, false),
            LockSide::new(PMutex::new(), n, false),
        ];
        let mut acq = [Vec::new(), Vec::new()];
        let mut hand = [Vec::new(), Vec::new()];
        for r in 0..=rounds {
            for j in 0..2 {
                let k = if r % 2 == 0 { j } else { 1 - j };
                let s = sides[k].run(Amount::For(block));
                if r > 0 {
                    acq[k].push(s.per_s());
                    hand[k].push(sides[k].handoffs as f64 / s.secs);
                }
            }
        }
        for (k, name) in ["shmwire Lock", "pthread mutex, process-shared"]
            .iter()
            .enumerate()
        {
            let mut row = Row::new("scaling-lock", ["shm", "pthread"][k], name, n);
            row.thr = Some(thr(median(&acq[k]), 0));
            row.handoffs_per_s = Some(median(&hand[k]));
            rows.push(row);
        }
    }
    progress.show("scaling: create and drop");
    let budget = Duration::from_millis(if quick { 10 } else { 150 });
    let py = if python {
        external::python_create(budget)
    } else {
        Vec::new()
    };
    for (name, ns) in create_costs(budget) {
        let mut row = Row::new("scaling-create", "shm", name, 0);
        row.lat = Some(lat(ns, 0));
        if let Some((_, us)) = py.iter().find(|(n, _)| n == name) {
            row.vs_python = Some(us * 1e3 / ns);
            let mut p = Row::new("scaling-create", "py", name, 0);
            p.lat = Some(lat(us * 1e3, 0));
            rows.push(p);
        }
        rows.push(row);
    }
    progress.show("scaling: memory");
    for (name, m) in memory() {
        let mut row = Row::new("scaling-memory", "shm", name, 0);
        row.mem = Some(m);
        rows.push(row);
    }
    rows
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid struct; raising the soft limit to the hard one.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// ns per `wait(conns, 0)` over `n` connections (4 KiB rings) of which none is ready.
fn wait_cost(n: usize, budget: Duration) -> Option<f64> {
    let mut keep = Vec::with_capacity(n);
    for _ in 0..n {
        match shmwire::Pipe::builder().capacity(4096).build() {
            Ok(p) => keep.push(p),
            Err(e) => {
                eprintln!("\nscaling: {n} pipes: {e} (raise RLIMIT_NOFILE); skipped");
                return None;
            }
        }
    }
    let objs: Vec<&dyn shmwire::Waitable> = keep.iter().map(|p| &p.0 as _).collect();
    let start = Instant::now();
    let mut calls = 0u64;
    while calls < 3 || start.elapsed() < budget {
        let ready = shmwire::wait(&objs, Duration::ZERO).expect("wait");
        assert!(ready.is_empty(), "nothing was sent, yet {ready:?} ready");
        calls += 1;
    }
    Some(start.elapsed().as_nanos() as f64 / calls as f64)
}

fn per<T>(budget: Duration, make: impl Fn() -> T) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while n < 4 || start.elapsed() < budget {
        drop(std::hint::black_box(make()));
        n += 1;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// ns to create and drop each primitive (the names Python's script uses).
fn create_costs(b: Duration) -> Vec<(&'static str, f64)> {
    use shmwire::*;
    vec![
        ("Pipe", per(b, || Pipe::new().expect("pipe"))),
        ("Queue", per(b, || Queue::<u64>::new(0).expect("queue"))),
        ("Lock", per(b, || Lock::new().expect("lock"))),
        ("RLock", per(b, || RLock::new().expect("rlock"))),
        ("Semaphore", per(b, || Semaphore::new(1).expect("sem"))),
        ("Event", per(b, || Event::new().expect("event"))),
        ("Condition", per(b, || Condition::new().expect("condition"))),
        ("Barrier", per(b, || Barrier::new(2).expect("barrier"))),
        ("Value", per(b, || Value::new(0u64).expect("value"))),
    ]
}

/// (VmSize, VmRSS) of this process, bytes.
fn vm() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |k: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmSize:"), kb("VmRSS:"))
}

#[repr(C)]
struct Out([AtomicU64; 8]);
// SAFETY: atomics only, valid at zero.
unsafe impl Zeroed for Out {}

/// Bytes mapped and resident per object, measured in a forked child (so that nothing else this
/// process holds moves the figures), each object used once.
fn memory() -> Vec<(&'static str, Mem)> {
    let out: Shared<Out> = Shared::new();
    let o = out.at();
    let child = shmwire::Process::fork(move || {
        let mut k = 0;
        let mut measure = |n: usize, make: &dyn Fn() -> Box<dyn std::any::Any>| {
            let before = vm();
            let keep: Vec<_> = (0..n).map(|_| make()).collect();
            let after = vm();
            drop(keep);
            o.0[k].store((after.0 - before.0) / n as u64, Ordering::Relaxed);
            o.0[k + 1].store(
                after.1.saturating_sub(before.1) / n as u64,
                Ordering::Relaxed,
            );
            k += 2;
        };
        measure(10, &|| {
            let (a, b) = shmwire::Pipe::new().expect("pipe");
            a.send_bytes(&[1; 8]).unwrap();
            b.recv_bytes().unwrap();
            b.send_bytes(&[1; 8]).unwrap();
            a.recv_bytes().unwrap();
            Box::new((a, b))
        });
        measure(10, &|| {
            let q = shmwire::Queue::<u64>::new(0).expect("queue");
            q.put_pod(&1).unwrap();
            q.get_pod().unwrap();
            Box::new(q)
        });
        measure(100, &|| {
            let l = shmwire::Lock::new().expect("lock");
            drop(l.acquire().unwrap());
            Box::new(l)
        });
        measure(1000, &|| {
            let (a, b) = shmwire::Pipe::new().expect("pipe");
            a.send_bytes(&[1; 8]).unwrap();
            b.recv_bytes().unwrap();
            Box::new((a, b))
        });
    });
    let ok = child
        .and_then(|c| c.join_timeout(Duration::from_secs(60)))
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("\nscaling: the memory child failed; skipped");
        return Vec::new();
    }
    let g = |i: usize| out.0[i].load(Ordering::Relaxed) as f64;
    vec![
        (
            "Pipe (duplex, default rings)",
            Mem {
                mapped: g(0),
                resident: g(1),
            },
        ),
        (
            "Queue (unbounded)",
            Mem {
                mapped: g(2),
                resident: g(3),
            },
        ),
        (
            "Lock",
            Mem {
                mapped: g(4),
                resident: g(5),
            },
        ),
        (
            "1,000 Pipes: per Pipe",
            Mem {
                mapped: g(6),
                resident: g(7),
            },
        ),
    ]
}

fn mib(b: f64) -> String {
    if b >= (1 << 20) as f64 {
        format!("{:.2} MiB", b / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// The scaling tables (when the rows are there).
pub fn tables(s: &mut String, rows: &[Row]) {
    let of = |g: &'static str| rows.iter().filter(move |r| r.group == g);
    if of("scaling-queue").next().is_some() {
        let _ = writeln!(
            s,
            "\nScaling: Queue items/s (put_pod/get_pod), producers down, consumers across"
        );
        let _ = write!(s, "  {:>6}", "");
        for c in QUEUE_SIDES {
            let _ = write!(s, " {:>12}", format!("{c}C"));
        }
        let _ = writeln!(s);
        for p in QUEUE_SIDES {
            let _ = write!(s, "  {:>6}", format!("{p}P"));
            for c in QUEUE_SIDES {
                let v = of("scaling-queue")
                    .find(|r| r.size == p * 10 + c)
                    .and_then(|r| r.thr)
                    .map_or(f64::NAN, |t| t.msgs_per_s);
                let _ = write!(s, " {:>12}", format!("{:.2} M", v / 1e6));
            }
            let _ = writeln!(s);
        }
    }
    if of("scaling-wait").next().is_some() {
        let _ = writeln!(
            s,
            "\nScaling: wait() over N connections, nothing ready, zero timeout (per call)"
        );
        for r in of("scaling-wait") {
            if let Some(l) = r.lat {
                let _ = writeln!(
                    s,
                    "  N = {:<6} {:>12}  ({} per connection)",
                    r.size,
                    time(l.mean_ns),
                    time(l.mean_ns / r.size as f64)
                );
            }
        }
    }
    if of("scaling-lock").next().is_some() {
        let _ = writeln!(
            s,
            "\nScaling: a Lock taken by N processes in a loop (interleaved with a pthread mutex)"
        );
        for r in of("scaling-lock") {
            if let Some(t) = r.thr {
                let _ = writeln!(
                    s,
                    "  N = {:<3} {:<32} {:>24} {:>22}",
                    r.size,
                    r.name,
                    rate(t.msgs_per_s, "acquisition"),
                    rate(r.handoffs_per_s.unwrap_or(f64::NAN), "hand-off")
                );
            }
        }
    }
    if of("scaling-create").next().is_some() {
        let _ = writeln!(s, "\nScaling: create + drop, time per object");
        for r in of("scaling-create").filter(|r| r.path == "shm") {
            let py = of("scaling-create")
                .find(|p| p.path == "py" && p.name == r.name)
                .and_then(|p| p.lat)
                .map_or(String::new(), |l| {
                    format!(
                        "   Python {:>10} ({:.1}x)",
                        time(l.mean_ns),
                        r.vs_python.unwrap_or(f64::NAN)
                    )
                });
            let _ = writeln!(
                s,
                "  {:<12} {:>10}{py}",
                r.name,
                time(r.lat.map_or(f64::NAN, |l| l.mean_ns))
            );
        }
    }
    if of("scaling-memory").next().is_some() {
        let _ = writeln!(
            s,
            "\nScaling: memory per object after one use (mapped, resident)"
        );
        for r in of("scaling-memory") {
            if let Some(m) = r.mem {
                let _ = writeln!(
                    s,
                    "  {:<32} {:>12} {:>12}",
                    r.name,
                    mib(m.mapped),
                    mib(m.resident)
                );
            }
        }
    }
}
