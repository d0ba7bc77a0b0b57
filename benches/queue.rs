//! Criterion benches of `Queue`, `Lock`, `Semaphore` and `Event` against their baselines in the same
//! run: the design CPython's `multiprocessing.Queue` uses (an OS pipe whose readers and writers take a
//! process-shared lock; here a pthread mutex, as fast as C makes it), crossbeam-channel between two
//! threads (the ceiling), and the futex floor. Run: `cargo bench --bench queue`.
//!
//! The workloads are `shmwire bench`'s (`cli/src/bench/prims.rs`, compiled in here).

#[path = "../cli/src/bench/links.rs"]
#[allow(dead_code)]
mod links;
#[path = "../cli/src/bench/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "../cli/src/bench/prims.rs"]
#[allow(dead_code)]
mod prims;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prims::Amount;
use std::time::Duration;

fn per_item(thr: measure::Thr, items: u64) -> Duration {
    Duration::from_secs_f64(items as f64 / thr.msgs_per_s)
}

fn queues(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_8B_items");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    g.throughput(Throughput::Elements(1));
    for (p, q) in [(1usize, 1usize), (2, 2)] {
        let id = format!("{p}P{q}C");
        let n = |iters: u64| iters.max(1000).div_ceil(p as u64) * p as u64;
        g.bench_function(BenchmarkId::new("shmwire", &id), |b| {
            b.iter_custom(|iters| per_item(prims::shm_queue(p, q, Amount::Items(n(iters))), iters))
        });
        g.bench_function(BenchmarkId::new("pipe_plus_locks", &id), |b| {
            b.iter_custom(|iters| {
                per_item(prims::pipe_lock_queue(p, q, Amount::Items(n(iters))), iters)
            })
        });
        g.bench_function(BenchmarkId::new("crossbeam_threads", &id), |b| {
            b.iter_custom(|iters| per_item(prims::crossbeam(p, q, Amount::Items(n(iters))), iters))
        });
    }
    g.finish();
}

fn locks(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    let lock = shmwire::Lock::new().unwrap();
    g.bench_function("lock_uncontended", |b| {
        b.iter(|| drop(lock.acquire().unwrap()))
    });
    g.bench_function("lock_contended_2_processes", |b| {
        b.iter_custom(|iters| {
            let l = prims::lock_contended(Duration::from_millis(50));
            Duration::from_nanos((l.mean_ns * iters as f64) as u64)
        })
    });
    g.bench_function("semaphore_wakeup_rtt", |b| {
        b.iter_custom(|iters| {
            let l = prims::wake_pingpong(false, Duration::from_millis(50));
            Duration::from_nanos((l.mean_ns * iters as f64) as u64)
        })
    });
    g.bench_function("event_wakeup_rtt", |b| {
        b.iter_custom(|iters| {
            let l = prims::wake_pingpong(true, Duration::from_millis(50));
            Duration::from_nanos((l.mean_ns * iters as f64) as u64)
        })
    });
    g.finish();
}

criterion_group!(benches, queues, locks);
criterion_main!(benches);
