//! Objects served to other hosts, as Python's `BaseManager` serves them: a [`Server`] listens at an
//! address (with an authkey) and serves named objects; a [`Remote`](super::Remote) on any host
//! connects and uses them with the same calls and errors as the local objects.
//!
//! **Protocol** (postcard over an authenticated [`Connection`]; one connection per opened object):
//! the client sends `Open { kind, name }` and gets `Ok` (or `NotFound` / `Incompatible`), then
//! `Call { op, timeout, arg }` requests, each answered by one `Reply`. Items travel as the bytes
//! the local object stores (postcard), so the server never needs more of `T` than its queue has.
//!
//! **Served objects** are a small trait, `Served` (`served.rs`): one implementation per kind (a
//! [`Queue`], a [`SharedDict`], a [`SharedList`]).
//!
//! **Threads.** Each client connection is served by a thread of its own, which first runs the
//! authkey handshake (bounded by [`HANDSHAKE_TIMEOUT`](crate::HANDSHAKE_TIMEOUT)), so a slow client
//! (a long link) delays nobody else; at most [`MAX_HANDSHAKES`] run at once, and a connection
//! beyond them is closed at once. A served thread waits for its client's next request in slices
//! of [`SLICE`], and a blocking call (a `get` on an empty queue) waits in such slices too, between
//! which it checks that its client is still connected and the server still running: a client
//! that gave up or vanished does not keep a thread waiting for ever, and once the server is
//! stopped no request is answered.

use super::served::Served;
use crate::error::{Error, Result};
use crate::manager::{SharedDict, SharedList};
use crate::pipe::rendezvous::authenticate_as_listener;
use crate::pipe::{Connection, Listener};
use crate::queue::Queue;
use crate::transport::auth::HANDSHAKE_TIMEOUT;
use crate::wait::Deadline;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a served blocking call waits before it looks at its client again (and a served
/// thread waits for a request before it looks at the server's state).
const SLICE: Duration = Duration::from_millis(100);

/// Handshakes running at once, at most: a connection beyond them is closed unanswered (a flood
/// of silent connections cannot make the server start threads without bound).
pub(crate) const MAX_HANDSHAKES: usize = 64;

/// Kinds of served objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ObjKind {
    Queue,
    Dict,
    List,
}

/// Calls on a served object (`served.rs` says what each kind answers to, with what argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    // A queue's.
    Put,
    Get,
    Qsize,
    IsEmpty,
    IsFull,
    Maxsize,
    Close,
    IsClosed,
    // A dict's and a list's.
    Len,
    Clear,
    /// The stored bytes of a key's value (dict) or an element (list).
    Lookup,
    /// A compare-and-swap on those bytes (a remote `modify`).
    Replace,
    Contains,
    Insert,
    Remove,
    GetOrInsert,
    Update,
    Keys,
    Values,
    Items,
    Push,
    Extend,
    Set,
    Pop,
    InsertAt,
    RemoveAt,
    Index,
    ToVec,
}

impl Op {
    /// Whether the call may wait on the object (for an item, a room, or a container's lock), so
    /// that its answer may take as long as its timeout.
    pub(crate) fn waits(self) -> bool {
        !matches!(
            self,
            Op::Qsize | Op::IsEmpty | Op::IsFull | Op::Maxsize | Op::Close | Op::IsClosed
        )
    }
}

/// A client's request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Open {
        kind: ObjKind,
        name: String,
    },
    /// `timeout_us`: `None` waits for ever; `Some(0)` does not wait.
    Call {
        op: Op,
        timeout_us: Option<u64>,
        arg: Vec<u8>,
    },
}

/// An error as it crosses the wire.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    Timeout,
    Full,
    Empty,
    Eof,
    Closed,
    NotFound,
    Exists,
    Incompatible,
    Corrupt,
    OutOfRange { index: u64, len: u64 },
    Decode { reason: String, bytes: Vec<u8> },
    Encode(String),
    Other(String),
}

/// The server's answer to a request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Ok(Vec<u8>),
    Err(WireError),
}

