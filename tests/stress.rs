//! Stress: long random exchanges in both directions, and the system-call budget of a busy stream.

mod common;

use common::{Rng, checksum};
use shmwire::{Connection, Pipe, Process};
use std::time::Duration;

fn main() {
    common::run(tests![
        random_sizes_both_ways_with_checksums,
        busy_stream_makes_almost_no_futex_calls,
        no_lost_wakeups_across_spin_and_sleep,
    ]);
}

fn count() -> u64 {
    if common::long() {
        10_000_000
    } else {
        1_000_000
    }
}

/// A message: `[seq: u64][checksum of the rest: u64][random bytes]`, mostly small, sometimes larger
/// than half the ring (streamed).
fn make(rng: &mut Rng, seq: u64, buf: &mut Vec<u8>) {
    let len = match rng.below(1000) {
        0 => 20_000 + rng.below(50_000) as usize,
        1..=20 => 1000 + rng.below(7000) as usize,
        _ => rng.below(200) as usize,
    };
    buf.resize(16 + len, 0);
    rng.fill(&mut buf[16..]);
    let sum = checksum(&buf[16..]);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&sum.to_le_bytes());
}

fn check(msg: &[u8], want_seq: u64) {
    assert!(msg.len() >= 16, "short message");
    let seq = u64::from_le_bytes(msg[..8].try_into().unwrap());
    let sum = u64::from_le_bytes(msg[8..16].try_into().unwrap());
    assert_eq!(seq, want_seq, "out of order or lost");
    assert_eq!(sum, checksum(&msg[16..]), "damaged message {seq}");
}

/// Sends `n` messages and receives `n`, interleaved, on one end.
fn exchange(conn: &Connection, n: u64, seed: u64) {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut inbuf = vec![0u8; 1 << 20];
    let (mut sent, mut got) = (0u64, 0u64);
    while got < n || sent < n {
        if sent < n {
            make(&mut rng, sent, &mut out);
            conn.send_bytes(&out)
                .unwrap_or_else(|e| panic!("send {sent}: {e:?} got {got}"));
            sent += 1;
        }
        while got < n
            && (sent == n
                || conn
                    .poll(Duration::ZERO)
                    .unwrap_or_else(|e| panic!("poll: {e:?} sent {sent} got {got}")))
        {
            let len = conn
                .recv_bytes_into(&mut inbuf)
                .unwrap_or_else(|e| panic!("recv: {e:?} sent {sent} got {got}"));
            check(&inbuf[..len], got);
            got += 1;
        }
    }
}

fn random_sizes_both_ways_with_checksums() {
    let n = count();
    let (a, b) = Pipe::builder().capacity(64 * 1024).build().unwrap();
    let child = Process::fork(move || exchange(&b, n, 2)).unwrap();
    exchange(&a, n, 3);
    assert!(child.join().unwrap().success());
}

fn busy_stream_makes_almost_no_futex_calls() {
    let n = count();
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        let before = shmwire::stats::futex_calls();
        let mut buf = [0u8; 64];
        for i in 0..n {
            let len = b.recv_bytes_into(&mut buf).unwrap();
            assert_eq!(len, 64);
            assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), i);
        }
        b.send(&(shmwire::stats::futex_calls() - before)).unwrap();
    })
    .unwrap();
    let before = shmwire::stats::futex_calls();
    let mut msg = [0u8; 64];
    for i in 0..n {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        a.send_bytes(&msg).unwrap();
    }
    let mine = shmwire::stats::futex_calls() - before;
    let theirs: u64 = a.recv().unwrap();
    assert!(child.join().unwrap().success());
    let total = mine + theirs;
    println!("[{n} messages: {mine} futex calls in the sender, {theirs} in the receiver] ");
    assert!(total <= n / 100, "{total} futex calls for {n} messages");
}

/// Pauses of every length between messages drive both sides through spinning, sleeping and the
/// eventcount's switches between its symmetric and asymmetric modes. A lost wake-up would show as a
/// round trip stuck until the next liveness probe (100 ms); none may take that long.
fn no_lost_wakeups_across_spin_and_sleep() {
    use shmwire::WaitStrategy;
    let waits = [
        WaitStrategy::Adaptive,
        WaitStrategy::Sleep,
        WaitStrategy::SpinThenSleep(Duration::from_micros(30)),
        // Spins so short that the waiter goes to sleep just as the message is published: the race
        // the Dekker pairs exist for.
        WaitStrategy::SpinThenSleep(Duration::from_nanos(300)),
    ];
    for wait in waits {
        let (a, b) = Pipe::builder().wait_strategy(wait).build().unwrap();
        let child = Process::fork(move || {
            let mut rng = Rng(5);
            while let Ok(x) = b.recv::<u64>() {
                if rng.below(4) == 0 {
                    std::thread::sleep(Duration::from_micros(rng.below(200)));
                }
                b.send(&(x + 1)).unwrap();
            }
        })
        .unwrap();
        let mut rng = Rng(9);
        let mut worst = Duration::ZERO;
        for i in 0..6000u64 {
            match rng.below(5) {
                0 => {}
                1 => {
                    for _ in 0..rng.below(2000) {
                        std::hint::spin_loop();
                    }
                }
                2 => std::thread::sleep(Duration::from_micros(20)),
                3 => std::thread::sleep(Duration::from_micros(120)),
                _ => std::thread::sleep(Duration::from_micros(rng.below(1000))),
            }
            let t = std::time::Instant::now();
            a.send(&i).unwrap();
            assert_eq!(a.recv::<u64>().unwrap(), i + 1);
            worst = worst.max(t.elapsed());
        }
        drop(a);
        assert!(child.join().unwrap().success());
        assert!(
            worst < shmwire::PROBE_INTERVAL * 95 / 100,
            "{wait:?}: a round trip took {worst:?}"
        );
    }
}
