//! The socket transports: `unix:` and `tcp://` Connections between real processes, Python 3's
//! `multiprocessing.connection` as the peer in both directions (its framing, both forms of its
//! authkey handshake, and pickled objects under the `pickle` feature), the limits on what a peer
//! can make us do, `wait()` over sockets and shared memory together, objects served across hosts
//! (for real: two network namespaces joined by a veth pair), and the fuzz corpus replayed.

mod common;

use common::skip;
use shmwire::{
    Client, Connection, Error, Listener, Manager, Pipe, Process, Queue, Remote, Server, Transport,
    wait,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    common::run(tests![
        listener_reports_the_address_it_got,
        bad_addresses_are_refused_with_a_clear_error,
        tcp_over_ipv4_and_ipv6_loopback,
        unix_socket_between_processes,
        unix_path_is_removed_and_a_stale_one_reclaimed,
        a_binder_stopped_before_it_listens_never_shares_its_address,
        every_call_has_its_timeout_form_over_a_socket,
        eof_at_a_boundary_and_a_truncated_frame_is_an_error,
        a_reset_is_eof_and_sending_to_a_closed_peer_is_broken_pipe,
        hostile_bytes_are_refused_without_a_panic,
        the_frame_limit_skips_a_longer_message,
        a_big_message_passes_in_pieces,
        the_escape_for_long_messages_between_our_ends,
        send_timeout_on_a_full_socket_never_splits_a_message,
        flush_timeout_finishes_a_send_cut_short,
        wait_takes_socket_and_shared_memory_connections_together,
        pods_are_little_endian_on_the_wire,
        authkey_right_and_wrong_between_our_ends,
        a_peer_stopping_mid_handshake_times_out,
        python_client_and_our_listener_legacy_digest,
        our_client_and_a_python_listener_legacy_digest,
        wrong_key_is_refused_both_ways_with_python,
        python_over_a_unix_socket,
        the_escape_with_python_both_ways,
        current_sha256_handshake_against_our_own_peer,
        python_objects_both_ways,
        echo_server_example_serves_python,
        served_queue_used_by_two_client_processes_at_once,
        served_dict_and_list_used_by_two_client_processes_at_once,
        a_served_client_slow_through_the_handshake_is_served,
        a_remote_call_to_a_stopped_server_ends_within_its_bound,
        stopping_a_server_ends_the_connections_it_serves,
        shared_memory_handle_from_another_host_is_refused,
        across_hosts_in_two_network_namespaces,
        fuzz_corpus_replays_without_a_panic,
        a_small_pickle_never_builds_more_than_its_bound,
    ]);
}

const LONG: Duration = Duration::from_secs(10);

/// A pair of connected TCP Connections over loopback: (accepted, connected).
fn tcp_pair() -> (Connection, Connection) {
    let l = Listener::bind("tcp://127.0.0.1:0").unwrap();
    let c = Client::connect_timeout(&l.address(), LONG).unwrap();
    (l.accept_timeout(LONG).unwrap(), c)
}

fn listener_reports_the_address_it_got() {
    let l = Listener::bind("tcp://127.0.0.1:0").unwrap();
    let a = l.address();
    let port: u16 = a.rsplit(':').next().unwrap().parse().unwrap();
    assert!(a.starts_with("tcp://127.0.0.1:") && port != 0, "{a}");
    // The port is really ours: a plain TCP client reaches it.
    TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(matches!(Listener::bind(&a), Err(Error::Exists)));
    let dir = tempdir();
    let path = format!("unix:{dir}/l.sock");
    let u = Listener::bind(&path).unwrap();
    assert_eq!(u.address(), path);
    assert!(matches!(Listener::bind(&path), Err(Error::Exists)));
    drop(u);
    let _ = std::fs::remove_dir_all(dir);
}

fn bad_addresses_are_refused_with_a_clear_error() {
    for bad in [
        "tcp://::1:5",
        "tcp://host",
        "udp://h:1",
        "tcp://h:70000",
        "unix:",
    ] {
        match Listener::bind(bad) {
            Err(Error::Invalid(msg)) => assert!(!msg.is_empty()),
            other => panic!("{bad}: {other:?}"),
        }
        assert!(
            matches!(Client::connect(bad), Err(Error::Invalid(_))),
            "{bad}"
        );
    }
    // Nobody listens: refused is NotFound, as for a name nobody bound.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = format!("tcp://{free}");
    assert!(matches!(
        Client::connect_timeout(&addr, LONG),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        Client::connect("unix:/nonexistent-dir/s"),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        Listener::bind_with_authkey("tcp://127.0.0.1:0", b""),
        Err(Error::Invalid(_))
    ));
}

/// Our ends over `addr`: a forked client that echoes, checked with messages of many sizes.
fn echo_between_processes(addr_of: impl Fn(&Listener) -> String, bind: &str) {
    let l = Listener::bind(bind).unwrap();
    let addr = addr_of(&l);
    let p = Process::fork(move || {
        let c = Client::connect_timeout(&addr, LONG).unwrap();
        while let Ok(m) = c.recv_bytes() {
            c.send_bytes(&m).unwrap();
        }
    })
    .unwrap();
    let conn = l.accept_timeout(LONG).unwrap();
    for size in [0usize, 1, 4095, 4096, 70_000, 3 << 20] {
        let m: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        conn.send_bytes(&m).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), m, "size {size}");
    }
    conn.send(&("typed", 7u64, Some(1.5f64))).unwrap();
    let back = conn.recv_bytes().unwrap();
    conn.send_bytes(&back).unwrap();
    let v: (String, u64, Option<f64>) = conn.recv().unwrap();
    assert_eq!(v, ("typed".to_string(), 7, Some(1.5)));
    drop(conn);
    assert!(p.join().unwrap().success());
}

fn tcp_over_ipv4_and_ipv6_loopback() {
    echo_between_processes(|l| l.address(), "tcp://127.0.0.1:0");
    let (a, b) = tcp_pair();
    assert_eq!(a.transport(), Transport::Tcp);
    assert_eq!(b.dead_peer_timeout(), Some(shmwire::DEAD_PEER_TIMEOUT));
    drop((a, b));
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        println!("(no IPv6 loopback here: the ::1 half is not run)");
        return;
    }
    echo_between_processes(
        |l| {
            let a = l.address();
            assert!(a.starts_with("tcp://[::1]:"), "{a}");
            a
        },
        "tcp://[::1]:0",
    );
}

fn tempdir() -> String {
    let d = format!("/tmp/shmwire-transport-{}", std::process::id());
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn unix_socket_between_processes() {
    let dir = tempdir();
    let path = format!("unix:{dir}/echo.sock");
    echo_between_processes(|l| l.address(), &path);
    let l = Listener::bind(&path).unwrap();
    let c = Client::connect(&path).unwrap();
    let a = l.accept().unwrap();
    assert_eq!(a.transport(), Transport::Unix);
    assert_eq!(c.dead_peer_timeout(), None);
    drop((a, c, l));
    let _ = std::fs::remove_dir_all(dir);
}

fn unix_path_is_removed_and_a_stale_one_reclaimed() {
    let dir = tempdir();
    let sock = format!("{dir}/s.sock");
    let path = format!("unix:{sock}");
    let l = Listener::bind(&path).unwrap();
    assert!(std::path::Path::new(&sock).exists());
    drop(l);
    assert!(
        !std::path::Path::new(&sock).exists(),
        "dropped: the path goes"
    );
    // A listener that died leaves its path: the next bind reclaims it.
    let p = Process::fork({
        let path = path.clone();
        move || {
            let l = Listener::bind(&path).unwrap();
            std::mem::forget(l);
            // SAFETY: plain syscall: the child dies without running destructors.
            unsafe { libc::_exit(0) };
        }
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    assert!(std::path::Path::new(&sock).exists(), "left by the dead");
    let l = Listener::bind(&path).unwrap();
    drop(l);
    // A path that is not a socket is never taken.
    std::fs::write(&sock, b"data").unwrap();
    assert!(matches!(Listener::bind(&path), Err(Error::Exists)));
    assert_eq!(std::fs::read(&sock).unwrap(), b"data");
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether process `pid` is stopped (state `T`).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('T'))
    })
}

/// Two processes bind one address; the first is stopped (SIGSTOP) after its socket is bound and
/// before it listens. At a `unix:` path such a socket is refused, as a dead listener's is, so a
/// binder that puts it at the path before it listens lets the second binder take it for stale and
/// remove it: two winners, the first listening on a path that no longer leads to it. (A TCP port
/// bound with `SO_REUSEADDR` and not listening may be bound again; the kernel lets only one of the
/// two listen.) Exactly one must win, the other get `Error::Exists`, and a client connecting by the
/// address reach the winner; nothing is left in the socket's directory once both are gone.
fn a_binder_stopped_before_it_listens_never_shares_its_address() {
    let dir = tempdir();
    let _ = std::fs::remove_dir_all(&dir);
    let dir = tempdir();
    stopped_binder_and_another(&format!("unix:{dir}/stopped.sock"));
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "left in {dir}: {left:?}");
    let _ = std::fs::remove_dir_all(dir);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    stopped_binder_and_another(&format!("tcp://127.0.0.1:{port}"));
}

