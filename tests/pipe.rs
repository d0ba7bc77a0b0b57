//! Pipe and Connection between real processes: messages, sizes, EOF, BrokenPipe, poll, misuse.

mod common;

use common::{Rng, checksum};
use shmwire::{Error, PROBE_INTERVAL, Pipe, Process, Timeout, WaitStrategy};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

fn main() {
    common::run(tests![
        eof_after_everything_is_received,
        recv_loop_ends_when_child_exits,
        broken_pipe_after_peer_closes,
        broken_pipe_after_peer_exits,
        duplex_values_both_ways,
        send_bytes_and_recv_bytes_into,
        buffer_too_short_keeps_the_message,
        buffer_too_short_keeps_a_streamed_message,
        poll_each_kind_of_timeout,
        poll_reports_eof,
        recv_timeout_then_message,
        every_size,
        long_sizes,
        duplex_big_messages_at_the_same_time,
        zero_copy_forms,
        send_with_too_large,
        pod_values,
        simplex_roles_and_misuse,
        two_readers_is_misuse,
        two_writers_is_misuse,
        sender_does_not_take_messages_another_holder_reads,
        sender_does_not_take_messages_a_borrowing_child_will_read,
        a_half_received_message_is_not_ready,
        failed_encoding_sends_nothing,
        as_fd_under_epoll_wakes_and_does_not_spin,
        as_fd_wakes_when_the_peer_is_killed,
        as_fd_of_a_named_pipe_is_signalled,
        use_after_close_is_misuse,
        child_keeps_moved_end_after_parent_drops_its_copy,
        named_pipe_between_processes,
        wrong_type_is_a_decode_error,
        try_recv_is_empty_then_a_value_then_eof,
        iter_ends_at_eof,
        iter_yields_another_error_once_then_ends,
        wait_strategies_all_deliver,
        capacity_out_of_range,
        every_blocking_call_has_a_timeout_form,
    ]);
}

fn eof_after_everything_is_received() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        let mut got = Vec::new();
        let end = loop {
            match b.recv::<u32>() {
                Ok(x) => got.push(x),
                Err(e) => break e,
            }
        };
        assert!(matches!(end, Error::Eof), "{end:?}");
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    })
    .unwrap();
    for i in 0..10u32 {
        a.send(&i).unwrap();
    }
    drop(a);
    assert!(child.join().unwrap().success());
}

fn recv_loop_ends_when_child_exits() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        for i in 0..5u8 {
            b.send(&i).unwrap();
        }
    })
    .unwrap();
    let mut got = vec![];
    while let Ok(x) = a.recv::<u8>() {
        got.push(x);
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert!(matches!(a.recv::<u8>(), Err(Error::Eof)));
    assert!(child.join().unwrap().success());
}

fn broken_pipe_after_peer_closes() {
    let (a, b) = Pipe::new().unwrap();
    let (done_r, done_w) = Pipe::simplex().unwrap();
    let child = Process::fork(move || {
        b.close();
        done_w.send(&()).unwrap();
        // Stay alive: the end is closed, not dead.
        std::thread::sleep(Duration::from_millis(300));
    })
    .unwrap();
    done_r.recv::<()>().unwrap();
    assert!(matches!(a.send(&1u8), Err(Error::BrokenPipe)));
    assert!(matches!(a.send_bytes(b"x"), Err(Error::BrokenPipe)));
    assert!(matches!(a.recv::<u8>(), Err(Error::Eof)));
    assert!(child.join().unwrap().success());
}

fn broken_pipe_after_peer_exits() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || drop(b)).unwrap();
    assert!(child.join().unwrap().success());
    assert!(matches!(a.send(&"x"), Err(Error::BrokenPipe)));
}

fn duplex_values_both_ways() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Msg {
        n: i64,
        nothing: Option<String>,
        text: String,
    }
    let (parent, child_end) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        for k in 0..2 {
            child_end
                .send(&Msg {
                    n: 42,
                    nothing: None,
                    text: format!("hello from child {k}"),
                })
                .unwrap();
        }
        let reply: String = child_end.recv().unwrap();
        assert_eq!(reply, "from parent");
    })
    .unwrap();
    for k in 0..2 {
        let m: Msg = parent.recv().unwrap();
        assert_eq!(
            m,
            Msg {
                n: 42,
                nothing: None,
                text: format!("hello from child {k}")
            }
        );
    }
    parent.send("from parent").unwrap();
    assert!(child.join().unwrap().success());
}

