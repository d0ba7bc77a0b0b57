//! Receiving: whole frames (copied to private memory before decoding, or lent in place to
//! `recv_with`), streamed messages assembled as their pieces arrive (kept across a timeout), the
//! backlog first, `BufferTooShort` and `Decode` without loss (the message stays for the next call),
//! and the waits that turn a closed or dead peer into `Eof` or `PeerDied`.
//!
//! The bytes of a frame lie in memory the peer can write. The decoding paths (`recv`, `recv_pod`)
//! copy a frame (through raw pointers) to the stack, or to the reused scratch buffer if it is large,
//! and decode the copy: a scribbling peer can garble what we receive, never change bytes while our
//! code looks at them. Only `recv_with`, an `unsafe` function, lends the ring's bytes in place.
//!
//! Memory for a frame (up to half the ring, a size the sender chose) is reserved fallibly: a frame
//! this process cannot allocate room for is `TooLarge`, and stays in the ring for a later call.

use super::*;
use crate::codec;
use std::mem::MaybeUninit;

/// Frames up to this size are copied to the stack before decoding; larger ones to the reused scratch
/// buffer. Either way no allocation per message.
const STACK_COPY: usize = 256;

/// How a receive hands one whole message over. A failure (a message that does not decode as the
/// type asked for, or that this process cannot allocate room for) keeps the message: it stays in the
/// ring, or goes back to the front of the backlog, for the next call (`recv_bytes` takes any).
trait Take {
    type Out;
    /// From a published frame in the ring; consumes it on success (on failure the frame stays).
    fn take_frame(self, rx: &Spsc, f: Frame, scratch: &mut Vec<u8>) -> Result<Self::Out>;
    /// From bytes already in private memory (the backlog, a streamed message); on failure the
    /// caller keeps them.
    fn take_bytes(self, bytes: &[u8]) -> Result<Self::Out>;
}

/// Lends the frame in place (`recv_with`: trusts the peer).
struct Lend<F>(F);

impl<R, F: FnOnce(&[u8]) -> R> Take for Lend<F> {
    type Out = R;
    #[inline]
    fn take_frame(self, rx: &Spsc, f: Frame, _: &mut Vec<u8>) -> Result<R> {
        let out = (self.0)(rx.payload(&f));
        rx.consume(f);
        Ok(out)
    }
    fn take_bytes(self, bytes: &[u8]) -> Result<R> {
        Ok((self.0)(bytes))
    }
}

/// Copies the frame (through raw pointers) to the stack, or to the scratch buffer if it is large,
/// decodes the copy, and releases the frame if that succeeded.
struct Copied<F>(F);

impl<R, F: FnOnce(&[u8]) -> Result<R>> Take for Copied<F> {
    type Out = R;
    #[inline]
    fn take_frame(self, rx: &Spsc, f: Frame, scratch: &mut Vec<u8>) -> Result<R> {
        if f.len <= STACK_COPY {
            let mut tmp = [MaybeUninit::<u8>::uninit(); STACK_COPY];
            let bytes = rx.read_payload_uninit(&f, 0, &mut tmp[..f.len]);
            let out = (self.0)(bytes)?; // not a `T`: the frame stays
            rx.consume(f);
            return Ok(out);
        }
        if scratch.len() < f.len {
            // At most the ring's largest frame, a size the sender chose: reserved fallibly.
            scratch
                .try_reserve_exact(f.len - scratch.len())
                .map_err(|_| Error::TooLarge)?;
            scratch.resize(f.len, 0);
        }
        rx.read_payload(&f, 0, &mut scratch[..f.len]);
        let out = (self.0)(&scratch[..f.len]);
        codec::trim_scratch(scratch);
        let out = out?; // not a `T`: the frame stays
        rx.consume(f);
        Ok(out)
    }
    fn take_bytes(self, bytes: &[u8]) -> Result<R> {
        (self.0)(bytes)
    }
}

/// Reads a plain-old-data value straight from the frame (one copy of its exact size).
struct PodOf<T>(std::marker::PhantomData<T>);

