//! Criterion benches of `Pipe`/`Connection` against their baselines, all in the same run: the two
//! shared-memory floors (one cache line each way, spinning or futex), the anonymous pipe, the Unix
//! socketpair (sleeping and busy-polling) and TCP loopback. Run: `cargo bench --bench pipe`.
//!
//! The paths and workloads are the ones `shmwire bench` measures (`cli/src/bench/links.rs` and
//! `measure.rs`, compiled in here): each bench forks its echo (or sink) child once and reuses it for
//! every sample, and a sample times exactly `iters` round trips (each echo checked) or `iters`
//! messages counted by the receiver.

#[path = "../cli/src/bench/links.rs"]
#[allow(dead_code)]
mod links;
#[path = "../cli/src/bench/measure.rs"]
#[allow(dead_code)]
mod measure;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use links::{fd_pair, floor_pair, shm_pair};
use measure::{Amount, Echo, Side, Sink};
use shmwire::WaitStrategy;
use std::time::Duration;

fn timed(side: &mut impl Side, iters: u64) -> Duration {
    Duration::from_secs_f64(side.run(Amount::Items(iters)).secs)
}

fn rtt(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtt_8B");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    macro_rules! case {
        ($name:expr, $pair:expr) => {{
            let mut s = Echo::new($pair, 8);
            g.bench_function($name, |b| b.iter_custom(|n| timed(&mut s, n)));
        }};
    }
    case!("floor_spin", floor_pair(false));
    case!("floor_futex", floor_pair(true));
    case!("pipe", fd_pair("pipe"));
    case!("unix_socket", fd_pair("uds"));
    case!("unix_socket_busy_poll", fd_pair("uds-busy"));
    case!("tcp_loopback", fd_pair("tcp"));
    case!("shmwire_adaptive", shm_pair(WaitStrategy::Adaptive, false));
    case!("shmwire_sleep", shm_pair(WaitStrategy::Sleep, false));
    case!("shmwire_in_place", shm_pair(WaitStrategy::Adaptive, true));
    g.finish();
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_way");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    for size in [64usize, 4096, 65536, 1 << 20] {
        g.throughput(Throughput::Bytes(size as u64));
        macro_rules! case {
            ($name:expr, $pair:expr) => {{
                let mut s = Sink::new($pair, size);
                g.bench_with_input(BenchmarkId::new($name, size), &size, |b, _| {
                    b.iter_custom(|n| timed(&mut s, n))
                });
            }};
        }
        case!("pipe", fd_pair("pipe"));
        case!("unix_socket", fd_pair("uds"));
        case!("shmwire", shm_pair(WaitStrategy::Adaptive, false));
        case!("shmwire_in_place", shm_pair(WaitStrategy::Adaptive, true));
    }
    g.finish();
}

criterion_group!(benches, rtt, throughput);
criterion_main!(benches);
