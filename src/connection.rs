//! `Connection`: one end of a pipe, as Python's `multiprocessing.connection.Connection`.
//!
//! Messages ride the SPSC rings of the pipe's segment. A message that fits in one frame (half the
//! ring) is one `WHOLE` frame; a larger one is a `HEAD` frame carrying its total length followed by
//! `CONT` frames, streamed through the ring while the reader drains it, so any size the caller can
//! allocate passes through any ring.
//!
//! Two ends of a duplex pipe that both send large messages at the same moment would each wait for the
//! other to read. A sender that finds its ring full while its peer's sender waits for room too drains
//! its incoming ring into a private backlog (read first by later `recv`s), so both make progress.
//!
//! Each operation claims its side of the ring (see `sync::claim`) and checks, when it would block,
//! whether the peer's end is still held; a blocked call probes the peer's liveness tokens between
//! sleeps, so a dead peer is an error within [`crate::PROBE_INTERVAL`] or two, never a hang.

use crate::codec;
use crate::error::{Error, Result};
use crate::ring::spsc::{Frame, Reservation, Spsc, TAG_CONT, TAG_HEAD, TAG_WHOLE};
use crate::segment::Segment;
use crate::select::{Armed, Waitable};
use crate::sync::WaitStrategy;
use crate::sync::claim::{ClaimGuard, claim};
use crate::sync::eventcount::Key;
use crate::sync::wait::{Deadline, Spinner, block_on};
use crate::timeout::Timeout;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::{Cell, OnceCell, RefCell, RefMut};
use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// One end of a [`Pipe`](crate::Pipe).
///
/// `Send` (move it to a thread or into a forked child) but not `Sync` (one user at a time, as a
/// socket). Dropping it closes it. A forked child holds the ends its closure owns; the end closes when
/// every process holding it has closed it or died.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Error, Pipe, Process};
/// let (parent, child) = Pipe::new()?;
/// let mut p = Process::fork(move || {
///     while let Ok(n) = child.recv::<u32>() {
///         child.send(&(n * 2)).unwrap();
///     }
/// })?;
/// parent.send(&21u32)?;
/// assert_eq!(parent.recv::<u32>()?, 42);
/// drop(parent); // the child's recv returns Err(Eof) and its loop ends
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
pub struct Connection {
    seg: Arc<Segment>,
    end: usize,
    peer: usize,
    tx: Option<Spsc>,
    rx: Option<Spsc>,
    closed: Cell<bool>,
    st: RefCell<State>,
    /// The eventcount registration of a `wait()` in progress.
    armed: Cell<Option<Key>>,
    /// A private eventfd for `as_fd` when the pipe has none its peers signal (named pipes).
    own_fd: OnceCell<OwnedFd>,
}

/// Process-local state of an end.
struct State {
    send_spin: Spinner,
    recv_spin: Spinner,
    /// Frames drained from the incoming ring while a send waited (duplex deadlock avoidance).
    backlog: VecDeque<(u32, Vec<u8>)>,
    /// A streamed message received in part when a timeout or error interrupted it.
    partial: Option<Partial>,
}

struct Partial {
    buf: Vec<u8>,
    got: usize,
}

/// A frame to read: in the ring, or taken earlier into the backlog.
enum Piece {
    Ring(Frame),
    Owned(u32, Vec<u8>),
}

impl Piece {
    fn tag(&self) -> u32 {
        match self {
            Piece::Ring(f) => f.tag,
            Piece::Owned(t, _) => *t,
        }
    }

    fn len(&self) -> usize {
        match self {
            Piece::Ring(f) => f.len,
            Piece::Owned(_, v) => v.len(),
        }
    }

    fn read(&self, rx: &Spsc, offset: usize, dst: &mut [u8]) {
        match self {
            Piece::Ring(f) => rx.read_payload(f, offset, dst),
            Piece::Owned(_, v) => dst.copy_from_slice(&v[offset..offset + dst.len()]),
        }
    }

