//! `Listener` and `Client`: one API over three transports, chosen by address (see
//! [`transport`](crate::transport)): a shared-memory name (`listener.rs`: processes of this user
//! on this host meet by name, then talk over shared memory), `unix:/path` and `tcp://host:port`
//! (Python's `multiprocessing.connection` wire, for another host or another language).
//!
//! With an authkey, every connection runs Python's challenge-response handshake before it is
//! handed over (`transport::auth`), whatever carries it: a listener delivers its challenge, then
//! answers the client's; a client answers, then delivers.

use crate::error::{Error, Result};
use crate::pipe::connection::Connection;
use crate::pipe::listener::{ShmListener, connect_at as shm_connect};
use crate::transport::address::Address;
use crate::transport::auth::{self, HANDSHAKE_TIMEOUT};
use crate::transport::conn::SockConn;
use crate::transport::listener::SockListener;
use crate::transport::stream::{self, DEAD_PEER_TIMEOUT, Family};
use crate::wait::Deadline;
use crate::wait::select::{Armed, Waitable};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;
use std::time::Duration;

/// What a listener listens with.
#[derive(Debug)]
enum Kind {
    Shm(ShmListener),
    Sock(SockListener),
}

/// Options applied to every connection a listener accepts.
#[derive(Debug, Clone)]
struct Options {
    max_message: usize,
    dead_peer: Duration,
    handshake: Duration,
}

/// Options for a [`Listener`]: start from [`Listener::builder`], finish with
/// [`build`](Self::build).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::Listener;
/// let name = format!("doc-listener-builder-{}", std::process::id());
/// let listener = Listener::builder(&name).authkey(b"secret").mode(0o660).build()?;
/// assert_eq!(listener.name(), name);
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `build()`"]
pub struct ListenerBuilder {
    address: String,
    authkey: Option<Vec<u8>>,
    mode: Option<u32>,
}

impl std::fmt::Debug for ListenerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("address", &self.address)
            .field("authkey", &self.authkey.as_ref().map(|_| "..."))
            .field("mode", &self.mode)
            .finish()
    }
}

impl ListenerBuilder {
    /// Every connection authenticates with `authkey` (see [`Listener::bind_with_authkey`]); an
    /// empty key is [`Error::Invalid`] (from `build`).
    pub fn authkey(mut self, authkey: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(authkey.as_ref().to_vec());
        self
    }

    /// Who may connect besides this user, for a shared-memory name or a `unix:` path: `0o660`
    /// also lets in the users of its socket's group (the binding process's effective group),
    /// `0o600` (the default) nobody else; others never (any other mode is [`Error::Invalid`]). A
    /// process of another user connects only if it is in that group; without this, it is refused.
    /// A `tcp://` address has no file to give a mode: a mode there is [`Error::Invalid`] (use an
    /// authkey).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Binds the listener (the errors of [`Listener::bind`] and
    /// [`Listener::bind_with_authkey`]).
    pub fn build(self) -> Result<Listener> {
        if let Some(key) = &self.authkey {
            auth::check_key(key)?;
        }
        let mode = self.mode.unwrap_or(0o600);
        crate::segment::check_mode(mode)?;
        let kind = match Address::parse(&self.address)? {
            Address::Shm(name) => Kind::Shm(ShmListener::bind(&name, mode)?),
            Address::Tcp { .. } if self.mode.is_some() => {
                return Err(Error::invalid(format!(
                    "a mode for {}: a TCP listener has no file to give a mode; anyone who can \
                     reach it may connect, so give it an authkey instead",
                    self.address
                )));
            }
            a => Kind::Sock(SockListener::bind(&a, mode)?),
        };
        Ok(Listener {
            kind,
            authkey: self.authkey,
            options: Mutex::new(Options {
                max_message: crate::DEFAULT_MAX_MESSAGE,
                dead_peer: DEAD_PEER_TIMEOUT,
                handshake: HANDSHAKE_TIMEOUT,
            }),
        })
    }
}

