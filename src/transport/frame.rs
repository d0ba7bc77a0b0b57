//! The framing of Python's `multiprocessing.connection` over a byte stream, and the reader that
//! takes frames out of what arrives.
//!
//! **Wire format.** A message of `n` bytes is a 4-byte big-endian signed length then the bytes. A
//! message longer than 2 GiB - 1 (`0x7fff_ffff`, the [`ESCAPE_THRESHOLD`]) is `-1` (four `0xff`)
//! then an 8-byte big-endian unsigned length, then the bytes (CPython's `_send_bytes` and
//! `_recv_bytes`). Any other negative length is no frame of that protocol: the stream is refused.
//!
//! **Reading.** [`FrameReader`] holds what arrived and not yet taken. Its buffer grows as bytes
//! arrive (by at most doubling what it holds), never to the length a header announces: a peer
//! cannot make us allocate what it never sends. A frame longer than the reader's limit is refused
//! ([`FrameError::TooLarge`]) and its bytes are skipped as they arrive, so the stream stays in step.
//! A frame's payload is handed over in place (to decode it, or to lend it) and consumed only when
//! the taker succeeded, so a message that does not decode stays for the next call.
//!
//! Everything here is plain computation on bytes (no socket), so the fuzz target (`fuzz/`) and the
//! corpus replay test drive exactly this code.

use std::mem::MaybeUninit;

/// Lengths above this are sent with the `-1` escape and an 8-byte length.
pub const ESCAPE_THRESHOLD: u64 = 0x7fff_ffff;

/// The default limit on one received message over a socket (1 GiB): Python sends messages of
/// hundreds of MiB, and a longer one is refused (and skipped) rather than allocated.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 30;

/// What the reader reads at a time while no large frame is being assembled, and the least it
/// allocates.
const CHUNK: usize = 64 * 1024;

/// A buffer larger than this is freed, not kept, once it is empty.
const KEEP: usize = 1 << 20;

/// The header of a message of `len` bytes, written into `out`; returns how many bytes it takes
/// (4, or 12 with the escape). `threshold` is [`ESCAPE_THRESHOLD`] except in tests.
pub(crate) fn encode_header(len: usize, threshold: u64, out: &mut [u8; 12]) -> usize {
    let len = len as u64;
    if len > threshold.min(ESCAPE_THRESHOLD) {
        out[..4].copy_from_slice(&(-1i32).to_be_bytes());
        out[4..].copy_from_slice(&len.to_be_bytes());
        12
    } else {
        out[..4].copy_from_slice(&(len as u32).to_be_bytes());
        4
    }
}

/// A header at the front of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// Not enough bytes yet.
    Need,
    /// A header of `size` bytes announcing a payload of `len` bytes.
    Frame { size: usize, len: u64 },
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A negative length other than the `-1` escape: not this protocol.
    BadLength(i32),
    /// A frame longer than the reader's limit: refused, and its bytes skipped as they arrive.
    TooLarge { len: u64, max: usize },
    /// This process could not allocate room for the bytes that arrived.
    NoMemory,
}

/// Parses the header at the front of `buf`.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Header, FrameError> {
    let Some(first) = buf.get(..4) else {
        return Ok(Header::Need);
    };
    let n = i32::from_be_bytes(first.try_into().expect("4 bytes"));
    match n {
        0.. => Ok(Header::Frame {
            size: 4,
            len: n as u64,
        }),
        -1 => match buf.get(4..12) {
            None => Ok(Header::Need),
            Some(b) => Ok(Header::Frame {
                size: 12,
                len: u64::from_be_bytes(b.try_into().expect("8 bytes")),
            }),
        },
        _ => Err(FrameError::BadLength(n)),
    }
}

/// Frames out of a byte stream (see the module docs).
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Bytes that arrived; those before `start` are taken.
    buf: Vec<u8>,
    start: usize,
    /// The payload length of the frame whose header was read (its payload begins at `start`).
    cur: Option<usize>,
    /// Bytes of a refused frame still to be skipped.
    skip: u64,
    /// The longest frame accepted.
    max: usize,
}

