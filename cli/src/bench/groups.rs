//! What the bench measures: its groups, and in each the sides that run interleaved.

use super::links::{self, fd_pair, floor_pair, shm_pair};
use super::measure::{Echo, Pin, Side, Sink};
use super::pool::{Mode, PipePool, ShmPool, Threads};
use super::{Kind, Options, external, locks, pool, prims};
use shmwire::WaitStrategy;
use std::time::Duration;

type Maker = Box<dyn Fn() -> Option<Box<dyn Side>>>;

pub struct SideSpec {
    pub id: &'static str,
    pub name: String,
    pub make: Maker,
}

/// A group of sides measured together (interleaved).
pub struct Sub {
    pub group: &'static str,
    pub size: usize,
    pub pin: Pin,
    pub kind: Kind,
    /// Time for the whole group in a full run.
    pub budget: Duration,
    pub sides: Vec<SideSpec>,
}

fn side<S: Side + 'static>(s: S) -> Option<Box<dyn Side>> {
    Some(Box::new(s))
}

fn spec(
    id: &'static str,
    name: &str,
    make: impl Fn() -> Option<Box<dyn Side>> + 'static,
) -> SideSpec {
    SideSpec {
        id,
        name: name.to_owned(),
        make: Box::new(make),
    }
}

fn shm_link(wait: WaitStrategy, zc: bool) -> (links::ShmLink, links::ShmLink) {
    shm_pair(wait, zc)
}

/// A round-trip side of path `id` with `size`-byte messages.
fn echo(id: &'static str, size: usize) -> Option<Box<dyn Side>> {
    match id {
        "spin" => side(Echo::new(floor_pair(false), size)),
        "futex" => side(Echo::new(floor_pair(true), size)),
        "pipe" | "uds" | "uds-busy" | "tcp" => side(Echo::new(fd_pair(id), size)),
        "shm" => side(Echo::new(shm_link(WaitStrategy::Adaptive, false), size)),
        "shm-sleep" => side(Echo::new(shm_link(WaitStrategy::Sleep, false), size)),
        "shm-zc" => side(Echo::new(shm_link(WaitStrategy::Adaptive, true), size)),
        other => panic!("unknown path {other}"),
    }
}

/// A stream side of path `id` with `size`-byte messages.
fn sink(id: &'static str, size: usize) -> Option<Box<dyn Side>> {
    match id {
        "pipe" | "uds" => side(Sink::new(fd_pair(id), size)),
        "shm" => side(Sink::new(shm_link(WaitStrategy::Adaptive, false), size)),
        "shm-zc" => side(Sink::new(shm_link(WaitStrategy::Adaptive, true), size)),
        other => panic!("unknown path {other}"),
    }
}

const LAT_PATHS: [(&str, &str); 9] = [
    // Ordered so that the sides a ratio pairs run next to each other.
    ("spin", "shared line, spinning (floor)"),
    ("shm", "shmwire, default (adaptive)"),
    ("uds-busy", "Unix socketpair, busy-polling"),
    ("shm-zc", "shmwire, in place (send_with/recv_with)"),
    ("shm-sleep", "shmwire, sleep only"),
    ("futex", "shared line, futex (floor)"),
    ("uds", "Unix socketpair"),
    ("pipe", "anonymous pipe"),
    ("tcp", "TCP loopback, NODELAY"),
];
const SAME_PATHS: [&str; 5] = ["futex", "shm", "shm-sleep", "pipe", "uds"];
const THR_PATHS: [(&str, &str); 4] = [
    ("pipe", "anonymous pipe"),
    ("shm", "shmwire send_bytes/recv_bytes_into"),
    ("uds", "Unix socketpair"),
    (
        "shm-zc",
        "shmwire send_with/recv_with (in place, every byte read)",
    ),
];
const THR_SIZES: [usize; 6] = [64, 512, 4096, 16384, 65536, 1 << 20];
const PLOT_SIZES: [usize; 4] = [64, 512, 4096, 65536];
const PLOT_PATHS: [&str; 4] = ["pipe", "uds", "tcp", "shm"];

fn lat_name(id: &str) -> &'static str {
    LAT_PATHS.iter().find(|p| p.0 == id).map_or("?", |p| p.1)
}

