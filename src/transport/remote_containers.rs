//! A Manager's dict and list served by a [`Server`](crate::Server), used from other processes and
//! hosts: [`RemoteDict`] and [`RemoteList`], with the calls and errors of
//! [`SharedDict`](crate::SharedDict) and [`SharedList`](crate::SharedList).
//!
//! `modify` runs its closure here, on this side: it reads the value's stored bytes, runs the
//! closure on the decoded value, and asks the server to store the result only if the stored bytes
//! are still the ones read (under the container's lock); if another writer came between, it
//! reads again and runs the closure again. So the update is atomic, as the local `modify`, but
//! the closure may run more than once (it is `FnMut`), and only its last run counts.

use super::proxy::Proxy;
use super::remote::Remote;
use super::server::{ObjKind, Op};
use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::wait::Deadline;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Borrow;
use std::marker::PhantomData;
use std::time::Duration;

impl Remote {
    /// Opens the dict served under `name` ([`Server::serve_dict`](crate::Server::serve_dict)),
    /// whose keys are `K`s and values `V`s (the same types as the server's dict: anything else
    /// is [`Error::Decode`] on the call that meets it). [`Error::NotFound`] if no object has that
    /// name, [`Error::Incompatible`] if it is not a dict.
    pub fn dict<K, V>(&self, name: &str) -> Result<RemoteDict<K, V>>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        Ok(RemoteDict {
            proxy: Proxy::open(self, ObjKind::Dict, name, None)?,
            _t: PhantomData,
        })
    }

    /// Opens the list served under `name` ([`Server::serve_list`](crate::Server::serve_list)),
    /// as [`dict`](Self::dict).
    pub fn list<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<RemoteList<T>> {
        Ok(RemoteList {
            proxy: Proxy::open(self, ObjKind::List, name, None)?,
            _t: PhantomData,
        })
    }
}

/// The compare-and-swap loop of a remote `modify` (see the module docs): `lookup` the stored
/// bytes, run `f` on the decoded value, `replace` if they are unchanged, else again; bounded by
/// the proxy's timeout as a whole.
fn modify_loop<V, R>(
    proxy: &Proxy,
    target: &impl Serialize,
    mut f: impl FnMut(&mut V) -> R,
) -> Result<R>
where
    V: Serialize + DeserializeOwned,
{
    let deadline = Deadline::after(proxy.timeout());
    loop {
        let left = deadline.remaining();
        let raw: Option<Vec<u8>> =
            decode(&proxy.call_within(Op::Lookup, left, encode(target)?)?)?;
        let raw = raw.ok_or(Error::NotFound)?;
        let mut v: V = decode(&raw)?;
        let r = f(&mut v);
        let arg = encode(&(target, &raw, encode(&v)?))?;
        if decode::<bool>(&proxy.call_within(Op::Replace, deadline.remaining(), arg)?)? {
            return Ok(r);
        }
        if deadline.is_immediate_or_past() {
            return Err(Error::Timeout);
        }
    }
}

/// What a [`RemoteDict`] carries (it is `Send + Sync` whatever `K` and `V` are: it holds none).
type Entries<K, V> = fn((K, V)) -> (K, V);

/// A [`SharedDict`](crate::SharedDict) served by a [`Server`](crate::Server), used from another
/// process or host with the same calls and errors (each a `Result`, since the network can fail).
/// [`with_timeout`](Self::with_timeout) bounds every call, as on the local dict; a lost connection
/// is an error, never a hang. `modify` is atomic, and may run its closure more than once (module
/// docs).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Error, Manager, Process, Remote, Server};
/// let m = Manager::new()?;
/// let counts = m.dict_from([("count".to_string(), 100i64)])?;
/// let server = Server::bind("tcp://127.0.0.1:0", b"key")?;
/// server.serve_dict("counts", counts.clone())?;
/// let server = server.start()?;
/// let addr = server.address();
/// let mut p = Process::fork(move || {
///     let d = Remote::connect(&addr, b"key").unwrap().dict::<String, i64>("counts").unwrap();
///     d.modify("count", |v| *v -= 1).unwrap();
/// })?;
/// assert!(p.join()?.success());
/// let d = Remote::connect(&server.address(), b"key")?.dict::<String, i64>("counts")?;
/// assert_eq!(d.get("count")?, Some(99));
/// assert_eq!(counts.get("count")?, Some(99)); // the same dict, used locally
/// assert!(matches!(d.modify("nope", |v| *v += 1), Err(Error::NotFound)));
/// # Ok(()) }
/// ```
pub struct RemoteDict<K, V> {
    proxy: Proxy,
    _t: PhantomData<Entries<K, V>>,
}