/// A rendezvous point that clients connect to: a shared-memory name, `unix:/path` or
/// `tcp://host:port` ([`bind`](Self::bind)); Python's `multiprocessing.connection.Listener`.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Client, Error, Listener, Process};
/// use std::time::Duration;
/// let name = format!("doc-listener-type-{}", std::process::id());
/// let listener = Listener::bind(&name)?;
/// assert!(matches!(Listener::bind(&name), Err(Error::Exists)));
/// assert!(matches!(
///     listener.accept_timeout(Duration::from_millis(10)),
///     Err(Error::Timeout)
/// ));
/// let n = name.clone();
/// let mut p = Process::fork(move || Client::connect(&n).unwrap().send(&7u8).unwrap())?;
/// assert_eq!(listener.accept()?.recv::<u8>()?, 7);
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
///
/// Over TCP, with an authkey (a Python 3 `multiprocessing.connection.Client(("127.0.0.1", port),
/// authkey=b"secret")` could connect just as well):
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Client, Listener, Process};
/// let listener = Listener::bind_with_authkey("tcp://127.0.0.1:0", b"secret")?;
/// let addr = listener.address(); // the port the kernel chose
/// let mut p = Process::fork(move || {
///     let c = Client::connect_with_authkey(&addr, b"secret").unwrap();
///     c.send_bytes(b"hello over tcp").unwrap();
/// })?;
/// assert_eq!(listener.accept()?.recv_bytes()?, b"hello over tcp");
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Listener {
    kind: Kind,
    authkey: Option<Vec<u8>>,
    options: Mutex<Options>,
}

impl Listener {
    /// The largest ring a shared-memory client's pipe may have (each direction): a larger one is
    /// refused. What this process allocates for one message from a client is bounded by half of it.
    pub const MAX_CLIENT_CAPACITY: usize = ShmListener::MAX_CLIENT_CAPACITY;

    /// Binds `address`:
    ///
    /// * a shared-memory name (1 to 200 characters from `[A-Za-z0-9._-]`): processes of this user
    ///   connect by name (a socket in `/dev/shm` introduces them) and talk over shared memory;
    /// * `unix:/path/to/socket`: a Unix stream socket at that path (removed when the listener is
    ///   dropped; one left by a listener that died is reclaimed);
    /// * `tcp://host:port` (`tcp://[::1]:port` for IPv6; port 0: the kernel chooses, see
    ///   [`address`](Self::address)).
    ///
    /// Over a socket the connections speak Python's `multiprocessing.connection` wire. Without an
    /// authkey, anyone who can reach a TCP address can connect: use
    /// [`bind_with_authkey`](Self::bind_with_authkey) beyond loopback.
    ///
    /// A shared-memory listener's socket and a `unix:` listener's are mode 0600: only this user
    /// connects (see [`ListenerBuilder::mode`] to share them with a group).
    ///
    /// Errors: [`Error::Exists`] if a live listener has the name, path or port;
    /// [`Error::Invalid`] for an address that does not parse.
    pub fn bind(address: &str) -> Result<Listener> {
        Self::builder(address).build()
    }

    /// Options for a listener at `address` (as for [`bind`](Self::bind)): an authkey, who else
    /// may connect.
    pub fn builder(address: &str) -> ListenerBuilder {
        ListenerBuilder {
            address: address.to_owned(),
            authkey: None,
            mode: None,
        }
    }

    /// [`bind`](Self::bind), and every connection authenticates with `authkey` (Python's
    /// `Listener(address, authkey=...)`): [`accept`](Self::accept) challenges each client, then
    /// answers its challenge, before it hands the connection over. A client without the key is
    /// refused: `accept` returns [`Error::AuthenticationFailed`] (call it again to go on) and the
    /// client sees its own authentication error (Python's `AuthenticationError`). A client that
    /// stops part way through the handshake is dropped after the handshake timeout
    /// ([`HANDSHAKE_TIMEOUT`](crate::HANDSHAKE_TIMEOUT), 10 s) and the wait goes on.
    ///
    /// Both forms of the handshake are understood: Python 3.11's (HMAC-MD5) and 3.12's
    /// (`{sha256}`). An empty key is [`Error::Invalid`].
    pub fn bind_with_authkey(address: &str, authkey: impl AsRef<[u8]>) -> Result<Listener> {
        Self::builder(address).authkey(authkey).build()
    }

