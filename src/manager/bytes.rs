//! Keys, values and elements as bytes: encoded with the crate's codec (postcard) on the caller's
//! side, copied out of the arena into private memory before anything decodes them, and hashed with a
//! per-container seed.

use super::arena::{Arena, Ref, Span};
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encoded bytes: on the stack when small.
pub(crate) enum Enc {
    Small([u8; 64], usize),
    Big(Vec<u8>),
}

impl std::ops::Deref for Enc {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Enc::Small(b, n) => &b[..*n],
            Enc::Big(v) => v,
        }
    }
}

/// A postcard output into a stack buffer, copying the few bytes of each field without `memcpy`.
struct Stack<'a> {
    buf: &'a mut [u8; 64],
    n: usize,
}

impl postcard::ser_flavors::Flavor for Stack<'_> {
    type Output = usize;

    #[inline(always)]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        if self.n == self.buf.len() {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf[self.n] = b;
        self.n += 1;
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        if b.len() > self.buf.len() - self.n {
            return Err(postcard::Error::SerializeBufferFull);
        }
        // SAFETY: `b.len()` bytes fit after `n` (checked); `b` is not our buffer.
        unsafe { super::arena::copy_raw(b.as_ptr(), self.buf.as_mut_ptr().add(self.n), b.len()) };
        self.n += b.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.n)
    }
}

/// Runs `f` on the encoding of `v`, made on the stack when small (no copy of the buffer).
#[inline(always)]
pub(crate) fn with_encoded<T: Serialize + ?Sized, R>(
    v: &T,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    let mut buf = [0u8; 64];
    let out = Stack {
        buf: &mut buf,
        n: 0,
    };
    match postcard::serialize_with_flavor::<T, Stack<'_>, usize>(v, out) {
        Ok(n) => f(&buf[..n]),
        Err(postcard::Error::SerializeBufferFull) => f(&crate::codec::encode(v)?),
        Err(e) => Err(Error::Encode(e.to_string())),
    }
}

/// Encodes `v` (a key, value or element). Keys are equal when their encodings are.
#[inline]
pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Enc> {
    let mut buf = [0u8; 64];
    match postcard::to_slice(v, &mut buf) {
        Ok(used) => {
            let n = used.len();
            Ok(Enc::Small(buf, n))
        }
        Err(postcard::Error::SerializeBufferFull) => Ok(Enc::Big(crate::codec::encode(v)?)),
        Err(e) => Err(Error::Encode(e.to_string())),
    }
}

/// Decodes what [`encode`] made.
#[inline]
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    crate::codec::decode(bytes)
}

/// Bytes copied out of the arena: on the stack when small. The bytes may have changed while they
/// were copied (a seqlock reader checks that afterwards); nothing reads them before.
pub(crate) struct Copied {
    len: usize,
    small: [std::mem::MaybeUninit<u8>; SMALL],
    big: Vec<u8>,
}

const SMALL: usize = 120;

impl Copied {
    #[inline]
    pub(crate) fn new() -> Self {
        Copied {
            len: 0,
            small: [std::mem::MaybeUninit::uninit(); SMALL],
            big: Vec::new(),
        }
    }

    /// Copies the `len` bytes at `off` of `s` (checked first).
    #[inline]
    pub(crate) fn fill_from(&mut self, s: &Span, off: u64, len: u64) -> Result<()> {
        let p = s.check(off, len)?;
        if len as usize <= SMALL {
            // SAFETY: `p..p + len` is in the mapping (checked); `len <= SMALL` bytes of `small` are
            // written, and `bytes` reads only those.
            unsafe { super::arena::copy_raw(p, self.small.as_mut_ptr().cast(), len as usize) };
            self.len = len as usize;
        } else {
            self.len = usize::MAX;
            self.big.clear();
            self.big.reserve(len as usize);
            // SAFETY: `p..p + len` is in the mapping (checked); written into the spare capacity of
            // `big` (reserved), whose length is then set to what was written. `len` is bounded by
            // the chunk, not chosen by a peer.
            unsafe {
                std::ptr::copy_nonoverlapping(p, self.big.as_mut_ptr(), len as usize);
                self.big.set_len(len as usize);
            }
        }
        Ok(())
    }

