//! The transport group: one `Connection` API over shared memory, a Unix socket and TCP, side by
//! side with the raw OS paths under the last two (a socketpair, a TCP loopback connection with
//! `TCP_NODELAY`, both given the same buffers) and Python's `multiprocessing.connection` over TCP
//! loopback, in the same run. Our TCP Connection against raw TCP is the target (framing is the
//! only overhead: within 10%).

use super::groups::{SideSpec, Sub};
use super::links::{ShmLink, fd_pair, shm_pair};
use super::measure::{Echo, Pin, Side, Sink};
use super::{Kind, external};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

/// The Python side's script.
const PY: &str = include_str!("pymp_transport.py");

/// Ratios of the group: (name, group, size, numerator, denominator, target), as in `ratios.rs`.
#[rustfmt::skip]
pub const RATIOS: &[(&str, &str, usize, &str, &str, &str)] = &[
    ("Transport RTT 8 B: our TCP Connection / raw TCP", "transport", 8, "tcp", "tcp-raw", "<= 1.1"),
    ("Transport RTT 8 B: our Unix-socket Connection / raw socketpair", "transport", 8, "unix", "uds", "<= 1.1"),
    ("Transport RTT 8 B: our TCP Connection / shared memory", "transport", 8, "tcp", "shm", "-"),
    ("Transport RTT 8 B: Python multiprocessing.connection TCP / ours", "transport", 8, "py-tcp", "tcp", "-"),
    ("Transport 64 KiB msgs/s: our TCP Connection / raw TCP", "transport-thr", 65536, "tcp", "tcp-raw", ">= 0.9"),
    ("Transport 64 KiB msgs/s: shared memory / our TCP Connection", "transport-thr", 65536, "shm", "tcp", "-"),
    ("Transport 64 KiB msgs/s: ours / Python multiprocessing.connection, TCP", "transport-thr", 65536, "tcp", "py-tcp", "-"),
];

/// Gives a socket the buffers the raw OS paths get (`links::OS_BUFFER`), so that neither side
/// has more room than the other.
fn size_socket(fd: i32) {
    let v = super::links::OS_BUFFER as libc::c_int;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        let p = (&v as *const libc::c_int).cast();
        // SAFETY: setsockopt with a valid int option on an open socket; without CAP_NET_ADMIN the
        // forced form fails and the plain one is capped by the limits.
        if unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, force, p, len) } != 0 {
            // SAFETY: as above.
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, plain, p, len) };
        }
    }
}

/// Two connected ends of our `Connection` over `address` (`tcp://127.0.0.1:0` or `unix:PATH`).
fn conn_pair(address: &str) -> (ShmLink, ShmLink) {
    let l = shmwire::Listener::bind(address).expect("bind");
    let c = shmwire::Client::connect(&l.address()).expect("connect");
    let s = l.accept().expect("accept");
    for end in [&c, &s] {
        size_socket(end.as_raw_fd());
    }
    let link = |conn| ShmLink {
        conn,
        zero_copy: false,
    };
    (link(s), link(c))
}

/// A Unix socket path of this run's own.
fn unix_address() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("unix:/tmp/shmwire-bench-{}-{n}.sock", std::process::id())
}

fn python(workload: &str, size: usize) -> Option<Box<dyn Side>> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PY).args([workload, &size.to_string()]);
    if let Some(c) = super::measure::child_cpu() {
        cmd.env("SHMWIRE_BENCH_PIN", format!("0,{c}"));
    }
    external::External::start(
        cmd,
        &format!("python3 multiprocessing.connection {workload}"),
    )
    .map(|e| Box::new(e) as Box<dyn Side>)
}

fn side<S: Side + 'static>(s: S) -> Option<Box<dyn Side>> {
    Some(Box::new(s))
}

fn spec(
    id: &'static str,
    name: &str,
    make: impl Fn() -> Option<Box<dyn Side>> + 'static,
) -> SideSpec {
    SideSpec {
        id,
        name: name.to_owned(),
        make: Box::new(make),
    }
}

/// The transport groups (Python's sides when `python`).
pub fn subs(python_too: bool) -> Vec<Sub> {
    let s = Duration::from_secs_f64;
    let mut rtt = vec![
        // Ordered so that the sides a ratio pairs run next to each other.
        spec("tcp", "shmwire Connection, tcp://127.0.0.1", || {
            side(Echo::new(conn_pair("tcp://127.0.0.1:0"), 8))
        }),
        spec("tcp-raw", "raw TCP loopback, NODELAY", || {
            side(Echo::new(fd_pair("tcp"), 8))
        }),
        spec("unix", "shmwire Connection, unix:", || {
            let addr = unix_address();
            let pair = conn_pair(&addr);
            let _ = std::fs::remove_file(addr.trim_start_matches("unix:"));
            side(Echo::new(pair, 8))
        }),
        spec("uds", "raw Unix socketpair", || {
            side(Echo::new(fd_pair("uds"), 8))
        }),
        spec("shm", "shmwire Connection, shared memory", || {
            side(Echo::new(
                shm_pair(shmwire::WaitStrategy::Adaptive, false),
                8,
            ))
        }),
    ];
    if python_too {
        rtt.insert(
            2,
            spec("py-tcp", "Python multiprocessing.connection, TCP", || {
                python("rtt", 8)
            }),
        );
    }
    let size = 65536;
    let mut thr = vec![
        spec("tcp", "shmwire Connection, tcp://127.0.0.1", move || {
            side(Sink::new(conn_pair("tcp://127.0.0.1:0"), size))
        }),
        spec("tcp-raw", "raw TCP loopback, NODELAY", move || {
            side(Sink::new(fd_pair("tcp"), size))
        }),
        spec("shm", "shmwire Connection, shared memory", move || {
            side(Sink::new(
                shm_pair(shmwire::WaitStrategy::Adaptive, false),
                size,
            ))
        }),
    ];
    if python_too {
        thr.push(spec(
            "py-tcp",
            "Python multiprocessing.connection, TCP",
            move || python("thr", size),
        ));
    }
    vec![
        Sub {
            group: "transport",
            size: 8,
            pin: Pin::Split,
            kind: Kind::Lat,
            budget: s(6.0),
            sides: rtt,
        },
        Sub {
            group: "transport-thr",
            size,
            pin: Pin::Split,
            kind: Kind::Thr,
            budget: s(3.0),
            sides: thr,
        },
    ]
}