    /// The address clients connect to: the name for shared memory, `unix:PATH`, or
    /// `tcp://HOST:PORT` with the port it got (for a port-0 bind, the real one).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let l = shmwire::Listener::bind("tcp://127.0.0.1:0")?;
    /// assert!(l.address().starts_with("tcp://127.0.0.1:"));
    /// assert!(!l.address().ends_with(":0"));
    /// # Ok(()) }
    /// ```
    pub fn address(&self) -> String {
        match &self.kind {
            Kind::Shm(l) => l.name().to_owned(),
            Kind::Sock(l) => l.address().to_owned(),
        }
    }

    /// The name it was bound to (for a socket listener, its [`address`](Self::address)).
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Shm(l) => l.name(),
            Kind::Sock(l) => l.address(),
        }
    }

    /// The longest message each accepted socket connection takes
    /// ([`Connection::set_max_message`]); applies to connections accepted from now on.
    pub fn set_max_message(&self, bytes: usize) {
        self.options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .max_message = bytes;
    }

    /// The dead-peer timeout of each accepted TCP connection
    /// ([`Connection::set_dead_peer_timeout`]); applies to connections accepted from now on.
    pub fn set_dead_peer_timeout(&self, timeout: Duration) {
        self.options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dead_peer = timeout;
    }

    /// How long a client may take over the authkey handshake (default
    /// [`HANDSHAKE_TIMEOUT`](crate::HANDSHAKE_TIMEOUT)); a client slower than that is dropped.
    pub fn set_handshake_timeout(&self, timeout: Duration) {
        self.options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handshake = timeout;
    }

    fn options(&self) -> Options {
        self.options
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for a client and returns the connection to it.
    ///
    /// Over shared memory, a client that fails its introduction (another user, bad descriptors,
    /// silence for 5 s, gone before the answer) is dropped and the wait goes on; clients whose
    /// introductions arrive together are introduced one per call. With an authkey, a client that
    /// fails the handshake is [`Error::AuthenticationFailed`] (the next call goes on), and one that
    /// goes silent in it, or away, is dropped.
    pub fn accept(&self) -> Result<Connection> {
        self.accept_at(Deadline::NEVER)
    }

    /// [`accept`](Self::accept), giving up with [`Error::Timeout`] after `timeout`, which bounds the
    /// handshake too. A shared-memory client that has connected but not yet introduced itself when
    /// the time is up is kept for the next call; a socket client in the middle of its handshake is
    /// dropped.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_at(Deadline::after(Some(timeout)))
    }

    fn accept_at(&self, deadline: Deadline) -> Result<Connection> {
        loop {
            let conn = self.accept_unauthenticated_at(deadline)?;
            let Some(key) = &self.authkey else {
                return Ok(conn);
            };
            let hs = auth::deadline(deadline, self.options().handshake);
            match authenticate_as_listener(&conn, key, hs) {
                Ok(()) => return Ok(conn),
                Err(e @ Error::AuthenticationFailed) => return Err(e),
                Err(e) if is_local_failure(&e) => return Err(e),
                // Silent past the handshake's time, or gone: dropped (the caller's deadline ends
                // the wait, below).
                Err(_) => {}
            }
            if deadline.is_immediate_or_past() {
                return Err(Error::Timeout);
            }
        }
    }

    /// The next connection, with the listener's options set but before any handshake: a
    /// [`Server`](crate::Server) runs the handshake on the client's own thread
    /// ([`authenticate_as_listener`] with [`authkey`](Self::authkey)), so that a slow client
    /// delays nobody else.
    pub(crate) fn accept_unauthenticated_at(&self, deadline: Deadline) -> Result<Connection> {
        let opts = self.options();
        Ok(match &self.kind {
            Kind::Shm(l) => l.accept_at(deadline)?,
            Kind::Sock(l) => {
                let c = l.accept_at(deadline)?;
                c.set_max_message(opts.max_message)?;
                if c.family() == Family::Tcp && opts.dead_peer != DEAD_PEER_TIMEOUT {
                    c.set_dead_peer_timeout(opts.dead_peer)?;
                }
                Connection::sock(c)
            }
        })
    }

    /// The key every connection authenticates with, if any.
    pub(crate) fn authkey(&self) -> Option<&[u8]> {
        self.authkey.as_deref()
    }

    /// The connections as clients arrive: each item is what [`accept`](Self::accept) returns (as
    /// std's `TcpListener::incoming`). It never ends by itself: stop with `take`, `break` or `?`.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::{Client, Listener, Process};
    /// let name = format!("doc-incoming-{}", std::process::id());
    /// let listener = Listener::bind(&name)?;
    /// let n = name.clone();
    /// let mut p = Process::fork(move || {
    ///     for i in 0..2u32 {
    ///         Client::connect(&n).unwrap().send(&i).unwrap();
    ///     }
    /// })?;
    /// let mut sum = 0;
    /// for conn in listener.incoming().take(2) {
    ///     sum += conn?.recv::<u32>()?;
    /// }
    /// assert_eq!(sum, 1);
    /// assert!(p.join()?.success());
    /// # Ok(()) }
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }
}

