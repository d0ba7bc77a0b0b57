//! The socket paths: [`Connection`](crate::Connection)s over Unix and TCP sockets that speak
//! Python's `multiprocessing.connection` wire (its framing and its authkey handshake), and objects
//! served to other hosts ([`Server`], [`Remote`]).
//!
//! The same [`Listener`](crate::Listener) / [`Client`](crate::Client) / `Connection` API runs over
//! three transports, chosen by the address: a shared-memory name (the fast path, on
//! this host), `unix:/path`, and `tcp://host:port`. A socket connection is for a peer that cannot
//! share memory: another host, or another language.
//!
//! Files: `address` (parsing), `stream` (sockets, options, the fork rules), `frame` (the framing and
//! the reader), `conn` (a socket connection's sending and receiving), `listener` (a listening
//! socket), `auth` (the handshake), `pickle` (Python objects, feature `pickle`), `server`,
//! `served`, `proxy`, `remote` and `remote_containers` (objects served across hosts).

pub(crate) mod address;
pub(crate) mod auth;
pub(crate) mod conn;
pub(crate) mod frame;
pub(crate) mod listener;
#[cfg(feature = "pickle")]
pub mod pickle;
pub(crate) mod proxy;
pub(crate) mod remote;
pub(crate) mod remote_containers;
pub(crate) mod served;
pub(crate) mod server;
pub(crate) mod stream;

#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use auth::__fuzz_handshake;
pub use auth::HANDSHAKE_TIMEOUT;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use frame::__fuzz_frames;
pub use frame::DEFAULT_MAX_MESSAGE;
pub use remote::{Remote, RemoteQueue};
pub use remote_containers::{RemoteDict, RemoteList};
pub use server::{Server, ServerThread};
pub use stream::DEAD_PEER_TIMEOUT;
