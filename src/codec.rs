//! Encoding of messages: serde values with postcard (compact, varint-based, no schema), and
//! `bytemuck::Pod` values as their raw bytes with no encoding at all.

use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn encode_error(e: postcard::Error) -> Error {
    Error::Encode(e.to_string())
}

/// Encoded size of `v`.
pub(crate) fn encoded_len<T: Serialize + ?Sized>(v: &T) -> Result<usize> {
    postcard::experimental::serialized_size(v).map_err(encode_error)
}

/// Encodes `v` into `buf`, which is exactly [`encoded_len`] long.
pub(crate) fn encode_into<T: Serialize + ?Sized>(v: &T, buf: &mut [u8]) -> Result<()> {
    postcard::to_slice(v, buf).map(|_| ()).map_err(encode_error)
}

/// Encodes `v` into a new vector.
pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    postcard::to_extend(v, Vec::new()).map_err(encode_error)
}

/// A postcard output that writes through a raw pointer range: the payload of a reserved ring frame,
/// memory the peer could also write, to which no reference is ever formed.
struct RawOut {
    start: *mut u8,
    cursor: *mut u8,
    end: *mut u8,
}

impl postcard::ser_flavors::Flavor for RawOut {
    type Output = usize;

    #[inline(always)]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        if self.cursor == self.end {
            return Err(postcard::Error::SerializeBufferFull);
        }
        // SAFETY: `cursor` is below `end`, within the range `encode_raw`'s caller vouched for.
        unsafe {
            self.cursor.write(b);
            self.cursor = self.cursor.add(1);
        }
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        if b.len() > self.end as usize - self.cursor as usize {
            return Err(postcard::Error::SerializeBufferFull);
        }
        // SAFETY: `b.len()` bytes fit before `end`; `b` is our own memory, not the range.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), self.cursor, b.len());
            self.cursor = self.cursor.add(b.len());
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.cursor as usize - self.start as usize)
    }
}

/// Encodes `v` into the `len` bytes at `dst` and returns how many it used (a value that encodes
/// differently from one pass to the next may use fewer than it was sized for; more is an error).
///
/// # Safety
/// `dst..dst + len` must be valid for writes for the duration of the call.
#[inline(never)] // keeps the encoder out of the send fast path's body (which it would bloat)
pub(crate) unsafe fn encode_raw<T: Serialize + ?Sized>(
    v: &T,
    dst: *mut u8,
    len: usize,
) -> Result<usize> {
    let out = RawOut {
        start: dst,
        cursor: dst,
        // SAFETY: one past the end of the caller's range.
        end: unsafe { dst.add(len) },
    };
    postcard::serialize_with_flavor(v, out).map_err(encode_error)
}

/// A reused buffer larger than this is freed after use rather than kept.
const SCRATCH_KEEP: usize = 64 * 1024;

/// Frees a reused buffer that a large message grew past what is worth keeping.
pub(crate) fn trim_scratch(buf: &mut Vec<u8>) {
    if buf.capacity() > SCRATCH_KEEP {
        *buf = Vec::new();
    }
}

/// Decodes a `T` that must span all of `bytes`; anything else is [`Error::Decode`] with the codec's
/// reason (a sender that sent another type), and no bytes (the caller fills them in if it took the
/// item).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(decode_error(format!(
            "{} bytes left over after the value",
            rest.len()
        ))),
        Err(e) => Err(decode_error(e.to_string())),
    }
}

/// Reads a `T` from exactly `size_of::<T>()` bytes; another size is [`Error::Decode`].
pub(crate) fn decode_pod<T: bytemuck::Pod>(bytes: &[u8]) -> Result<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return Err(decode_error(format!(
            "{} bytes, where the type takes {}",
            bytes.len(),
            std::mem::size_of::<T>()
        )));
    }
    Ok(bytemuck::pod_read_unaligned(bytes))
}

fn decode_error(reason: String) -> Error {
    Error::Decode {
        reason,
        bytes: Vec::new(),
    }
}