impl From<Error> for WireError {
    fn from(e: Error) -> WireError {
        match e {
            Error::Timeout => WireError::Timeout,
            Error::Full => WireError::Full,
            Error::Empty => WireError::Empty,
            Error::Eof => WireError::Eof,
            Error::Closed => WireError::Closed,
            Error::NotFound => WireError::NotFound,
            Error::Exists => WireError::Exists,
            Error::Incompatible => WireError::Incompatible,
            Error::Corrupt => WireError::Corrupt,
            Error::OutOfRange { index, len } => WireError::OutOfRange {
                index: index as u64,
                len: len as u64,
            },
            Error::Decode { reason, bytes } => WireError::Decode { reason, bytes },
            Error::Encode(s) => WireError::Encode(s),
            e => WireError::Other(format!("on the server: {e}")),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        match e {
            WireError::Timeout => Error::Timeout,
            WireError::Full => Error::Full,
            WireError::Empty => Error::Empty,
            WireError::Eof => Error::Eof,
            WireError::Closed => Error::Closed,
            WireError::NotFound => Error::NotFound,
            WireError::Exists => Error::Exists,
            WireError::Incompatible => Error::Incompatible,
            WireError::Corrupt => Error::Corrupt,
            WireError::OutOfRange { index, len } => Error::OutOfRange {
                index: usize::try_from(index).unwrap_or(usize::MAX),
                len: usize::try_from(len).unwrap_or(usize::MAX),
            },
            WireError::Decode { reason, bytes } => Error::Decode { reason, bytes },
            WireError::Encode(s) => Error::Encode(s),
            WireError::Other(s) => Error::io(std::io::ErrorKind::Other, s),
        }
    }
}

/// What a served call may wait for: its deadline, its client, the server.
pub(crate) struct Waiter<'a> {
    pub(crate) deadline: Deadline,
    client: &'a Connection,
    stop: &'a AtomicBool,
}

impl Waiter<'_> {
    /// Runs `f` with slices of at most [`SLICE`] until it stops timing out, the deadline passes
    /// (`Timeout`), or the client is gone or the server stopping (`BrokenPipe`: nobody to answer).
    pub(crate) fn wait<R>(&self, mut f: impl FnMut(Duration) -> Result<R>) -> Result<R> {
        loop {
            let slice = self.deadline.remaining().map_or(SLICE, |d| d.min(SLICE));
            match f(slice) {
                Err(Error::Timeout) => {
                    if self.deadline.is_immediate_or_past() {
                        return Err(Error::Timeout);
                    }
                    // A client that sent anything more, or went away, no longer waits for this.
                    if self.stop.load(Ordering::Relaxed)
                        || !matches!(self.client.poll(Duration::ZERO), Ok(false))
                    {
                        return Err(Error::BrokenPipe);
                    }
                }
                r => return r,
            }
        }
    }
}

type Objects = Mutex<HashMap<String, Arc<dyn Served>>>;

/// Serves named objects at an address, to [`Remote`](crate::Remote)s on any host (Python's
/// `BaseManager` server). Each client connection authenticates with the server's authkey and is
/// served by a thread of its own.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Process, Queue, Remote, Server};
/// let server = Server::bind("tcp://127.0.0.1:0", b"key")?;
/// server.serve_queue("jobs", Queue::<String>::new(0)?)?;
/// let server = server.start()?; // runs on a thread until dropped
/// let addr = server.address();
/// let mut p = Process::fork(move || {
///     let remote = Remote::connect(&addr, b"key").unwrap();
///     remote.queue::<String>("jobs").unwrap().put("from afar".to_string()).unwrap();
/// })?;
/// let remote = Remote::connect(&server.address(), b"key")?;
/// assert_eq!(remote.queue::<String>("jobs")?.get()?, "from afar");
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
pub struct Server {
    listener: Listener,
    objects: Arc<Objects>,
    stop: Arc<AtomicBool>,
    /// The sockets of the connections being served (shut down when the server stops).
    clients: Arc<Mutex<Vec<RawFd>>>,
    /// Handshakes running now.
    handshakes: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .objects
            .lock()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Server")
            .field("address", &self.listener.address())
            .field("objects", &names)
            .finish()
    }
}