/// Every group of a run, in order (Python's sides when `python`).
pub fn subs(opts: &Options, python: bool) -> Vec<Sub> {
    let s = Duration::from_secs_f64;
    let mut v = Vec::new();
    let mut rtt: Vec<SideSpec> = LAT_PATHS
        .iter()
        .map(|&(id, name)| spec(id, name, move || echo(id, 8)))
        .collect();
    if python {
        rtt.push(spec(
            "py",
            "Python multiprocessing.Pipe, send_bytes",
            || external::python(&["rtt"]).map(|e| Box::new(e) as Box<dyn Side>),
        ));
    }
    if let Some(bin) = opts.iceoryx2.clone() {
        // Next to shmwire's default in the rotation (the second side).
        rtt.insert(
            2,
            spec("iceoryx2", "iceoryx2 0.10 pub/sub, busy-poll", move || {
                external::iceoryx2(&bin).map(|e| Box::new(e) as Box<dyn Side>)
            }),
        );
    }
    v.push(Sub {
        group: "rtt",
        size: 8,
        pin: Pin::Split,
        kind: Kind::Lat,
        budget: s(10.0),
        sides: rtt,
    });
    v.push(Sub {
        group: "rtt-same-core",
        size: 8,
        pin: Pin::Same,
        kind: Kind::Lat,
        budget: s(4.0),
        sides: SAME_PATHS
            .iter()
            .map(|&id| spec(id, lat_name(id), move || echo(id, 8)))
            .collect(),
    });
    for size in THR_SIZES {
        let mut sides: Vec<SideSpec> = THR_PATHS
            .iter()
            .map(|&(id, name)| spec(id, name, move || sink(id, size)))
            .collect();
        if python && size == 64 {
            sides.push(spec(
                "py",
                "Python multiprocessing.Pipe, send_bytes",
                || external::python(&["thr64"]).map(|e| Box::new(e) as Box<dyn Side>),
            ));
        }
        v.push(Sub {
            group: "throughput",
            size,
            pin: Pin::Split,
            kind: Kind::Thr,
            budget: s(1.8),
            sides,
        });
    }
    for (p, c) in [(1usize, 1usize), (2, 2)] {
        let mut sides = Vec::new();
        if python {
            // Forked first: the crossbeam side's threads are not running yet.
            sides.push(spec("py", "Python multiprocessing.Queue", move || {
                let (p, c) = (p.to_string(), c.to_string());
                external::python(&["queue", &p, &c]).map(|e| Box::new(e) as Box<dyn Side>)
            }));
        }
        sides.push(spec(
            "pipe-lock",
            "OS pipe + locks (CPython's design)",
            move || side(prims::pipe_lock_queue(p, c)),
        ));
        sides.push(spec("shm", "shmwire Queue, put_pod/get_pod", move || {
            side(prims::shm_queue(p, c, true))
        }));
        sides.push(spec(
            "crossbeam",
            "crossbeam-channel, threads (ceiling)",
            move || side(prims::crossbeam(p, c)),
        ));
        sides.push(spec(
            "shm-serde",
            "shmwire Queue, put/get (serde)",
            move || side(prims::shm_queue(p, c, false)),
        ));
        v.push(Sub {
            group: "queue",
            size: p * 10 + c,
            pin: Pin::Any,
            kind: Kind::Thr,
            budget: s(4.5),
            sides,
        });
    }
    v.push(Sub {
        group: "sync",
        size: 2,
        pin: Pin::Any,
        kind: Kind::Lat,
        budget: s(2.0),
        sides: vec![
            spec("futex", "shared line, futex (floor): round trip", || {
                echo("futex", 8)
            }),
            spec("shm", "shmwire Lock", || {
                side(locks::LockSide::new(
                    shmwire::Lock::new().expect("lock"),
                    2,
                    true,
                ))
            }),
            spec("pthread", "pthread mutex, process-shared", || {
                side(locks::LockSide::new(prims::PMutex::new(), 2, true))
            }),
        ],
    });
    v.push(Sub {
        group: "sync",
        size: 0,
        pin: Pin::Any,
        kind: Kind::Lat,
        budget: s(1.0),
        sides: vec![
            spec("sem", "Semaphore: wake-up round trip", || {
                side(locks::Wake::new(false))
            }),
            spec("event", "Event: wake-up round trip", || {
                side(locks::Wake::new(true))
            }),
        ],
    });
    v.extend(pool_subs(python));
    v.extend(super::manager_group::subs(python));
    for size in PLOT_SIZES {
        v.push(Sub {
            group: "rtt-by-size",
            size,
            pin: Pin::Split,
            kind: Kind::Lat,
            budget: s(1.0),
            sides: PLOT_PATHS
                .iter()
                .map(|&id| spec(id, lat_name(id), move || echo(id, size)))
                .collect(),
        });
    }
    v.extend(super::transport::subs(python));
    if python && super::pymod::installed() {
        v.extend(super::pymod::subs());
    }
    v
}