impl FrameReader {
    pub(crate) fn new(max: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            cur: None,
            skip: 0,
            max,
        }
    }

    /// The longest message accepted.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Sets the longest message accepted (from the next header on).
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Whether the stream is between two messages (nothing of a frame has arrived, nothing is
    /// being skipped): an end of stream here is a clean end.
    pub(crate) fn at_boundary(&self) -> bool {
        self.cur.is_none() && self.start == self.buf.len() && self.skip == 0
    }

    /// The length of the next whole frame if it has arrived (its payload is then [`payload`]).
    /// Skips what is left of a refused frame first. A frame over the limit is refused once
    /// ([`FrameError::TooLarge`]) and skipped; a bad length is refused every time (the caller stops
    /// using the stream).
    ///
    /// [`payload`]: Self::payload
    pub(crate) fn frame(&mut self) -> Result<Option<usize>, FrameError> {
        if self.skip > 0 {
            let avail = (self.buf.len() - self.start) as u64;
            let n = avail.min(self.skip);
            self.start += n as usize;
            self.skip -= n;
            self.tidy();
            if self.skip > 0 {
                return Ok(None);
            }
        }
        let len = match self.cur {
            Some(len) => len,
            None => match parse_header(&self.buf[self.start..])? {
                Header::Need => return Ok(None),
                Header::Frame { size, len } => {
                    self.start += size;
                    if len > self.max as u64 {
                        // Skip what is here already; the rest as it arrives.
                        let here = ((self.buf.len() - self.start) as u64).min(len);
                        self.start += here as usize;
                        self.skip = len - here;
                        self.tidy();
                        return Err(FrameError::TooLarge { len, max: self.max });
                    }
                    self.cur = Some(len as usize);
                    len as usize
                }
            },
        };
        Ok((self.buf.len() - self.start >= len).then_some(len))
    }

    /// The payload of the whole frame [`frame`](Self::frame) found (empty if none).
    pub(crate) fn payload(&self) -> &[u8] {
        match self.cur {
            Some(len) if self.buf.len() - self.start >= len => {
                &self.buf[self.start..self.start + len]
            }
            _ => &[],
        }
    }

    /// Consumes the whole frame [`frame`](Self::frame) found.
    pub(crate) fn consume(&mut self) {
        if let Some(len) = self.cur.take() {
            self.start += len;
            self.tidy();
        }
    }

    /// Takes the whole frame [`frame`](Self::frame) found, as a vector: the buffer itself when it
    /// holds exactly that frame (a large message is never copied), else a copy.
    pub(crate) fn take_vec(&mut self) -> Result<Vec<u8>, FrameError> {
        let Some(len) = self.cur else {
            return Ok(Vec::new());
        };
        if self.start == 0 && self.buf.len() == len {
            self.cur = None;
            return Ok(std::mem::take(&mut self.buf));
        }
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| FrameError::NoMemory)?;
        v.extend_from_slice(self.payload());
        self.consume();
        Ok(v)
    }

    /// Whether bytes are buffered that no whole frame accounts for yet.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Makes room for more bytes and lets `read` write into it; `read` returns how many bytes it
    /// wrote (0: none, such as at the end of the stream), which become part of the stream.
    ///
    /// Room grows by at most doubling what is buffered (at least [`CHUNK`]), and never past what
    /// the frame being assembled still needs when it is large (so its buffer can be handed over
    /// whole).
    pub(crate) fn fill<E>(
        &mut self,
        read: impl FnOnce(&mut [MaybeUninit<u8>]) -> Result<usize, E>,
    ) -> Result<Result<usize, E>, FrameError> {
        // What the frame being assembled still needs, if it is large.
        let need = match self.cur {
            Some(len) if len > CHUNK => Some(len - (self.buf.len() - self.start)),
            _ => None,
        };
        if self.start > 0 {
            // Move what is buffered to the front (a large frame is then handed over without a copy).
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let have = self.buf.len();
        // Doubling what arrived, at most what the frame still needs.
        let want = match need {
            Some(n) => n.min(have.max(CHUNK)),
            None => CHUNK,
        };
        if self.buf.capacity() - have < want {
            self.buf
                .try_reserve_exact(want)
                .map_err(|_| FrameError::NoMemory)?;
        }
        let limit = match need {
            Some(n) => n.min(self.buf.capacity() - have),
            None => self.buf.capacity() - have,
        };
        let room = &mut self.buf.spare_capacity_mut()[..limit];
        let out = read(room);
        if let Ok(n) = out {
            // SAFETY: `read` initialised the first `n` bytes of the room it was given (our own
            // read wrappers report what the kernel wrote; never more than the room, and clamped).
            unsafe { self.buf.set_len(have + n.min(limit)) };
        }
        Ok(out)
    }

    /// Frees the buffer once it is empty, if a large message grew it.
    fn tidy(&mut self) {
        if self.start == self.buf.len() {
            self.start = 0;
            if self.buf.capacity() > KEEP {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        }
    }
}

/// Runs `bytes` through a reader as a stream arriving in pieces (their sizes taken from the bytes
/// themselves), taking every frame: what the fuzz target and the corpus replay test call. Returns
/// the frames taken. Never panics, whatever the bytes.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn __fuzz_frames(bytes: &[u8]) -> usize {
    let Some((&k, rest)) = bytes.split_first() else {
        return 0;
    };
    let mut r = FrameReader::new(64 + (k as usize) * 4);
    let mut data = rest;
    let mut frames = 0;
    let mut step = 1 + (k as usize % 7);
    loop {
        match r.frame() {
            Ok(Some(len)) => {
                let p = r.payload().len();
                assert_eq!(p, len, "a whole frame's payload has its length");
                if frames % 2 == 0 {
                    r.consume();
                } else if let Ok(v) = r.take_vec() {
                    assert_eq!(v.len(), len, "a taken frame has its length");
                }
                frames += 1;
                continue;
            }
            Ok(None) => {}
            Err(FrameError::TooLarge { .. }) => continue,
            Err(_) => return frames,
        }
        if data.is_empty() {
            let _ = r.at_boundary();
            return frames;
        }
        let piece = &data[..step.min(data.len())];
        let got = r.fill(|room: &mut [MaybeUninit<u8>]| {
            let m = room.len().min(piece.len());
            for (d, s) in room.iter_mut().zip(&piece[..m]) {
                d.write(*s);
            }
            Ok::<usize, ()>(m)
        });
        match got {
            Ok(Ok(m)) => data = &data[m..],
            _ => return frames,
        }
        step = step * 3 % 1000 + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(r: &mut FrameReader, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            let n = r
                .fill(|room: &mut [MaybeUninit<u8>]| {
                    let m = room.len().min(bytes.len() - off);
                    for (d, s) in room.iter_mut().zip(&bytes[off..off + m]) {
                        d.write(*s);
                    }
                    Ok::<usize, ()>(m)
                })
                .unwrap()
                .unwrap();
            off += n;
        }
    }

    #[test]
    fn headers_round_trip_with_and_without_the_escape() {
        let mut h = [0u8; 12];
        assert_eq!(encode_header(5, ESCAPE_THRESHOLD, &mut h), 4);
        assert_eq!(&h[..4], &[0, 0, 0, 5]);
        assert_eq!(parse_header(&h[..4]), Ok(Header::Frame { size: 4, len: 5 }));
        assert_eq!(encode_header(5, 4, &mut h), 12);
        assert_eq!(&h[..12], &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(parse_header(&h[..11]), Ok(Header::Need));
        assert_eq!(parse_header(&h), Ok(Header::Frame { size: 12, len: 5 }));
        assert_eq!(
            parse_header(&(-2i32).to_be_bytes()),
            Err(FrameError::BadLength(-2))
        );
    }

    #[test]
    fn frames_arrive_in_pieces_and_an_oversized_one_is_skipped() {
        let mut r = FrameReader::new(8);
        let mut s = Vec::new();
        for m in [&b"abc"[..], &[7u8; 20][..], b"", b"xyz"] {
            let mut h = [0u8; 12];
            let n = encode_header(m.len(), ESCAPE_THRESHOLD, &mut h);
            s.extend_from_slice(&h[..n]);
            s.extend_from_slice(m);
        }
        feed(&mut r, &s[..5]);
        assert_eq!(r.frame(), Ok(None));
        feed(&mut r, &s[5..]);
        assert_eq!(r.frame(), Ok(Some(3)));
        assert_eq!(r.take_vec().unwrap(), b"abc");
        assert_eq!(r.frame(), Err(FrameError::TooLarge { len: 20, max: 8 }));
        assert_eq!(r.frame(), Ok(Some(0)));
        r.consume();
        assert_eq!(r.frame(), Ok(Some(3)));
        assert_eq!(r.payload(), b"xyz");
        r.consume();
        assert!(r.at_boundary());
    }

    #[test]
    fn a_large_frame_is_handed_over_without_a_copy_and_grows_as_it_arrives() {
        let len = 1 << 20;
        let mut r = FrameReader::new(DEFAULT_MAX_MESSAGE);
        let mut h = [0u8; 12];
        let n = encode_header(len, ESCAPE_THRESHOLD, &mut h);
        feed(&mut r, &h[..n]);
        assert_eq!(r.frame(), Ok(None));
        feed(&mut r, &[1u8; 1000]);
        assert!(r.buf.capacity() <= 2 * CHUNK, "grows with what arrives");
        feed(&mut r, &vec![1u8; len - 1000]);
        assert_eq!(r.frame(), Ok(Some(len)));
        let v = r.take_vec().unwrap();
        assert_eq!(v.len(), len);
        assert!(r.at_boundary());
    }
}