/// See [`a_binder_stopped_before_it_listens_never_shares_its_address`].
fn stopped_binder_and_another(addr: &str) {
    use shmwire::hooks::{__arm, Point};
    // Whether the client reached `l`: a connection that sends 1 within `LONG`. (A binder that
    // finds the address taken probes whether its listener lives: a connection that hangs up.)
    fn reached(l: &Listener) -> bool {
        let t = Instant::now();
        while let Some(left) = LONG.checked_sub(t.elapsed()) {
            match l.accept_timeout(left).map(|c| c.recv_timeout::<u8>(LONG)) {
                Ok(Ok(v)) => return v == 1,
                Ok(Err(Error::Eof)) => {}
                _ => return false,
            }
        }
        false
    }
    // The first binder: 0 won and reached by the client, 2 `Exists`, 3 another error, 4 won but
    // nobody reached it.
    let first = Process::fork_with({
        let addr = addr.to_owned();
        move || {
            __arm(Point::BoundNotListening, libc::SIGSTOP, 0);
            match Listener::bind(&addr) {
                Ok(l) => match reached(&l) {
                    true => 0,
                    false => 4,
                },
                Err(Error::Exists) => 2,
                Err(e) => {
                    eprintln!("the first bind: {e:?}");
                    3
                }
            }
        }
    })
    .unwrap();
    let t = Instant::now();
    while !stopped(first.pid()) {
        assert!(
            t.elapsed() < LONG,
            "the first binder never stopped at its hook"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let second = Listener::bind(addr);
    first.signal(libc::SIGCONT).unwrap();
    // A client connects by the address (while nobody listens there yet, again) and sends 1.
    let client = Process::fork_with({
        let addr = addr.to_owned();
        move || {
            let t = Instant::now();
            loop {
                match Client::connect_timeout(&addr, LONG) {
                    Ok(c) => {
                        c.send(&1u8).unwrap();
                        return 0;
                    }
                    Err(Error::NotFound) if t.elapsed() < LONG => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => {
                        eprintln!("the client: {e:?}");
                        return 1;
                    }
                }
            }
        }
    })
    .unwrap();
    let second_reached = second.as_ref().ok().map(reached);
    let first_code = first.join().unwrap().code();
    assert!(
        client.join().unwrap().success(),
        "{addr}: the client connected"
    );
    let first_won = matches!(first_code, Some(0 | 4));
    assert_eq!(
        first_won as u8 + second.is_ok() as u8,
        1,
        "{addr}: one winner: the first binder's outcome {first_code:?} (0: won and reached, 2: \
         name taken, 3: other error, 4: won but nobody reached it), the second's {second:?} \
         (reached: {second_reached:?})"
    );
    if first_won {
        assert!(matches!(second, Err(Error::Exists)), "{addr}: {second:?}");
        assert_eq!(
            first_code,
            Some(0),
            "{addr}: the client reached the first binder"
        );
    } else {
        assert_eq!(first_code, Some(2), "{addr}: the first binder got `Exists`");
        assert_eq!(
            second_reached,
            Some(true),
            "{addr}: the client reached the second binder"
        );
    }
}

fn every_call_has_its_timeout_form_over_a_socket() {
    let (a, b) = tcp_pair();
    let t = Duration::from_millis(50);
    let (r, took) = common::within(Duration::from_secs(2), || a.recv_bytes_timeout(t));
    assert!(
        matches!(r, Err(Error::Timeout)) && took >= t,
        "{r:?} {took:?}"
    );
    assert!(matches!(a.recv_timeout::<u32>(t), Err(Error::Timeout)));
    assert!(matches!(a.recv_pod_timeout::<u32>(t), Err(Error::Timeout)));
    let mut buf = [0u8; 8];
    assert!(matches!(
        a.recv_bytes_into_timeout(&mut buf, t),
        Err(Error::Timeout)
    ));
    assert!(matches!(a.try_recv::<u32>(), Err(Error::Empty)));
    assert!(!a.poll(t).unwrap());
    assert!(!a.poll(Duration::ZERO).unwrap());
    // SAFETY: private buffers over a socket.
    assert!(matches!(
        unsafe { a.recv_with_timeout(t, |b| b.len()) },
        Err(Error::Timeout)
    ));
    assert!(!a.prepare_poll().unwrap());
    accept_and_connect_time_out();
    // Each message arrives whole through every form.
    b.send_timeout(&5u32, t).unwrap();
    b.send_pod_timeout(&6u32, t).unwrap();
    b.send_bytes_timeout(b"seven", t).unwrap();
    // SAFETY: private buffers over a socket.
    unsafe { b.send_with_timeout(5, t, |m| m.copy_from_slice(b"eight")) }.unwrap();
    b.send_bytes(b"too long").unwrap();
    assert!(a.poll(LONG).unwrap());
    assert_eq!(a.recv::<u32>().unwrap(), 5);
    assert_eq!(a.recv_pod::<u32>().unwrap(), 6);
    assert_eq!(a.recv_bytes().unwrap(), b"seven");
    // SAFETY: a private buffer.
    assert_eq!(unsafe { a.recv_with(|m| m.to_vec()) }.unwrap(), b"eight");
    assert!(matches!(
        a.recv_bytes_into(&mut buf[..4]),
        Err(Error::BufferTooShort { needed: 8 })
    ));
    assert_eq!(a.recv_bytes_into(&mut buf).unwrap(), 8); // it stayed
    // A message that is not a T stays.
    b.send(&"text").unwrap();
    assert!(matches!(a.recv::<u64>(), Err(Error::Decode { .. })));
    assert_eq!(a.recv::<String>().unwrap(), "text");
    b.close();
    assert!(matches!(b.send_bytes(b"x"), Err(Error::Misuse)));
    assert!(matches!(a.recv_bytes_timeout(LONG), Err(Error::Eof)));
    assert!(matches!(a.poll(LONG), Err(Error::Eof)));
}

fn accept_and_connect_time_out() {
    let l = Listener::bind("tcp://127.0.0.1:0").unwrap();
    let t = Duration::from_millis(50);
    let (r, took) = common::within(Duration::from_secs(2), || l.accept_timeout(t));
    assert!(matches!(r, Err(Error::Timeout)) && took >= t);
}

fn eof_at_a_boundary_and_a_truncated_frame_is_an_error() {
    let l = Listener::bind("tcp://127.0.0.1:0").unwrap();
    let port = port_of(&l.address());
    let p = Process::fork(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&[0, 0, 0, 2, b'o', b'k']).unwrap();
        // A frame announcing 100 bytes, of which 10 come before the close.
        s.write_all(&[0, 0, 0, 100]).unwrap();
        s.write_all(&[1; 10]).unwrap();
    })
    .unwrap();
    let c = l.accept_timeout(LONG).unwrap();
    assert_eq!(c.recv_bytes().unwrap(), b"ok");
    match c.recv_bytes() {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
            assert!(e.to_string().contains("middle of a message"), "{e}");
        }
        other => panic!("a truncated frame must be an error, not {other:?}"),
    }
    // It stays so: the stream is out of step.
    assert!(matches!(c.recv_bytes(), Err(Error::Io(_))));
    assert!(p.join().unwrap().success());
    // A clean close between messages is Eof.
    let p = Process::fork(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&[0, 0, 0, 0]).unwrap();
    })
    .unwrap();
    let c = l.accept_timeout(LONG).unwrap();
    assert_eq!(c.recv_bytes().unwrap(), b"");
    assert!(matches!(c.recv_bytes(), Err(Error::Eof)));
    assert!(p.join().unwrap().success());
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn a_reset_is_eof_and_sending_to_a_closed_peer_is_broken_pipe() {
    let l = Listener::bind("tcp://127.0.0.1:0").unwrap();
    let addr = l.address();
    // A peer killed with data unread by it: its kernel resets the connection.
    let p = Process::fork(move || {
        let c = Client::connect_timeout(&addr, LONG).unwrap();
        c.send_bytes(b"last words").unwrap();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let c = l.accept_timeout(LONG).unwrap();
    c.send_bytes(b"never read").unwrap();
    assert_eq!(c.recv_bytes().unwrap(), b"last words");
    p.kill().unwrap();
    let _ = p.join();
    let (r, _) = common::within(LONG, || c.recv_bytes());
    assert!(matches!(r, Err(Error::Eof)), "{r:?}");
    // Sending to it now: BrokenPipe (no SIGPIPE), within a few sends.
    let mut got = None;
    for _ in 0..100 {
        match c.send_bytes(&[0u8; 1000]) {
            Ok(()) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                got = Some(e);
                break;
            }
        }
    }
    assert!(matches!(got, Some(Error::BrokenPipe)), "{got:?}");
    p.kill_on_drop(false);
}

fn hostile_bytes_are_refused_without_a_panic() {
    let l = Listener::bind("tcp://127.0.0.1:0").unwrap();
    let port = port_of(&l.address());
    let mut rng = common::Rng(0x5eed);
    for round in 0..40 {
        let mut junk = vec![0u8; 1 + rng.below(300) as usize];
        rng.fill(&mut junk);
        if round == 0 {
            junk = (-7i32).to_be_bytes().to_vec(); // a length no peer sends
        }
        if round == 1 {
            // The escape announcing 2^63 bytes: refused, never allocated.
            junk = [&[0xffu8; 4][..], &(1u64 << 63).to_be_bytes()].concat();
        }
        let p = Process::fork(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let _ = s.write_all(&junk);
        })
        .unwrap();
        let c = l.accept_timeout(LONG).unwrap();
        c.set_max_message(1 << 20).unwrap();
        // Whatever came, every call returns (an error or a message), and ends at the end.
        let mut n = 0;
        loop {
            match c.recv_bytes_timeout(LONG) {
                Ok(_) | Err(Error::TooLarge) => n += 1,
                Err(Error::Eof | Error::Io(_)) => break,
                Err(e) => panic!("round {round}: {e:?}"),
            }
            assert!(n < 1000);
        }
        assert!(p.join().unwrap().success());
        if round == 0 {
            match c.recv_bytes() {
                Err(Error::Io(e)) => assert!(e.to_string().contains("-7"), "{e}"),
                other => panic!("{other:?}"),
            }
        }
    }
}

