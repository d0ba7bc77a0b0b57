//! Criterion benches of `Queue`, `Lock`, `Semaphore` and `Event` against their baselines in the same
//! run: the design CPython's `multiprocessing.Queue` uses (an OS pipe whose readers and writers take a
//! process-shared lock; here a pthread mutex, as fast as C makes it), crossbeam-channel between
//! threads (the ceiling), a process-shared pthread mutex, and the futex floor. Run:
//! `cargo bench --bench queue`.
//!
//! The workloads are `shmwire bench`'s (`cli/src/bench/prims.rs` and `locks.rs`, compiled in here): each bench
//! starts its processes (or threads) once and reuses them for every sample; a sample moves `iters`
//! items (rounded up to a multiple of the producers), counted at the consumers, or does `iters`
//! hand-offs or wake-up round trips.

#[path = "../cli/src/bench/links.rs"]
#[allow(dead_code)]
mod links;
#[path = "../cli/src/bench/locks.rs"]
#[allow(dead_code)]
mod locks;
#[path = "../cli/src/bench/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "../cli/src/bench/prims.rs"]
#[allow(dead_code)]
mod prims;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use links::floor_pair;
use measure::{Amount, Echo, Side};
use std::time::Duration;

/// The time of a block of at least `iters` operations, scaled to `iters`.
fn timed(side: &mut impl Side, iters: u64) -> Duration {
    let s = side.run(Amount::Items(iters));
    Duration::from_secs_f64(s.secs * iters as f64 / s.ops.max(1) as f64)
}

fn queues(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_u64_items");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    g.throughput(Throughput::Elements(1));
    for (p, q) in [(1usize, 1usize), (2, 2)] {
        let id = format!("{p}P{q}C");
        macro_rules! case {
            ($name:expr, $side:expr) => {{
                let mut s = $side;
                g.bench_function(BenchmarkId::new($name, &id), |b| {
                    b.iter_custom(|n| timed(&mut s, n))
                });
            }};
        }
        case!("shmwire_pod", prims::shm_queue(p, q, true));
        case!("shmwire_serde", prims::shm_queue(p, q, false));
        case!("pipe_plus_locks", prims::pipe_lock_queue(p, q));
        case!("crossbeam_threads", prims::crossbeam(p, q));
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
    // A hand-off's time is measured from the release to the waiter's return from `acquire` (the
    // holder's wait for the waiter to get into `acquire` is not in it), over `iters` hand-offs.
    macro_rules! handoff {
        ($name:expr, $m:expr) => {{
            let mut s = locks::LockSide::new($m, 2, true);
            g.bench_function($name, |b| {
                b.iter_custom(|n| {
                    let x = s.run(Amount::Items(n));
                    Duration::from_secs_f64(x.ns_per_op() * 1e-9 * n as f64)
                })
            });
        }};
    }
    handoff!("lock_handoff_2_processes", shmwire::Lock::new().unwrap());
    handoff!("pthread_mutex_handoff_2_processes", prims::PMutex::new());
    let mut s = locks::Wake::new(false);
    g.bench_function("semaphore_wakeup_rtt", |b| {
        b.iter_custom(|n| timed(&mut s, n))
    });
    let mut s = locks::Wake::new(true);
    g.bench_function("event_wakeup_rtt", |b| b.iter_custom(|n| timed(&mut s, n)));
    let mut s = Echo::new(floor_pair(true), 8);
    g.bench_function("floor_futex_rtt", |b| b.iter_custom(|n| timed(&mut s, n)));
    g.finish();
}

criterion_group!(benches, queues, locks);
criterion_main!(benches);
