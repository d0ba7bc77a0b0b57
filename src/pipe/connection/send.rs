//! Sending: whole frames, streamed messages, the in-place and plain-old-data forms, and the duplex
//! backlog that keeps two ends sending large messages at each other from waiting on each other.
//!
//! A value is encoded into its reserved frame through raw pointers (the ring is memory the peer could
//! write: no reference to it is handed to the encoder), and the frame is published only if encoding
//! succeeded: a value that fails to encode sends nothing. Only `send_with`, an `unsafe` function,
//! lends the ring's bytes.

use super::*;
use crate::codec;

impl ShmEnd {
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

    /// [`Connection::try_send`](crate::Connection::try_send) over shared memory.
    pub(crate) fn try_send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        match self.send_value(value, Deadline::after(Some(Duration::ZERO))) {
            Err(Error::Timeout) => Err(Error::Full),
            other => other,
        }
    }

    pub(crate) fn send_value<T: Serialize + ?Sized>(
        &self,
        value: &T,
        deadline: Deadline,
    ) -> Result<()> {
        let len = codec::encoded_len(value)?;
        let mut st = self.begin()?;
        let Some(tx) = self.tx.as_ref() else {
            return Err(Error::Misuse);
        };
        if len <= tx.max_payload() {
            return self.send_in_place_locked(&mut st, tx, len, deadline, |tx, r| {
                // SAFETY: the reservation's payload is ours until it is committed, and valid for
                // `r.len()` bytes.
                let n = unsafe { codec::encode_raw(value, tx.payload_ptr(r), r.len())? };
                r.shrink(n); // it may encode shorter the second time
                Ok(())
            });
        }
        drop(st);
        self.send_bytes_at(&codec::encode(value)?, deadline)
    }

    /// Sends `bytes` as one message, with no encoding; any length.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.send_bytes_at(bytes, Deadline::NEVER)
    }

    /// Sends a plain-old-data value as its raw bytes (no encoding); receive with
    /// [`recv_pod`](Self::recv_pod). Blocks while the ring is full.
    pub fn send_pod<T: bytemuck::Pod>(&self, value: &T) -> Result<()> {
        self.send_pod_at(value, Deadline::NEVER)
    }

    /// [`send_pod`](Self::send_pod), giving up with [`Error::Timeout`] (nothing sent) after
    /// `timeout`.
    pub fn send_pod_timeout<T: bytemuck::Pod>(&self, value: &T, timeout: Duration) -> Result<()> {
        self.send_pod_at(value, Deadline::after(Some(timeout)))
    }

    pub(crate) fn send_pod_at<T: bytemuck::Pod>(
        &self,
        value: &T,
        deadline: Deadline,
    ) -> Result<()> {
        let bytes = bytemuck::bytes_of(value);
        if bytes.len() > self.max_in_place_len() {
            return self.send_bytes_at(bytes, deadline);
        }
        self.send_in_place(bytes.len(), deadline, |tx, r| {
            tx.write_payload(r, 0, bytes);
            Ok(())
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

    /// Reserves a frame of `len` bytes, lets `fill` write it, and publishes it if `fill` succeeded
    /// (else nothing is published: an unpublished reservation is simply written over later).
    pub(crate) fn send_in_place<R>(
        &self,
        len: usize,
        deadline: Deadline,
        fill: impl FnOnce(&Spsc, &mut Reservation) -> Result<R>,
    ) -> Result<R> {
        let mut st = self.begin()?;
        let Some(tx) = self.tx.as_ref() else {
            return Err(Error::Misuse);
        };
        if len > tx.max_payload() {
            return Err(Error::TooLarge);
        }
        self.send_in_place_locked(&mut st, tx, len, deadline, fill)
    }

    /// `send_in_place` once the end is ours and `len` checked.
    #[inline]
    fn send_in_place_locked<R>(
        &self,
        st: &mut State,
        tx: &Spsc,
        len: usize,
        deadline: Deadline,
        fill: impl FnOnce(&Spsc, &mut Reservation) -> Result<R>,
    ) -> Result<R> {
        let _claim = self.claim_tx(tx)?;
        let mut r = match tx.try_reserve(len)? {
            Some(r) if self.seg.role_open(self.peer) => r,
            _ => self.wait_room(st, tx, len, deadline)?,
        };
        let out = fill(tx, &mut r)?;
        tx.commit(r, TAG_WHOLE);
        Ok(out)
    }

    pub(crate) fn send_bytes_at(&self, data: &[u8], deadline: Deadline) -> Result<()> {
        let mut st = self.begin()?;
        let st = &mut *st;
        let Some(tx) = self.tx.as_ref() else {
            return Err(Error::Misuse);
        };
        let _claim = self.claim_tx(tx)?;
        let max = tx.max_payload();
        if data.len() <= max {
            // Fast path: room now and the peer there; else wait (which also reports a closed peer).
            let r = match tx.try_reserve(data.len())? {
                Some(r) if self.seg.role_open(self.peer) => r,
                _ => self.wait_room(st, tx, data.len(), deadline)?,
            };
            tx.write_payload(&r, 0, data);
            tx.commit(r, TAG_WHOLE);
            return Ok(());
        }
        // Streamed: pieces of a quarter ring, so the reader drains one while the next is written.
        let piece = (tx.capacity() / 4).min(max);
        let first = (piece - 8).min(data.len());
        let r = self.wait_room(st, tx, 8 + first, deadline)?;
        tx.write_payload(&r, 0, &(data.len() as u64).to_le_bytes());
        tx.write_payload(&r, 8, &data[..first]);
        tx.commit(r, TAG_HEAD);
        let mut off = first;
        while off < data.len() {
            let n = piece.min(data.len() - off);
            // A `Timeout` here gives the message up: the reader discards the pieces it got when the
            // next message starts (as when a sender dies mid-message and another holder goes on).
            let r = self.wait_room(st, tx, n, deadline)?;
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
        let co_located =
            !deadline.is_immediate_or_past() && send_spin.spins_now() && seg.peer_shares_cpu(peer);
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
            || {
                seg.probe_role(peer)?;
                // A dead co-holder of our end would keep us from draining (below) until reaped.
                seg.probe_role(self.end)
            },
        )
    }

    /// If our peer waits for room in its ring while we wait for room in ours, take what it sent into
    /// the backlog so that both sides move on. Only the process that reads our end may do so: not if
    /// another process holds our end (it may be the one reading it), nor if another live process
    /// (a forked copy of this end) read it last, nor if a child forked since the end came into this
    /// process may read it through a borrowed handle, since what we took would be lost to them. (Then
    /// we wait for that reader, as with any pipe.) A frame this process cannot allocate room for is
    /// left in the ring, and the send fails with `TooLarge`.
    fn drain_if_peer_blocked(&self, backlog: &mut VecDeque<(u32, Vec<u8>)>) -> Result<()> {
        let Some(rx) = &self.rx else { return Ok(()) };
        if !rx.writer_waiting()
            || !self.seg.role_held_only_by_me(self.end)
            || self.maybe_read_by_a_child()
        {
            return Ok(());
        }
        let last = rx.last_reader();
        if last != 0 && last != self.seg.claim_id() && self.seg.claim_alive(last)? {
            return Ok(());
        }
        let Ok(_claim) = self.claim_rx(rx) else {
            return Ok(());
        };
        // At most one ring's worth: that is all a writer can have published. A ring whose every
        // slot a peer filled with well-formed frames (old laps' headers stay) would read as an
        // endless stream, each frame a new backlog entry.
        let mut left = rx.capacity();
        while let Some(f) = rx.try_peek()? {
            left = match left.checked_sub(crate::ring::spsc::frame_len(f.len)) {
                Some(l) => l,
                None => break,
            };
            let mut v = Vec::new();
            v.try_reserve_exact(f.len).map_err(|_| Error::TooLarge)?;
            v.resize(f.len, 0);
            rx.read_payload(&f, 0, &mut v);
            backlog.push_back((f.tag, v));
            rx.consume(f);
        }
        Ok(())
    }
}