/// Python's pool side of `mode`.
fn py_pool(python: bool, mode: &'static str, name: &str) -> Option<SideSpec> {
    python.then(|| {
        spec("py", name, move || {
            let n = pool::workers().to_string();
            external::python(&["pool", mode, &n]).map(|e| Box::new(e) as Box<dyn Side>)
        })
    })
}

/// The `pool` group: one dispatch per task (size 1 and 2), a big map (size 1,000,000), tasks of
/// ~20 µs (size 20), the `apply` round trip (size 0, latency).
fn pool_subs(python: bool) -> Vec<Sub> {
    let s = Duration::from_secs_f64;
    let mut v = Vec::new();
    let mut map1 = vec![
        spec("shm", "shmwire Pool, map_chunked(.., 1)", || {
            side(ShmPool::new(Mode::Map1))
        }),
        spec("pipe-pool", "pool over OS pipes (CPython's design)", || {
            side(PipePool::new(Mode::Map1))
        }),
    ];
    map1.extend(py_pool(python, "map1", "Python Pool.map(chunksize=1)"));
    v.push(Sub {
        group: "pool",
        size: 1,
        pin: Pin::Any,
        kind: Kind::Thr,
        budget: s(3.0),
        sides: map1,
    });
    let mut apply = vec![
        spec("shm", "shmwire Pool, apply_async + get", || {
            side(ShmPool::new(Mode::Apply))
        }),
        spec("pipe-pool", "pool over OS pipes (CPython's design)", || {
            side(PipePool::new(Mode::Apply))
        }),
    ];
    apply.extend(py_pool(python, "apply", "Python Pool.apply_async + get"));
    v.push(Sub {
        group: "pool",
        size: 2,
        pin: Pin::Any,
        kind: Kind::Thr,
        budget: s(3.0),
        sides: apply,
    });
    let mut big = vec![
        spec("shm", "shmwire Pool, map (default chunks)", || {
            side(ShmPool::new(Mode::Map))
        }),
        spec("threads", "threads of one process (ceiling)", || {
            side(Threads::new(Mode::Map))
        }),
    ];
    big.extend(py_pool(python, "map", "Python Pool.map (default chunks)"));
    v.push(Sub {
        group: "pool",
        size: pool::BIG as usize,
        pin: Pin::Any,
        kind: Kind::Thr,
        budget: s(4.0),
        sides: big,
    });
    v.push(Sub {
        group: "pool",
        size: 20,
        pin: Pin::Any,
        kind: Kind::Thr,
        budget: s(3.0),
        sides: vec![
            spec("shm", "shmwire Pool, map of ~20 us tasks", || {
                side(ShmPool::new(Mode::Work))
            }),
            spec("threads", "threads of one process, ~20 us tasks", || {
                side(Threads::new(Mode::Work))
            }),
        ],
    });
    let mut rtt = vec![
        spec("shm", "shmwire Pool, apply round trip", || {
            side(ShmPool::new(Mode::Rtt))
        }),
        spec("pipe-pool", "pool over OS pipes, round trip", || {
            side(PipePool::new(Mode::Rtt))
        }),
    ];
    rtt.extend(py_pool(python, "rtt", "Python Pool.apply round trip"));
    v.push(Sub {
        group: "pool",
        size: 0,
        pin: Pin::Any,
        kind: Kind::Thr,
        budget: s(2.0),
        sides: rtt,
    });
    v
}

/// Whether group `g` is selected.
pub fn selected(opts: &Options, g: &str) -> bool {
    if opts.only.is_empty() {
        return g != "scaling";
    }
    opts.only.iter().any(|o| g.starts_with(o.as_str()))
}

/// The names `--only` accepts (as prefixes).
pub const GROUPS: [&str; 11] = [
    "rtt",
    "rtt-same-core",
    "throughput",
    "queue",
    "sync",
    "pool",
    "manager",
    "rtt-by-size",
    "scaling",
    "transport",
    "python-module",
];
