//! A [`Connection`](crate::Connection) over a Unix or TCP socket: Python's
//! `multiprocessing.connection` framing (see [`frame`](super::frame)) on a blocking stream socket.
//!
//! **Receiving.** Bytes are read into the connection's [`FrameReader`] (one system call for many
//! small frames; a large frame's buffer grows as its bytes arrive and is handed over whole). A
//! frame is taken only when the caller's step succeeded, so a message that does not decode stays
//! for the next call, and a receive interrupted by its timeout keeps what arrived. The end of the
//! stream (or a reset, as Python reports it: the peer's process died or closed) at a message
//! boundary is [`Error::Eof`]; in the middle of a message it is an error, never a clean end, and
//! so is a length no `multiprocessing.connection` peer sends; both are sticky (the stream is out of
//! step). A vanished peer (keepalive) is an `Io` error of kind `TimedOut`, also sticky.
//!
//! **Sending.** A frame's header and payload go out in one system call (small ones copied together,
//! large ones as two pieces of one `sendmsg`), with `MSG_NOSIGNAL`: a closed peer is
//! [`Error::BrokenPipe`], never `SIGPIPE`. A call without a timeout blocks in the kernel while the
//! socket's buffer is full, as Python's does. A timed call that runs out before any byte of the
//! message left is [`Error::Timeout`] (nothing sent); one that runs out part way keeps the rest of
//! that one message and returns `Ok`: the rest goes out before anything else, with the next call
//! on the connection (a send, a receive, `poll`, or [`wait`](crate::wait)), so the peer never sees
//! half a message followed by another.
//!
//! No `PeerDied` here: a socket has no liveness tokens, and Python reports its peer's death as the
//! end of the stream.

use super::frame::{DEFAULT_MAX_MESSAGE, ESCAPE_THRESHOLD, FrameError, FrameReader, encode_header};
use super::stream::{DEAD_PEER_TIMEOUT, Family, Sock};
use crate::codec;
use crate::error::{Error, Result};
use crate::wait::Deadline;
use crate::wait::select::Armed;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags};
use serde::Serialize;
use std::cell::{Cell, RefCell, RefMut};
use std::fmt;
use std::io::{ErrorKind, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// Messages up to this size (with their header) are copied into one buffer and sent with one
/// `send`; larger ones go as two pieces of one `sendmsg`.
const SMALL: usize = 4096;

/// Polls `fd` for input (`read`) or room to write, until `deadline`; whether it is ready (or hung
/// up, or in error: the next call reports it). Interrupted polls go on.
pub(crate) fn poll_one(fd: BorrowedFd<'_>, read: bool, deadline: Deadline) -> Result<bool> {
    let flags = if read { PollFlags::IN } else { PollFlags::OUT };
    Ok(poll_two(fd, flags, deadline)?.is_some())
}

/// Polls `fd` for `flags` until `deadline`; the events, or `None` when the time ran out.
fn poll_two(fd: BorrowedFd<'_>, flags: PollFlags, deadline: Deadline) -> Result<Option<PollFlags>> {
    loop {
        let mut p = [PollFd::new(&fd, flags)];
        let ts = deadline.remaining().map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        match rustix::event::poll(&mut p, ts.as_ref()) {
            Ok(n) if n > 0 => return Ok(Some(p[0].revents())),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        if deadline.is_immediate_or_past() {
            return Ok(None);
        }
    }
}

/// Why a stream can no longer be read (kept, and reported by every later receive).
#[derive(Debug, Clone)]
struct Lost {
    kind: ErrorKind,
    why: String,
}

impl Lost {
    fn error(&self) -> Error {
        Error::io(self.kind, self.why.clone())
    }
}

/// Process-local state of a socket end.
struct State {
    reader: FrameReader,
    /// The peer closed its side (or reset it): no more bytes will come.
    eof: bool,
    lost: Option<Lost>,
    /// A frame over the limit was refused: the next receive reports [`Error::TooLarge`].
    refused: bool,
    /// The rest of a message a timed send left part way, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// Lengths above this use the `-1` escape (a test lowers it).
    escape: u64,
    /// Reused for encoding values.
    scratch: Vec<u8>,
    dead_peer: Duration,
}

/// One end of a socket connection.
pub(crate) struct SockConn {
    sock: Sock,
    family: Family,
    peer: String,
    closed: Cell<bool>,
    st: RefCell<State>,
    wait: Cell<crate::WaitStrategy>,
}

impl fmt::Debug for SockConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("transport", &self.family)
            .field("peer", &self.peer)
            .field("closed", &self.closed.get())
            .finish()
    }
}