impl<T: bytemuck::Pod> Take for PodOf<T> {
    type Out = T;
    #[inline]
    fn take_frame(self, rx: &Spsc, f: Frame, _: &mut Vec<u8>) -> Result<T> {
        let size = std::mem::size_of::<T>();
        if f.len != size {
            return Err(pod_size_mismatch(f.len, size)); // the frame stays
        }
        let mut v = MaybeUninit::<T>::uninit();
        // SAFETY: the bytes of a `MaybeUninit<T>`, as many as `T` has.
        let dst = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), size) };
        rx.read_payload_uninit(&f, 0, dst);
        rx.consume(f);
        // SAFETY: all `size_of::<T>()` bytes were written, and any bytes are a valid `Pod` value.
        Ok(unsafe { v.assume_init() })
    }
    fn take_bytes(self, bytes: &[u8]) -> Result<T> {
        codec::decode_pod(bytes)
    }
}

/// What [`codec::decode_pod`] says of a message of `len` bytes read as a type of `size`.
#[cold]
fn pod_size_mismatch(len: usize, size: usize) -> Error {
    Error::Decode {
        reason: format!("{len} bytes, where the type takes {size}"),
        bytes: Vec::new(),
    }
}

impl ShmEnd {
    // ---- receiving -------------------------------------------------------------------------------

