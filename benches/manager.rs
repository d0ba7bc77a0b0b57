//! Criterion benches of the Manager's `SharedDict` against its baselines in the same run: a dict
//! served over a Unix socket by a server process (the design of Python's `Manager`, in Rust) and an
//! in-process `Mutex<HashMap>` shared by threads (the ceiling). Run: `cargo bench --bench manager`.
//!
//! The workloads are `shmwire bench`'s manager group (`cli/src/bench/manager.rs`, compiled in here):
//! `get`, `insert` of a key already there and `modify` (`+= 1`) on one dict of 1,000 `u64` keys, by 1
//! and 4 workers started once and reused for every sample. Python's `Manager().dict()` runs in
//! `shmwire bench --only manager`, not here. `single_process` times the calls in this process with
//! no worker around them (what one call costs).

#[path = "../cli/src/bench/links.rs"]
#[allow(dead_code)]
mod links;
#[path = "../cli/src/bench/manager.rs"]
#[allow(dead_code)]
mod manager;
#[path = "../cli/src/bench/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "../cli/src/bench/prims.rs"]
#[allow(dead_code)]
mod prims;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use manager::Op;
use measure::{Amount, Side};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

/// The time of a block of at least `iters` operations, scaled to `iters`.
fn timed(side: &mut impl Side, iters: u64) -> Duration {
    let s = side.run(Amount::Items(iters));
    Duration::from_secs_f64(s.secs * iters as f64 / s.ops.max(1) as f64)
}

fn single_process(c: &mut Criterion) {
    let mut g = c.benchmark_group("manager_single_process");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20);
    g.throughput(Throughput::Elements(1));
    let (_m, d) = manager::shm_dict();
    let mut map: HashMap<u64, u64> = (0..manager::KEYS).map(|k| (k, 1_000_000 + k)).collect();
    let mutex = std::sync::Mutex::new(map.clone());
    let mut k = 0u64;
    let mut next = move || {
        k = (k + 7919) % manager::KEYS;
        k
    };
    g.bench_function("shmwire_get", |b| b.iter(|| d.get(&next()).unwrap()));
    g.bench_function("shmwire_insert", |b| {
        b.iter(|| d.insert(next(), black_box(1_000_123u64)).unwrap())
    });
    g.bench_function("shmwire_modify", |b| {
        b.iter(|| {
            d.modify(&next(), |v| *v = 1_000_000 + (*v + 1) % 1_000_000)
                .unwrap()
        })
    });
    g.bench_function("mutex_hashmap_get", |b| {
        b.iter(|| mutex.lock().unwrap().get(&next()).copied())
    });
    g.bench_function("hashmap_get_no_lock", |b| {
        b.iter(|| map.get_mut(&next()).copied())
    });
    g.finish();
}

fn workers(c: &mut Criterion) {
    for op in [Op::Get, Op::Insert, Op::Modify] {
        let mut g = c.benchmark_group(format!("manager_{}", op.name()));
        g.measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(300))
            .sample_size(10);
        g.throughput(Throughput::Elements(1));
        for n in [1usize, 4] {
            let id = format!("{n}P");
            macro_rules! case {
                ($name:expr, $side:expr) => {{
                    let mut s = $side;
                    g.bench_function(BenchmarkId::new($name, &id), |b| {
                        b.iter_custom(|iters| timed(&mut s, iters))
                    });
                }};
            }
            case!("shmwire", manager::shm(op, n));
            case!("unix_socket_dict", manager::uds(op, n));
            case!("mutex_hashmap_threads", manager::mutex(op, n));
        }
        g.finish();
    }
}

criterion_group!(benches, single_process, workers);
criterion_main!(benches);
