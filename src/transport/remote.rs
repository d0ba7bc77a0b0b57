//! The client side of served objects: [`Remote`] (a server's address and key) and the proxies it
//! opens ([`RemoteQueue`] here; `RemoteDict`, `RemoteList` in `remote_containers.rs`), each over a
//! connection of its own (`proxy.rs`; see `server.rs` for the protocol).
//!
//! **Time.** A call with a timeout sends it to the server, which waits at most that long, and
//! waits for the answer that long plus `GRACE` (5 s, `proxy.rs`). A call without one waits as long as the local
//! call would (a `get` on an empty queue, for ever), the connection's dead-peer timeout noticing
//! a server whose host vanished. A server that does not answer within the grace (stopped, or
//! stuck) makes the call [`Error::Timeout`], and the proxy reconnects for its next call (the late
//! answer can never be taken for another's).

use super::proxy::Proxy;
use super::server::{ObjKind, Op};
use crate::error::{Error, Result};
use crate::pipe::{Client, Connection};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Borrow;
use std::marker::PhantomData;
use std::time::Duration;

/// How long a call that does not wait on the object (`qsize`, `close`...), and a connection's
/// opening, wait for an answer.
pub(crate) const QUICK: Duration = Duration::from_secs(30);

/// A server's objects, seen from another process or host: [`Remote::connect`] checks the address
/// and the key, then each proxy ([`queue`](Self::queue)) opens a connection of its own.
///
/// ```no_run
/// # fn main() -> shmwire::Result<()> {
/// // On the serving host: Server::bind("tcp://0.0.0.0:5000", b"key")?.serve_queue(..)?.run()
/// let remote = shmwire::Remote::connect("tcp://server.example:5000", b"key")?;
/// let jobs = remote.queue::<String>("jobs")?;
/// jobs.put("work".to_string())?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Remote {
    address: String,
    authkey: Vec<u8>,
    dead_peer: Option<Duration>,
}

impl Remote {
    /// Connects to the [`Server`](crate::Server) at `address` with `authkey` once, to check both
    /// ([`Error::NotFound`] if nothing listens there, [`Error::AuthenticationFailed`] for a wrong
    /// key).
    pub fn connect(address: &str, authkey: impl AsRef<[u8]>) -> Result<Remote> {
        let r = Remote {
            address: address.to_owned(),
            authkey: authkey.as_ref().to_vec(),
            dead_peer: None,
        };
        drop(r.dial()?);
        Ok(r)
    }

    /// The dead-peer timeout of the connections proxies open from now on
    /// ([`Connection::set_dead_peer_timeout`]; default
    /// [`DEAD_PEER_TIMEOUT`](crate::DEAD_PEER_TIMEOUT)): a call waiting on a server whose host
    /// vanished fails within it.
    pub fn set_dead_peer_timeout(&mut self, timeout: Duration) {
        self.dead_peer = Some(timeout);
    }

    /// The server's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn dial(&self) -> Result<Connection> {
        let c = Client::connect_with_authkey_timeout(&self.address, &self.authkey, QUICK)?;
        if let Some(d) = self.dead_peer {
            c.set_dead_peer_timeout(d)?;
        }
        Ok(c)
    }

    /// Opens the queue served under `name`, whose items are `T`s (the server's queue must hold
    /// the same `T`: an item of another type is [`Error::Decode`]). [`Error::NotFound`] if no object
    /// has that name, [`Error::Incompatible`] if it is not a queue.
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<RemoteQueue<T>> {
        Ok(RemoteQueue {
            proxy: Proxy::open(self, ObjKind::Queue, name, None)?,
            _t: PhantomData,
        })
    }
}