impl SockConn {
    /// A connection over the connected socket `sock` (options already set), to `peer`.
    pub(crate) fn new(sock: Sock, family: Family, peer: String) -> SockConn {
        SockConn {
            sock,
            family,
            peer,
            closed: Cell::new(false),
            wait: Cell::new(crate::WaitStrategy::default()),
            st: RefCell::new(State {
                reader: FrameReader::new(DEFAULT_MAX_MESSAGE),
                eof: false,
                lost: None,
                refused: false,
                out: Vec::new(),
                out_at: 0,
                escape: ESCAPE_THRESHOLD,
                scratch: Vec::new(),
                dead_peer: DEAD_PEER_TIMEOUT,
            }),
        }
    }

    fn begin(&self) -> Result<RefMut<'_, State>> {
        if self.closed.get() {
            return Err(Error::Misuse);
        }
        self.st.try_borrow_mut().map_err(|_| Error::Misuse)
    }

    pub(crate) fn family(&self) -> Family {
        self.family
    }

    pub(crate) fn close(&self) {
        if !self.closed.replace(true) {
            self.sock.release();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub(crate) fn wait_strategy(&self) -> crate::WaitStrategy {
        self.wait.get()
    }

    pub(crate) fn set_wait_strategy(&self, w: crate::WaitStrategy) -> Result<()> {
        self.wait.set(w);
        Ok(())
    }

    pub(crate) fn max_message(&self) -> usize {
        self.st.borrow().reader.max()
    }

    pub(crate) fn set_max_message(&self, max: usize) -> Result<()> {
        self.begin()?.reader.set_max(max);
        Ok(())
    }

    pub(crate) fn dead_peer_timeout(&self) -> Option<Duration> {
        (self.family == Family::Tcp).then(|| self.st.borrow().dead_peer)
    }

    pub(crate) fn set_dead_peer_timeout(&self, d: Duration) -> Result<()> {
        let mut st = self.begin()?;
        if self.family == Family::Tcp {
            super::stream::set_dead_peer(&self.sock, d)?;
            st.dead_peer = d;
        }
        Ok(())
    }

    /// The kernel's send buffer, bytes.
    pub(crate) fn capacity(&self) -> usize {
        rustix::net::sockopt::socket_send_buffer_size(&self.sock).unwrap_or(0)
    }

    #[cfg(feature = "test-hooks")]
    pub(crate) fn set_escape_threshold(&self, t: u64) {
        self.st.borrow_mut().escape = t;
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    // ---- sending ---------------------------------------------------------------------------------

    pub(crate) fn send_bytes_at(&self, payload: &[u8], deadline: Deadline) -> Result<()> {
        let mut st = self.begin()?;
        self.send_frame(&mut st, payload, deadline)
    }

    /// Writes what a timed send left, until `deadline` (see `flush_out`).
    pub(crate) fn flush_at(&self, deadline: Deadline) -> Result<()> {
        let mut st = self.begin()?;
        self.flush_out(&mut st, deadline)
    }

    pub(crate) fn send_value_at<T: Serialize + ?Sized>(
        &self,
        value: &T,
        deadline: Deadline,
    ) -> Result<()> {
        let len = codec::encoded_len(value)?;
        let mut st = self.begin()?;
        let mut buf = std::mem::take(&mut st.scratch);
        buf.clear();
        buf.resize(12 + len, 0);
        let out = codec::encode_into(value, &mut buf[12..]).and_then(|()| {
            let mut h = [0u8; 12];
            let hn = encode_header(len, st.escape, &mut h);
            buf[12 - hn..12].copy_from_slice(&h[..hn]);
            self.flush_out(&mut st, deadline)?;
            self.write_all(&mut st, &[&buf[12 - hn..]], deadline)
        });
        codec::trim_scratch(&mut buf);
        st.scratch = buf;
        out
    }

    /// Lets `fill` write a message of `len` bytes (in private memory), then sends it.
    pub(crate) fn send_filled<R>(
        &self,
        len: usize,
        deadline: Deadline,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        let mut st = self.begin()?;
        let mut buf = std::mem::take(&mut st.scratch);
        buf.clear();
        buf.try_reserve(len).map_err(|_| Error::TooLarge)?;
        buf.resize(len, 0);
        let r = fill(&mut buf);
        let out = self.send_frame(&mut st, &buf, deadline);
        codec::trim_scratch(&mut buf);
        st.scratch = buf;
        out.map(|()| r)
    }

    fn send_frame(&self, st: &mut State, payload: &[u8], deadline: Deadline) -> Result<()> {
        self.flush_out(st, deadline)?;
        let mut h = [0u8; 12];
        let hn = encode_header(payload.len(), st.escape, &mut h);
        if hn + payload.len() <= SMALL {
            let mut b = [0u8; SMALL];
            b[..hn].copy_from_slice(&h[..hn]);
            b[hn..hn + payload.len()].copy_from_slice(payload);
            return self.write_all(st, &[&b[..hn + payload.len()]], deadline);
        }
        self.write_all(st, &[&h[..hn], payload], deadline)
    }

    /// What a failed send means.
    fn send_error(&self, st: &mut State, e: rustix::io::Errno) -> Error {
        match e {
            rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET => Error::BrokenPipe,
            rustix::io::Errno::TIMEDOUT => self.lose(st),
            e => e.into(),
        }
    }

    /// The peer stopped answering (keepalive or unacknowledged data gave up).
    fn lose(&self, st: &mut State) -> Error {
        let lost = Lost {
            kind: ErrorKind::TimedOut,
            why: format!(
                "the peer {} stopped answering for {:?} (its host is gone, or the network between): the connection is lost; connect again",
                self.peer, st.dead_peer
            ),
        };
        let e = lost.error();
        st.lost = Some(lost);
        e
    }

    /// Writes the pieces `bufs` (one message) whole; on a timeout, `Timeout` if nothing was
    /// written, else the rest is kept for the next call and the message counts as sent.
    fn write_all(&self, st: &mut State, bufs: &[&[u8]], deadline: Deadline) -> Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut flags = SendFlags::NOSIGNAL;
        if deadline.remaining().is_some() {
            flags |= SendFlags::DONTWAIT;
        }
        let mut sent = 0;
        while sent < total {
            let mut iov: [IoSlice<'_>; 2] = [IoSlice::new(&[]), IoSlice::new(&[])];
            let mut k = 0;
            let mut skip = sent;
            for b in bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                iov[k] = IoSlice::new(&b[skip..]);
                skip = 0;
                k += 1;
            }
            let r = if k == 1 {
                rustix::net::send(&self.sock, &iov[0], flags)
            } else {
                rustix::net::sendmsg(
                    &self.sock,
                    &iov[..k],
                    &mut SendAncillaryBuffer::default(),
                    flags,
                )
            };
            match r {
                Ok(n) => sent += n,
                Err(rustix::io::Errno::AGAIN) => {
                    if !poll_one(self.sock.as_fd(), false, deadline)? {
                        if sent == 0 {
                            return Err(Error::Timeout);
                        }
                        // Part of the message left: the rest goes first with the next call.
                        st.out.clear();
                        st.out_at = 0;
                        let mut skip = sent;
                        for b in bufs {
                            if skip >= b.len() {
                                skip -= b.len();
                                continue;
                            }
                            st.out.extend_from_slice(&b[skip..]);
                            skip = 0;
                        }
                        return Ok(());
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(self.send_error(st, e)),
            }
        }
        Ok(())
    }

    /// Writes what a timed send left (see the module docs); `Timeout` if it could not within
    /// `deadline` (what is left stays).
    fn flush_out(&self, st: &mut State, deadline: Deadline) -> Result<()> {
        let mut flags = SendFlags::NOSIGNAL;
        if deadline.remaining().is_some() {
            flags |= SendFlags::DONTWAIT;
        }
        while st.out_at < st.out.len() {
            match rustix::net::send(&self.sock, &st.out[st.out_at..], flags) {
                Ok(n) => st.out_at += n,
                Err(rustix::io::Errno::AGAIN) => {
                    if !poll_one(self.sock.as_fd(), false, deadline)? {
                        return Err(Error::Timeout);
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(self.send_error(st, e)),
            }
        }
        if !st.out.is_empty() {
            st.out = Vec::new();
            st.out_at = 0;
        }
        Ok(())
    }

    fn has_out(st: &State) -> bool {
        st.out_at < st.out.len()
    }

    // ---- receiving -------------------------------------------------------------------------------

    /// A whole frame now (its length), or the end or error the stream holds; `None`: more bytes
    /// are needed.
    fn look(&self, st: &mut State) -> Result<Option<usize>> {
        if std::mem::take(&mut st.refused) {
            return Err(Error::TooLarge);
        }
        if let Some(l) = &st.lost {
            return Err(l.error());
        }
        match st.reader.frame() {
            Ok(Some(n)) => return Ok(Some(n)),
            Ok(None) => {}
            Err(FrameError::TooLarge { .. } | FrameError::NoMemory) => {
                return Err(Error::TooLarge);
            }
            Err(FrameError::BadLength(n)) => {
                let lost = Lost {
                    kind: ErrorKind::InvalidData,
                    why: format!(
                        "the peer {} sent a frame length of {n}, which no multiprocessing.connection peer sends: it does not speak that protocol (or the stream is damaged); close the connection",
                        self.peer
                    ),
                };
                st.lost = Some(lost.clone());
                return Err(lost.error());
            }
        }
        if st.eof {
            if st.reader.at_boundary() {
                return Err(Error::Eof);
            }
            let lost = Lost {
                kind: ErrorKind::UnexpectedEof,
                why: format!(
                    "the peer {} closed the connection in the middle of a message ({} bytes of it arrived): the message is lost; connect again",
                    self.peer,
                    st.reader.buffered()
                ),
            };
            st.lost = Some(lost.clone());
            return Err(lost.error());
        }
        Ok(None)
    }

    /// Reads once, waiting until `deadline` for bytes (and writing what a timed send left, meanwhile).
    fn read_more(&self, st: &mut State, deadline: Deadline) -> Result<()> {
        loop {
            if Self::has_out(st) {
                match self.flush_out(st, Deadline::after(Some(Duration::ZERO))) {
                    Ok(()) | Err(Error::Timeout) => {}
                    Err(Error::BrokenPipe) => {} // the reading side reports the end
                    Err(e) => return Err(e),
                }
            }
            let blocking = deadline.remaining().is_none() && !Self::has_out(st);
            if !blocking {
                let mut flags = PollFlags::IN;
                if Self::has_out(st) {
                    flags |= PollFlags::OUT;
                }
                // With output left, wake for room too (then write it, and look again).
                let wake = if Self::has_out(st) {
                    Deadline::after(Some(
                        deadline
                            .remaining()
                            .map_or(crate::PROBE_INTERVAL, |d| d.min(crate::PROBE_INTERVAL)),
                    ))
                } else {
                    deadline
                };
                match poll_two(self.sock.as_fd(), flags, wake)? {
                    None if deadline.is_immediate_or_past() => return Err(Error::Timeout),
                    None => continue,
                    Some(ev) if !ev.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) => {
                        continue; // room to write: the loop writes it
                    }
                    Some(_) => {}
                }
            }
            let flags = if blocking {
                RecvFlags::empty()
            } else {
                RecvFlags::DONTWAIT
            };
            let sock = &self.sock;
            let r = st
                .reader
                .fill(|room| rustix::net::recv(sock, room, flags).map(|((init, _), _)| init.len()));
            match r {
                Err(_) => return Err(Error::TooLarge), // no memory for what arrives: it stays
                Ok(Ok(0)) => {
                    st.eof = true;
                    return Ok(());
                }
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR)) => {
                    if deadline.is_immediate_or_past() {
                        return Err(Error::Timeout);
                    }
                }
                // A reset: the peer's process died or closed with data unread. Python reports it
                // as the end; so do we (`Eof` at a message boundary).
                Ok(Err(rustix::io::Errno::CONNRESET)) => {
                    st.eof = true;
                    return Ok(());
                }
                Ok(Err(rustix::io::Errno::TIMEDOUT)) => return Err(self.lose(st)),
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Waits until `deadline` for a whole frame; its length.
    fn next_frame(&self, st: &mut State, deadline: Deadline) -> Result<usize> {
        loop {
            if let Some(n) = self.look(st)? {
                return Ok(n);
            }
            self.read_more(st, deadline)?;
        }
    }

    /// Receives one message and hands it to `take`; the message is consumed only if `take`
    /// succeeds.
    pub(crate) fn recv_map<R>(
        &self,
        deadline: Deadline,
        take: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        let mut st = self.begin()?;
        self.next_frame(&mut st, deadline)?;
        let out = take(st.reader.payload())?;
        st.reader.consume();
        Ok(out)
    }

    pub(crate) fn recv_bytes_at(&self, deadline: Deadline) -> Result<Vec<u8>> {
        let mut st = self.begin()?;
        self.next_frame(&mut st, deadline)?;
        st.reader.take_vec().map_err(|_| Error::TooLarge)
    }

    /// [`recv_bytes_at`](Self::recv_bytes_at) refusing a message longer than `max` (skipped):
    /// the handshake's limit.
    pub(crate) fn recv_bytes_limited(&self, max: usize, deadline: Deadline) -> Result<Vec<u8>> {
        let mut st = self.begin()?;
        let old = st.reader.max();
        st.reader.set_max(max);
        let r = self
            .next_frame(&mut st, deadline)
            .and_then(|_| st.reader.take_vec().map_err(|_| Error::TooLarge));
        st.reader.set_max(old);
        r
    }

    pub(crate) fn recv_into_at(&self, buf: &mut [u8], deadline: Deadline) -> Result<usize> {
        self.recv_map(deadline, |m| {
            if m.len() > buf.len() {
                return Err(Error::BufferTooShort { needed: m.len() });
            }
            buf[..m.len()].copy_from_slice(m);
            Ok(m.len())
        })
    }

    /// Whether a message (or the end) is ready, waiting until `deadline`.
    pub(crate) fn poll_at(&self, deadline: Deadline) -> Result<bool> {
        let mut st = self.begin()?;
        loop {
            if self.look(&mut st)?.is_some() {
                return Ok(true);
            }
            match self.read_more(&mut st, deadline) {
                Ok(()) => {}
                Err(Error::Timeout) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether a receive would return at once (a message, the end, or an error), reading what has
    /// arrived without waiting.
    fn ready_now(&self, st: &mut State) -> bool {
        loop {
            match self.look(st) {
                Ok(Some(_)) => return true,
                Err(Error::TooLarge) => {
                    st.refused = true;
                    return true;
                }
                Err(_) => return true,
                Ok(None) => {}
            }
            match self.read_more(st, Deadline::after(Some(Duration::ZERO))) {
                Ok(()) => {}
                Err(Error::Timeout) => return false,
                Err(Error::TooLarge) => {
                    st.refused = true;
                    return true;
                }
                Err(_) => return true,
            }
        }
    }

    pub(crate) fn prepare_poll(&self) -> Result<bool> {
        let mut st = self.begin()?;
        Ok(self.ready_now(&mut st))
    }

    pub(crate) fn arm(&self) -> Result<Armed> {
        let mut st = self.begin()?;
        if self.ready_now(&mut st) {
            return Ok(Armed::Ready);
        }
        if Self::has_out(&st) {
            return Ok(Armed::Tick); // output left: look again shortly (and write it)
        }
        Ok(Armed::Fd(std::os::fd::AsRawFd::as_raw_fd(
            &self.sock.as_fd(),
        )))
    }

    pub(crate) fn check(&self) -> Result<bool> {
        let mut st = self.begin()?;
        Ok(self.ready_now(&mut st))
    }
}

impl Drop for SockConn {
    fn drop(&mut self) {
        // A timed send's rest: one last try, without waiting (not when the connection is moving
        // into a child just forked: the child writes it).
        let moving = self.sock.moving();
        if let Ok(mut st) = self.st.try_borrow_mut() {
            if !moving && !self.closed.get() && Self::has_out(&st) {
                let _ = self.flush_out(&mut st, Deadline::after(Some(Duration::ZERO)));
            }
        }
        self.sock.release();
    }
}
