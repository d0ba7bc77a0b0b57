//! The paths under test, each as a pair of ends between a parent and a forked child: the OS paths
//! (pipe, Unix socketpair sleeping or busy-polling, TCP loopback with `TCP_NODELAY`), the two
//! shared-memory floors (one cache line each way, spinning or futex), and shmwire's `Connection`
//! (copying, or in place).
//!
//! The OS paths and floors are written straight against libc, as the C programs in
//! `../shared/baselines/ipc.c` are, so that they are as fast as the C originals and the ratios mean
//! something. Fairness: the OS paths get the buffer shmwire's ring has ([`OS_BUFFER`]: `F_SETPIPE_SZ`,
//! `SO_SNDBUFFORCE`/`SO_RCVBUFFORCE`, falling back to what the limits allow); the futex floor wakes only
//! when its waiter flag says the other side sleeps, as shmwire's eventcount does. Also here: [`Shared`],
//! an anonymous shared mapping of atomics that a bench's forked children see, and futex helpers.
//! This file is also compiled into the criterion benches (`benches/pipe.rs`, `benches/queue.rs`).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The buffer the OS paths are given: the size of one shmwire ring ([`shmwire::DEFAULT_CAPACITY`]).
pub const OS_BUFFER: usize = shmwire::DEFAULT_CAPACITY;

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
    /// Receive by polling `recv(MSG_DONTWAIT)` instead of sleeping in `read` (sockets only).
    busy: bool,
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
            let rest = &mut buf[off..];
            let n = if self.busy {
                // SAFETY: valid buffer range and an open socket.
                let n = unsafe {
                    libc::recv(
                        self.rd,
                        rest.as_mut_ptr().cast(),
                        rest.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
                {
                    std::hint::spin_loop();
                    continue;
                }
                n
            } else {
                // SAFETY: valid buffer range and an open descriptor.
                unsafe { libc::read(self.rd, rest.as_mut_ptr().cast(), rest.len()) }
            };
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

fn pipe_size(fd: RawFd) {
    // SAFETY: fcntl on an open pipe; failure (above the pipe-max-size limit) keeps the default.
    if unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, OS_BUFFER as libc::c_int) } < 0 {
        let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<libc::c_int>().ok())
            .unwrap_or(0);
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, max) };
    }
}

fn socket_size(fd: RawFd) {
    let v = OS_BUFFER as libc::c_int;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        let p = (&v as *const libc::c_int).cast();
        // SAFETY: setsockopt with a valid int option on an open socket. Without CAP_NET_ADMIN the
        // forced form fails and the plain one is capped by wmem_max/rmem_max.
        if unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, force, p, len) } != 0 {
            // SAFETY: as above.
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, plain, p, len) };
        }
    }
}

