//! Keys, values and elements as bytes: encoded with the crate's codec (postcard) on the caller's
//! side, copied out of the arena into private memory before anything decodes them, and hashed with a
//! per-container seed.

use super::arena::{Arena, Ref};
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
    small: [u8; 120],
    big: Vec<u8>,
}

impl Copied {
    #[inline]
    pub(crate) fn new() -> Self {
        Copied {
            len: 0,
            small: [0; 120],
            big: Vec::new(),
        }
    }

    /// Copies the `len` bytes at `r` (bounded by the chunk, checked first).
    #[inline]
    pub(crate) fn fill(&mut self, a: &Arena, r: Ref, len: u64) -> Result<()> {
        if len as usize <= self.small.len() {
            self.len = len as usize;
            a.copy_out(r, &mut self.small[..len as usize])
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
            &self.small[..self.len]
        }
    }
}

/// Whether the bytes at `r` equal `want` (compared in private copies of 64 bytes at a time).
pub(crate) fn equal_at(a: &Arena, r: Ref, want: &[u8]) -> Result<bool> {
    a.at(r, want.len() as u64)?;
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
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h ^ u64::from_le_bytes(w) ^ P0, P1);
    }
    mix(h, P0 ^ P1)
}
