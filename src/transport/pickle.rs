//! Python objects over any [`Connection`] (feature `pickle`): `send_py`/`recv_py` exchange them
//! with Python's `Connection.send`/`recv`, which pickle.
//!
//! Values are [`Value`], the value type of the `serde-pickle` crate, which keeps Python's types
//! apart: `None`, `bool`, `int` (an `i64`, or a [`BigInt`] past 64 bits), `float`, `str`, `bytes`,
//! `list`, `tuple` (a tuple stays a tuple), `dict` (keys of [`HashableValue`]), `set` and
//! `frozenset`. (The generic serde path of that crate would turn tuples into lists: it is not used
//! here.) `send`/`recv` keep the crate's own codec: this feature only adds.
//!
//! What goes out is pickle protocol 3 (every Python 3 reads it); what comes in may be any protocol
//! Python writes (its default is 4). A pickle that names a class or function (anything beyond
//! those types) is refused as [`Error::Decode`] (nothing is ever imported or run), and the
//! message stays for the next call. A dict's keys come back in order of their values (a
//! `BTreeMap`), not in insertion order.

use crate::error::{Error, Result};
use crate::pipe::Connection;
use crate::wait::Deadline;
use std::time::Duration;

pub use num_bigint::BigInt;
pub use serde_pickle::{HashableValue, Value};

/// Python's name for the type of `v` (`type(v).__name__`): `NoneType`, `bool`, `int`, `float`,
/// `str`, `bytes`, `list`, `tuple`, `dict`, `set` or `frozenset`.
///
/// ```
/// use shmwire::transport::pickle::{type_name, Value};
/// assert_eq!(type_name(&Value::Tuple(vec![Value::None])), "tuple");
/// assert_eq!(type_name(&Value::None), "NoneType");
/// ```
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::None => "NoneType",
        Value::Bool(_) => "bool",
        Value::I64(_) | Value::Int(_) => "int",
        Value::F64(_) => "float",
        Value::String(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Tuple(_) => "tuple",
        Value::Dict(_) => "dict",
        Value::Set(_) => "set",
        Value::FrozenSet(_) => "frozenset",
    }
}

/// Pickles `v` (protocol 3).
pub fn dumps(v: &Value) -> Result<Vec<u8>> {
    serde_pickle::value_to_vec(v, serde_pickle::SerOptions::new())
        .map_err(|e| Error::Encode(e.to_string()))
}

/// Unpickles `bytes` (any protocol) into a [`Value`]; anything but the types above is
/// [`Error::Decode`].
pub fn loads(bytes: &[u8]) -> Result<Value> {
    serde_pickle::value_from_slice(bytes, serde_pickle::DeOptions::new()).map_err(|e| {
        Error::Decode {
            reason: format!("not a pickle of plain Python values: {e}"),
            bytes: Vec::new(),
        }
    })
}

impl Connection {
    /// Sends a Python object, pickled: what Python's `Connection.recv()` receives (feature
    /// `pickle`).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::transport::pickle::Value;
    /// let (a, b) = shmwire::Pipe::new()?;
    /// let v = Value::Tuple(vec![Value::I64(1), Value::String("two".into())]);
    /// a.send_py(&v)?;
    /// assert_eq!(b.recv_py()?, v); // a tuple stays a tuple
    /// # Ok(()) }
    /// ```
    pub fn send_py(&self, value: &Value) -> Result<()> {
        self.send_bytes(&dumps(value)?)
    }

    /// [`send_py`](Self::send_py), giving up with [`Error::Timeout`] after `timeout` (as
    /// [`send_bytes_timeout`](Self::send_bytes_timeout)).
    pub fn send_py_timeout(&self, value: &Value, timeout: Duration) -> Result<()> {
        self.send_bytes_timeout(&dumps(value)?, timeout)
    }

    /// Receives a Python object sent with Python's `Connection.send(obj)` (or
    /// [`send_py`](Self::send_py)). A message that is not a pickle of plain values is
    /// [`Error::Decode`], and stays (for [`recv_bytes`](Self::recv_bytes), say).
    pub fn recv_py(&self) -> Result<Value> {
        self.recv_map_at(Deadline::NEVER, loads)
    }

    /// [`recv_py`](Self::recv_py), giving up with [`Error::Timeout`] after `timeout` (nothing
    /// consumed).
    pub fn recv_py_timeout(&self, timeout: Duration) -> Result<Value> {
        self.recv_map_at(Deadline::after(Some(timeout)), loads)
    }
}