fn send_bytes_and_recv_bytes_into() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        let mut buf = [0u8; 64];
        for i in 0..100u8 {
            let n = b.recv_bytes_into(&mut buf).unwrap();
            assert_eq!(&buf[..n], &vec![i; i as usize % 50][..]);
        }
    })
    .unwrap();
    for i in 0..100u8 {
        a.send_bytes(&vec![i; i as usize % 50]).unwrap();
    }
    assert!(child.join().unwrap().success());
}

fn buffer_too_short_keeps_the_message() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        a.send_bytes(b"0123456789").unwrap();
        a.send_bytes(b"next").unwrap();
    })
    .unwrap();
    let mut small = [0u8; 4];
    match b.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort { needed }) => assert_eq!(needed, 10),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    // Nothing lost, asked twice.
    assert!(matches!(
        b.recv_bytes_into(&mut small),
        Err(Error::BufferTooShort { needed: 10 })
    ));
    assert_eq!(b.recv_bytes().unwrap(), b"0123456789");
    assert_eq!(b.recv_bytes_into(&mut small).unwrap(), 4);
    assert_eq!(&small, b"next");
    assert!(child.join().unwrap().success());
}

fn buffer_too_short_keeps_a_streamed_message() {
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let mut big = vec![0u8; 100_000];
    Rng(7).fill(&mut big);
    let sum = checksum(&big);
    let child = Process::fork(move || a.send_bytes(&big).unwrap()).unwrap();
    let mut small = vec![0u8; 99_999];
    assert!(matches!(
        b.recv_bytes_into(&mut small),
        Err(Error::BufferTooShort { needed: 100_000 })
    ));
    let mut exact = vec![0u8; 100_000];
    assert_eq!(b.recv_bytes_into(&mut exact).unwrap(), 100_000);
    assert_eq!(checksum(&exact), sum);
    assert!(child.join().unwrap().success());
}

fn poll_each_kind_of_timeout() {
    let (a, b) = Pipe::new().unwrap();
    // Immediate.
    let t = Instant::now();
    assert!(!b.poll(Duration::ZERO).unwrap());
    assert!(!b.poll(Timeout::ZERO).unwrap());
    assert!(t.elapsed() < Duration::from_millis(50));
    // Bounded.
    let t = Instant::now();
    assert!(!b.poll(Duration::from_millis(150)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert!(t.elapsed() < Duration::from_secs(2));
    // Forever: a child sends after a while.
    let child = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(200));
        a.send(&5u8).unwrap();
    })
    .unwrap();
    let t = Instant::now();
    assert!(b.poll(None).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(150));
    // poll does not consume.
    assert!(b.poll(Duration::ZERO).unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 5);
    assert!(child.join().unwrap().success());
}

fn poll_reports_eof() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || a.send(&1u8).unwrap()).unwrap();
    assert!(child.join().unwrap().success());
    assert!(b.poll(Duration::ZERO).unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    assert!(matches!(b.poll(Duration::from_millis(10)), Err(Error::Eof)));
    assert!(matches!(b.poll(None), Err(Error::Eof)));
}

