//! What a [`Server`](crate::Server) serves: the [`Served`] trait and its implementations for a
//! [`Queue`], a [`SharedDict`] and a [`SharedList`].
//!
//! Each call comes as an [`Op`] and its argument's bytes (postcard), and answers with the bytes
//! of its result. Arguments, per kind:
//!
//! * queue: `Put` an item; the rest none.
//! * dict: `Lookup`, `Contains`, `Remove` a key; `Insert`, `GetOrInsert` a `(key, value)`;
//!   `Update` a `Vec<(key, value)>`; `Replace` a `(key, expected bytes, new bytes)`.
//! * list: `Lookup`, `Pop`, `RemoveAt` an index (`u64`; `Pop` none); `Push`, `Index` an item;
//!   `Extend` a `Vec` of items; `Set`, `InsertAt` an `(index, item)`; `Replace` an `(index,
//!   expected bytes, new bytes)`.
//!
//! `Lookup` answers with the bytes the container stores (an `Option`: a dict's key may have none), and `Replace` stores new bytes only if
//! the stored ones are still those (checked under the container's lock): a remote `modify` is a
//! compare-and-swap loop whose closure runs on the client. A call that waits (for an item, a
//! room, a container's lock) waits through the [`Waiter`], in slices, so a client that gave up
//! or vanished frees its thread.

use super::server::{ObjKind, Op, Waiter};
use crate::error::{Error, Result};
use crate::manager::{SharedDict, SharedList};
use crate::queue::Queue;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An object a [`Server`](crate::Server) serves: one implementation per kind.
pub(crate) trait Served: Send + Sync {
    fn kind(&self) -> ObjKind;
    /// Runs `op` with its argument's bytes; the reply's bytes.
    fn call(&self, op: Op, arg: &[u8], waiter: &Waiter<'_>) -> Result<Vec<u8>>;
}

fn encoded<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    crate::codec::encode(v)
}

/// A call's argument, decoded; one of another type is [`Error::Decode`] naming the object.
fn arg<A: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<A> {
    crate::codec::decode(bytes).map_err(|e| match e {
        Error::Decode { reason, .. } => Error::Decode {
            reason: format!("the served {what} holds another type: {reason}"),
            bytes: bytes.to_vec(),
        },
        e => e,
    })
}

/// A call the object does not answer to: a client of another build (or a lying one).
fn unknown(op: Op, what: &str) -> Error {
    Error::invalid(format!("a served {what} has no call {op:?}"))
}

/// An index from the wire.
fn index(i: u64) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

impl<T> Served for Queue<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn kind(&self) -> ObjKind {
        ObjKind::Queue
    }

    fn call(&self, op: Op, a: &[u8], w: &Waiter<'_>) -> Result<Vec<u8>> {
        match op {
            Op::Put => {
                let item: T = arg(a, "queue")?;
                w.wait(|slice| self.put_timeout(&item, slice))?;
                Ok(Vec::new())
            }
            Op::Get => encoded(&w.wait(|slice| self.get_timeout(slice))?),
            Op::Qsize => encoded(&(self.qsize() as u64)),
            Op::IsEmpty => encoded(&self.is_empty()),
            Op::IsFull => encoded(&self.is_full()),
            Op::Maxsize => encoded(&(self.maxsize() as u64)),
            Op::Close => encoded(&self.close()?),
            Op::IsClosed => encoded(&self.is_closed()),
            op => Err(unknown(op, "queue")),
        }
    }
}