impl Server {
    /// Listens at `address` (`tcp://host:port`, `unix:/path`, or a shared-memory name), serving to
    /// clients that hold `authkey` (a wrong key is refused before anything is served).
    pub fn bind(address: &str, authkey: impl AsRef<[u8]>) -> Result<Server> {
        Ok(Server {
            listener: Listener::bind_with_authkey(address, authkey)?,
            objects: Arc::default(),
            stop: Arc::default(),
            clients: Arc::default(),
            handshakes: Arc::default(),
        })
    }

    /// The address clients connect to (with the real port of a port-0 bind).
    pub fn address(&self) -> String {
        self.listener.address()
    }

    /// Serves `queue` under `name` (a name served already is [`Error::Exists`]). Remote clients
    /// open it with [`Remote::queue`](crate::Remote::queue) with the same `T`.
    pub fn serve_queue<T>(&self, name: &str, queue: Queue<T>) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        self.serve(name, Arc::new(queue))
    }

    /// Serves a [`Manager`](crate::Manager)'s `dict` under `name` (a name served already is
    /// [`Error::Exists`]). Remote clients open it with [`Remote::dict`](crate::Remote::dict) with the
    /// same `K` and `V`; local processes go on using it directly, beside them.
    pub fn serve_dict<K, V>(&self, name: &str, dict: SharedDict<K, V>) -> Result<()>
    where
        K: Serialize + DeserializeOwned + Send + Sync + 'static,
        V: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.serve(name, Arc::new(dict))
    }

    /// Serves a [`Manager`](crate::Manager)'s `list` under `name`, for
    /// [`Remote::list`](crate::Remote::list) (as [`serve_dict`](Self::serve_dict)).
    pub fn serve_list<T>(&self, name: &str, list: SharedList<T>) -> Result<()>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.serve(name, Arc::new(list))
    }

    fn serve(&self, name: &str, obj: Arc<dyn Served>) -> Result<()> {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if objects.contains_key(name) {
            return Err(Error::Exists);
        }
        objects.insert(name.to_owned(), obj);
        Ok(())
    }

    /// Serves until [`stop`](Self::stop) is called (from another thread): accepts clients and
    /// serves each on a thread of its own. A client that fails the handshake is refused and the
    /// server goes on.
    pub fn run(&self) -> Result<()> {
        let key: Arc<[u8]> = self.listener.authkey().unwrap_or_default().into();
        while !self.stop.load(Ordering::Relaxed) {
            let conn = match self
                .listener
                .accept_unauthenticated_at(Deadline::after(Some(SLICE)))
            {
                Ok(c) => c,
                Err(
                    Error::Timeout
                    | Error::AuthenticationFailed
                    | Error::Eof
                    | Error::BrokenPipe
                    | Error::Incompatible
                    | Error::NotFound,
                ) => continue,
                Err(e) => return Err(e),
            };
            if self.handshakes.fetch_add(1, Ordering::Relaxed) >= MAX_HANDSHAKES {
                self.handshakes.fetch_sub(1, Ordering::Relaxed);
                continue; // dropped: too many clients are in their handshakes
            }
            let fd = conn.sock_fd();
            if let Some(fd) = fd {
                self.clients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(fd);
            }
            let (objects, stop, clients, handshakes, key) = (
                self.objects.clone(),
                self.stop.clone(),
                self.clients.clone(),
                self.handshakes.clone(),
                key.clone(),
            );
            let untrack = move |clients: &Mutex<Vec<RawFd>>| {
                if let Some(fd) = fd {
                    clients
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|&c| c != fd);
                }
            };
            let spawned = std::thread::Builder::new()
                .name("shmwire-serve".into())
                .spawn(move || {
                    let hs = Deadline::after(Some(HANDSHAKE_TIMEOUT));
                    let ok = authenticate_as_listener(&conn, &key, hs).is_ok();
                    handshakes.fetch_sub(1, Ordering::Relaxed);
                    if ok {
                        serve_client(&conn, &objects, &stop);
                    }
                    // Untracked before it closes, so `stop` never shuts a reused number down.
                    untrack(&clients);
                    drop(conn);
                });
            if let Err(e) = spawned {
                // The closure (and the connection with it) is gone: untrack it.
                self.handshakes.fetch_sub(1, Ordering::Relaxed);
                untrack(&self.clients);
                return Err(Error::Io(e));
            }
        }
        Ok(())
    }

    /// Makes [`run`](Self::run) return (within 100 ms) and ends the connections being
    /// served (their clients see the end of the stream).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for &fd in self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // SAFETY: shutdown on a descriptor tracked while its connection lives (a connection
            // untracks itself before it closes); it only ends the stream.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    /// Runs the server on a thread of its own until the returned value is dropped (or stopped).
    pub fn start(self) -> Result<ServerThread> {
        let server = Arc::new(self);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("shmwire-server".into())
            .spawn(move || s.run())
            .map_err(Error::Io)?;
        Ok(ServerThread {
            server,
            thread: Some(thread),
        })
    }
}