/// A queue served by a [`Server`](crate::Server), used from another process or host with the
/// calls of [`Queue`](crate::Queue) and their errors: `put`/`get` and their `_timeout` and
/// `_nowait` forms, [`Error::Eof`] once it is closed and drained, [`Error::Decode`] (with the
/// item's bytes) for an item that is not a `T`. Calls that answer a question (`qsize`,
/// `is_empty`...) return a `Result`, since the network can fail. A lost connection is an error,
/// never a hang (see the module docs for the bounds).
///
/// It is `Send + Sync`; calls from several threads take turns on its one connection (open one
/// proxy per thread for calls that wait concurrently).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Error, Queue, Remote, Server};
/// use std::time::Duration;
/// let server = Server::bind("tcp://127.0.0.1:0", b"key")?;
/// server.serve_queue("q", Queue::<String>::new(1)?)?;
/// let server = server.start()?;
/// let q = Remote::connect(&server.address(), b"key")?.queue::<String>("q")?;
/// q.put("one".to_string())?;
/// assert!(matches!(q.put_nowait("two".to_string()), Err(Error::Full)));
/// assert_eq!(q.qsize()?, 1);
/// assert_eq!(q.get()?, "one");
/// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(Error::Timeout)));
/// q.close()?;
/// assert!(matches!(q.get(), Err(Error::Eof)));
/// # Ok(()) }
/// ```
pub struct RemoteQueue<T> {
    proxy: Proxy,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for RemoteQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.proxy.describe("RemoteQueue", f)
    }
}

impl<T: Serialize + DeserializeOwned> RemoteQueue<T> {
    fn call(&self, op: Op, timeout: Option<Duration>, arg: Vec<u8>) -> Result<Vec<u8>> {
        self.proxy.call_within(op, timeout, arg)
    }

    fn put_at(&self, item: &T, timeout: Option<Duration>) -> Result<()> {
        self.call(Op::Put, timeout, crate::codec::encode(item)?)
            .map(drop)
    }

    fn get_at(&self, timeout: Option<Duration>) -> Result<T> {
        let bytes = self.call(Op::Get, timeout, Vec::new())?;
        crate::codec::decode::<T>(&bytes).map_err(|e| match e {
            Error::Decode { reason, .. } => Error::Decode { reason, bytes },
            e => e,
        })
    }

    fn ask<R: DeserializeOwned>(&self, op: Op) -> Result<R> {
        crate::codec::decode(&self.call(op, Some(Duration::ZERO), Vec::new())?)
    }

    /// Puts `item`, waiting while the queue is full.
    pub fn put(&self, item: impl Borrow<T>) -> Result<()> {
        self.put_at(item.borrow(), None)
    }

    /// [`put`](Self::put), giving up with [`Error::Timeout`] (nothing put) after `timeout` (the
    /// answer may take 5 s longer to come back).
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<()> {
        self.put_at(item.borrow(), Some(timeout))
    }

    /// Puts `item` if there is room now, else [`Error::Full`].
    pub fn put_nowait(&self, item: impl Borrow<T>) -> Result<()> {
        match self.put_at(item.borrow(), Some(Duration::ZERO)) {
            Err(Error::Timeout) => Err(Error::Full),
            r => r,
        }
    }

    /// Takes the oldest item, waiting while the queue is empty; [`Error::Eof`] once it is closed
    /// and drained.
    pub fn get(&self) -> Result<T> {
        self.get_at(None)
    }

    /// [`get`](Self::get), giving up with [`Error::Timeout`] (nothing taken) after `timeout` (the
    /// answer may take 5 s longer to come back).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_at(Some(timeout))
    }

    /// Takes the oldest item if there is one now, else [`Error::Empty`].
    pub fn get_nowait(&self) -> Result<T> {
        match self.get_at(Some(Duration::ZERO)) {
            Err(Error::Timeout) => Err(Error::Empty),
            r => r,
        }
    }

    /// [`get_nowait`](Self::get_nowait) under the name a Rust user looks for.
    pub fn try_get(&self) -> Result<T> {
        self.get_nowait()
    }

    /// How many items the queue holds now.
    pub fn qsize(&self) -> Result<usize> {
        self.ask::<u64>(Op::Qsize).map(|n| n as usize)
    }

    /// [`qsize`](Self::qsize).
    pub fn len(&self) -> Result<usize> {
        self.qsize()
    }

    /// Whether the queue holds nothing now.
    pub fn is_empty(&self) -> Result<bool> {
        self.ask(Op::IsEmpty)
    }

    /// Whether the queue has no room now.
    pub fn is_full(&self) -> Result<bool> {
        self.ask(Op::IsFull)
    }

    /// The queue's bound (0: none).
    pub fn maxsize(&self) -> Result<usize> {
        self.ask::<u64>(Op::Maxsize).map(|n| n as usize)
    }

    /// Closes the queue (for every user): puts fail with [`Error::Closed`], gets drain it, then
    /// [`Error::Eof`].
    pub fn close(&self) -> Result<()> {
        self.ask(Op::Close)
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> Result<bool> {
        self.ask(Op::IsClosed)
    }
}