    /// The total length announced by a `HEAD` frame, checked.
    fn total(&self, rx: &Spsc) -> Result<usize> {
        if self.len() < 8 {
            return Err(Error::Corrupt);
        }
        let mut b = [0u8; 8];
        self.read(rx, 0, &mut b);
        let total = u64::from_le_bytes(b);
        if total < (self.len() - 8) as u64 || total > isize::MAX as u64 {
            return Err(Error::Corrupt);
        }
        Ok(total as usize)
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("end", &self.end)
            .field("readable", &self.rx.is_some())
            .field("writable", &self.tx.is_some())
            .field("closed", &self.closed.get())
            .finish()
    }
}

/// Iterations of the inline spin of `quick_frame` (a few microseconds).
const QUICK_SPINS: u32 = 256;

fn alloc(total: usize) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(total).map_err(|_| Error::TooLarge)?;
    v.resize(total, 0);
    Ok(v)
}

impl Connection {
    pub(crate) fn from_parts(
        seg: Arc<Segment>,
        end: usize,
        tx: Option<Spsc>,
        rx: Option<Spsc>,
        wait: WaitStrategy,
    ) -> Connection {
        Connection {
            seg,
            end,
            peer: 1 - end,
            tx,
            rx,
            closed: Cell::new(false),
            armed: Cell::new(None),
            own_fd: OnceCell::new(),
            st: RefCell::new(State {
                send_spin: Spinner::new(wait),
                recv_spin: Spinner::new(wait),
                backlog: VecDeque::new(),
                partial: None,
            }),
        }
    }

    // ---- sending ---------------------------------------------------------------------------------