fn recv_timeout_then_message() {
    let (a, b) = Pipe::new().unwrap();
    let t = Instant::now();
    assert!(matches!(
        b.recv_timeout::<u8>(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(matches!(
        b.recv_bytes_timeout(Duration::ZERO),
        Err(Error::Timeout)
    ));
    let mut buf = [0u8; 8];
    assert!(matches!(
        b.recv_bytes_into_timeout(&mut buf, Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    let child = Process::fork(move || a.send(&9u8).unwrap()).unwrap();
    assert_eq!(b.recv_timeout::<u8>(Duration::from_secs(5)).unwrap(), 9);
    assert!(child.join().unwrap().success());
}

/// Echoes messages of the given sizes through a child and checks every byte.
fn echo_sizes(cap: usize, sizes: &[usize]) {
    let (a, b) = Pipe::builder().capacity(cap).build().unwrap();
    let n = sizes.len();
    let child = Process::fork(move || {
        for _ in 0..n {
            let m = b.recv_bytes().unwrap();
            b.send_bytes(&m).unwrap();
        }
    })
    .unwrap();
    let mut rng = Rng(1);
    for &size in sizes {
        let mut m = vec![0u8; size];
        rng.fill(&mut m);
        a.send_bytes(&m).unwrap();
        let back = a.recv_bytes().unwrap();
        assert_eq!(back.len(), size);
        assert_eq!(checksum(&back), checksum(&m), "size {size}");
    }
    assert!(child.join().unwrap().success());
}

fn every_size() {
    let cap = 64 * 1024;
    let (probe, _other) = Pipe::builder().capacity(cap).build().unwrap();
    let max = probe.max_in_place_len();
    assert_eq!(probe.capacity(), cap);
    echo_sizes(
        cap,
        &[
            0,
            1,
            7,
            8,
            9,
            max - 1,
            max,
            max + 1,
            cap - 1,
            cap,
            cap + 1,
            10 * cap,
            64 << 20,
        ],
    );
}

fn long_sizes() {
    if !common::long() {
        common::skip("set SHMWIRE_LONG=1");
    }
    echo_sizes(shmwire::DEFAULT_CAPACITY, &[256 << 20]);
}

fn duplex_big_messages_at_the_same_time() {
    let size = if common::long() { 256 << 20 } else { 64 << 20 };
    let (a, b) = Pipe::new().unwrap();
    let mut mine = vec![0u8; size];
    Rng(11).fill(&mut mine);
    let mut theirs = vec![0u8; size];
    Rng(12).fill(&mut theirs);
    let (sum_mine, sum_theirs) = (checksum(&mine), checksum(&theirs));
    let child = Process::fork(move || {
        b.send_bytes(&theirs).unwrap();
        let got = b.recv_bytes().unwrap();
        assert_eq!(checksum(&got), sum_mine);
    })
    .unwrap();
    a.send_bytes(&mine).unwrap();
    let got = a.recv_bytes().unwrap();
    assert_eq!(checksum(&got), sum_theirs);
    assert!(child.join().unwrap().success());
}

fn zero_copy_forms() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        for i in 0..1000u32 {
            let len = (i % 200) as usize;
            // SAFETY: the peer is our own parent, which never writes a published frame.
            unsafe {
                b.recv_with(|bytes| {
                    assert_eq!(bytes.len(), len);
                    assert!(bytes.iter().all(|&x| x == i as u8));
                })
            }
            .unwrap();
        }
    })
    .unwrap();
    for i in 0..1000u32 {
        let len = (i % 200) as usize;
        // SAFETY: the peer is our own child, which never writes a frame before it is published.
        let r = unsafe {
            a.send_with(len, |buf| {
                buf.fill(i as u8);
                buf.len()
            })
        };
        assert_eq!(r.unwrap(), len);
    }
    assert!(child.join().unwrap().success());
}

fn send_with_too_large() {
    let (a, b) = Pipe::builder().capacity(8192).build().unwrap();
    let max = a.max_in_place_len();
    assert_eq!(max, 8192 / 2 - 16); // half the ring, less the frame header and the guard
    // SAFETY (each `send_with` here): both ends are ours.
    assert!(matches!(
        unsafe { a.send_with(max + 1, |_| ()) },
        Err(Error::TooLarge)
    ));
    assert!(matches!(
        unsafe { a.send_with(1 << 30, |_| ()) },
        Err(Error::TooLarge)
    ));
    // Nothing was sent; a maximal one goes through.
    unsafe { a.send_with(max, |buf| buf.fill(3)) }.unwrap();
    assert_eq!(b.recv_bytes().unwrap(), vec![3; max]);
}

fn pod_values() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Debug, PartialEq)]
    #[repr(C)]
    struct Tick {
        seq: u64,
        price: f64,
    }
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        for i in 0..1000u64 {
            let t: Tick = b.recv_pod().unwrap();
            assert_eq!(
                t,
                Tick {
                    seq: i,
                    price: i as f64 * 0.5
                }
            );
        }
        // A message of another size is not a `Tick`: a decode error, and the message stays.
        let r = b.recv_pod::<Tick>();
        assert!(
            matches!(&r, Err(Error::Decode { bytes, .. }) if bytes.is_empty()),
            "{r:?}"
        );
        assert_eq!(b.recv_bytes().unwrap(), 7u32.to_ne_bytes());
    })
    .unwrap();
    for i in 0..1000u64 {
        a.send_pod(&Tick {
            seq: i,
            price: i as f64 * 0.5,
        })
        .unwrap();
    }
    a.send_pod(&7u32).unwrap(); // the wrong size
    assert!(child.join().unwrap().success());
}

fn simplex_roles_and_misuse() {
    let (reader, writer) = Pipe::simplex().unwrap();
    assert!(reader.readable() && !reader.writable());
    assert!(writer.writable() && !writer.readable());
    assert!(matches!(reader.send(&1u8), Err(Error::Misuse)));
    assert!(matches!(reader.send_bytes(b"x"), Err(Error::Misuse)));
    assert!(matches!(writer.recv::<u8>(), Err(Error::Misuse)));
    assert!(matches!(writer.recv_bytes(), Err(Error::Misuse)));
    assert!(matches!(writer.poll(Duration::ZERO), Err(Error::Misuse)));
    let child = Process::fork(move || {
        for i in 0..10u8 {
            writer.send(&i).unwrap();
        }
    })
    .unwrap();
    let got: Vec<u8> = std::iter::from_fn(|| reader.recv().ok()).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(child.join().unwrap().success());
}

