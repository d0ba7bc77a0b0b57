//! Receiving: whole frames in place, streamed messages assembled (kept across a timeout), the
//! backlog first, `BufferTooShort` without loss, and the waits that turn a closed or dead peer into
//! `Eof` or `PeerDied`.

use super::*;
use crate::codec;

impl Connection {
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
        let _claim = self.claim_rx(rx)?;
        self.next_owned(&mut st, rx, deadline)
    }

    fn recv_with_at<R>(&self, deadline: Deadline, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let mut st = self.begin()?;
        let rx = self.rx.as_ref().ok_or(Error::Misuse)?;
        let _claim = self.claim_rx(rx)?;
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
        let _claim = self.claim_rx(rx)?;
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
}
