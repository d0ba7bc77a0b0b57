//! Criterion benches of `Pool` against its baselines in the same run: a pool over OS pipes (one
//! `write` per task, one `read` per result: CPython's design at C speed) and threads of one process
//! (the ceiling). Python's `Pool` runs in `shmwire bench --only pool`. Run: `cargo bench --bench
//! pool`.
//!
//! The workloads are `shmwire bench`'s (`cli/src/bench/pool.rs`, compiled in here): each side starts
//! its workers once; a sample runs calls of the workload until `iters` tasks are done.

#[path = "../cli/src/bench/links.rs"]
#[allow(dead_code)]
mod links;
#[path = "../cli/src/bench/measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "../cli/src/bench/pool.rs"]
#[allow(dead_code)]
mod pool;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use measure::{Amount, Side};
use pool::{Mode, PipePool, ShmPool, Threads};
use std::time::Duration;

/// The time of a block of at least `iters` tasks, scaled to `iters`.
fn timed(side: &mut impl Side, iters: u64) -> Duration {
    let s = side.run(Amount::Items(iters));
    Duration::from_secs_f64(s.secs * iters as f64 / s.ops.max(1) as f64)
}

fn pools(c: &mut Criterion) {
    macro_rules! case {
        ($g:expr, $name:expr, $id:expr, $side:expr) => {{
            let mut s = $side;
            $g.bench_function(BenchmarkId::new($name, $id), |b| {
                b.iter_custom(|n| timed(&mut s, n))
            });
        }};
    }
    let mut g = c.benchmark_group("pool_tasks");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    g.throughput(Throughput::Elements(1));
    case!(g, "shmwire", "map_chunked_1", ShmPool::new(Mode::Map1));
    case!(g, "os_pipes", "map_chunked_1", PipePool::new(Mode::Map1));
    case!(g, "shmwire", "apply_async", ShmPool::new(Mode::Apply));
    case!(g, "shmwire", "map_default_chunks", ShmPool::new(Mode::Map));
    case!(g, "threads", "map_default_chunks", Threads::new(Mode::Map));
    case!(g, "shmwire", "map_20us_tasks", ShmPool::new(Mode::Work));
    case!(g, "threads", "map_20us_tasks", Threads::new(Mode::Work));
    g.finish();
    let mut g = c.benchmark_group("pool_apply_round_trip");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    case!(g, "shmwire", "apply", ShmPool::new(Mode::Rtt));
    case!(g, "os_pipes", "apply", PipePool::new(Mode::Rtt));
    g.finish();
}

criterion_group!(benches, pools);
criterion_main!(benches);