/// A [`Server`] running on a thread: made by [`Server::start`]; dropping it stops the server.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Error, Queue, Remote, Server};
/// let server = Server::bind("tcp://127.0.0.1:0", b"key")?;
/// server.serve_queue("q", Queue::<u8>::new(0)?)?;
/// let running = server.start()?;
/// let addr = running.address();
/// Remote::connect(&addr, b"key")?.queue::<u8>("q")?.put(1)?;
/// running.stop()?; // the listener goes: nobody is there any more
/// assert!(matches!(Remote::connect(&addr, b"key"), Err(Error::NotFound)));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ServerThread {
    server: Arc<Server>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl ServerThread {
    /// The address clients connect to.
    pub fn address(&self) -> String {
        self.server.address()
    }

    /// Stops the server and waits for its thread; what `run` returned.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        self.server.stop();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::io(
                std::io::ErrorKind::Other,
                "the server's thread panicked",
            )),
            None => Ok(()),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The client's next request, waiting in slices of [`SLICE`] so that a stopped server is noticed
/// (`None`: the server stopped, the client closed or vanished, or it sent what is no request).
fn next_request(conn: &Connection, stop: &AtomicBool) -> Option<Request> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        match conn.recv_timeout::<Request>(SLICE) {
            // A request that came as the server stopped is not answered.
            Ok(r) => return (!stop.load(Ordering::Relaxed)).then_some(r),
            Err(Error::Timeout) => {}
            Err(_) => return None,
        }
    }
}

/// Serves one client until it closes (or the server stops).
fn serve_client(conn: &Connection, objects: &Objects, stop: &AtomicBool) {
    let obj = match next_request(conn, stop) {
        Some(Request::Open { kind, name }) => {
            let found = objects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
            let reply = match &found {
                None => Reply::Err(WireError::NotFound),
                Some(o) if o.kind() != kind => Reply::Err(WireError::Incompatible),
                Some(_) => Reply::Ok(Vec::new()),
            };
            if conn.send(&reply).is_err() {
                return;
            }
            match found {
                Some(o) if o.kind() == kind => o,
                _ => return,
            }
        }
        _ => return, // not this protocol, gone, or the server stopped
    };
    while let Some(Request::Call {
        op,
        timeout_us,
        arg,
    }) = next_request(conn, stop)
    {
        let waiter = Waiter {
            deadline: Deadline::after(timeout_us.map(Duration::from_micros)),
            client: conn,
            stop,
        };
        let reply = match obj.call(op, &arg, &waiter) {
            Ok(v) => Reply::Ok(v),
            Err(Error::BrokenPipe) => return, // the client is gone: nobody to answer
            Err(e) => Reply::Err(e.into()),
        };
        if conn.send(&reply).is_err() {
            return;
        }
    }
}