fn two_readers_is_misuse() {
    let (a, b) = Pipe::new().unwrap();
    let b_ref = &b;
    // The child reads a forked copy of `b` (borrowed, so the parent still has it) and blocks.
    let child = Process::fork(|| {
        let v: u8 = b_ref.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(v, 1);
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(
        b.recv_timeout::<u8>(Duration::from_millis(100)),
        Err(Error::Busy)
    ));
    assert!(matches!(
        b.recv_bytes_timeout(Duration::from_millis(100)),
        Err(Error::Busy)
    ));
    a.send(&1u8).unwrap();
    assert!(child.join().unwrap().success());
    // The child is done with it: the parent may read now.
    a.send(&2u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 2);
}

fn use_after_close_is_misuse() {
    let (a, b) = Pipe::new().unwrap();
    a.close();
    assert!(a.is_closed());
    assert!(matches!(a.send(&1u8), Err(Error::Misuse)));
    assert!(matches!(a.recv::<u8>(), Err(Error::Misuse)));
    assert!(matches!(b.recv::<u8>(), Err(Error::Eof)));
    assert!(matches!(b.send(&1u8), Err(Error::BrokenPipe)));
}

fn child_keeps_moved_end_after_parent_drops_its_copy() {
    let (a, b) = Pipe::new().unwrap();
    // `b` moves into the child; the parent's copy is dropped as fork returns. The end stays open.
    let child = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(200));
        let x: u32 = b.recv().unwrap();
        b.send(&(x + 1)).unwrap();
    })
    .unwrap();
    a.send(&41u32).unwrap();
    assert_eq!(a.recv::<u32>().unwrap(), 42);
    assert!(child.join().unwrap().success());
    assert!(matches!(a.recv::<u32>(), Err(Error::Eof)));
}

fn named_pipe_between_processes() {
    let name = format!("named-{}", std::process::id());
    let (a, b) = Pipe::builder().name(&name).build().unwrap();
    // Taken names are refused.
    let again = Pipe::builder().name(&name).build();
    assert!(matches!(&again, Err(Error::Exists)), "{again:?}");
    let n2 = name.clone();
    let child = Process::fork(move || {
        let mine = Pipe::open(&n2, 1).unwrap();
        let v: String = mine.recv().unwrap();
        mine.send(&format!("{v} back")).unwrap();
    })
    .unwrap();
    a.send("there").unwrap();
    assert_eq!(a.recv::<String>().unwrap(), "there back");
    // The child held end 1 too; now only we do. Dropping ours closes it.
    drop(b);
    assert!(child.join().unwrap().success());
    assert!(matches!(
        Pipe::open("no-such-pipe-here", 0),
        Err(Error::NotFound)
    ));
    assert!(matches!(Pipe::open("bad/name", 0), Err(Error::Invalid(_))));
    drop(a);
    assert!(
        !std::path::Path::new(&format!(
            "/dev/shm/shmwire.{}.u.{name}",
            std::env::var("SHMWIRE_PREFIX").unwrap()
        ))
        .exists()
    );
}

fn is_kept_decode_error<T: std::fmt::Debug>(r: &shmwire::Result<T>) -> bool {
    matches!(r, Err(Error::Decode { reason, bytes }) if bytes.is_empty() && !reason.is_empty())
}