/// What the OS paths got: (pipe buffer, socket send buffer as the kernel reports it), in bytes.
pub fn os_buffers() -> (usize, usize) {
    let (a, b) = fd_pair("pipe");
    // SAFETY: F_GETPIPE_SZ on an open pipe.
    let pipe = unsafe { libc::fcntl(a.wr, libc::F_GETPIPE_SZ) }.max(0) as usize;
    drop((a, b));
    let (a, b) = fd_pair("uds");
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a valid int.
    unsafe {
        libc::getsockopt(
            a.wr,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    drop((a, b));
    (pipe, v.max(0) as usize)
}

fn fd_link(rd: RawFd, wr: RawFd, owned: Vec<RawFd>, busy: bool) -> FdLink {
    FdLink {
        rd,
        wr,
        owned,
        busy,
    }
}

/// Two ends of the OS path `kind`: "pipe" (two pipes), "uds" (a socketpair), "uds-busy" (a
/// socketpair whose ends busy-poll), "tcp" (loopback, `TCP_NODELAY`). Each has [`OS_BUFFER`].
pub fn fd_pair(kind: &str) -> (FdLink, FdLink) {
    match kind {
        "pipe" => {
            let (mut a, mut b) = ([0; 2], [0; 2]);
            // SAFETY: valid out-arrays.
            check(
                unsafe { libc::pipe2(a.as_mut_ptr(), libc::O_CLOEXEC) },
                "pipe",
            );
            // SAFETY: as above.
            check(
                unsafe { libc::pipe2(b.as_mut_ptr(), libc::O_CLOEXEC) },
                "pipe",
            );
            pipe_size(a[1]);
            pipe_size(b[1]);
            (
                fd_link(b[0], a[1], vec![b[0], a[1]], false),
                fd_link(a[0], b[1], vec![a[0], b[1]], false),
            )
        }
        "uds" | "uds-busy" => {
            let mut s = [0; 2];
            let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
            // SAFETY: valid out-array.
            check(
                unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, s.as_mut_ptr()) },
                "socketpair",
            );
            socket_size(s[0]);
            socket_size(s[1]);
            let busy = kind == "uds-busy";
            (
                fd_link(s[0], s[0], vec![s[0]], busy),
                fd_link(s[1], s[1], vec![s[1]], busy),
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
            socket_size(c);
            socket_size(s);
            (fd_link(c, c, vec![c], false), fd_link(s, s, vec![s], false))
        }
        other => panic!("unknown path {other}"),
    }
}

// ---- shared-memory floors --------------------------------------------------------------------------

/// A cache line each way, in an anonymous shared mapping.
#[repr(C, align(128))]
struct Line {
    seq: AtomicU32,
    /// 1 while the receiver sleeps (or is about to) on `seq`: the sender calls `FUTEX_WAKE` only then.
    waiter: AtomicU32,
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

/// Two ends of a floor: spinning, or sleeping on a futex whenever the message is not there yet (the
/// sender wakes only a receiver that said it sleeps).
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

/// A futex call on `word` (no timeout): `FUTEX_WAIT` while it holds `val`, or `FUTEX_WAKE` `val`
/// waiters.
pub fn futex(word: &AtomicU32, op: libc::c_int, val: u32) {
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
        // ORDERING: SeqCst store of `seq` then SeqCst load of `waiter`, against the receiver's SeqCst
        // store of `waiter` then load of `seq`: one of the two sees the other's store, so a receiver
        // that goes to sleep is always woken.
        out.seq.store(self.seq, Ordering::SeqCst);
        if self.futex && out.waiter.load(Ordering::SeqCst) != 0 {
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
                // ORDERING: see `send`.
                inc.waiter.store(1, Ordering::SeqCst);
                let v = inc.seq.load(Ordering::SeqCst);
                if v != want {
                    futex(&inc.seq, libc::FUTEX_WAIT, v);
                }
                inc.waiter.store(0, Ordering::Relaxed);
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
                    // Read every byte of the message in place, as a consumer of the data would (a
                    // word at a time), and copy out the head the bench looks at (mark and stamp).
                    let words = b.chunks_exact(8);
                    let tail = words.remainder().iter().fold(0u64, |a, &x| a ^ x as u64);
                    let x = words.fold(tail, |a, w| {
                        a ^ u64::from_ne_bytes(w.try_into().expect("8 bytes"))
                    });
                    std::hint::black_box(x);
                    let n = buf.len().min(b.len()).min(16);
                    buf[..n].copy_from_slice(&b[..n]);
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

// ---- shared control words ------------------------------------------------------------------------

/// Types made only of atomics (and padding), valid when all bytes are zero.
///
/// # Safety
/// All-zero bytes must be a valid value, and every field another process writes must be an atomic.
pub unsafe trait Zeroed {}
// SAFETY: an atomic integer, valid at zero.
unsafe impl Zeroed for AtomicU32 {}

/// A value of atomics in an anonymous shared mapping, created zeroed: forked children (and threads)
/// reach it through [`Ref`]s; it is unmapped when this owner drops (after its children are gone).
pub struct Shared<T: Zeroed> {
    ptr: *mut T,
}

/// A handle on a [`Shared`] value for a child or a thread (no unmapping).
pub struct Ref<T: Zeroed>(*const T);

impl<T: Zeroed> Clone for Ref<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Zeroed> Copy for Ref<T> {}
// SAFETY: T is made of atomics (Zeroed), shared on purpose; the mapping outlives every user (children
// and threads are joined before the owner unmaps it).
unsafe impl<T: Zeroed> Send for Ref<T> {}
// SAFETY: as above.
unsafe impl<T: Zeroed> Sync for Ref<T> {}

impl<T: Zeroed> std::ops::Deref for Ref<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a live mapping of a T made of atomics (a reference over atomics is sound even when
        // other processes write them).
        unsafe { &*self.0 }
    }
}

impl<T: Zeroed> Shared<T> {
    /// A zeroed `T` in a fresh shared anonymous mapping.
    pub fn new() -> Self {
        // SAFETY: a fresh anonymous shared mapping, zero-filled, large enough for T (page aligned,
        // so aligned for T); all-zero is a valid T (Zeroed).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<T>().max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap");
        Shared { ptr: p.cast() }
    }

    /// A handle for children and threads.
    pub fn at(&self) -> Ref<T> {
        Ref(self.ptr)
    }
}

impl<T: Zeroed> Default for Shared<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Zeroed> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: as for `Ref`.
        unsafe { &*self.ptr }
    }
}

impl<T: Zeroed> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the owner drops it after joining its
        // children and threads.
        unsafe { libc::munmap(self.ptr.cast(), std::mem::size_of::<T>().max(1)) };
    }
}

/// Sleeps until `word` reaches `target` (it only grows; counted with wrapping-free u32s).
pub fn wait_until(word: &AtomicU32, target: u32) {
    loop {
        let v = word.load(Ordering::Acquire);
        if v >= target {
            return;
        }
        futex(word, libc::FUTEX_WAIT, v);
    }
}

/// Stores `value` in `word` and wakes everybody sleeping on it.
pub fn publish(word: &AtomicU32, value: u32) {
    word.store(value, Ordering::Release);
    futex(word, libc::FUTEX_WAKE, i32::MAX as u32);
}
