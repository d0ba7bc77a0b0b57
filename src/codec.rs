//! Encoding of messages: serde values with postcard (compact, varint-based, no schema), and
//! `bytemuck::Pod` values as their raw bytes with no encoding at all.

use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn encode_error(e: postcard::Error) -> Error {
    Error::io(
        std::io::ErrorKind::InvalidInput,
        format!("value cannot be encoded: {e}"),
    )
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

/// Decodes a `T` that must span all of `bytes`; anything else is [`Error::Corrupt`] (a damaged message,
/// or a sender that sent another type).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        _ => Err(Error::Corrupt),
    }
}

/// Reads a `T` from exactly `size_of::<T>()` bytes.
pub(crate) fn decode_pod<T: bytemuck::Pod>(bytes: &[u8]) -> Result<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return Err(Error::Corrupt);
    }
    Ok(bytemuck::pod_read_unaligned(bytes))
}