fn wrong_type_is_a_decode_error() {
    // Small capacity: the 20 000-byte message is streamed in pieces.
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let big = vec![5u8; 20_000];
    let big2 = big.clone();
    let sender = Process::fork(move || {
        a.send(&u64::MAX).unwrap(); // not a bool
        a.send(&(1u8, 2u8)).unwrap(); // a u8, and a byte left over
        a.send(&big2).unwrap(); // streamed; not a u64
        a.send_pod(&7u32).unwrap(); // 4 bytes, not a u64
        a.send(&"text").unwrap();
        a.recv::<()>().unwrap(); // stays until the reader is done
    })
    .unwrap();
    // The message that does not decode stays for the next call, whichever form asked.
    let r = b.recv::<bool>();
    assert!(is_kept_decode_error(&r), "{r:?}");
    let r = b.recv_timeout::<bool>(Duration::from_secs(10));
    assert!(is_kept_decode_error(&r), "{r:?}");
    let r = b.try_recv::<bool>();
    assert!(is_kept_decode_error(&r), "{r:?}");
    assert_eq!(
        b.recv_bytes().unwrap(),
        postcard::to_allocvec(&u64::MAX).unwrap()
    );
    let r = b.recv::<u8>();
    assert!(is_kept_decode_error(&r), "{r:?}");
    assert_eq!(b.recv::<(u8, u8)>().unwrap(), (1, 2));
    let r = b.recv::<u64>();
    assert!(is_kept_decode_error(&r), "{r:?}");
    let r = b.recv_pod::<u64>();
    assert!(is_kept_decode_error(&r), "{r:?}");
    assert_eq!(b.recv::<Vec<u8>>().unwrap(), big);
    let r = b.recv_pod::<u64>();
    assert!(is_kept_decode_error(&r), "{r:?}");
    let r = b.recv_pod_timeout::<u64>(Duration::from_secs(10));
    assert!(is_kept_decode_error(&r), "{r:?}");
    assert_eq!(b.recv_bytes().unwrap(), 7u32.to_ne_bytes());
    assert_eq!(b.recv::<String>().unwrap(), "text");
    b.send(&()).unwrap();
    assert!(sender.join().unwrap().success());
}

fn try_recv_is_empty_then_a_value_then_eof() {
    let (a, b) = Pipe::new().unwrap();
    let (go_r, go_w) = Pipe::simplex().unwrap();
    assert!(matches!(b.try_recv::<u32>(), Err(Error::Empty)));
    let sender = Process::fork(move || {
        go_r.recv::<()>().unwrap();
        a.send(&7u32).unwrap();
        a.send(&8u32).unwrap();
    })
    .unwrap();
    assert!(matches!(b.try_recv::<u32>(), Err(Error::Empty)));
    go_w.send(&()).unwrap();
    assert!(b.poll(Duration::from_secs(10)).unwrap());
    assert_eq!(b.try_recv::<u32>().unwrap(), 7);
    assert!(sender.join().unwrap().success());
    // The sender exited: what it sent is there, then the end of the stream.
    assert_eq!(b.try_recv::<u32>().unwrap(), 8);
    assert!(matches!(b.try_recv::<u32>(), Err(Error::Eof)));
    let (reader, writer) = Pipe::simplex().unwrap();
    assert!(matches!(writer.try_recv::<u32>(), Err(Error::Misuse)));
    drop(reader);
}

fn iter_ends_at_eof() {
    let (a, b) = Pipe::new().unwrap();
    let sender = Process::fork(move || {
        for i in 0..100u32 {
            a.send(&i).unwrap();
        }
    })
    .unwrap();
    let got: Vec<u32> = b.iter::<u32>().map(Result::unwrap).collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert!(sender.join().unwrap().success());
    // Ended: the stream is closed and drained.
    assert!(matches!(b.recv::<u32>(), Err(Error::Eof)));
    assert!(b.iter::<u32>().next().is_none());
}