    /// Sends any serde value (encoded with postcard). Blocks while the ring is full.
    ///
    /// Errors: [`Error::BrokenPipe`] if the other end is closed, [`Error::PeerDied`] if its holders
    /// died, [`Error::Misuse`] on the reading end of a simplex pipe or after `close`.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.send_value(value, Deadline::NEVER)
    }

    /// [`send`](Self::send), giving up with [`Error::Timeout`] (nothing sent) after `timeout`.
    pub fn send_timeout<T: Serialize + ?Sized>(&self, value: &T, timeout: Duration) -> Result<()> {
        self.send_value(value, Deadline::after(Some(timeout)))
    }

    fn send_value<T: Serialize + ?Sized>(&self, value: &T, deadline: Deadline) -> Result<()> {
        let len = codec::encoded_len(value)?;
        if len <= self.max_in_place_len() {
            return self.send_in_place(len, deadline, |buf| codec::encode_into(value, buf))?;
        }
        self.send_bytes_at(&codec::encode(value)?, deadline)
    }

    /// Sends `bytes` as one message, with no encoding; any length.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.send_bytes_at(bytes, Deadline::NEVER)
    }

    /// [`send_bytes`](Self::send_bytes) with a timeout. The timeout bounds the wait for the message to
    /// start: a message larger than half the ring is streamed, and once its first piece is out the call
    /// completes it (or fails if the peer closes or dies), so that `Timeout` always means "nothing
    /// sent".
    pub fn send_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.send_bytes_at(bytes, Deadline::after(Some(timeout)))
    }

    /// Writes a message of `len` bytes in place: `fill` gets the message's bytes inside the ring
    /// (zero-copy). `len` may be at most [`max_in_place_len`](Self::max_in_place_len) (half the
    /// ring), else [`Error::TooLarge`].
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let (a, b) = shmwire::Pipe::new()?;
    /// a.send_with(8, |buf| buf.copy_from_slice(&7u64.to_le_bytes()))?;
    /// let v = b.recv_with(|bytes| u64::from_le_bytes(bytes.try_into().unwrap()))?;
    /// assert_eq!(v, 7);
    /// # Ok(()) }
    /// ```
    pub fn send_with<R>(&self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        self.send_in_place(len, Deadline::NEVER, fill)
    }

    /// [`send_with`](Self::send_with), giving up with [`Error::Timeout`] (nothing sent, `fill` not
    /// called) if the ring has no room within `timeout`.
    pub fn send_with_timeout<R>(
        &self,
        len: usize,
        timeout: Duration,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        self.send_in_place(len, Deadline::after(Some(timeout)), fill)
    }

    /// Sends a plain-old-data value as its raw bytes (no encoding); receive with
    /// [`recv_pod`](Self::recv_pod).
    pub fn send_pod<T: bytemuck::Pod>(&self, value: &T) -> Result<()> {
        let bytes = bytemuck::bytes_of(value);
        if bytes.len() > self.max_in_place_len() {
            return self.send_bytes(bytes);
        }
        self.send_in_place(bytes.len(), Deadline::NEVER, |buf| {
            buf.copy_from_slice(bytes)
        })
    }

    /// The largest message [`send_with`](Self::send_with) takes: half the ring minus a frame header.
    pub fn max_in_place_len(&self) -> usize {
        self.tx
            .as_ref()
            .or(self.rx.as_ref())
            .map_or(0, Spsc::max_payload)
    }

    /// Bytes of the ring each direction uses.
    pub fn capacity(&self) -> usize {
        self.tx
            .as_ref()
            .or(self.rx.as_ref())
            .map_or(0, Spsc::capacity)
    }

    fn send_in_place<R>(
        &self,
        len: usize,
        deadline: Deadline,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        let mut st = self.begin()?;
        let tx = self.tx.as_ref().ok_or(Error::Misuse)?;
        if len > tx.max_payload() {
            return Err(Error::TooLarge);
        }
        let _claim = self.claim_side(&tx.ctl().tx.claim)?;
        let r = match tx.try_reserve(len)? {
            Some(r) if self.seg.role_open(self.peer) => r,
            _ => self.wait_room(&mut st, tx, len, deadline)?,
        };
        let out = fill(tx.payload_mut(&r));
        tx.commit(r, TAG_WHOLE);
        Ok(out)
    }

    fn send_bytes_at(&self, data: &[u8], deadline: Deadline) -> Result<()> {
        let mut st = self.begin()?;
        let tx = self.tx.as_ref().ok_or(Error::Misuse)?;
        let _claim = self.claim_side(&tx.ctl().tx.claim)?;
        let max = tx.max_payload();
        if data.len() <= max {
            // Fast path: room now and the peer there; else wait (which also reports a closed peer).
            let r = match tx.try_reserve(data.len())? {
                Some(r) if self.seg.role_open(self.peer) => r,
                _ => self.wait_room(&mut st, tx, data.len(), deadline)?,
            };
            tx.write_payload(&r, 0, data);
            tx.commit(r, TAG_WHOLE);
            return Ok(());
        }
        // Streamed: pieces of a quarter ring, so the reader drains one while the next is written.
        let piece = (tx.capacity() / 4).min(max);
        let first = (piece - 8).min(data.len());
        let r = self.wait_room(&mut st, tx, 8 + first, deadline)?;
        tx.write_payload(&r, 0, &(data.len() as u64).to_le_bytes());
        tx.write_payload(&r, 8, &data[..first]);
        tx.commit(r, TAG_HEAD);
        let mut off = first;
        while off < data.len() {
            let n = piece.min(data.len() - off);
            let r = self.wait_room(&mut st, tx, n, Deadline::NEVER)?;
            tx.write_payload(&r, 0, &data[off..off + n]);
            tx.commit(r, TAG_CONT);
            off += n;
        }
        Ok(())
    }

    /// Waits until `len` bytes fit in the outgoing ring.
    fn wait_room(
        &self,
        st: &mut State,
        tx: &Spsc,
        len: usize,
        deadline: Deadline,
    ) -> Result<Reservation> {
        let State {
            send_spin, backlog, ..
        } = st;
        let (seg, peer) = (&*self.seg, self.peer);
        let co_located = send_spin.spins_now() && seg.peer_shares_cpu(peer);
        block_on(
            send_spin,
            co_located,
            &tx.ctl().space,
            deadline,
            || {
                if !seg.role_open(peer) {
                    return Err(if seg.role_died(peer) {
                        Error::PeerDied
                    } else {
                        Error::BrokenPipe
                    });
                }
                if let Some(r) = tx.try_reserve(len)? {
                    return Ok(Some(r));
                }
                self.drain_if_peer_blocked(backlog)?;
                Ok(None)
            },
            || seg.probe_role(peer),
        )
    }

    /// If our peer waits for room in its ring while we wait for room in ours, take what it sent into
    /// the backlog so that both sides move on.
    fn drain_if_peer_blocked(&self, backlog: &mut VecDeque<(u32, Vec<u8>)>) -> Result<()> {
        let Some(rx) = &self.rx else { return Ok(()) };
        if !rx.writer_waiting() {
            return Ok(());
        }
        let Ok(_claim) = self.claim_side(&rx.ctl().rx.claim) else {
            return Ok(());
        };
        while let Some(f) = rx.try_peek()? {
            let mut v = vec![0; f.len];
            rx.read_payload(&f, 0, &mut v);
            backlog.push_back((f.tag, v));
            rx.consume(f);
        }
        Ok(())
    }

    // ---- receiving -------------------------------------------------------------------------------

    /// Receives a serde value sent with [`send`](Self::send). Blocks until one arrives.
    ///
    /// Errors: [`Error::Eof`] once the other end is closed and everything it sent was received,
    /// [`Error::PeerDied`] once drained if its holders died, [`Error::Corrupt`] if the bytes are not a
    /// `T`.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_with_at(Deadline::NEVER, codec::decode::<T>)?
    }

    /// [`recv`](Self::recv), giving up with [`Error::Timeout`] after `timeout` (nothing consumed).
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.recv_with_at(Deadline::after(Some(timeout)), codec::decode::<T>)?
    }

    /// Receives a value sent with [`send_pod`](Self::send_pod); a message of another size is
    /// [`Error::Corrupt`].
    pub fn recv_pod<T: bytemuck::Pod>(&self) -> Result<T> {
        self.recv_with_at(Deadline::NEVER, codec::decode_pod::<T>)?
    }

    /// Receives one message as bytes.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_bytes_at(Deadline::NEVER)
    }

    /// [`recv_bytes`](Self::recv_bytes) with a timeout.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_bytes_at(Deadline::after(Some(timeout)))
    }

    /// Receives one message into `buf` and returns its length. If `buf` is too small the message is
    /// kept and the call fails with [`Error::BufferTooShort { needed }`](Error::BufferTooShort); call
    /// again with a larger buffer.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::Error;
    /// let (a, b) = shmwire::Pipe::new()?;
    /// a.send_bytes(b"hello world")?;
    /// let mut small = [0u8; 4];
    /// assert!(matches!(b.recv_bytes_into(&mut small), Err(Error::BufferTooShort { needed: 11 })));
    /// let mut big = [0u8; 64];
    /// let n = b.recv_bytes_into(&mut big)?;
    /// assert_eq!(&big[..n], b"hello world");
    /// # Ok(()) }
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_into_at(buf, Deadline::NEVER)
    }

    /// [`recv_bytes_into`](Self::recv_bytes_into) with a timeout.
    pub fn recv_bytes_into_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        self.recv_into_at(buf, Deadline::after(Some(timeout)))
    }

    /// Reads one message in place: `read` gets a slice of the message (inside the ring when it was
    /// sent in one piece: zero-copy), and the message is consumed when it returns.
    ///
    /// The bytes lie in memory the peer can write: a well-behaved peer does not touch them until
    /// consumed, a hostile one could change them while `read` looks.
    pub fn recv_with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.recv_with_at(Deadline::NEVER, read)
    }

    /// [`recv_with`](Self::recv_with), giving up with [`Error::Timeout`] after `timeout`.
    pub fn recv_with_timeout<R>(
        &self,
        timeout: Duration,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.recv_with_at(Deadline::after(Some(timeout)), read)
    }

    /// Whether a message can be received without blocking, waiting up to `timeout`: `Duration::ZERO`
    /// (or `Timeout::ZERO`) asks and returns at once, `None` (or `Timeout::NEVER`) waits for ever.
    /// Once the other end is closed and drained it fails with [`Error::Eof`] (or [`Error::PeerDied`]).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use std::time::Duration;
    /// let (a, b) = shmwire::Pipe::new()?;
    /// assert!(!b.poll(Duration::ZERO)?);
    /// a.send(&1u8)?;
    /// assert!(b.poll(Duration::from_millis(10))?);
    /// assert!(b.poll(None)?);
    /// # Ok(()) }
    /// ```
    pub fn poll(&self, timeout: impl Into<Timeout>) -> Result<bool> {
        let mut st = self.begin()?;
        let rx = self.rx.as_ref().ok_or(Error::Misuse)?;
        if !st.backlog.is_empty() {
            return Ok(true);
        }
        match self.wait_frame(&mut st, rx, Deadline::after(timeout.into().0)) {
            Ok(_) => Ok(true),
            Err(Error::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn recv_bytes_at(&self, deadline: Deadline) -> Result<Vec<u8>> {
        let mut st = self.begin()?;
        let rx = self.rx.as_ref().ok_or(Error::Misuse)?;
        let _claim = self.claim_side(&rx.ctl().rx.claim)?;
        self.next_owned(&mut st, rx, deadline)
    }

    fn recv_with_at<R>(&self, deadline: Deadline, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let mut st = self.begin()?;
        let rx = self.rx.as_ref().ok_or(Error::Misuse)?;
        let _claim = self.claim_side(&rx.ctl().rx.claim)?;
        if st.partial.is_none() {
            let quick = if st.backlog.is_empty() {
                self.quick_frame(&mut st, rx)?
            } else {
                None
            };
            let piece = match quick {
                Some(f) => Piece::Ring(f), // fast path: it is there
                None => self.next_piece(&mut st, rx, deadline)?,
            };
            match piece {
                Piece::Ring(f) if f.tag == TAG_WHOLE => {
                    let out = read(rx.payload(&f));
                    rx.consume(f);
                    return Ok(out);
                }
                Piece::Owned(TAG_WHOLE, v) => return Ok(read(&v)),
                other => self.put_back(&mut st, other),
            }
        }
        let v = self.next_owned(&mut st, rx, deadline)?;
        Ok(read(&v))
    }

    fn recv_into_at(&self, buf: &mut [u8], deadline: Deadline) -> Result<usize> {
        let mut st = self.begin()?;
        let rx = self.rx.as_ref().ok_or(Error::Misuse)?;
        let _claim = self.claim_side(&rx.ctl().rx.claim)?;
        // Fast path: a whole message arrives within a short inline spin and nothing was set aside
        // earlier. It keeps the generic waiting machinery off the critical path of a ping-pong.
        if st.partial.is_none() && st.backlog.is_empty() {
            if let Some(f) = self.quick_frame(&mut st, rx)? {
                if f.tag == TAG_WHOLE {
                    if f.len > buf.len() {
                        return Err(Error::BufferTooShort { needed: f.len });
                    }
                    rx.read_payload(&f, 0, &mut buf[..f.len]);
                    rx.consume(f);
                    return Ok(f.len);
                }
            }
        }
        loop {
            if let Some(p) = &st.partial {
                let total = p.buf.len();
                if total > buf.len() {
                    return Err(Error::BufferTooShort { needed: total });
                }
                let v = self.next_owned(&mut st, rx, deadline)?;
                buf[..v.len()].copy_from_slice(&v);
                return Ok(v.len());
            }
            let piece = self.next_piece(&mut st, rx, deadline)?;
            match piece.tag() {
                TAG_WHOLE => {
                    let n = piece.len();
                    if n > buf.len() {
                        self.put_back(&mut st, piece);
                        return Err(Error::BufferTooShort { needed: n });
                    }
                    piece.read(rx, 0, &mut buf[..n]);
                    self.finish(rx, piece);
                    return Ok(n);
                }
                TAG_HEAD => {
                    let total = piece.total(rx)?;
                    if total > buf.len() {
                        self.put_back(&mut st, piece);
                        return Err(Error::BufferTooShort { needed: total });
                    }
                    let first = piece.len() - 8;
                    piece.read(rx, 8, &mut buf[..first]);
                    self.finish(rx, piece);
                    let mut got = first;
                    match self.fill(&mut st, rx, deadline, &mut buf[..total], &mut got) {
                        Ok(true) => return Ok(total),
                        Ok(false) => continue, // the sender gave the message up; read the next one
                        Err(e) => {
                            // Keep what arrived for the next call.
                            let mut kept = alloc(total)?;
                            kept[..got].copy_from_slice(&buf[..got]);
                            st.partial = Some(Partial { buf: kept, got });
                            return Err(e);
                        }
                    }
                }
                _ => self.finish(rx, piece), // a piece of a message someone else began: skip it
            }
        }
    }

    /// The next whole message, assembled if it was streamed.
    fn next_owned(&self, st: &mut State, rx: &Spsc, deadline: Deadline) -> Result<Vec<u8>> {
        loop {
            if let Some(mut p) = st.partial.take() {
                let res = self.fill(st, rx, deadline, &mut p.buf, &mut p.got);
                match res {
                    Ok(true) => return Ok(p.buf),
                    Ok(false) => continue,
                    Err(e) => {
                        st.partial = Some(p);
                        return Err(e);
                    }
                }
            }
            let piece = self.next_piece(st, rx, deadline)?;
            match piece.tag() {
                TAG_WHOLE => {
                    let v = match piece {
                        Piece::Owned(_, v) => v,
                        Piece::Ring(f) => {
                            let mut v = vec![0; f.len];
                            rx.read_payload(&f, 0, &mut v);
                            rx.consume(f);
                            v
                        }
                    };
                    return Ok(v);
                }
                TAG_HEAD => {
                    let total = piece.total(rx)?;
                    let mut buf = alloc(total)?;
                    let first = piece.len() - 8;
                    piece.read(rx, 8, &mut buf[..first]);
                    self.finish(rx, piece);
                    st.partial = Some(Partial { buf, got: first });
                }
                _ => self.finish(rx, piece),
            }
        }
    }

    /// Reads `CONT` pieces into `dst[*got..]` until it is full (`Ok(true)`). `Ok(false)` if another
    /// message starts first (its sender died mid-message and another holder of the end went on).
    fn fill(
        &self,
        st: &mut State,
        rx: &Spsc,
        deadline: Deadline,
        dst: &mut [u8],
        got: &mut usize,
    ) -> Result<bool> {
        while *got < dst.len() {
            let piece = self.next_piece(st, rx, deadline)?;
            if piece.tag() != TAG_CONT {
                self.put_back(st, piece);
                return Ok(false);
            }
            let n = piece.len();
            if n > dst.len() - *got {
                return Err(Error::Corrupt);
            }
            piece.read(rx, 0, &mut dst[*got..*got + n]);
            self.finish(rx, piece);
            *got += n;
        }
        Ok(true)
    }

    fn next_piece(&self, st: &mut State, rx: &Spsc, deadline: Deadline) -> Result<Piece> {
        if let Some((tag, v)) = st.backlog.pop_front() {
            return Ok(Piece::Owned(tag, v));
        }
        self.wait_frame(st, rx, deadline).map(Piece::Ring)
    }

    fn put_back(&self, st: &mut State, piece: Piece) {
        if let Piece::Owned(tag, v) = piece {
            st.backlog.push_front((tag, v));
        }
    }

    fn finish(&self, rx: &Spsc, piece: Piece) {
        if let Piece::Ring(f) = piece {
            rx.consume(f);
        }
    }

    /// The next frame if it is there or arrives within a short inline spin (only when the wait
    /// strategy spins at all); the slow path does the rest (closed peers, sleeping, timeouts).
    #[inline]
    fn quick_frame(&self, st: &mut State, rx: &Spsc) -> Result<Option<Frame>> {
        if let Some(f) = rx.try_peek()? {
            return Ok(Some(f));
        }
        if st.recv_spin.spins_now() && !self.seg.peer_shares_cpu(self.peer) {
            for _ in 0..QUICK_SPINS {
                crate::loom::spin_hint();
                if let Some(f) = rx.try_peek()? {
                    return Ok(Some(f));
                }
            }
        }
        Ok(None)
    }

    /// Waits for a frame in the incoming ring.
    fn wait_frame(&self, st: &mut State, rx: &Spsc, deadline: Deadline) -> Result<Frame> {
        let (seg, peer) = (&*self.seg, self.peer);
        let co_located = !deadline.is_immediate_or_past()
            && st.recv_spin.spins_now()
            && seg.peer_shares_cpu(peer);
        block_on(
            &mut st.recv_spin,
            co_located,
            &rx.ctl().data,
            deadline,
            || {
                if let Some(f) = rx.try_peek()? {
                    return Ok(Some(f));
                }
                if !seg.role_open(peer) {
                    // The peer's last message was published before it closed: look once more.
                    if let Some(f) = rx.try_peek()? {
                        return Ok(Some(f));
                    }
                    return Err(if seg.role_died(peer) {
                        Error::PeerDied
                    } else {
                        Error::Eof
                    });
                }
                Ok(None)
            },
            || seg.probe_role(peer),
        )
    }

    // ---- lifetime --------------------------------------------------------------------------------

    /// Closes this end (in this process). Later calls on it fail with [`Error::Misuse`]; the peer
    /// sees [`Error::Eof`] once it has read everything, if no other process holds this end.
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        if self.seg.ensure_owner().is_ok() {
            self.seg.drop_role(self.end);
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Whether this end can receive (false for the writing end of a simplex pipe).
    pub fn readable(&self) -> bool {
        self.rx.is_some()
    }

    /// Whether this end can send (false for the reading end of a simplex pipe).
    pub fn writable(&self) -> bool {
        self.tx.is_some()
    }

    /// The wait strategy of blocked calls on this end.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.st.borrow().send_spin.strategy()
    }

    /// Changes the wait strategy of blocked calls on this end.
    pub fn set_wait_strategy(&self, wait: WaitStrategy) {
        let mut st = self.st.borrow_mut();
        st.send_spin = Spinner::new(wait);
        st.recv_spin = Spinner::new(wait);
    }

    fn begin(&self) -> Result<RefMut<'_, State>> {
        if self.closed.get() {
            return Err(Error::Misuse);
        }
        self.seg.ensure_owner()?;
        // A call from inside a `send_with`/`recv_with` closure on the same end is misuse, not a panic.
        self.st.try_borrow_mut().map_err(|_| Error::Misuse)
    }

    fn claim_side<'a>(&'a self, word: &'a crate::loom::AtomicU32) -> Result<ClaimGuard<'a>> {
        let seg = &self.seg;
        claim(word, seg.claim_id(), |id| seg.claim_alive(id))
    }

    #[doc(hidden)]
    /// Test hook: writes `bytes` into the outgoing ring as a raw frame with `tag` and a length field of
    /// `len_field`, bypassing every check, as a hostile peer could.
    pub fn __inject_raw_frame(&self, tag: u32, len_field: u32, bytes: &[u8]) -> Result<()> {
        let tx = self.tx.as_ref().ok_or(Error::Misuse)?;
        let r = tx.try_reserve(bytes.len())?.ok_or(Error::Full)?;
        tx.write_payload(&r, 0, bytes);
        tx.commit_raw(r, tag, len_field);
        Ok(())
    }
}

impl Connection {
    /// For your own `poll`/`epoll`/mio/tokio loop: call before waiting for [`as_fd`](AsFd::as_fd) to
    /// become readable. `Ok(true)`: a message (or the end of the stream) is ready now, do not wait.
    /// `Ok(false)`: the sender will signal the descriptor when one arrives; after it fires, receive as
    /// usual (a pipe opened by name has no shared descriptor: poll it with a timeout instead).
    pub fn prepare_poll(&self) -> Result<bool> {
        Ok(matches!(self.__arm()?, Armed::Ready))
    }

    /// The pipe's memfd and its eventfds, to pass to another process.
    pub(crate) fn descriptors(&self) -> Vec<std::os::fd::RawFd> {
        std::iter::once(self.seg.descriptor())
            .chain(self.seg.companions())
            .collect()
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    pub(crate) fn end(&self) -> usize {
        self.end
    }

    fn ready_now(&self, st: &State, rx: &Spsc) -> bool {
        !st.backlog.is_empty()
            || st.partial.is_some()
            || rx.try_peek().map_or(true, |f| f.is_some())
            || !self.seg.role_open(self.peer)
    }
}

impl Waitable for Connection {
    fn __arm(&self) -> Result<Armed> {
        let st = self.begin()?;
        let rx = self.rx.as_ref().ok_or(Error::Misuse)?;
        if self.ready_now(&st, rx) {
            return Ok(Armed::Ready);
        }
        let key = rx.ctl().data.prepare_fd();
        if self.ready_now(&st, rx) {
            rx.ctl().data.cancel(key);
            return Ok(Armed::Ready);
        }
        self.armed.set(Some(key));
        Ok(rx.data_fd().map_or(Armed::Tick, Armed::Fd))
    }

    fn __check(&self, signalled: bool) -> Result<bool> {
        let st = self.begin()?;
        let rx = self.rx.as_ref().ok_or(Error::Misuse)?;
        if let Some(fd) = rx.data_fd() {
            let mut b = [0u8; 8];
            // SAFETY: a non-blocking read of the eventfd's counter into a valid buffer.
            let _ = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 8) };
        }
        if self.ready_now(&st, rx) {
            return Ok(true);
        }
        if !signalled {
            self.seg.probe_role(self.peer)?; // a dead peer makes the end ready (recv reports it)
            return Ok(self.ready_now(&st, rx));
        }
        Ok(false)
    }

    fn __disarm(&self) {
        if let (Some(key), Some(rx)) = (self.armed.take(), self.rx.as_ref()) {
            rx.ctl().data.cancel(key);
        }
    }
}

impl AsFd for Connection {
    /// The eventfd that becomes readable when a message arrives, once
    /// [`prepare_poll`](Connection::prepare_poll) has said so.
    fn as_fd(&self) -> BorrowedFd<'_> {
        if let Some(fd) = self.rx.as_ref().and_then(Spsc::data_fd) {
            // SAFETY: the segment keeps its companion descriptors open as long as this end exists.
            return unsafe { BorrowedFd::borrow_raw(fd) };
        }
        self.own_fd
            .get_or_init(|| {
                use rustix::event::{EventfdFlags, eventfd};
                eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd")
            })
            .as_fd()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        crate::process::note_moved_to_child(&self.seg, self.end);
        self.close();
    }
}
