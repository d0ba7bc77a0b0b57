//! Instructions per operation on the fast paths, for `valgrind --tool=callgrind` (which counts
//! instructions, so the figure repeats on a noisy machine). Single process, a ring that is never
//! empty or full, so nothing waits.
//!
//! Built as users build the library (no test hooks), in its own crate. For OP in pipe queue lock
//! poll (and `crossbeam`, crossbeam-channel's send + recv on a bounded channel, for comparison):
//! `valgrind --tool=callgrind --callgrind-out-file=/dev/null shmwire-callgrind OP N` for two values
//! of N; (instructions at N2 - instructions at N1) / (N2 - N1) is the cost of one operation
//! (`benches/callgrind.sh` does this).

use shmwire::{Lock, Pipe, Queue};
use std::hint::black_box;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).map(String::as_str).unwrap_or("pipe");
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    match op {
        // 64 B send + recv on one duplex end's ring, with one message always waiting.
        "pipe" => {
            let (a, b) = Pipe::new().unwrap();
            let msg = [7u8; 64];
            let mut buf = [0u8; 64];
            a.send_bytes(&msg).unwrap();
            for _ in 0..n {
                a.send_bytes(black_box(&msg)).unwrap();
                black_box(b.recv_bytes_into(&mut buf).unwrap());
            }
        }
        // put + get of a u64, with one item always waiting.
        "queue" => {
            let q = Queue::<u64>::new(64).unwrap();
            q.put_pod(&1).unwrap();
            for i in 0..n {
                q.put_pod(black_box(&i)).unwrap();
                black_box(q.get_pod().unwrap());
            }
        }
        // acquire + release, uncontended.
        "lock" => {
            let l = Lock::new().unwrap();
            for _ in 0..n {
                drop(black_box(l.acquire().unwrap()));
            }
        }
        // `Connection::poll` with nothing there and a zero timeout.
        "poll" => {
            let (a, b) = Pipe::new().unwrap();
            for _ in 0..n {
                assert!(!black_box(b.poll(Duration::ZERO).unwrap()));
            }
            drop(a);
        }
        // crossbeam-channel's send + recv of a u64 (bounded, 64), with one item always waiting:
        // the queue's comparison.
        "crossbeam" => {
            let (tx, rx) = crossbeam_channel::bounded::<u64>(64);
            tx.send(1).unwrap();
            for i in 0..n {
                tx.send(black_box(i)).unwrap();
                black_box(rx.recv().unwrap());
            }
        }
        _ => panic!("op: pipe, queue, lock, poll or crossbeam"),
    }
}