fn iter_yields_another_error_once_then_ends() {
    // The sender dies without closing: PeerDied, once.
    let (a, b) = Pipe::new().unwrap();
    let sender = Process::fork(move || {
        for i in 0..3u32 {
            a.send(&i).unwrap();
        }
        // SAFETY: dies as a crash would, without closing its end.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    let mut it = b.iter::<u32>();
    for i in 0..3u32 {
        assert_eq!(it.next().unwrap().unwrap(), i);
    }
    let e = it.next();
    assert!(matches!(e, Some(Err(Error::PeerDied))), "{e:?}");
    assert!(it.next().is_none());
    assert!(it.next().is_none());
    sender.join().unwrap();
    // A message of another type: Decode, once; the message stays for the next call.
    let (a, b) = Pipe::new().unwrap();
    let sender = Process::fork(move || {
        a.send(&1u32).unwrap();
        a.send(&"text").unwrap();
        a.send(&2u32).unwrap();
    })
    .unwrap();
    let got: Vec<_> = b.iter::<u32>().collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(*got[0].as_ref().unwrap(), 1);
    assert!(is_kept_decode_error(&got[1]), "{got:?}");
    assert_eq!(b.recv::<String>().unwrap(), "text");
    assert_eq!(b.iter::<u32>().map(Result::unwrap).collect::<Vec<_>>(), [2]);
    assert!(sender.join().unwrap().success());
}

fn wait_strategies_all_deliver() {
    for w in [
        WaitStrategy::Adaptive,
        WaitStrategy::Sleep,
        WaitStrategy::SpinThenSleep(Duration::from_micros(20)),
    ] {
        let (a, b) = Pipe::builder().wait_strategy(w).build().unwrap();
        assert_eq!(a.wait_strategy(), w);
        let child = Process::fork(move || {
            while let Ok(x) = b.recv::<u32>() {
                b.send(&(x + 1)).unwrap();
            }
        })
        .unwrap();
        for i in 0..2000u32 {
            a.send(&i).unwrap();
            assert_eq!(a.recv::<u32>().unwrap(), i + 1);
        }
        drop(a);
        assert!(child.join().unwrap().success());
    }
}

fn capacity_out_of_range() {
    assert!(matches!(
        Pipe::builder().capacity(0).build(),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        Pipe::builder().capacity(usize::MAX).build(),
        Err(Error::Invalid(_))
    ));
    let (a, _b) = Pipe::builder().capacity(5000).build().unwrap();
    assert_eq!(a.capacity(), 8192);
}

fn every_blocking_call_has_a_timeout_form() {
    // Connection is Send (it may move to a thread or a child) and not Sync.
    fn is_send<T: Send>() {}
    is_send::<shmwire::Connection>();
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let t = Duration::from_millis(20);
    // SAFETY (each `_with` call here): both ends are ours.
    assert!(matches!(
        unsafe { b.recv_with_timeout(t, |x| x.len()) },
        Err(Error::Timeout)
    ));
    while a.send_bytes_timeout(&[0; 1000], t).is_ok() {}
    assert!(matches!(
        a.send_timeout(&vec![0u8; 1000], t),
        Err(Error::Timeout)
    ));
    let mut called = false;
    assert!(matches!(
        unsafe { a.send_with_timeout(1000, t, |_| called = true) },
        Err(Error::Timeout)
    ));
    assert!(!called);
    assert_eq!(
        unsafe { b.recv_with_timeout(t, |x| x.len()) }.unwrap(),
        1000
    );
    // Each receive form, on an empty ring.
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    assert!(matches!(b.recv_timeout::<u8>(t), Err(Error::Timeout)));
    assert!(matches!(b.recv_pod_timeout::<u64>(t), Err(Error::Timeout)));
    assert!(matches!(b.recv_bytes_timeout(t), Err(Error::Timeout)));
    let mut buf = [0u8; 16];
    assert!(matches!(
        b.recv_bytes_into_timeout(&mut buf, t),
        Err(Error::Timeout)
    ));
    assert!(!b.poll(t).unwrap());
    // Each send form, on a full ring: nothing is sent.
    let mut queued = 0;
    while a.send_pod_timeout(&9u8, t).is_ok() {
        queued += 1;
    }
    assert!(matches!(a.send_pod_timeout(&1u8, t), Err(Error::Timeout)));
    assert!(matches!(a.send_timeout(&1u8, t), Err(Error::Timeout)));
    assert!(matches!(a.send_bytes_timeout(&[1], t), Err(Error::Timeout)));
    for _ in 0..queued {
        assert_eq!(b.recv_pod_timeout::<u8>(t).unwrap(), 9);
    }
    assert!(matches!(b.try_recv::<u8>(), Err(Error::Empty)));
    // The pod forms stream a value larger than half the ring, within the time given.
    let child = Process::fork(move || {
        let v = b
            .recv_pod_timeout::<[u64; 1024]>(Duration::from_secs(10))
            .unwrap();
        assert_eq!(v, [3u64; 1024]);
    })
    .unwrap();
    a.send_pod_timeout(&[3u64; 1024], Duration::from_secs(10))
        .unwrap();
    assert!(child.join().unwrap().success());
}

fn two_writers_is_misuse() {
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let mut queued = 0;
    while a
        .send_bytes_timeout(&[1; 512], Duration::from_millis(50))
        .is_ok()
    {
        queued += 1;
    }
    let a_ref = &a;
    // The child blocks writing a forked copy of `a` (holding its write claim) on the full ring.
    let child = Process::fork(|| {
        a_ref
            .send_bytes_timeout(&[2; 512], Duration::from_secs(10))
            .unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Duration::from_millis(100);
    assert!(matches!(
        a.send_bytes_timeout(&[3; 512], t),
        Err(Error::Busy)
    ));
    assert!(matches!(a.send_timeout(&3u8, t), Err(Error::Busy)));
    // SAFETY: the only other user of the end is our child, which trusts us.
    assert!(matches!(
        unsafe { a.send_with_timeout(8, t, |_| ()) },
        Err(Error::Busy)
    ));
    for _ in 0..queued {
        assert_eq!(b.recv_bytes().unwrap(), [1; 512]);
    }
    assert_eq!(b.recv_bytes().unwrap(), [2; 512]);
    assert!(child.join().unwrap().success());
    // The child is done with it: the parent may write now.
    a.send(&4u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 4);
    assert!(!b.poll(Duration::ZERO).unwrap());
}

fn sender_does_not_take_messages_another_holder_reads() {
    // End 0 is used by us (we send a large message on it) and read by a second process: one that
    // opened it by name (a holder of its own), or a forked copy of ours that has read from it. The
    // peer sends 64 messages before it reads anything, so both rings fill and both senders wait for
    // room: our waiting send must not drain the messages meant for the reader into a backlog of our
    // own.
    for by_name in [true, false] {
        let name = format!("shared-end-{}", std::process::id());
        let (a, b) = Pipe::builder().name(&name).capacity(4096).build().unwrap();
        let (ready_r, ready_w) = Pipe::simplex().unwrap();
        let peer = Process::fork(move || {
            for i in 0..64u8 {
                b.send_bytes(&[i; 1000]).unwrap();
            }
            assert_eq!(b.recv_bytes().unwrap(), vec![9u8; 64 << 10]);
        })
        .unwrap();
        let a_ref = &a;
        let reader = Process::fork(|| {
            let opened;
            let end = if by_name {
                opened = Pipe::open(&name, 0).unwrap();
                ready_w.send(&()).unwrap(); // a holder now
                &opened
            } else {
                a_ref
            };
            for i in 0..64u8 {
                let m = end.recv_bytes_timeout(Duration::from_secs(10));
                assert_eq!(m.unwrap(), [i; 1000], "message {i}");
                if i == 0 && !by_name {
                    ready_w.send(&()).unwrap(); // its last reader now
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
        .unwrap();
        ready_r.recv::<()>().unwrap();
        a.send_bytes(&vec![9u8; 64 << 10]).unwrap();
        assert!(
            reader.join().unwrap().success(),
            "the reader lost messages (by name: {by_name})"
        );
        assert!(peer.join().unwrap().success());
    }
}

/// Serializes as `u64::MAX` on even calls; on odd calls it fails (`fail`) or gives a shorter value
/// (0).
struct Flaky {
    calls: std::cell::Cell<u32>,
    fail: bool,
}

impl serde::Serialize for Flaky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.calls.get();
        self.calls.set(n + 1);
        match (n % 2, self.fail) {
            (0, _) => s.serialize_u64(u64::MAX),
            (_, true) => Err(serde::ser::Error::custom("flaky")),
            (_, false) => s.serialize_u64(0),
        }
    }
}

fn failed_encoding_sends_nothing() {
    struct Never;
    impl serde::Serialize for Never {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("never"))
        }
    }
    let (a, b) = Pipe::new().unwrap();
    assert!(matches!(a.send(&Never), Err(Error::Encode(_))));
    assert!(matches!(a.send(&vec![Never]), Err(Error::Encode(_))));
    // A value that encodes differently from one pass to the next: whatever `send` says, what arrives
    // is one well-formed message if it said Ok, and nothing if it failed.
    for fail in [true, false] {
        let flaky = Flaky {
            calls: std::cell::Cell::new(0),
            fail,
        };
        let r = a.send(&flaky);
        a.send(&7u64).unwrap();
        if r.is_ok() {
            // One of the values it encodes as, whole.
            let v = b.recv::<u64>().unwrap();
            assert!(v == u64::MAX || v == 0, "{v}");
        }
        let next = b.recv::<u64>();
        assert!(matches!(next, Ok(7)), "send said {r:?}; then came {next:?}");
    }
    assert!(!b.poll(Duration::ZERO).unwrap());
}

/// A level-triggered epoll instance watching one descriptor.
struct Epoll(i32);

impl Epoll {
    fn new(fd: std::os::fd::BorrowedFd<'_>) -> Epoll {
        // SAFETY: plain syscalls with valid arguments.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            assert!(ep >= 0);
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            assert_eq!(
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev),
                0
            );
            Epoll(ep)
        }
    }

    /// Whether the descriptor became readable within `ms`.
    fn wait(&self, ms: i32) -> bool {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: a valid epoll descriptor and room for one event.
            let n = unsafe { libc::epoll_wait(self.0, &mut ev, 1, ms) };
            if n >= 0 {
                return n > 0;
            }
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EINTR)
            );
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

fn as_fd_under_epoll_wakes_and_does_not_spin() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        for i in 0..20u32 {
            std::thread::sleep(Duration::from_millis(20));
            a.send(&i).unwrap();
        }
    })
    .unwrap();
    let ep = Epoll::new(b.as_fd());
    let start = Instant::now();
    let (mut got, mut wakeups) = (Vec::new(), 0u64);
    loop {
        if b.prepare_poll().unwrap() {
            match b.recv::<u32>() {
                Ok(x) => got.push(x),
                Err(Error::Eof) => break,
                Err(e) => panic!("{e:?}"),
            }
            continue;
        }
        assert!(ep.wait(5000), "nothing woke the poller (got {got:?})");
        wakeups += 1;
        assert!(
            wakeups < 1000,
            "a level-triggered loop spins: {wakeups} wake-ups for {} messages",
            got.len()
        );
    }
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    // One wake-up per message and for the end, plus at most the periodic ticks (one per probe
    // interval), with room to spare.
    let ticks = (start.elapsed().as_millis() / PROBE_INTERVAL.as_millis()) as u64 + 1;
    assert!(wakeups <= 21 + 2 * ticks, "{wakeups} wake-ups");
    assert!(child.join().unwrap().success());
}

