//! Criterion benches of `Pipe`/`Connection` against their baselines, all in the same run: the two
//! shared-memory floors (one cache line each way, spinning or futex), the anonymous pipe, the Unix
//! socketpair and TCP loopback. Run: `cargo bench --bench pipe`.
//!
//! The paths are the ones `shmwire bench` measures (`cli/src/bench/links.rs`, compiled in here too),
//! written straight against libc so that they are as fast as the C originals in
//! `../shared/baselines/ipc.c`. Each bench forks one echo (or sink) child and reuses it for every
//! sample.

#[path = "../cli/src/bench/links.rs"]
#[allow(dead_code)]
mod links;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use links::{Link, fd_pair, floor_pair, shm_pair};
use shmwire::{Process, WaitStrategy};
use std::time::{Duration, Instant};

const STOP: u8 = 0xff;
const SYNC: u8 = 1;

/// A child that echoes every message (latency) or swallows them and answers `SYNC` (throughput).
struct Peer<L: Link> {
    mine: L,
    child: Process,
    size: usize,
}

impl<L: Link> Peer<L> {
    fn echo(pair: (L, L), size: usize) -> Self {
        let (mine, mut theirs) = pair;
        let child = Process::fork(move || {
            let mut buf = vec![0u8; size];
            while theirs.recv(&mut buf) && buf.first() != Some(&STOP) {
                theirs.send(&buf);
            }
        })
        .unwrap();
        Peer { mine, child, size }
    }

    fn sink(pair: (L, L), size: usize) -> Self {
        let (mine, mut theirs) = pair;
        let child = Process::fork(move || {
            let mut buf = vec![0u8; size];
            while theirs.recv(&mut buf) && buf.first() != Some(&STOP) {
                if buf.first() == Some(&SYNC) {
                    theirs.send(&[SYNC]);
                }
            }
        })
        .unwrap();
        Peer { mine, child, size }
    }

    fn round_trips(&mut self, iters: u64) -> Duration {
        let out = vec![0u8; self.size];
        let mut back = vec![0u8; self.size];
        let start = Instant::now();
        for _ in 0..iters {
            self.mine.send(&out);
            self.mine.recv(&mut back);
        }
        start.elapsed()
    }

    fn stream(&mut self, iters: u64) -> Duration {
        let out = vec![0u8; self.size];
        let mut sync = vec![0u8; self.size];
        sync[0] = SYNC;
        let mut ack = [0u8; 1];
        let start = Instant::now();
        for _ in 0..iters {
            self.mine.send(&out);
        }
        self.mine.send(&sync);
        self.mine.recv(&mut ack);
        start.elapsed()
    }

    fn stop(mut self) {
        self.mine.send(&vec![STOP; self.size]);
        drop(self.mine);
        let _ = self.child.join_timeout(Duration::from_secs(10));
    }
}

fn rtt(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtt_8B");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    macro_rules! case {
        ($name:expr, $pair:expr) => {{
            let mut p = Peer::echo($pair, 8);
            g.bench_function($name, |b| b.iter_custom(|n| p.round_trips(n)));
            p.stop();
        }};
    }
    case!("floor_spin", floor_pair(false));
    case!("floor_futex", floor_pair(true));
    case!("pipe", fd_pair("pipe"));
    case!("unix_socket", fd_pair("uds"));
    case!("tcp_loopback", fd_pair("tcp"));
    case!("shmwire_adaptive", shm_pair(WaitStrategy::Adaptive, false));
    case!("shmwire_sleep", shm_pair(WaitStrategy::Sleep, false));
    case!("shmwire_zero_copy", shm_pair(WaitStrategy::Adaptive, true));
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
                let mut p = Peer::sink($pair, size);
                g.bench_with_input(BenchmarkId::new($name, size), &size, |b, _| {
                    b.iter_custom(|n| p.stream(n))
                });
                p.stop();
            }};
        }
        case!("pipe", fd_pair("pipe"));
        case!("unix_socket", fd_pair("uds"));
        case!("shmwire", shm_pair(WaitStrategy::Adaptive, false));
        case!("shmwire_zero_copy", shm_pair(WaitStrategy::Adaptive, true));
    }
    g.finish();
}

criterion_group!(benches, rtt, throughput);
criterion_main!(benches);