    /// Receives a serde value sent with [`send`](Self::send). Blocks until one arrives.
    ///
    /// Errors: [`Error::Eof`] once the other end is closed and everything it sent was received,
    /// [`Error::PeerDied`] once drained if its holders died, [`Error::Decode`] if the message is not
    /// a `T` (the message stays: receive it with the right type, or with
    /// [`recv_bytes`](Self::recv_bytes)).
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_at(Deadline::NEVER, Copied(codec::decode::<T>))
    }

    /// [`recv`](Self::recv) without waiting: [`Error::Empty`] if no whole message is there now.
    pub fn try_recv<T: DeserializeOwned>(&self) -> Result<T> {
        match self.recv_at(
            Deadline::after(Some(Duration::ZERO)),
            Copied(codec::decode::<T>),
        ) {
            Err(Error::Timeout) => Err(Error::Empty),
            r => r,
        }
    }

    /// Receives a value sent with [`send_pod`](Self::send_pod). A message of another size is
    /// [`Error::Decode`], and stays (for [`recv_bytes`](Self::recv_bytes), say).
    pub fn recv_pod<T: bytemuck::Pod>(&self) -> Result<T> {
        self.recv_at(Deadline::NEVER, PodOf(std::marker::PhantomData))
    }

    /// [`recv_pod`](Self::recv_pod), giving up with [`Error::Timeout`] after `timeout` (nothing
    /// consumed).
    pub fn recv_pod_timeout<T: bytemuck::Pod>(&self, timeout: Duration) -> Result<T> {
        self.recv_at(
            Deadline::after(Some(timeout)),
            PodOf(std::marker::PhantomData),
        )
    }

    /// Receives one message into `buf` and returns its length. If `buf` is too small the message is
    /// kept and the call fails with [`Error::BufferTooShort { needed }`](Error::BufferTooShort); call
    /// again with a larger buffer.
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
    /// # Safety
    ///
    /// The caller trusts the peer. The slice lies in memory the peer's processes can write: a
    /// well-behaved peer does not touch it until it is consumed, but a buggy or hostile one writing
    /// the bytes while `read` holds the `&[u8]` is a data race (undefined behaviour: two reads of one
    /// byte may disagree, and the compiler assumes they cannot), which the type system cannot rule
    /// out. Use it only between processes you trust; [`recv`](Self::recv),
    /// [`recv_bytes`](Self::recv_bytes) and the other forms decode from a private copy and are sound
    /// whatever the peer does.
    pub unsafe fn recv_with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.recv_at(Deadline::NEVER, Lend(read))
    }

    /// [`recv_with`](Self::recv_with), giving up with [`Error::Timeout`] after `timeout`.
    ///
    /// # Safety
    ///
    /// As for [`recv_with`](Self::recv_with): the caller trusts the peer.
    pub unsafe fn recv_with_timeout<R>(
        &self,
        timeout: Duration,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.recv_at(Deadline::after(Some(timeout)), Lend(read))
    }

    /// Whether a message can be received without blocking, waiting up to `timeout`: `Duration::ZERO`
    /// (or `Timeout::ZERO`) asks and returns at once, `None` (or `Timeout::NEVER`) waits for ever.
    /// Once the other end is closed and drained it fails with [`Error::Eof`] (or [`Error::PeerDied`]).
    pub fn poll(&self, timeout: impl Into<Timeout>) -> Result<bool> {
        let mut st = self.begin()?;
        let Some(rx) = self.rx.as_ref() else {
            return Err(Error::Misuse);
        };
        if !st.backlog.is_empty() {
            return Ok(true);
        }
        match self.wait_frame(&mut st, rx, Deadline::after(timeout.into().0)) {
            Ok(_) => Ok(true),
            Err(Error::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn recv_bytes_at(&self, deadline: Deadline) -> Result<Vec<u8>> {
        let mut st = self.begin()?;
        let Some(rx) = self.rx.as_ref() else {
            return Err(Error::Misuse);
        };
        let _claim = self.claim_rx(rx)?;
        self.next_owned(&mut st, rx, deadline)
    }

    /// One whole message, copied to private memory and handed to `take`; kept if `take` fails.
    pub(crate) fn recv_map_at<R>(
        &self,
        deadline: Deadline,
        take: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        self.recv_at(deadline, Copied(take))
    }

    /// One whole message, handed over by `take`.
    fn recv_at<T: Take>(&self, deadline: Deadline, take: T) -> Result<T::Out> {
        let mut st = self.begin()?;
        let Some(rx) = self.rx.as_ref() else {
            return Err(Error::Misuse);
        };
        let _claim = self.claim_rx(rx)?;
        if st.partial.is_none() && st.backlog.is_empty() {
            // Fast path: a whole message is there, or arrives within a short inline spin.
            if let Some(f) = self.quick_frame(&mut st, rx, deadline)? {
                if f.tag == TAG_WHOLE {
                    return take.take_frame(rx, f, &mut st.scratch);
                }
            }
        }
        self.recv_at_slow(&mut st, rx, deadline, take)
    }

    /// The rest of `recv_at`: the backlog, streamed messages, waiting.
    #[inline(never)]
    fn recv_at_slow<T: Take>(
        &self,
        st: &mut State,
        rx: &Spsc,
        deadline: Deadline,
        take: T,
    ) -> Result<T::Out> {
        if st.partial.is_none() {
            match self.next_piece(st, rx, deadline)? {
                Piece::Ring(f) if f.tag == TAG_WHOLE => {
                    return take.take_frame(rx, f, &mut st.scratch);
                }
                Piece::Owned(TAG_WHOLE, v) => return Self::take_owned(st, v, take),
                other => self.put_back(st, other),
            }
        }
        let v = self.next_owned(st, rx, deadline)?;
        Self::take_owned(st, v, take)
    }

    /// Hands over a message in private memory; one that `take` refuses goes back to the front of
    /// the backlog, for the next call.
    fn take_owned<T: Take>(st: &mut State, v: Vec<u8>, take: T) -> Result<T::Out> {
        match take.take_bytes(&v) {
            Ok(out) => Ok(out),
            Err(e) => {
                st.backlog.push_front((TAG_WHOLE, v));
                Err(e)
            }
        }
    }

    fn recv_into_at(&self, buf: &mut [u8], deadline: Deadline) -> Result<usize> {
        let mut st = self.begin()?;
        let Some(rx) = self.rx.as_ref() else {
            return Err(Error::Misuse);
        };
        let _claim = self.claim_rx(rx)?;
        // Fast path: a whole message arrives within a short inline spin and nothing was set aside
        // earlier. It keeps the generic waiting machinery off the critical path of a ping-pong.
        if st.partial.is_none() && st.backlog.is_empty() {
            if let Some(f) = self.quick_frame(&mut st, rx, deadline)? {
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
        self.recv_into_slow(&mut st, rx, buf, deadline)
    }

    /// The rest of `recv_into_at`: the backlog, streamed messages, waiting.
    #[inline(never)]
    fn recv_into_slow(
        &self,
        st: &mut State,
        rx: &Spsc,
        buf: &mut [u8],
        deadline: Deadline,
    ) -> Result<usize> {
        loop {
            if let Some(p) = &st.partial {
                if p.total > buf.len() {
                    return Err(Error::BufferTooShort { needed: p.total });
                }
                let v = self.next_owned(st, rx, deadline)?;
                if v.len() > buf.len() {
                    // The partial message was given up by its sender and a larger one came next.
                    let needed = v.len();
                    st.backlog.push_front((TAG_WHOLE, v));
                    return Err(Error::BufferTooShort { needed });
                }
                buf[..v.len()].copy_from_slice(&v);
                return Ok(v.len());
            }
            let piece = self.next_piece(st, rx, deadline)?;
            match piece.tag() {
                TAG_WHOLE => {
                    let n = piece.len();
                    if n > buf.len() {
                        self.put_back(st, piece);
                        return Err(Error::BufferTooShort { needed: n });
                    }
                    piece.read(rx, 0, &mut buf[..n]);
                    self.finish(rx, piece);
                    return Ok(n);
                }
                TAG_HEAD => {
                    let total = self.total_or_drop(rx, &piece)?;
                    if total > buf.len() {
                        self.put_back(st, piece);
                        return Err(Error::BufferTooShort { needed: total });
                    }
                    let first = piece.len() - 8;
                    piece.read(rx, 8, &mut buf[..first]);
                    self.finish(rx, piece);
                    let mut got = first;
                    match self.fill_slice(st, rx, deadline, &mut buf[..total], &mut got) {
                        Ok(true) => return Ok(total),
                        Ok(false) => continue, // the sender gave the message up; read the next one
                        Err(Error::Corrupt) => return Err(Error::Corrupt), // dropped
                        Err(e) => {
                            // Keep what arrived for the next call.
                            let mut kept = Vec::new();
                            grow(&mut kept, got, total)?;
                            kept.extend_from_slice(&buf[..got]);
                            st.partial = Some(Partial { buf: kept, total });
                            return Err(e);
                        }
                    }
                }
                _ => self.finish(rx, piece), // a piece of a message someone else began: skip it
            }
        }
    }

    /// The total a `HEAD` piece announces; a piece whose total is impossible is consumed (the
    /// message is lost, the stream goes on) and the call fails with `Corrupt`.
    fn total_or_drop(&self, rx: &Spsc, piece: &Piece) -> Result<usize> {
        piece.total(rx).inspect_err(|_| {
            if let Piece::Ring(f) = piece {
                rx.consume(*f);
            }
        })
    }

    /// The next whole message, assembled if it was streamed.
    fn next_owned(&self, st: &mut State, rx: &Spsc, deadline: Deadline) -> Result<Vec<u8>> {
        loop {
            if let Some(mut p) = st.partial.take() {
                match self.fill_vec(st, rx, deadline, &mut p) {
                    Ok(true) => return Ok(p.buf),
                    Ok(false) => continue,
                    Err(Error::Corrupt) => return Err(Error::Corrupt), // the message is dropped
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
                            // A size the sender chose: reserved fallibly (the frame stays).
                            let mut v = Vec::new();
                            v.try_reserve_exact(f.len).map_err(|_| Error::TooLarge)?;
                            piece.append_to(rx, 0, &mut v);
                            rx.consume(f);
                            v
                        }
                    };
                    return Ok(v);
                }
                TAG_HEAD => {
                    let total = self.total_or_drop(rx, &piece)?;
                    let first = piece.len() - 8;
                    let mut buf = Vec::new();
                    if let Err(e) = grow(&mut buf, first, total) {
                        self.put_back(st, piece);
                        return Err(e);
                    }
                    piece.append_to(rx, 8, &mut buf);
                    self.finish(rx, piece);
                    st.partial = Some(Partial { buf, total });
                }
                _ => self.finish(rx, piece),
            }
        }
    }

    /// The next `CONT` piece of a streamed message, checked against room for `room` more bytes:
    /// `None` if another message starts first (its sender died mid-message and another holder of the
    /// end went on; the piece stays for the next call). A piece longer than the message has room for
    /// is consumed and `Corrupt`.
    fn next_cont(
        &self,
        st: &mut State,
        rx: &Spsc,
        deadline: Deadline,
        room: usize,
    ) -> Result<Option<Piece>> {
        let piece = self.next_piece(st, rx, deadline)?;
        if piece.tag() != TAG_CONT {
            self.put_back(st, piece);
            return Ok(None);
        }
        // A sender's pieces carry at least one byte each: an empty one is no progress.
        if piece.len() > room || piece.len() == 0 {
            self.finish(rx, piece);
            return Err(Error::Corrupt);
        }
        Ok(Some(piece))
    }

    /// Reads `CONT` pieces into `dst[*got..]` until it is full (`Ok(true)`); `Ok(false)` if another
    /// message starts first.
    fn fill_slice(
        &self,
        st: &mut State,
        rx: &Spsc,
        deadline: Deadline,
        dst: &mut [u8],
        got: &mut usize,
    ) -> Result<bool> {
        while *got < dst.len() {
            let Some(piece) = self.next_cont(st, rx, deadline, dst.len() - *got)? else {
                return Ok(false);
            };
            let n = piece.len();
            piece.read(rx, 0, &mut dst[*got..*got + n]);
            self.finish(rx, piece);
            *got += n;
        }
        Ok(true)
    }

    /// Appends `CONT` pieces to `p` until it holds its total (`Ok(true)`), growing it as they come;
    /// `Ok(false)` if another message starts first.
    fn fill_vec(
        &self,
        st: &mut State,
        rx: &Spsc,
        deadline: Deadline,
        p: &mut Partial,
    ) -> Result<bool> {
        while p.buf.len() < p.total {
            let Some(piece) = self.next_cont(st, rx, deadline, p.total - p.buf.len())? else {
                return Ok(false);
            };
            if let Err(e) = grow(&mut p.buf, piece.len(), p.total) {
                self.put_back(st, piece);
                return Err(e);
            }
            piece.append_to(rx, 0, &mut p.buf);
            self.finish(rx, piece);
        }
        Ok(true)
    }

    /// The next piece: from the backlog, else from the ring (waiting until `deadline`).
    ///
    /// A call that takes pieces without ever waiting (they are there) checks its deadline once per
    /// ring's worth of the smallest frames: a ring whose every slot a peer filled with well-formed
    /// frames reads as an endless stream (the reader never meets a guard, and old laps' headers
    /// stay), and must not keep a call with a deadline going for ever. An honest message of one
    /// ring's worth is far fewer pieces (they are a quarter ring each).
    fn next_piece(&self, st: &mut State, rx: &Spsc, deadline: Deadline) -> Result<Piece> {
        st.pieces += 1;
        if st.pieces % (rx.capacity() as u64 / 8) == 0 && deadline.is_immediate_or_past() {
            return Err(Error::Timeout);
        }
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
    #[inline(always)] // the receive fast path: kept inside recv_into_at and recv_at
    fn quick_frame(&self, st: &mut State, rx: &Spsc, deadline: Deadline) -> Result<Option<Frame>> {
        if let Some(f) = rx.try_peek()? {
            return Ok(Some(f));
        }
        // A call that may not wait looks once (and never asks where the peer runs: a system call).
        if !deadline.is_immediate_or_past()
            && st.recv_spin.spins_now()
            && !self.seg.peer_shares_cpu(self.peer)
        {
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
}