fn as_fd_wakes_when_the_peer_is_killed() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        let _keep = a;
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let pid = child.pid();
    let ep = Epoll::new(b.as_fd());
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: kills our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        Instant::now()
    });
    while !b.prepare_poll().unwrap() {
        assert!(ep.wait(5000), "the poller was never woken");
    }
    let noticed = Instant::now();
    let killed = killer.join().unwrap();
    assert!(
        noticed - killed <= PROBE_INTERVAL * 20,
        "noticed after {:?}",
        noticed - killed
    );
    assert!(matches!(b.recv::<u8>(), Err(Error::PeerDied)));
    child.join().unwrap();
}

fn as_fd_of_a_named_pipe_is_signalled() {
    let name = format!("polled-{}", std::process::id());
    let (a, b) = Pipe::builder().name(&name).build().unwrap();
    let n = name.clone();
    let child = Process::fork(move || {
        let mine = Pipe::open(&n, 1).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        mine.send(&7u32).unwrap();
    })
    .unwrap();
    let ep = Epoll::new(a.as_fd());
    let start = Instant::now();
    while !a.prepare_poll().unwrap() {
        assert!(ep.wait(5000), "the poller was never woken");
    }
    assert!(start.elapsed() < Duration::from_millis(200) + PROBE_INTERVAL * 20);
    assert_eq!(a.recv::<u32>().unwrap(), 7);
    assert!(child.join().unwrap().success());
    drop(b);
}