fn the_frame_limit_skips_a_longer_message() {
    let (a, b) = tcp_pair();
    assert_eq!(a.max_message(), Some(shmwire::DEFAULT_MAX_MESSAGE));
    const { assert!(shmwire::DEFAULT_MAX_MESSAGE >= 1 << 30) };
    a.set_max_message(1000).unwrap();
    let p = Process::fork(move || {
        b.send_bytes(&vec![9u8; 5 << 20]).unwrap(); // skipped as it arrives
        b.send_bytes(b"after").unwrap();
    })
    .unwrap();
    assert!(matches!(a.recv_bytes_timeout(LONG), Err(Error::TooLarge)));
    assert_eq!(a.recv_bytes_timeout(LONG).unwrap(), b"after");
    assert!(p.join().unwrap().success());
}

fn a_big_message_passes_in_pieces() {
    let size = if common::long() { 256 << 20 } else { 64 << 20 };
    let (a, b) = tcp_pair();
    let p = Process::fork(move || {
        let m: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        b.send_bytes(&m).unwrap();
        let back = b.recv_bytes().unwrap();
        assert_eq!(back, b"checked");
    })
    .unwrap();
    let m = a.recv_bytes_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(m.len(), size);
    assert!(m.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
    a.send_bytes(b"checked").unwrap();
    assert!(p.join().unwrap().success());
}

fn the_escape_for_long_messages_between_our_ends() {
    let (a, b) = tcp_pair();
    b.__set_escape_threshold(10);
    let p = Process::fork(move || {
        b.send_bytes(b"short").unwrap(); // 5 <= 10: the 4-byte length
        b.send_bytes(&[3u8; 100]).unwrap(); // over: -1 and an 8-byte length
    })
    .unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"short");
    assert_eq!(a.recv_bytes().unwrap(), vec![3u8; 100]);
    assert!(p.join().unwrap().success());
    // On the wire, as CPython writes it.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", l.local_addr().unwrap());
    let c = Client::connect(&addr).unwrap();
    c.__set_escape_threshold(10);
    c.send_bytes(&[7u8; 11]).unwrap();
    let (mut s, _) = l.accept().unwrap();
    let mut got = [0u8; 12 + 11];
    s.read_exact(&mut got).unwrap();
    assert_eq!(
        &got[..12],
        &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 11]
    );
    assert_eq!(&got[12..], &[7u8; 11]);
}

fn send_timeout_on_a_full_socket_never_splits_a_message() {
    let (a, b) = tcp_pair();
    // Nobody reads `b`: sends fill the buffers, then time out.
    let big = vec![5u8; 4 << 20];
    let mut sent = 0u32;
    let mut timeouts = 0;
    for _ in 0..64u32 {
        let mut m = big.clone();
        m[..4].copy_from_slice(&sent.to_le_bytes());
        let (r, _) = common::within(Duration::from_secs(5), || {
            a.send_bytes_timeout(&m, Duration::from_millis(20))
        });
        match r {
            Ok(()) => sent += 1,
            Err(Error::Timeout) => {
                timeouts += 1;
                if timeouts > 3 {
                    break;
                }
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(timeouts > 0, "the buffers never filled");
    let p = Process::fork(move || {
        // Every message that counted as sent arrives whole, in order, and nothing else.
        for i in 0..sent {
            let m = b.recv_bytes_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(m.len(), 4 << 20);
            assert_eq!(u32::from_le_bytes(m[..4].try_into().unwrap()), i);
        }
        let last = b.recv_bytes_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(last, b"done");
    })
    .unwrap();
    a.send_bytes(b"done").unwrap(); // finishes any message left part way first
    assert!(p.join().unwrap().success());
}

/// A timed send cut short keeps its rest; `flush_timeout` writes it, in pieces of a timeout each
/// (what a Python caller does between checks for Ctrl-C): `Timeout` while the peer reads nothing,
/// `Ok` once all is out, and the peer gets the message whole.
fn flush_timeout_finishes_a_send_cut_short() {
    let (a, b) = tcp_pair();
    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    assert!(a.flush_timeout(Duration::ZERO).is_ok(), "nothing left yet");
    a.send_bytes_timeout(&big, Duration::from_millis(20))
        .unwrap();
    let (r, _) = common::within(Duration::from_secs(5), || {
        a.flush_timeout(Duration::from_millis(20))
    });
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    let want = big.clone();
    let p = Process::fork(move || {
        let m = b.recv_bytes_timeout(Duration::from_secs(30)).unwrap();
        assert!(m == want, "the message arrived changed");
        assert_eq!(
            b.recv_bytes_timeout(Duration::from_secs(30)).unwrap(),
            b"done"
        );
    })
    .unwrap();
    let t0 = Instant::now();
    loop {
        match a.flush_timeout(Duration::from_millis(50)) {
            Ok(()) => break,
            Err(Error::Timeout) => assert!(t0.elapsed() < Duration::from_secs(30)),
            Err(e) => panic!("{e:?}"),
        }
    }
    a.send_bytes(b"done").unwrap();
    assert!(p.join().unwrap().success());
}

fn wait_takes_socket_and_shared_memory_connections_together() {
    let (ta, tb) = tcp_pair();
    let (pa, pb) = Pipe::new().unwrap();
    let dir = tempdir();
    let upath = format!("unix:{dir}/w.sock");
    let ul = Listener::bind(&upath).unwrap();
    let uc = Client::connect(&upath).unwrap();
    let ua = ul.accept().unwrap();
    let objects: [&dyn shmwire::Waitable; 3] = [&ta, &pa, &ua];
    assert!(
        wait(&objects, Duration::from_millis(30))
            .unwrap()
            .is_empty()
    );
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(50));
        tb.send_bytes(b"tcp").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        pb.send_bytes(b"shm").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        uc.send_bytes(b"unix").unwrap();
    })
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ready = wait(&objects, LONG).unwrap();
        assert!(!ready.is_empty());
        for i in ready {
            let m = match i {
                0 => ta.recv_bytes(),
                1 => pa.recv_bytes(),
                _ => ua.recv_bytes(),
            };
            match m {
                Ok(m) => seen.push(String::from_utf8(m).unwrap()),
                // The child may have sent its last message and exited by now: that end is over.
                Err(Error::Eof | Error::PeerDied) => assert!(seen.len() >= i, "{seen:?}"),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    assert_eq!(seen, ["tcp", "shm", "unix"]);
    assert!(p.join().unwrap().success());
    // The child exited: every one of them is ready (its end), and reports it.
    let ready = wait(&objects, LONG).unwrap();
    assert_eq!(ready, [0, 1, 2]);
    assert!(matches!(ta.recv_bytes_timeout(LONG), Err(Error::Eof)));
    assert!(matches!(ua.recv_bytes_timeout(LONG), Err(Error::Eof)));
    // A listener in the list too.
    let tl = Listener::bind("tcp://127.0.0.1:0").unwrap();
    let obj: [&dyn shmwire::Waitable; 1] = [&tl];
    assert!(wait(&obj, Duration::from_millis(20)).unwrap().is_empty());
    let _c = Client::connect(&tl.address()).unwrap();
    assert_eq!(wait(&obj, LONG).unwrap(), [0]);
    let _ = std::fs::remove_dir_all(dir);
}

fn pods_are_little_endian_on_the_wire() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", l.local_addr().unwrap());
    let c = Client::connect(&addr).unwrap();
    c.send_pod(&0x0102_0304u32).unwrap();
    let (mut s, _) = l.accept().unwrap();
    let mut got = [0u8; 8];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, [0, 0, 0, 4, 4, 3, 2, 1]);
    s.write_all(&[0, 0, 0, 8, 1, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(c.recv_pod::<u64>().unwrap(), 1);
}

fn authkey_right_and_wrong_between_our_ends() {
    for transport in ["tcp://127.0.0.1:0", "unix", "shm"] {
        let dir = tempdir();
        let bind = match transport {
            "unix" => format!("unix:{dir}/a.sock"),
            "shm" => format!("auth-{}", std::process::id()),
            t => t.to_string(),
        };
        let l = Listener::bind_with_authkey(&bind, b"right").unwrap();
        let addr = l.address();
        let p = Process::fork(move || {
            let r = Client::connect_with_authkey_timeout(&addr, b"wrong", LONG);
            assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
            let r = Client::connect_timeout(&addr, LONG).and_then(|c| {
                // No key at all: the listener's challenge is what arrives; answering it wrongly
                // is refused.
                let m = c.recv_bytes_timeout(LONG)?;
                assert!(m.starts_with(b"#CHALLENGE#{sha256}"), "{m:?}");
                c.send_bytes(b"nonsense")?;
                c.recv_bytes_timeout(LONG)
            });
            assert_eq!(r.unwrap(), b"#FAILURE#");
            let c = Client::connect_with_authkey_timeout(&addr, b"right", LONG).unwrap();
            c.send_bytes(b"in").unwrap();
        })
        .unwrap();
        assert!(matches!(
            l.accept_timeout(LONG),
            Err(Error::AuthenticationFailed)
        ));
        assert!(matches!(
            l.accept_timeout(LONG),
            Err(Error::AuthenticationFailed)
        ));
        assert_eq!(l.accept_timeout(LONG).unwrap().recv_bytes().unwrap(), b"in");
        assert!(p.join().unwrap().success(), "{transport}");
        drop(l);
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn a_peer_stopping_mid_handshake_times_out() {
    // A client that connects and says nothing: dropped after the handshake timeout, and the next
    // client is accepted.
    let l = Listener::bind_with_authkey("tcp://127.0.0.1:0", b"k").unwrap();
    l.set_handshake_timeout(Duration::from_millis(300));
    let addr = l.address();
    let port = port_of(&addr);
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(100));
        let c = Client::connect_with_authkey_timeout(&addr, b"k", LONG).unwrap();
        c.send_bytes(b"second").unwrap();
        let _ = c.recv_bytes();
    })
    .unwrap();
    let (c, took) = common::within(Duration::from_secs(3), || l.accept_timeout(LONG).unwrap());
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert_eq!(c.recv_bytes().unwrap(), b"second");
    // The silent one was closed.
    let mut s = silent;
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        buf.starts_with(&[0, 0, 0]),
        "it got the challenge, then the end"
    );
    drop(c);
    assert!(p.join().unwrap().success());
    // The client's side: a listener that accepts and says nothing.
    let raw = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", raw.local_addr().unwrap());
    let (r, took) = common::within(Duration::from_secs(3), || {
        Client::connect_with_authkey_timeout(&addr, b"k", Duration::from_millis(200))
    });
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(took >= Duration::from_millis(200));
}

