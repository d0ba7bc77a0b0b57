//! The paths under test, each as a pair of ends between a parent and a forked child: the OS paths
//! (pipe, Unix socketpair, TCP loopback with `TCP_NODELAY`), the two shared-memory floors (one cache
//! line each way, spinning or futex), and shmwire's `Connection` (copying, or zero-copy).
//!
//! The OS paths and floors are written straight against libc, as the C programs in
//! `../shared/baselines/ipc.c` are, so that they are as fast as the C originals and the ratios mean
//! something. This file is also compiled into the criterion benches (`benches/pipe.rs`).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One end of a path: whole messages of a size both sides know.
pub trait Link {
    /// Sends `buf` as one message.
    fn send(&mut self, buf: &[u8]);
    /// Receives one message of `buf.len()` bytes into `buf`; `false` when the peer is gone.
    fn recv(&mut self, buf: &mut [u8]) -> bool;
}

// ---- file descriptors ----------------------------------------------------------------------------

/// An end over file descriptors (pipe, socket).
pub struct FdLink {
    rd: RawFd,
    wr: RawFd,
    owned: Vec<RawFd>,
}

impl Drop for FdLink {
    fn drop(&mut self) {
        for &fd in &self.owned {
            // SAFETY: descriptors this end owns, closed once.
            unsafe { libc::close(fd) };
        }
    }
}

impl Link for FdLink {
    fn send(&mut self, buf: &[u8]) {
        let mut off = 0;
        while off < buf.len() {
            // SAFETY: valid buffer range and an open descriptor.
            let n = unsafe { libc::write(self.wr, buf[off..].as_ptr().cast(), buf.len() - off) };
            assert!(n > 0, "write failed");
            off += n as usize;
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> bool {
        let mut off = 0;
        while off < buf.len() {
            // SAFETY: valid buffer range and an open descriptor.
            let n = unsafe { libc::read(self.rd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
            if n <= 0 {
                return false;
            }
            off += n as usize;
        }
        true
    }
}

fn check(r: libc::c_int, what: &str) {
    assert!(r == 0, "{what}: {}", std::io::Error::last_os_error());
}

/// Two ends of the OS path `kind` ("pipe", "uds", "tcp").
pub fn fd_pair(kind: &str) -> (FdLink, FdLink) {
    match kind {
        "pipe" => {
            let (mut a, mut b) = ([0; 2], [0; 2]);
            // SAFETY: valid out-arrays.
            check(unsafe { libc::pipe(a.as_mut_ptr()) }, "pipe");
            // SAFETY: as above.
            check(unsafe { libc::pipe(b.as_mut_ptr()) }, "pipe");
            (
                FdLink {
                    rd: b[0],
                    wr: a[1],
                    owned: vec![b[0], a[1]],
                },
                FdLink {
                    rd: a[0],
                    wr: b[1],
                    owned: vec![a[0], b[1]],
                },
            )
        }
        "uds" => {
            let mut s = [0; 2];
            // SAFETY: valid out-array.
            check(
                unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, s.as_mut_ptr()) },
                "socketpair",
            );
            (
                FdLink {
                    rd: s[0],
                    wr: s[0],
                    owned: vec![s[0]],
                },
                FdLink {
                    rd: s[1],
                    wr: s[1],
                    owned: vec![s[1]],
                },
            )
        }
        "tcp" => {
            use std::os::fd::IntoRawFd;
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).expect("connect");
            let (s, _) = l.accept().expect("accept");
            c.set_nodelay(true).unwrap();
            s.set_nodelay(true).unwrap();
            let (c, s) = (c.into_raw_fd(), s.into_raw_fd());
            (
                FdLink {
                    rd: c,
                    wr: c,
                    owned: vec![c],
                },
                FdLink {
                    rd: s,
                    wr: s,
                    owned: vec![s],
                },
            )
        }
        other => panic!("unknown path {other}"),
    }
}

// ---- shared-memory floors --------------------------------------------------------------------------

/// A cache line each way, in an anonymous shared mapping.
#[repr(C, align(128))]
struct Line {
    seq: AtomicU32,
    payload: AtomicU64,
}

#[repr(C)]
struct Lines {
    ping: Line,
    pong: Line,
}

/// An end of a floor: it waits on one line and posts on the other.
pub struct FloorLink {
    lines: *mut Lines,
    parent: bool,
    futex: bool,
    seq: u32,
}

// SAFETY: the mapping is shared memory that outlives both ends (never unmapped while in use); each
// end runs in one thread.
unsafe impl Send for FloorLink {}

/// Two ends of a floor: spinning, or sleeping on a futex after each post.
pub fn floor_pair(futex: bool) -> (FloorLink, FloorLink) {
    // SAFETY: a fresh anonymous shared mapping, zero-filled, large enough for `Lines`.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<Lines>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED);
    let lines = p as *mut Lines;
    (
        FloorLink {
            lines,
            parent: true,
            futex,
            seq: 0,
        },
        FloorLink {
            lines,
            parent: false,
            futex,
            seq: 0,
        },
    )
}

fn futex(word: &AtomicU32, op: libc::c_int, val: u32) {
    // SAFETY: a futex call on a valid word in shared memory (no timeout, no second word).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            0usize,
            0usize,
            0u32,
        )
    };
}