/// The listener's side of the handshake on `conn` under `key` (it delivers its challenge, then
/// answers the client's), within `deadline`.
pub(crate) fn authenticate_as_listener(
    conn: &Connection,
    key: &[u8],
    deadline: Deadline,
) -> Result<()> {
    auth::deliver(conn, key, deadline).and_then(|()| auth::respond(conn, key, deadline))
}

/// Whether an error is this process's problem (out of memory or descriptors), not the client's.
fn is_local_failure(e: &Error) -> bool {
    match e {
        Error::Io(io) => matches!(
            io.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
        ),
        _ => false,
    }
}

impl AsFd for Listener {
    /// The listening socket (non-blocking): readable when a client waits to be accepted.
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::Shm(l) => l.as_fd(),
            Kind::Sock(l) => l.as_fd(),
        }
    }
}

impl crate::wait::select::sealed::Sealed for Listener {}

impl Waitable for Listener {
    fn __arm(&self) -> Result<Armed> {
        match &self.kind {
            Kind::Shm(l) => l.arm(),
            Kind::Sock(l) => Ok(if l.pending()? {
                Armed::Ready
            } else {
                Armed::Fd(l.raw())
            }),
        }
    }

    fn __check(&self, _signalled: bool) -> Result<bool> {
        match &self.kind {
            Kind::Shm(l) => l.check(),
            Kind::Sock(l) => l.pending(),
        }
    }
}

/// The connections a [`Listener`] accepts, as clients arrive: made by [`Listener::incoming`]. Each
/// item is what [`Listener::accept`] returns; it never ends by itself.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Client, Incoming, Listener, Process};
/// let name = format!("doc-incoming-type-{}", std::process::id());
/// let listener = Listener::bind(&name)?;
/// let n = name.clone();
/// let mut p = Process::fork(move || Client::connect(&n).unwrap().send("hi").unwrap())?;
/// let mut clients: Incoming<'_> = listener.incoming();
/// let conn = clients.next().unwrap()?;
/// assert_eq!(conn.recv::<String>()?, "hi");
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a Listener,
}

impl Iterator for Incoming<'_> {
    type Item = Result<Connection>;

    fn next(&mut self) -> Option<Result<Connection>> {
        Some(self.listener.accept())
    }
}