// ---- Python as the peer --------------------------------------------------------------------------

/// A Python 3 process running `script`, its stdout read line by line; killed and reaped on drop.
struct Py {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Py {
    fn start(script: &str, args: &[&str]) -> Py {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("python3");
        let out = BufReader::new(child.stdout.take().unwrap());
        Py { child, out }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        l.trim_end().to_owned()
    }

    /// Waits for the exit (10 s at most); whether it succeeded, and the rest of its output.
    fn finish(mut self) -> (bool, String) {
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let until = Instant::now() + LONG;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.success(), rest);
            }
            assert!(Instant::now() < until, "python3 did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Skips the test (with a clear message) where `python3` with `multiprocessing` is missing.
fn need_python() {
    let ok = Command::new("python3")
        .args(["-c", "import multiprocessing.connection, hmac"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("python3 (with multiprocessing) is not installed: the Python peer tests cannot run");
    }
}

/// A Python `multiprocessing.connection.Client`: `ADDRESS KEY MODE`, where ADDRESS is
/// `tcp:HOST:PORT` or `unix:PATH` and KEY `-` for none.
const PY_CLIENT: &str = r##"
import struct, sys
from multiprocessing.connection import Client
from multiprocessing import AuthenticationError
addr, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
key = None if key == "-" else key.encode()
if addr.startswith("tcp:"):
    h, p = addr[4:].rsplit(":", 1)
    address = (h.strip("[]"), int(p))
else:
    address = addr[5:]
try:
    c = Client(address, authkey=key)
except AuthenticationError as e:
    print("AuthenticationError", e, flush=True)
    sys.exit(0)
if mode == "bytes":
    for m in [b"", b"hello", bytes(range(256)) * 300, b"x" * (3 << 20)]:
        c.send_bytes(m)
        r = c.recv_bytes()
        assert r == m, (len(r), len(m))
    print("ok", flush=True)
elif mode == "objects":
    objs = [None, True, False, 0, -5, 2**100, -(2**70), 1.5, "h\u00e9llo", b"\x00\xff",
            [1, "a", None], (1, (2, 3), "x"), {"a": 1, "b": (1, 2)}, (), [], {}]
    for o in objs:
        c.send(o)
        r = c.recv()
        assert r == (o, type(o).__name__), (o, r)
        assert type(r[0]) is type(o), (o, r)
        if isinstance(o, tuple):
            assert all(type(x) is type(y) for x, y in zip(r[0], o))
    print("ok", flush=True)
elif mode == "escape-recv":
    m = c.recv_bytes()
    c.send_bytes(b"got %d" % len(m))
    print("ok", flush=True)
elif mode == "escape-send":
    data = b"y" * 1000
    c._send(struct.pack("!i", -1) + struct.pack("!Q", len(data)) + data)
    assert c.recv_bytes() == b"got 1000"
    print("ok", flush=True)
c.close()
"##;

/// A Python `multiprocessing.connection.Listener` on 127.0.0.1 (or `unix PATH`): prints
/// `listening PORT`, accepts one client, echoes its messages until the end.
const PY_LISTENER: &str = r##"
import sys
from multiprocessing.connection import Listener
from multiprocessing import AuthenticationError
key = None if sys.argv[1] == "-" else sys.argv[1].encode()
l = Listener(("127.0.0.1", 0), authkey=key)
print("listening", l.address[1], flush=True)
try:
    c = l.accept()
except AuthenticationError as e:
    print("AuthenticationError", e, flush=True)
    sys.exit(0)
n = 0
while True:
    try:
        m = c.recv_bytes()
    except EOFError:
        break
    c.send_bytes(m)
    n += 1
print("done", n, flush=True)
"##;

fn python_client_and_our_listener_legacy_digest() {
    need_python();
    let l = Listener::bind_with_authkey("tcp://127.0.0.1:0", b"s3cret").unwrap();
    let port = port_of(&l.address());
    let mut py = Py::start(
        PY_CLIENT,
        &[&format!("tcp:127.0.0.1:{port}"), "s3cret", "bytes"],
    );
    // Python 3.11 answers our {sha256} challenge with a raw HMAC-MD5 (legacy), and challenges us
    // with 20 bytes, which we answer with HMAC-MD5.
    let c = l.accept_timeout(LONG).unwrap();
    for _ in 0..4 {
        let m = c.recv_bytes_timeout(LONG).unwrap();
        c.send_bytes(&m).unwrap();
    }
    assert_eq!(py.line(), "ok");
    assert!(matches!(c.recv_bytes_timeout(LONG), Err(Error::Eof)));
    assert!(py.finish().0);
}

fn our_client_and_a_python_listener_legacy_digest() {
    need_python();
    let mut py = Py::start(PY_LISTENER, &["s3cret"]);
    let line = py.line();
    let port = line.strip_prefix("listening ").expect(&line).to_owned();
    let c =
        Client::connect_with_authkey_timeout(&format!("tcp://127.0.0.1:{port}"), b"s3cret", LONG)
            .unwrap();
    for m in [&b""[..], b"abc", &vec![1u8; 1 << 20]] {
        c.send_bytes(m).unwrap();
        assert_eq!(c.recv_bytes_timeout(LONG).unwrap(), m);
    }
    drop(c);
    assert_eq!(py.line(), "done 3");
    assert!(py.finish().0);
}

fn wrong_key_is_refused_both_ways_with_python() {
    need_python();
    // A Python client with the wrong key: our accept says AuthenticationFailed, Python raises
    // AuthenticationError.
    let l = Listener::bind_with_authkey("tcp://127.0.0.1:0", b"right").unwrap();
    let port = port_of(&l.address());
    let mut py = Py::start(
        PY_CLIENT,
        &[&format!("tcp:127.0.0.1:{port}"), "wrong", "bytes"],
    );
    assert!(matches!(
        l.accept_timeout(LONG),
        Err(Error::AuthenticationFailed)
    ));
    let said = py.line();
    assert!(said.starts_with("AuthenticationError"), "{said}");
    assert!(py.finish().0);
    // Our client with the wrong key: the same, the other way round.
    let mut py = Py::start(PY_LISTENER, &["right"]);
    let line = py.line();
    let port = line.strip_prefix("listening ").expect(&line).to_owned();
    let r =
        Client::connect_with_authkey_timeout(&format!("tcp://127.0.0.1:{port}"), b"wrong", LONG);
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    let said = py.line();
    assert!(said.starts_with("AuthenticationError"), "{said}");
    assert!(py.finish().0);
}

fn python_over_a_unix_socket() {
    need_python();
    let dir = tempdir();
    let path = format!("{dir}/py.sock");
    let l = Listener::bind(&format!("unix:{path}")).unwrap();
    let mut py = Py::start(PY_CLIENT, &[&format!("unix:{path}"), "-", "bytes"]);
    let c = l.accept_timeout(LONG).unwrap();
    for _ in 0..4 {
        let m = c.recv_bytes_timeout(LONG).unwrap();
        c.send_bytes(&m).unwrap();
    }
    assert_eq!(py.line(), "ok");
    assert!(py.finish().0);
    let _ = std::fs::remove_dir_all(dir);
}

fn the_escape_with_python_both_ways() {
    need_python();
    let l = Listener::bind("tcp://127.0.0.1:0").unwrap();
    let port = port_of(&l.address());
    // We send with the escape (threshold lowered to 10 bytes): Python's recv_bytes reads it.
    let mut py = Py::start(
        PY_CLIENT,
        &[&format!("tcp:127.0.0.1:{port}"), "-", "escape-recv"],
    );
    let c = l.accept_timeout(LONG).unwrap();
    c.__set_escape_threshold(10);
    c.send_bytes(&[1u8; 500]).unwrap();
    assert_eq!(c.recv_bytes_timeout(LONG).unwrap(), b"got 500");
    assert_eq!(py.line(), "ok");
    assert!(py.finish().0);
    // Python sends an escaped frame (as it does past 2 GiB - 1): we read it.
    let mut py = Py::start(
        PY_CLIENT,
        &[&format!("tcp:127.0.0.1:{port}"), "-", "escape-send"],
    );
    let c = l.accept_timeout(LONG).unwrap();
    assert_eq!(c.recv_bytes_timeout(LONG).unwrap(), vec![b'y'; 1000]);
    c.send_bytes(b"got 1000").unwrap();
    assert_eq!(py.line(), "ok");
    assert!(py.finish().0);
}

/// A peer of our own for the current (Python 3.12+) handshake, written from the protocol's
/// description (3.11's `multiprocessing` speaks only the legacy form): raw socket, 4-byte
/// big-endian framing, `{sha256}` challenges of 40 random bytes, answers
/// `{sha256}` + HMAC-SHA256 over the whole message, prefix included.
const PY_CURRENT: &str = r##"
import hmac, os, socket, struct, sys
CH, W, F = b"#CHALLENGE#", b"#WELCOME#", b"#FAILURE#"
def send(s, b): s.sendall(struct.pack("!i", len(b)) + b)
def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise EOFError
        b += c
    return b
def recv(s):
    n, = struct.unpack("!i", recvn(s, 4))
    assert 0 <= n <= 256
    return recvn(s, n)
def deliver(s, key):
    msg = b"{sha256}" + os.urandom(40)
    send(s, CH + msg)
    r = recv(s)
    assert r.startswith(b"{sha256}"), r  # a current challenge is answered in the current form
    ok = hmac.compare_digest(hmac.new(key, msg, "sha256").digest(), r[8:])
    send(s, W if ok else F)
    return ok
def answer(s, key):
    m = recv(s)
    assert m.startswith(CH + b"{sha256}"), m  # shmwire challenges in the current form
    m = m[len(CH):]
    send(s, b"{sha256}" + hmac.new(key, m, "sha256").digest())
    return recv(s) == W
role, key = sys.argv[1], sys.argv[2].encode()
if role == "client":
    s = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
    if not answer(s, key): print("rejected", flush=True); sys.exit(0)
    if not deliver(s, key): print("refused", flush=True); sys.exit(0)
else:
    l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
    print("listening", l.getsockname()[1], flush=True)
    s, _ = l.accept()
    if not deliver(s, key): print("refused", flush=True); sys.exit(0)
    if not answer(s, key): print("rejected", flush=True); sys.exit(0)
send(s, b"current hello")
assert recv(s) == b"current hello"
print("ok", flush=True)
"##;

fn current_sha256_handshake_against_our_own_peer() {
    need_python();
    let l = Listener::bind_with_authkey("tcp://127.0.0.1:0", b"k3y").unwrap();
    let port = port_of(&l.address()).to_string();
    // Its client, our listener.
    let mut py = Py::start(PY_CURRENT, &["client", "k3y", &port]);
    let c = l.accept_timeout(LONG).unwrap();
    let m = c.recv_bytes_timeout(LONG).unwrap();
    c.send_bytes(&m).unwrap();
    assert_eq!(py.line(), "ok");
    assert!(py.finish().0);
    // With a wrong key: we refuse its answer, it sees the failure.
    let mut py = Py::start(PY_CURRENT, &["client", "bad", &port]);
    assert!(matches!(
        l.accept_timeout(LONG),
        Err(Error::AuthenticationFailed)
    ));
    assert_eq!(py.line(), "rejected");
    assert!(py.finish().0);
    // Its listener, our client.
    let mut py = Py::start(PY_CURRENT, &["server", "k3y"]);
    let line = py.line();
    let p = line.strip_prefix("listening ").expect(&line).to_owned();
    let c = Client::connect_with_authkey_timeout(&format!("tcp://127.0.0.1:{p}"), b"k3y", LONG)
        .unwrap();
    let m = c.recv_bytes_timeout(LONG).unwrap();
    c.send_bytes(&m).unwrap();
    assert_eq!(py.line(), "ok");
    assert!(py.finish().0);
    let mut py = Py::start(PY_CURRENT, &["server", "k3y"]);
    let line = py.line();
    let p = line.strip_prefix("listening ").expect(&line).to_owned();
    let r = Client::connect_with_authkey_timeout(&format!("tcp://127.0.0.1:{p}"), b"bad", LONG);
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    assert_eq!(py.line(), "refused");
    assert!(py.finish().0);
}

#[cfg(feature = "pickle")]
fn python_objects_both_ways() {
    use shmwire::transport::pickle::{Value, type_name};
    need_python();
    let l = Listener::bind_with_authkey("tcp://127.0.0.1:0", b"obj").unwrap();
    let port = port_of(&l.address());
    let mut py = Py::start(
        PY_CLIENT,
        &[&format!("tcp:127.0.0.1:{port}"), "obj", "objects"],
    );
    let c = l.accept_timeout(LONG).unwrap();
    let mut kinds = Vec::new();
    for _ in 0..16 {
        let v = c.recv_py_timeout(LONG).unwrap();
        kinds.push(type_name(&v));
        if let Value::Tuple(items) = &v {
            if items.len() == 3 {
                assert!(
                    matches!(items[1], Value::Tuple(_)),
                    "a nested tuple stays a tuple"
                );
            }
        }
        let name = Value::String(type_name(&v).to_string());
        c.send_py(&Value::Tuple(vec![v, name])).unwrap();
    }
    assert_eq!(
        kinds,
        [
            "NoneType", "bool", "bool", "int", "int", "int", "int", "float", "str", "bytes",
            "list", "tuple", "dict", "tuple", "list", "dict"
        ]
    );
    assert_eq!(py.line(), "ok");
    assert!(py.finish().0);
    // Not a pickle of plain values: Decode, and the message stays.
    let (a, b) = tcp_pair();
    b.send_bytes(b"\x80\x04\x95not a pickle").unwrap();
    assert!(matches!(a.recv_py_timeout(LONG), Err(Error::Decode { .. })));
    assert_eq!(a.recv_bytes().unwrap(), b"\x80\x04\x95not a pickle");
}

#[cfg(not(feature = "pickle"))]
fn python_objects_both_ways() {
    skip("built without the `pickle` feature: cargo test --features pickle --test transport");
}

/// The example's binary, built by `cargo test` beside this test's.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

fn echo_server_example_serves_python() {
    need_python();
    let bin = example("echo_server");
    if !bin.exists() {
        skip("the echo_server example is not built (cargo test builds it; cargo test --examples)");
    }
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = format!("tcp://{free}");
    let mut args = vec![addr.clone(), "ekey".to_string()];
    let objects = cfg!(feature = "pickle");
    if objects {
        args.push("--objects".into());
    }
    let mut server = Command::new(&bin)
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line.is_empty() && objects {
        let _ = server.wait();
        skip(
            "the echo_server example was built without the pickle feature: cargo build --features pickle --example echo_server",
        );
    }
    assert_eq!(line.trim_end(), format!("listening on {addr}"));
    // Clients one after another, each served in turn.
    let mode = if objects { "objects" } else { "bytes" };
    for _ in 0..2 {
        let mut py = Py::start(PY_CLIENT, &[&format!("tcp:{free}"), "ekey", mode]);
        assert_eq!(py.line(), "ok");
        assert!(py.finish().0);
    }
    // A wrong key is refused, and the server goes on.
    let mut py = Py::start(PY_CLIENT, &[&format!("tcp:{free}"), "nope", mode]);
    assert!(py.line().starts_with("AuthenticationError"));
    assert!(py.finish().0);
    let mut py = Py::start(PY_CLIENT, &[&format!("tcp:{free}"), "ekey", mode]);
    assert_eq!(py.line(), "ok");
    assert!(py.finish().0);
    let _ = server.kill();
    let _ = server.wait();
}

// ---- served objects ------------------------------------------------------------------------------

/// The clients' part of a served-queue test: `n` items tagged by `who` put, `n` items got; their
/// sum sent back over `report`.
fn queue_client(addr: &str, who: u64, n: u64, report: &Queue<u64>) {
    let remote = Remote::connect(addr, b"qkey").unwrap();
    let q = remote.queue::<u64>("work").unwrap();
    for i in 0..n {
        q.put(who << 32 | i).unwrap();
    }
    let mut sum = 0u64;
    for _ in 0..n {
        sum = sum.wrapping_add(q.get_timeout(Duration::from_secs(20)).unwrap());
    }
    report.put(sum).unwrap();
}

fn served_queue_used_by_two_client_processes_at_once() {
    let local = Queue::<u64>::new(16).unwrap();
    let server = Server::bind("tcp://127.0.0.1:0", b"qkey").unwrap();
    server
        .serve_queue("work", Queue::<u64>::new(0).unwrap())
        .unwrap();
    server.serve_queue("small", local.clone()).unwrap();
    assert!(matches!(
        server.serve_queue("work", Queue::<u64>::new(0).unwrap()),
        Err(Error::Exists)
    ));
    // The server's threads run in a child, so this process forks no threaded copy of itself.
    // A queue, not a pipe: both clients report at once (one end of a pipe takes one sender at a time).
    let report = Queue::<u64>::new(0).unwrap();
    let (ctl, ctl_theirs) = Pipe::new().unwrap();
    let srv = Process::fork(move || {
        let s = server.start().unwrap();
        ctl_theirs.send(&s.address()).unwrap();
        let _ = ctl_theirs.recv_bytes(); // until the test says so
        s.stop().unwrap();
    })
    .unwrap();
    let addr: String = ctl.recv_timeout(LONG).unwrap();
    let n = 2000u64;
    let kids: Vec<Process> = (1..=2u64)
        .map(|who| {
            let addr = addr.clone();
            let r = report.clone();
            Process::fork(move || queue_client(&addr, who, n, &r)).unwrap()
        })
        .collect();
    let sums: u64 = (0..2)
        .map(|_| report.get_timeout(Duration::from_secs(50)).unwrap())
        .fold(0, u64::wrapping_add);
    let want = (1..=2u64)
        .flat_map(|who| (0..n).map(move |i| who << 32 | i))
        .fold(0, u64::wrapping_add);
    assert_eq!(sums, want, "every item put was got once");
    for k in &kids {
        assert!(k.join().unwrap().success());
    }
    // The errors of a local queue, remotely.
    let remote = Remote::connect(&addr, b"qkey").unwrap();
    let q = remote.queue::<u64>("small").unwrap();
    assert_eq!(q.qsize().unwrap(), 0);
    assert!(q.is_empty().unwrap());
    assert_eq!(q.maxsize().unwrap(), 16);
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    let (r, took) = common::within(LONG, || q.get_timeout(Duration::from_millis(100)));
    assert!(matches!(r, Err(Error::Timeout)) && took >= Duration::from_millis(100));
    for i in 0..16 {
        q.put_nowait(i).unwrap();
    }
    assert!(q.is_full().unwrap());
    assert!(matches!(q.put_nowait(99), Err(Error::Full)));
    assert!(matches!(
        q.put_timeout(99, Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert_eq!(
        local.get().unwrap(),
        0,
        "the server's queue is the local one"
    );
    assert!(matches!(
        remote.queue::<u64>("nothing"),
        Err(Error::NotFound)
    ));
    let wrong = remote.queue::<String>("small").unwrap();
    assert!(matches!(
        wrong.put("text".to_string()),
        Err(Error::Decode { .. })
    ));
    assert!(matches!(
        Remote::connect(&addr, b"bad key"),
        Err(Error::AuthenticationFailed)
    ));
    q.close().unwrap();
    assert!(q.is_closed().unwrap());
    assert!(matches!(q.put(1), Err(Error::Closed)));
    for i in 1..16 {
        assert_eq!(q.get().unwrap(), i);
    }
    assert!(matches!(q.get(), Err(Error::Eof)));
    ctl.send_bytes(b"stop").unwrap();
    assert!(srv.join().unwrap().success());
    // A stopped server: a lost connection is an error, never a hang.
    assert!(q.get_timeout(Duration::from_secs(1)).is_err());
    srv.kill_on_drop(false);
}

/// A client of the served dict and list: `n` increments of `count` by `modify` (whose closure runs
/// here, as a compare-and-swap), `n` pushes, and its own keys; then it reports.
fn container_client(addr: &str, who: u64, n: u64, report: &Queue<u64>) {
    let remote = Remote::connect(addr, b"mkey").unwrap();
    let d = remote.dict::<String, u64>("counts").unwrap();
    let l = remote.list::<u64>("log").unwrap();
    for i in 0..n {
        d.modify("count", |v| *v += 1).unwrap();
        l.push(who << 32 | i).unwrap();
        if i % 50 == 0 {
            assert_eq!(d.insert(format!("{who}-{i}"), i).unwrap(), None);
        }
    }
    report.put(who).unwrap();
}

fn served_dict_and_list_used_by_two_client_processes_at_once() {
    let m = Manager::new().unwrap();
    let counts = m.dict_from([("count".to_string(), 0u64)]).unwrap();
    let log = m.list::<u64>().unwrap();
    let server = Server::bind("tcp://127.0.0.1:0", b"mkey").unwrap();
    server.serve_dict("counts", counts.clone()).unwrap();
    server.serve_list("log", log.clone()).unwrap();
    server
        .serve_queue("q", Queue::<u64>::new(0).unwrap())
        .unwrap();
    assert!(matches!(
        server.serve_dict("counts", counts.clone()),
        Err(Error::Exists)
    ));
    // A queue, not a pipe: both clients report at once (one end of a pipe takes one sender at a time).
    let report = Queue::<u64>::new(0).unwrap();
    let (ctl, ctl_theirs) = Pipe::new().unwrap();
    let srv = Process::fork(move || {
        let s = server.start().unwrap();
        ctl_theirs.send(&s.address()).unwrap();
        let _ = ctl_theirs.recv_bytes(); // until the test says so
        s.stop().unwrap();
    })
    .unwrap();
    let addr: String = ctl.recv_timeout(LONG).unwrap();
    let n = 300u64;
    let kids: Vec<Process> = (1..=2u64)
        .map(|who| {
            let addr = addr.clone();
            let r = report.clone();
            Process::fork(move || container_client(&addr, who, n, &r)).unwrap()
        })
        .collect();
    for _ in 0..2 {
        report.get_timeout(Duration::from_secs(60)).unwrap();
    }
    for k in &kids {
        assert!(k.join().unwrap().success());
    }
    // Seen locally: every remote modify counted once, every push there once.
    assert_eq!(
        counts.get("count").unwrap(),
        Some(2 * n),
        "no increment lost"
    );
    let mut got = log.to_vec().unwrap();
    got.sort_unstable();
    let mut want: Vec<u64> = (1..=2u64)
        .flat_map(|who| (0..n).map(move |i| who << 32 | i))
        .collect();
    want.sort_unstable();
    assert_eq!(got, want, "every push there once");
    assert_eq!(counts.len().unwrap(), 1 + 2 * n.div_ceil(50) as usize);

    // The calls and errors of the local containers, remotely.
    let remote = Remote::connect(&addr, b"mkey").unwrap();
    let d = remote.dict::<String, u64>("counts").unwrap();
    assert_eq!(d.get("count").unwrap(), Some(2 * n));
    assert_eq!(d.get("nothing").unwrap(), None);
    assert!(d.contains_key("1-0").unwrap() && !d.contains_key("9-9").unwrap());
    assert_eq!(d.remove("1-0").unwrap(), Some(0));
    assert_eq!(d.remove("1-0").unwrap(), None);
    assert_eq!(d.get_or_insert("new".to_string(), 5).unwrap(), 5);
    assert_eq!(d.get_or_insert("new".to_string(), 6).unwrap(), 5);
    assert!(matches!(
        d.modify("missing", |v| *v += 1),
        Err(Error::NotFound)
    ));
    d.update([("a".to_string(), 1), ("b".to_string(), 2)])
        .unwrap();
    assert_eq!(counts.get("b").unwrap(), Some(2), "the local dict sees it");
    let mut keys = d.keys().unwrap();
    keys.sort();
    let mut items = d.items().unwrap();
    items.sort();
    assert_eq!(
        keys,
        items.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    assert_eq!(d.values().unwrap().len(), d.len().unwrap());
    let l = remote.list::<u64>("log").unwrap();
    assert_eq!(l.len().unwrap(), 2 * n as usize);
    l.clear().unwrap();
    assert!(l.is_empty().unwrap() && log.is_empty().unwrap());
    l.extend([10, 20, 30]).unwrap();
    l.insert(0, 5).unwrap();
    l.set(1, 11).unwrap();
    assert_eq!(
        l.modify(2, |v| {
            *v += 1;
            *v
        })
        .unwrap(),
        21
    );
    assert_eq!(l.index(&30).unwrap(), 3);
    assert!(matches!(l.index(&99), Err(Error::NotFound)));
    assert_eq!(l.remove(0).unwrap(), 5);
    assert_eq!(l.pop().unwrap(), 30);
    assert_eq!(l.to_vec().unwrap(), [11, 21]);
    assert_eq!(l.get(1).unwrap(), 21);
    assert!(matches!(
        l.get(7),
        Err(Error::OutOfRange { index: 7, len: 2 })
    ));
    assert!(matches!(
        l.modify(7, |v| *v += 1),
        Err(Error::OutOfRange { index: 7, len: 2 })
    ));
    assert!(matches!(
        remote.dict::<String, u64>("log"),
        Err(Error::Incompatible)
    ));
    assert!(matches!(remote.list::<u64>("q"), Err(Error::Incompatible)));
    assert!(matches!(
        remote.dict::<String, u64>("nothing"),
        Err(Error::NotFound)
    ));
    let wrong = remote.dict::<String, String>("counts").unwrap();
    assert!(matches!(
        wrong.insert("x".to_string(), "text".to_string()),
        Err(Error::Decode { .. })
    ));

    // A holder of the dict's lock stopped: a bounded remote call times out, never steals.
    let (stopped, stopped_theirs) = Pipe::new().unwrap();
    let c2 = counts.clone();
    let holder = Process::fork(move || {
        c2.modify("count", |v| {
            *v += 1000;
            stopped_theirs.send(&0u8).unwrap();
            // SAFETY: raise has no preconditions; the process stops here, holding the lock.
            unsafe { libc::raise(libc::SIGSTOP) };
        })
        .unwrap();
    })
    .unwrap();
    stopped.recv_timeout::<u8>(LONG).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let bounded = d.with_timeout(Duration::from_millis(200));
    let (r, took) = common::within(LONG, || bounded.insert("late".to_string(), 1));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    let (r, _) = common::within(LONG, || bounded.modify("count", |v| *v += 1));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(holder.pid() as i32, libc::SIGCONT) };
    assert!(holder.join().unwrap().success());
    assert_eq!(d.get("count").unwrap(), Some(2 * n + 1000));
    assert_eq!(
        d.get("late").unwrap(),
        None,
        "a timed-out insert changed nothing"
    );

    ctl.send_bytes(b"stop").unwrap();
    assert!(srv.join().unwrap().success());
    // A stopped server: a lost connection is an error, never a hang.
    assert!(d.with_timeout(Duration::from_secs(1)).len().is_err());
    srv.kill_on_drop(false);
}

fn shared_memory_handle_from_another_host_is_refused() {
    let (a, b) = Pipe::new().unwrap();
    let h = b.to_handle().unwrap().__from_another_host();
    match h.open() {
        Err(Error::Invalid(msg)) => assert!(msg.contains("tcp://"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let (s, _t) = tcp_pair();
    assert!(matches!(s.to_handle(), Err(Error::Invalid(_))));
    drop(a);
}

// ---- across hosts ----------------------------------------------------------------------------------

/// Two network namespaces joined by a veth pair, with addresses of our own on that private link;
/// removed on drop.
struct Hosts {
    a: String,
    b: String,
}

const ADDR_A: &str = "10.214.0.1";
const ADDR_B: &str = "10.214.0.2";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hosts {
    fn make() -> Result<Hosts, String> {
        // Namespaces left by an earlier run that died are removed first.
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                let name = l.split_whitespace().next().unwrap_or("");
                if let Some(pid) = name
                    .strip_prefix("shmwire-tx-")
                    .and_then(|r| r.split('-').nth(1))
                {
                    if pid.parse::<u32>().is_ok_and(common::gone) {
                        let _ = ip(&["netns", "del", name]);
                    }
                }
            }
        }
        let me = std::process::id();
        let h = Hosts {
            a: format!("shmwire-tx-a-{me}"),
            b: format!("shmwire-tx-b-{me}"),
        };
        ip(&["netns", "add", &h.a])?;
        ip(&["netns", "add", &h.b])?;
        let (va, vb) = (
            format!("swa{}", me % 100_000),
            format!("swb{}", me % 100_000),
        );
        ip(&[
            "link", "add", &va, "netns", &h.a, "type", "veth", "peer", "name", &vb, "netns", &h.b,
        ])?;
        ip(&[
            "-n",
            &h.a,
            "addr",
            "add",
            &format!("{ADDR_A}/24"),
            "dev",
            &va,
        ])?;
        ip(&[
            "-n",
            &h.b,
            "addr",
            "add",
            &format!("{ADDR_B}/24"),
            "dev",
            &vb,
        ])?;
        for (ns, dev) in [(&h.a, &va), (&h.b, &vb)] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(h)
    }

    /// Moves the calling (single-threaded, forked) process into namespace `ns`.
    fn enter(ns: &str) {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace descriptor; the process is a fresh single-threaded child.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    }

    /// Pulls host A's cable: its end of the link goes down, and nothing it sends or answers
    /// arrives any more.
    fn unplug_a(&self) {
        let me = std::process::id();
        ip(&[
            "-n",
            &self.a,
            "link",
            "set",
            &format!("swa{}", me % 100_000),
            "down",
        ])
        .unwrap();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

fn across_hosts_in_two_network_namespaces() {
    let hosts = match Hosts::make() {
        Ok(h) => h,
        Err(why) => skip(&format!(
            "network namespaces cannot be made here (root and iproute2 needed): {why}"
        )),
    };
    let (ctl, ctl_srv) = Pipe::new().unwrap();
    let ns_a = hosts.a.clone();
    // Host A: the server, with a served queue.
    let srv = Process::fork(move || {
        Hosts::enter(&ns_a);
        let server = Server::bind(&format!("tcp://{ADDR_A}:0"), b"qkey").unwrap();
        server
            .serve_queue("work", Queue::<u64>::new(0).unwrap())
            .unwrap();
        let s = server.start().unwrap();
        ctl_srv.send(&s.address()).unwrap();
        let _ = ctl_srv.recv_bytes();
        drop(s);
    })
    .unwrap();
    let addr: String = ctl.recv_timeout(LONG).unwrap();
    assert!(addr.starts_with(&format!("tcp://{ADDR_A}:")), "{addr}");
    // Not reachable from here (this host's namespace has no such link).
    // Host B: two clients at once.
    // A queue, not a pipe: both clients report at once (one end of a pipe takes one sender at a time).
    let report = Queue::<u64>::new(0).unwrap();
    let n = 500u64;
    let kids: Vec<Process> = (1..=2u64)
        .map(|who| {
            let (addr, ns_b, r) = (addr.clone(), hosts.b.clone(), report.clone());
            Process::fork(move || {
                Hosts::enter(&ns_b);
                queue_client(&addr, who, n, &r)
            })
            .unwrap()
        })
        .collect();
    let sums: u64 = (0..2)
        .map(|_| report.get_timeout(Duration::from_secs(50)).unwrap())
        .fold(0, u64::wrapping_add);
    let want = (1..=2u64)
        .flat_map(|who| (0..n).map(move |i| who << 32 | i))
        .fold(0, u64::wrapping_add);
    assert_eq!(sums, want);
    for k in &kids {
        assert!(k.join().unwrap().success());
    }
    // A client on host B waits in get(); host A's cable is pulled: the call fails within its
    // dead-peer bound (here 2 s: probes after 1 s, three more a second apart), never hangs.
    let (addr2, ns_b) = (addr.clone(), hosts.b.clone());
    let (waiting, waiting_theirs) = Pipe::new().unwrap();
    let stuck = Process::fork(move || {
        Hosts::enter(&ns_b);
        let mut remote = Remote::connect(&addr2, b"qkey").unwrap();
        remote.set_dead_peer_timeout(Duration::from_secs(2));
        let q = remote.queue::<u64>("work").unwrap();
        waiting_theirs.send(&0u8).unwrap();
        let t = Instant::now();
        let r = q.get();
        let kind = match &r {
            Err(Error::Io(e)) => format!("{:?}", e.kind()),
            other => format!("{other:?}"),
        };
        waiting_theirs
            .send(&(kind, t.elapsed().as_secs_f64()))
            .unwrap();
    })
    .unwrap();
    let _: u8 = waiting.recv_timeout(LONG).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    hosts.unplug_a();
    let (kind, secs): (String, f64) = waiting.recv_timeout(Duration::from_secs(40)).unwrap();
    assert_eq!(kind, "TimedOut");
    assert!(
        secs <= 40.0,
        "noticed after {secs} s, over 10x its 4 s bound"
    );
    println!(
        "(a vanished host was noticed after {secs:.1} s; bound: 2 s timeout, probes at 1 s steps)"
    );
    assert!(stuck.join().unwrap().success());
    ctl.send_bytes(b"stop").unwrap();
    assert!(srv.join().unwrap().success());
    let (a, b) = (hosts.a.clone(), hosts.b.clone());
    drop(hosts);
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&out.stdout);
    assert!(
        !left.contains(&a) && !left.contains(&b),
        "namespaces left: {left}"
    );
    stuck.kill_on_drop(false);
    srv.kill_on_drop(false);
}

// ---- served objects under slow, stopped and stopping peers ----------------------------------------

/// A [`Server`] bound at `bind` (authkey `skey`) serving a `Queue<Vec<u8>>` named `q`, run in a
/// child (so this process forks no threaded copy of itself). The child stops the server when `ctl`
/// says anything, answers `stopped`, and exits when `ctl` closes (its serving threads live until
/// then). Returns the child, `ctl` and the address.
fn server_in_child(bind: &str) -> (Process, Connection, String) {
    let server = Server::bind(bind, b"skey").unwrap();
    server
        .serve_queue("q", Queue::<Vec<u8>>::new(0).unwrap())
        .unwrap();
    let (ctl, theirs) = Pipe::new().unwrap();
    let srv = Process::fork(move || {
        let s = server.start().unwrap();
        theirs.send(&s.address()).unwrap();
        let _ = theirs.recv_bytes();
        s.stop().unwrap();
        theirs.send_bytes(b"stopped").unwrap();
        let _ = theirs.recv_bytes();
    })
    .unwrap();
    let addr: String = ctl.recv_timeout(LONG).unwrap();
    (srv, ctl, addr)
}

/// Ends a [`server_in_child`].
fn end_server(srv: Process, ctl: Connection) {
    ctl.send_bytes(b"stop").unwrap();
    assert_eq!(ctl.recv_bytes_timeout(LONG).unwrap(), b"stopped");
    drop(ctl);
    assert!(srv.join_timeout(LONG).unwrap().success());
}

/// Python 3's `Client` on a link slower than a loopback: half a second before it answers the
/// server's challenge (as over a long-distance link, or from a loaded host).
const PY_SLOW_CLIENT: &str = r##"
import sys, time
import multiprocessing.connection as mc
answer = mc.answer_challenge
def slow(c, key):
    time.sleep(0.5)
    return answer(c, key)
mc.answer_challenge = slow
try:
    c = mc.Client(("127.0.0.1", int(sys.argv[1])), authkey=b"skey")
    print("ok", flush=True)
except Exception as e:
    print("failed", type(e).__name__, e, flush=True)
"##;

fn a_served_client_slow_through_the_handshake_is_served() {
    need_python();
    let (srv, ctl, addr) = server_in_child("tcp://127.0.0.1:0");
    let port = port_of(&addr).to_string();
    let mut py = Py::start(PY_SLOW_CLIENT, &[&port]);
    assert_eq!(
        py.line(),
        "ok",
        "a client slower than 100 ms is authenticated"
    );
    assert!(py.finish().0);
    // Meanwhile and after, a client of ours is served.
    let q = Remote::connect(&addr, b"skey")
        .unwrap()
        .queue::<Vec<u8>>("q")
        .unwrap();
    q.put(vec![1]).unwrap();
    assert_eq!(q.get().unwrap(), [1]);
    drop(q);
    end_server(srv, ctl);
}

fn a_remote_call_to_a_stopped_server_ends_within_its_bound() {
    let dir = tempdir();
    let (srv, ctl, addr) = server_in_child(&format!("unix:{dir}/srv.sock"));
    let (ready, ready_theirs) = Pipe::new().unwrap();
    let a = addr.clone();
    let client = Process::fork(move || {
        let q = Remote::connect(&a, b"skey")
            .unwrap()
            .queue::<Vec<u8>>("q")
            .unwrap();
        q.put(vec![1]).unwrap();
        ready_theirs.send(&0u8).unwrap();
        let _ = ready_theirs.recv_bytes(); // the server is stopped (SIGSTOP) now
        // An item larger than the socket's buffers: the request cannot all be written. The
        // documented bound: the timeout plus the 5 s grace.
        let (r, took) = common::within(Duration::from_secs(30), || {
            q.put_timeout(vec![7u8; 8 << 20], Duration::from_millis(200))
        });
        assert!(matches!(r, Err(Error::Timeout)), "{r:?} after {took:?}");
    })
    .unwrap();
    ready.recv_timeout::<u8>(LONG).unwrap();
    srv.signal(libc::SIGSTOP).unwrap();
    ready.send_bytes(b"go").unwrap();
    let r = client.join_timeout(Duration::from_secs(30));
    if r.is_err() {
        client.kill().unwrap();
        let _ = client.join();
    }
    srv.signal(libc::SIGCONT).unwrap();
    end_server(srv, ctl);
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        matches!(&r, Ok(st) if st.success()),
        "the call on a stopped server did not end with Timeout within 30 s: {r:?}"
    );
}

fn stopping_a_server_ends_the_connections_it_serves() {
    let dir = tempdir();
    for bind in [
        format!("srv-stop-{}", std::process::id()),
        format!("unix:{dir}/stop.sock"),
        "tcp://127.0.0.1:0".to_string(),
    ] {
        let (srv, ctl, addr) = server_in_child(&bind);
        let q = Remote::connect(&addr, b"skey")
            .unwrap()
            .queue::<Vec<u8>>("q")
            .unwrap();
        assert_eq!(q.qsize().unwrap(), 0, "{bind}: an idle client, served");
        ctl.send_bytes(b"stop").unwrap();
        assert_eq!(ctl.recv_bytes_timeout(LONG).unwrap(), b"stopped");
        // `stop` ends the connections being served: the idle client's next call fails.
        let (r, _) = common::within(LONG, || q.qsize());
        assert!(r.is_err(), "{bind}: a stopped server still answered: {r:?}");
        drop(q);
        drop(ctl);
        assert!(srv.join_timeout(LONG).unwrap().success());
    }
    let _ = std::fs::remove_dir_all(dir);
}

// ---- fuzz corpus ---------------------------------------------------------------------------------

fn fuzz_corpus_replays_without_a_panic() {
    // Every fuzz target's kept corpus, through the functions the targets call (src/fuzz.rs and
    // the transport's parsers); `regress-*` entries are inputs that once failed.
    use shmwire::fuzz;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut n = 0;
    type Parse = fn(&[u8]) -> usize;
    let targets: &[(&str, Parse)] = &[
        ("frame", shmwire::transport::__fuzz_frames),
        ("handshake", |b| {
            shmwire::transport::__fuzz_handshake(b) as usize
        }),
        ("segment", fuzz::__fuzz_segment),
        ("spsc", fuzz::__fuzz_spsc),
        ("mpmc", fuzz::__fuzz_mpmc),
        ("spill", fuzz::__fuzz_spill),
        ("arena", fuzz::__fuzz_arena),
        #[cfg(feature = "pickle")]
        ("pickle", |b| fuzz::__fuzz_pickle(b) as usize),
    ];
    for (target, f) in targets {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut here = 0;
        for e in entries {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let t = Instant::now();
            f(&bytes);
            assert!(t.elapsed() < LONG, "{}: {:?}", path.display(), t.elapsed());
            here += 1;
        }
        assert!(
            here >= 2,
            "{target}: only {here} corpus entries: the corpus is missing"
        );
        n += here;
    }
    println!("({n} corpus entries replayed)");
}

/// Peak resident bytes of this process (`ru_maxrss`).
#[cfg(feature = "pickle")]
fn peak_rss() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
        u.ru_maxrss as u64 * 1024
    }
}

/// A 214-byte pickle (found by the fuzzer) of nested tuples of `None`s duplicated with `DUP`: the
/// bound checked before decoding (max(64 MiB, 256 x its length) of values) must bound the memory
/// the decoded value takes, not a count of one byte per value. In a child, whose peak memory is
/// its own.
#[cfg(feature = "pickle")]
fn a_small_pickle_never_builds_more_than_its_bound() {
    let bytes = include_bytes!("../fuzz/corpus/pickle/regress-dup-tuples");
    let p = Process::fork(move || {
        let before = peak_rss();
        let r = shmwire::transport::pickle::loads(bytes);
        let grew = peak_rss().saturating_sub(before);
        println!(
            "  (decoded: {}; peak memory grew by {} MiB)",
            r.is_ok(),
            grew >> 20
        );
        // The bound is 64 MiB of values; the decoder's own working copy may double it.
        assert!(
            grew < 128 << 20,
            "a {}-byte pickle took {} MiB",
            bytes.len(),
            grew >> 20
        );
    })
    .unwrap();
    assert!(p.join().unwrap().success());
}

#[cfg(not(feature = "pickle"))]
fn a_small_pickle_never_builds_more_than_its_bound() {
    skip("built without the `pickle` feature: cargo test --features pickle --test transport");
}