fn sender_does_not_take_messages_a_borrowing_child_will_read() {
    // End 0 is ours (we send a large message on it) and a forked child reads it through a borrowed
    // handle, starting only after a while: it holds no role and has read nothing when both rings
    // fill. Our waiting send must not drain the peer's messages, meant for that child, into a
    // backlog of our own.
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let peer = Process::fork(move || {
        for i in 0..64u8 {
            b.send_bytes(&[i; 1000]).unwrap();
        }
        assert_eq!(b.recv_bytes().unwrap(), vec![9u8; 64 << 10]);
    })
    .unwrap();
    let a_ref = &a;
    let reader = Process::fork(|| {
        std::thread::sleep(Duration::from_millis(300));
        for i in 0..64u8 {
            let m = a_ref.recv_bytes_timeout(Duration::from_secs(10));
            assert_eq!(m.unwrap(), [i; 1000], "message {i}");
        }
    })
    .unwrap();
    a.send_bytes(&vec![9u8; 64 << 10]).unwrap();
    assert!(reader.join().unwrap().success(), "the reader lost messages");
    assert!(peer.join().unwrap().success());
}

fn a_half_received_message_is_not_ready() {
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let child = Process::fork(move || {
        b.send_bytes(&vec![7u8; 64 << 10]).unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200)); // the ring is full: the sender waits mid-message
    child.signal(libc::SIGSTOP).unwrap();
    // What is in the ring arrives and is kept; the rest cannot come while the sender is stopped.
    let r = a.recv_bytes_timeout(Duration::from_millis(200));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(
        !a.prepare_poll().unwrap(),
        "prepare_poll reports a half-received message ready"
    );
    let t = Instant::now();
    let ready = shmwire::wait(&[&a], Duration::from_millis(300)).unwrap();
    assert!(
        ready.is_empty(),
        "wait reports a half-received message ready (after {:?})",
        t.elapsed()
    );
    child.signal(libc::SIGCONT).unwrap();
    assert_eq!(a.recv_bytes().unwrap(), vec![7u8; 64 << 10]);
    assert!(child.join().unwrap().success());
}