impl std::iter::FusedIterator for Incoming<'_> {}

/// Connects to a [`Listener`] by address (Python's `multiprocessing.connection.Client`).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Client, Error, Listener, Process};
/// use std::time::Duration;
/// let name = format!("doc-client-{}", std::process::id());
/// assert!(matches!(Client::connect(&name), Err(Error::NotFound))); // nobody listens yet
/// let listener = Listener::bind(&name)?;
/// let n = name.clone();
/// let mut p = Process::fork(move || {
///     let conn = Client::connect_timeout(&n, Duration::from_secs(10)).unwrap();
///     let x: u32 = conn.recv().unwrap();
///     conn.send(&(x + 1)).unwrap();
/// })?;
/// let conn = listener.accept()?;
/// conn.send(&41u32)?;
/// assert_eq!(conn.recv::<u32>()?, 42);
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client;

impl Client {
    /// Connects to the listener at `address` (a shared-memory name, `unix:/path` or
    /// `tcp://host:port`) and waits until it accepts.
    ///
    /// Errors: [`Error::NotFound`] if nothing listens there (no live listener has the name, the
    /// socket path, or the port: refused); over shared memory, `Io(PermissionDenied)` if the
    /// listener runs as another user (nothing is sent to it), [`Error::Eof`] if the listener closed
    /// without accepting, [`Error::Incompatible`] if what answers is not a shmwire listener of
    /// this version.
    pub fn connect(address: &str) -> Result<Connection> {
        Self::connect_at(address, None, Deadline::NEVER)
    }

    /// [`connect`](Self::connect), giving up with [`Error::Timeout`] if not accepted within
    /// `timeout` (a listener whose backlog is full included).
    pub fn connect_timeout(address: &str, timeout: Duration) -> Result<Connection> {
        Self::connect_at(address, None, Deadline::after(Some(timeout)))
    }

    /// [`connect`](Self::connect), then the authkey handshake (Python's `Client(address,
    /// authkey=...)`): it answers the listener's challenge, then challenges the listener. A
    /// listener without the key (or without any key) is [`Error::AuthenticationFailed`]; one that
    /// goes silent in the handshake is [`Error::Timeout`] after
    /// [`HANDSHAKE_TIMEOUT`](crate::HANDSHAKE_TIMEOUT). An empty key is [`Error::Invalid`].
    pub fn connect_with_authkey(address: &str, authkey: impl AsRef<[u8]>) -> Result<Connection> {
        Self::connect_at(address, Some(authkey.as_ref()), Deadline::NEVER)
    }

    /// [`connect_with_authkey`](Self::connect_with_authkey), giving up with [`Error::Timeout`]
    /// after `timeout` (the handshake included).
    pub fn connect_with_authkey_timeout(
        address: &str,
        authkey: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Connection> {
        Self::connect_at(
            address,
            Some(authkey.as_ref()),
            Deadline::after(Some(timeout)),
        )
    }

    fn connect_at(address: &str, key: Option<&[u8]>, deadline: Deadline) -> Result<Connection> {
        if let Some(k) = key {
            auth::check_key(k)?;
        }
        let conn = match Address::parse(address)? {
            Address::Shm(name) => shm_connect(&name, deadline)?,
            Address::Unix(path) => {
                let s = stream::connect_unix(&path, deadline)?;
                Connection::sock(SockConn::new(s, Family::Unix, address.to_owned()))
            }
            Address::Tcp { host, port } => {
                let s = stream::connect_tcp(&host, port, deadline)?;
                stream::configure(&s, Family::Tcp, DEAD_PEER_TIMEOUT)?;
                Connection::sock(SockConn::new(s, Family::Tcp, address.to_owned()))
            }
        };
        if let Some(k) = key {
            let hs = auth::deadline(deadline, HANDSHAKE_TIMEOUT);
            auth::respond(&conn, k, hs)?;
            auth::deliver(&conn, k, hs)?;
        }
        Ok(conn)
    }
}