    /// Copies the `len` bytes at `r` (bounded by the chunk, checked first).
    #[inline]
    pub(crate) fn fill(&mut self, a: &Arena, r: Ref, len: u64) -> Result<()> {
        if len as usize <= SMALL {
            let p = a.at(r, len)?;
            // SAFETY: `p..p + len` is in the mapping (checked); `len <= SMALL` bytes of `small` are
            // written, and `bytes` reads only those.
            unsafe { super::arena::copy_raw(p, self.small.as_mut_ptr().cast(), len as usize) };
            self.len = len as usize;
            Ok(())
        } else {
            self.len = usize::MAX;
            self.big.clear();
            a.append_out(r, len, &mut self.big)
        }
    }

    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        if self.len == usize::MAX {
            &self.big
        } else {
            // SAFETY: `fill` wrote the first `len` bytes (`len <= SMALL`; 0 before any fill).
            unsafe { std::slice::from_raw_parts(self.small.as_ptr().cast(), self.len) }
        }
    }
}

/// Whether the bytes at `off` of `s` equal `want` (compared in private copies: at most 16 bytes as
/// two words, else 64 bytes at a time).
#[inline]
pub(crate) fn equal_in(s: &Span, off: u64, want: &[u8]) -> Result<bool> {
    let p = s.check(off, want.len() as u64)?;
    if want.len() <= 16 {
        use super::arena::small_words;
        // SAFETY: `p..p + len` is in the mapping (checked), `want` is ours; `len <= 16`.
        let same = unsafe { small_words(p, want.len()) == small_words(want.as_ptr(), want.len()) };
        return Ok(same);
    }
    let mut buf = [0u8; 64];
    for (k, part) in want.chunks(64).enumerate() {
        s.copy_out(off + k as u64 * 64, &mut buf[..part.len()])?;
        if buf[..part.len()] != *part {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the bytes at `r` equal `want` (compared in private copies: at most 16 bytes as two words,
/// else 64 bytes at a time).
#[inline]
pub(crate) fn equal_at(a: &Arena, r: Ref, want: &[u8]) -> Result<bool> {
    let p = a.at(r, want.len() as u64)?;
    if want.len() <= 16 {
        let mut buf = [0u8; 16];
        // SAFETY: `p..p + len` is in the mapping (checked by `at`); `len <= 16`.
        unsafe { super::arena::copy_raw(p, buf.as_mut_ptr(), want.len()) };
        let mut w = [0u8; 16];
        w[..want.len()].copy_from_slice(want);
        return Ok(u128::from_ne_bytes(buf) == u128::from_ne_bytes(w));
    }
    let mut buf = [0u8; 64];
    for (k, part) in want.chunks(64).enumerate() {
        a.copy_out(r.add(k as u64 * 64), &mut buf[..part.len()])?;
        if buf[..part.len()] != *part {
            return Ok(false);
        }
    }
    Ok(true)
}

#[inline]
fn mix(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

/// A 64-bit hash of `bytes` under `seed` (a multiply-and-fold mix, as wyhash does; the seed is random
/// per container, so colliding keys cannot be chosen in advance).
#[inline]
pub(crate) fn hash(seed: u64, bytes: &[u8]) -> u64 {
    const P0: u64 = 0xa076_1d64_78bd_642f;
    const P1: u64 = 0xe703_7ed1_a0b4_28db;
    let mut h = seed ^ P0 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(w), P1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The last 1 to 7 bytes as two overlapping reads, in registers (the length is in `h`).
        // SAFETY: `rest` is `rest.len() <= 7` readable bytes.
        let (a, b) = unsafe { super::arena::small_words(rest.as_ptr(), rest.len()) };
        h = mix(h ^ a ^ (b << 32) ^ P0, P1);
    }
    mix(h, P0 ^ P1)
}