impl<K, V> std::fmt::Debug for RemoteDict<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.proxy.describe("RemoteDict", f)
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> RemoteDict<K, V> {
    fn ask<R: DeserializeOwned>(&self, op: Op, arg: &impl Serialize) -> Result<R> {
        decode(&self.proxy.call(op, encode(arg)?)?)
    }

    /// This dict with every call bounded by `timeout` ([`Error::Timeout`] when the dict's lock
    /// holder is stopped; the answer may take 5 s longer to come back over the network). It opens
    /// a connection of its own on first use.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        RemoteDict {
            proxy: self.proxy.with_timeout(Some(timeout)),
            _t: PhantomData,
        }
    }

    /// The value for `key`, if any (a `&str` finds a `String` key).
    pub fn get<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        let raw: Option<Vec<u8>> = self.ask(Op::Lookup, &key)?;
        raw.map(|b| decode(&b)).transpose()
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
    {
        self.ask(Op::Contains, &key)
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&self, key: impl Borrow<K>, value: impl Borrow<V>) -> Result<Option<V>> {
        self.ask(Op::Insert, &(key.borrow(), value.borrow()))
    }

    /// Removes `key`; returns its value, if it had one.
    pub fn remove<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        self.ask(Op::Remove, &key)
    }

    /// The value for `key`, after setting it to `value` if it had none (Python's `setdefault`).
    pub fn get_or_insert(&self, key: impl Borrow<K>, value: V) -> Result<V> {
        self.ask(Op::GetOrInsert, &(key.borrow(), &value))
    }

    /// Runs `f` on the value for `key` and stores what it leaves, atomically; returns what `f`
    /// returns. [`Error::NotFound`] if `key` has no value. `f` may run more than once (another
    /// writer came between): only its last run is stored.
    pub fn modify<Q: Serialize + ?Sized, R>(&self, key: &Q, f: impl FnMut(&mut V) -> R) -> Result<R>
    where
        K: Borrow<Q>,
    {
        modify_loop(&self.proxy, &key, f)
    }

    /// Sets every `(key, value)` of `items` (one call, one hold of the dict's lock).
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let items: Vec<(K, V)> = items.into_iter().collect();
        self.proxy.call(Op::Update, encode(&items)?).map(drop)
    }

    /// Entries now.
    pub fn len(&self) -> Result<usize> {
        self.ask::<u64>(Op::Len, &()).map(|n| n as usize)
    }

    /// Whether the dict has no entries now.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.ask(Op::Clear, &())
    }

    /// Every key, as one consistent snapshot.
    pub fn keys(&self) -> Result<Vec<K>> {
        self.ask(Op::Keys, &())
    }

    /// Every value, as one consistent snapshot.
    pub fn values(&self) -> Result<Vec<V>> {
        self.ask(Op::Values, &())
    }

    /// Every `(key, value)`, as one consistent snapshot (in no particular order).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.ask(Op::Items, &())
    }
}

/// A [`SharedList`](crate::SharedList) served by a [`Server`](crate::Server), used from another
/// process or host with the same calls and errors (an index out of range is
/// [`Error::OutOfRange`]); as [`RemoteDict`] for time, lost connections and `modify`.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Manager, Remote, Server};
/// let m = Manager::new()?;
/// let server = Server::bind("tcp://127.0.0.1:0", b"key")?;
/// server.serve_list("num", m.list_from([1, 2, 3])?)?;
/// let server = server.start()?;
/// let num = Remote::connect(&server.address(), b"key")?.list::<i32>("num")?;
/// num.modify(0, |v| *v -= 1)?;
/// num.push(4)?;
/// assert_eq!(num.to_vec()?, [0, 2, 3, 4]);
/// assert!(matches!(num.get(9), Err(shmwire::Error::OutOfRange { index: 9, len: 4 })));
/// # Ok(()) }
/// ```
pub struct RemoteList<T> {
    proxy: Proxy,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for RemoteList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.proxy.describe("RemoteList", f)
    }
}

impl<T: Serialize + DeserializeOwned> RemoteList<T> {
    fn ask<R: DeserializeOwned>(&self, op: Op, arg: &impl Serialize) -> Result<R> {
        decode(&self.proxy.call(op, encode(arg)?)?)
    }

    /// This list with every call bounded by `timeout` (as [`RemoteDict::with_timeout`]).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        RemoteList {
            proxy: self.proxy.with_timeout(Some(timeout)),
            _t: PhantomData,
        }
    }

    /// Appends `v` (Python's `append`).
    pub fn push(&self, v: impl Borrow<T>) -> Result<()> {
        self.ask(Op::Push, &v.borrow())
    }

    /// Appends every item of `items` (one call).
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<T> = items.into_iter().collect();
        self.proxy.call(Op::Extend, encode(&items)?).map(drop)
    }

    /// Element `i`; [`Error::OutOfRange`] past the end.
    pub fn get(&self, i: usize) -> Result<T> {
        let raw: Option<Vec<u8>> = self.ask(Op::Lookup, &(i as u64))?;
        decode(&raw.ok_or(Error::Corrupt)?)
    }

    /// Sets element `i` to `v`; [`Error::OutOfRange`] past the end.
    pub fn set(&self, i: usize, v: impl Borrow<T>) -> Result<()> {
        self.ask(Op::Set, &(i as u64, v.borrow()))
    }

    /// Runs `f` on element `i` and stores what it leaves, atomically; returns what `f` returns.
    /// `f` may run more than once (another writer came between): only its last run is stored.
    pub fn modify<R>(&self, i: usize, f: impl FnMut(&mut T) -> R) -> Result<R> {
        modify_loop(&self.proxy, &(i as u64), f)
    }

    /// Removes and returns the last element; [`Error::OutOfRange`] if the list is empty.
    pub fn pop(&self) -> Result<T> {
        self.ask(Op::Pop, &())
    }

    /// Inserts `v` before element `i` (at the end when `i` is the length).
    pub fn insert(&self, i: usize, v: impl Borrow<T>) -> Result<()> {
        self.ask(Op::InsertAt, &(i as u64, v.borrow()))
    }

    /// Removes and returns element `i`; [`Error::OutOfRange`] past the end.
    pub fn remove(&self, i: usize) -> Result<T> {
        self.ask(Op::RemoveAt, &(i as u64))
    }

    /// The first index holding `v`; [`Error::NotFound`] if none (Python's `ValueError`).
    pub fn index(&self, v: &T) -> Result<usize> {
        self.ask::<u64>(Op::Index, v).map(|n| n as usize)
    }

    /// Elements now.
    pub fn len(&self) -> Result<usize> {
        self.ask::<u64>(Op::Len, &()).map(|n| n as usize)
    }

    /// Whether the list is empty now.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every element, as one consistent snapshot.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.ask(Op::ToVec, &())
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        self.ask(Op::Clear, &())
    }
}