impl<K, V> Served for SharedDict<K, V>
where
    K: Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn kind(&self) -> ObjKind {
        ObjKind::Dict
    }

    fn call(&self, op: Op, a: &[u8], w: &Waiter<'_>) -> Result<Vec<u8>> {
        const W: &str = "dict";
        // Every call may wait for the dict's lock: in slices, each a handle bounded by the slice.
        let d = |slice| self.with_timeout(slice);
        match op {
            Op::Len => encoded(&(w.wait(|s| d(s).len())? as u64)),
            Op::Clear => encoded(&w.wait(|s| d(s).clear())?),
            Op::Lookup => {
                let k: K = arg(a, W)?;
                encoded(&w.wait(|s| d(s).get_raw(&k))?)
            }
            Op::Replace => {
                let (k, old, new): (K, Vec<u8>, Vec<u8>) = arg(a, W)?;
                encoded(&w.wait(|s| d(s).replace_raw(&k, &old, &new))?)
            }
            Op::Contains => {
                let k: K = arg(a, W)?;
                encoded(&w.wait(|s| d(s).contains_key(&k))?)
            }
            Op::Insert => {
                let (k, v): (K, V) = arg(a, W)?;
                encoded(&w.wait(|s| d(s).insert(&k, &v))?)
            }
            Op::Remove => {
                let k: K = arg(a, W)?;
                encoded(&w.wait(|s| d(s).remove(&k))?)
            }
            Op::GetOrInsert => {
                let (k, v): (K, V) = arg(a, W)?;
                let bytes = crate::codec::encode(&v)?;
                // `get_or_insert` takes its value; a retry after a timed-out slice needs another.
                encoded(&w.wait(|s| d(s).get_or_insert(&k, crate::codec::decode(&bytes)?))?)
            }
            Op::Update => {
                let items: Vec<(K, V)> = arg(a, W)?;
                let bytes = crate::codec::encode(&items)?;
                w.wait(|s| d(s).update(crate::codec::decode::<Vec<(K, V)>>(&bytes)?))?;
                Ok(Vec::new())
            }
            Op::Keys => encoded(&w.wait(|s| d(s).keys())?),
            Op::Values => encoded(&w.wait(|s| d(s).values())?),
            Op::Items => encoded(&w.wait(|s| d(s).items())?),
            op => Err(unknown(op, W)),
        }
    }
}

impl<T> Served for SharedList<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn kind(&self) -> ObjKind {
        ObjKind::List
    }

    fn call(&self, op: Op, a: &[u8], w: &Waiter<'_>) -> Result<Vec<u8>> {
        const W: &str = "list";
        let l = |slice| self.with_timeout(slice);
        match op {
            Op::Len => encoded(&(w.wait(|s| l(s).len())? as u64)),
            Op::Clear => encoded(&w.wait(|s| l(s).clear())?),
            Op::Lookup => {
                let i: u64 = arg(a, W)?;
                encoded(&Some(w.wait(|s| l(s).get_raw(index(i)))?))
            }
            Op::Replace => {
                let (i, old, new): (u64, Vec<u8>, Vec<u8>) = arg(a, W)?;
                encoded(&w.wait(|s| l(s).replace_raw(index(i), &old, &new))?)
            }
            Op::Push => {
                let v: T = arg(a, W)?;
                encoded(&w.wait(|s| l(s).push(&v))?)
            }
            Op::Extend => {
                let items: Vec<T> = arg(a, W)?;
                let bytes = crate::codec::encode(&items)?;
                w.wait(|s| l(s).extend(crate::codec::decode::<Vec<T>>(&bytes)?))?;
                Ok(Vec::new())
            }
            Op::Set => {
                let (i, v): (u64, T) = arg(a, W)?;
                encoded(&w.wait(|s| l(s).set(index(i), &v))?)
            }
            Op::Pop => encoded(&w.wait(|s| l(s).pop())?),
            Op::InsertAt => {
                let (i, v): (u64, T) = arg(a, W)?;
                encoded(&w.wait(|s| l(s).insert(index(i), &v))?)
            }
            Op::RemoveAt => {
                let i: u64 = arg(a, W)?;
                encoded(&w.wait(|s| l(s).remove(index(i)))?)
            }
            Op::Index => {
                let v: T = arg(a, W)?;
                encoded(&(w.wait(|s| l(s).index(&v))? as u64))
            }
            Op::ToVec => encoded(&w.wait(|s| l(s).to_vec())?),
            op => Err(unknown(op, W)),
        }
    }
}
