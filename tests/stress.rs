//! Stress: long random exchanges in both directions, and the system-call budget of a busy stream.

mod common;
#[path = "common/trace.rs"]
mod trace;

use common::{Rng, checksum};
use shmwire::PROBE_INTERVAL;
use shmwire::{Connection, Pipe, Process};
use std::time::Duration;

fn main() {
    common::run(tests![
        random_sizes_both_ways_with_checksums,
        a_stream_whose_sides_never_wait_makes_no_system_calls,
        busy_stream_makes_almost_no_system_calls,
        every_system_call_of_a_busy_stream_is_counted,
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

/// The most system calls a busy stream may make per million messages, both processes together: the
/// README's bound (1,000: a few when each process has a CPU to itself, a few hundred on a shared,
/// loaded machine, where every time a side is kept waiting past its spin costs three), times the 10x
/// margin the tests allow.
const SYSCALLS_PER_MILLION: u64 = 1_000 * 10;

/// One stream of `n` 64-byte messages, as fast as the sender can go, between this process and a
/// forked child; each side brackets its part with [`trace::mark`]s. Returns the system calls shmwire
/// counted (`stats::system_calls`) in the sender and in the receiver between the marks.
fn busy_stream(n: u64) -> (u64, u64) {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        let mut buf = [0u8; 64];
        let before = shmwire::stats::system_calls();
        trace::mark(trace::BEGIN);
        for i in 0..n {
            let len = b.recv_bytes_into(&mut buf).unwrap();
            assert_eq!(len, 64);
            assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), i);
        }
        trace::mark(trace::END);
        b.send(&(shmwire::stats::system_calls() - before)).unwrap();
    })
    .unwrap();
    let mut msg = [0u8; 64];
    let before = shmwire::stats::system_calls();
    trace::mark(trace::BEGIN);
    for i in 0..n {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        a.send_bytes(&msg).unwrap();
    }
    trace::mark(trace::END);
    let mine = shmwire::stats::system_calls() - before;
    let theirs: u64 = a.recv().unwrap();
    assert!(child.join().unwrap().success());
    (mine, theirs)
}

/// The fast path makes no system call: a stream whose two sides never sleep (each retries a
/// zero-timeout call in user space), traced with ptrace from the first send and the first receive to
/// the last, shows none in either process but the liveness probes that a zero-timeout call that
/// finds nothing makes at most once per `PROBE_INTERVAL` (so that a loop of them still learns a peer
/// died): one `fcntl` each.
fn a_stream_whose_sides_never_wait_makes_no_system_calls() {
    let n = count() / 5;
    let start = std::time::Instant::now();
    let traced = trace::run(move || {
        let (a, b) = Pipe::new().unwrap();
        let child = Process::fork(move || {
            let mut buf = [0u8; 64];
            trace::mark(trace::BEGIN);
            for i in 0..n {
                let len = loop {
                    match b.recv_bytes_into_timeout(&mut buf, Duration::ZERO) {
                        Ok(len) => break len,
                        Err(shmwire::Error::Timeout) => std::hint::spin_loop(),
                        Err(e) => panic!("recv {i}: {e:?}"),
                    }
                };
                assert_eq!(len, 64);
                assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), i);
            }
            trace::mark(trace::END);
        })
        .unwrap();
        let mut msg = [0u8; 64];
        trace::mark(trace::BEGIN);
        for i in 0..n {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            loop {
                match a.send_bytes_timeout(&msg, Duration::ZERO) {
                    Ok(()) => break,
                    Err(shmwire::Error::Timeout) => std::hint::spin_loop(),
                    Err(e) => panic!("send {i}: {e:?}"),
                }
            }
        }
        trace::mark(trace::END);
        assert!(child.join().unwrap().success());
    });
    println!("[{n} messages, nobody waiting: {}] ", traced.describe());
    let probes = traced
        .0
        .get(&(libc::SYS_fcntl as u64))
        .copied()
        .unwrap_or(0);
    let allowed = 2 * (start.elapsed().as_millis() as u64 / PROBE_INTERVAL.as_millis() as u64 + 1);
    assert_eq!(
        traced.total() - probes,
        0,
        "system calls besides probes: {}",
        traced.describe()
    );
    assert!(
        probes <= allowed,
        "{probes} probes in {:?}, more than one per side per probe interval",
        start.elapsed()
    );
}

/// The README's claim: a busy stream makes (next to) no system calls. shmwire's counters see every
/// system call of the stream's path (the next test checks that with ptrace, which would slow the
/// stream and change what it does).
fn busy_stream_makes_almost_no_system_calls() {
    let n = count();
    let (mine, theirs) = busy_stream(n);
    let total = mine + theirs;
    println!("[{n} messages: {mine} system calls in the sender, {theirs} in the receiver] ");
    assert!(
        total <= SYSCALLS_PER_MILLION * n / 1_000_000,
        "{total} system calls for {n} messages"
    );
}

/// Every system call both processes make during a busy stream, seen with ptrace, is one that
/// shmwire's counters (`stats::system_calls`) count.
fn every_system_call_of_a_busy_stream_is_counted() {
    let n = count() / 5;
    let (report_r, report_w) = Pipe::simplex().unwrap();
    let traced = trace::run(move || {
        report_w.send(&busy_stream(n)).unwrap();
    });
    let (mine, theirs): (u64, u64) = report_r.recv().unwrap();
    println!(
        "[{n} messages traced: {}; shmwire counted {mine} in the sender, {theirs} in the \
         receiver] ",
        traced.describe()
    );
    assert_eq!(
        traced.total(),
        mine + theirs,
        "shmwire's counters missed some: {}",
        traced.describe()
    );
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
        // A lost wake-up costs a whole probe slice (the waiter sleeps until it ends): trips that
        // long. One may be a scheduler stall on a loaded machine; a lost wake-up comes back.
        let mut slow = Vec::new();
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
            if t.elapsed() >= shmwire::PROBE_INTERVAL * 95 / 100 {
                slow.push(t.elapsed());
            }
        }
        drop(a);
        assert!(child.join().unwrap().success());
        assert!(
            slow.len() <= 1,
            "{wait:?}: round trips of a probe slice or more (lost wake-ups): {slow:?}"
        );
    }
}