impl FloorLink {
    fn lines(&self) -> (&Line, &Line) {
        // SAFETY: the mapping stays valid while the ends exist; fields are atomics.
        let l = unsafe { &*self.lines };
        if self.parent {
            (&l.ping, &l.pong)
        } else {
            (&l.pong, &l.ping)
        }
    }
}

impl Link for FloorLink {
    fn send(&mut self, buf: &[u8]) {
        // The parent numbers each ping; the child answers with the number it received.
        if self.parent {
            self.seq = self.seq.wrapping_add(1);
        }
        let (out, _) = self.lines();
        let mut w = [0u8; 8];
        let n = buf.len().min(8);
        w[..n].copy_from_slice(&buf[..n]);
        out.payload.store(u64::from_le_bytes(w), Ordering::Relaxed);
        out.seq.store(self.seq, Ordering::Release);
        if self.futex {
            futex(&out.seq, libc::FUTEX_WAKE, 1);
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> bool {
        let (_, inc) = self.lines();
        let want = if self.parent {
            self.seq
        } else {
            self.seq.wrapping_add(1)
        };
        loop {
            let v = inc.seq.load(Ordering::Acquire);
            if v == want {
                break;
            }
            if self.futex {
                futex(&inc.seq, libc::FUTEX_WAIT, v);
            } else {
                std::hint::spin_loop();
            }
        }
        let v = inc.payload.load(Ordering::Relaxed).to_le_bytes();
        if !self.parent {
            self.seq = want;
        }
        let n = buf.len().min(8);
        buf[..n].copy_from_slice(&v[..n]);
        v != [0xff; 8]
    }
}

// ---- shmwire ------------------------------------------------------------------------------------

/// An end over a shmwire `Connection`, copying (`send_bytes`/`recv_bytes_into`) or in place
/// (`send_with`/`recv_with`).
pub struct ShmLink {
    pub conn: shmwire::Connection,
    pub zero_copy: bool,
}

impl Link for ShmLink {
    fn send(&mut self, buf: &[u8]) {
        if self.zero_copy && buf.len() <= self.conn.max_in_place_len() {
            // SAFETY: both ends are this benchmark's own processes, which trust each other.
            unsafe { self.conn.send_with(buf.len(), |b| b.copy_from_slice(buf)) }.unwrap();
        } else {
            self.conn.send_bytes(buf).unwrap();
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> bool {
        if self.zero_copy {
            // SAFETY: both ends are this benchmark's own processes, which trust each other.
            let got = unsafe {
                self.conn.recv_with(|b| {
                    // Read the message in place as a consumer would (one byte per cache line), and
                    // hand back its first byte (the stop mark).
                    std::hint::black_box(b.iter().step_by(64).fold(0u8, |a, &x| a ^ x));
                    if let (Some(d), Some(s)) = (buf.first_mut(), b.first()) {
                        *d = *s;
                    }
                })
            };
            return got.is_ok();
        }
        self.conn.recv_bytes_into(buf).is_ok()
    }
}

/// Two shmwire ends with `wait` strategy.
pub fn shm_pair(wait: shmwire::WaitStrategy, zero_copy: bool) -> (ShmLink, ShmLink) {
    let mut builder = shmwire::Pipe::builder().wait_strategy(wait);
    if let Some(cap) = std::env::var("SHMWIRE_BENCH_CAPACITY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.capacity(cap);
    }
    let (a, b) = builder.build().expect("pipe");
    (
        ShmLink { conn: a, zero_copy },
        ShmLink { conn: b, zero_copy },
    )
}
