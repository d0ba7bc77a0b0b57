//! `Connection`: the public end, whatever carries it. It holds either a shared-memory end
//! ([`ShmEnd`], the rest of this folder) or a socket end (`transport::conn`), and every call is
//! one `match` on which (the shared-memory fast path pays a predictable branch, nothing more).

use super::ShmEnd;
use crate::error::{Error, Result};
use crate::timeout::Timeout;
use crate::transport::conn::SockConn;
use crate::transport::stream::Family;
use crate::wait::select::{Armed, Waitable};
use crate::wait::{Deadline, WaitStrategy};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::Duration;

/// What carries a [`Connection`]: chosen by the address given to [`Listener::bind`] and
/// [`Client::connect`](crate::Client::connect).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Client, Listener, Transport};
/// let l = Listener::bind("tcp://127.0.0.1:0")?;
/// let c = Client::connect(&l.address())?;
/// assert_eq!(c.transport(), Transport::Tcp);
/// assert_eq!(l.accept()?.transport(), Transport::Tcp);
/// # Ok(()) }
/// ```
///
/// [`Listener::bind`]: crate::Listener::bind
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// The rings of a shared-memory pipe ([`Pipe`](crate::Pipe), or a [`Listener`](crate::Listener)
    /// bound to a name).
    SharedMemory,
    /// A Unix stream socket (`unix:/path`).
    Unix,
    /// A TCP connection (`tcp://host:port`).
    Tcp,
}

/// One end of a connection, as Python's `multiprocessing.connection.Connection`: the end of a
/// [`Pipe`](crate::Pipe) (shared memory), or a connection made by a [`Listener`](crate::Listener)
/// and a [`Client`](crate::Client) over shared memory, a Unix socket or TCP, chosen by address. The
/// calls, their timeout forms and their errors are the same over all three, so code written against
/// `Connection` runs unchanged when its peer moves to another host.
///
/// Over a socket the wire is Python's (`multiprocessing.connection`'s framing): `send_bytes` /
/// `recv_bytes` talk to Python's `Connection.send_bytes` / `recv_bytes`, and with the `pickle`
/// feature `send_py` / `recv_py` to its `send` / `recv`. What differs by transport:
///
/// * **Errors.** Shared memory reports a peer that died as [`Error::PeerDied`] (through its
///   liveness token); a socket has no such notion: the end of its stream (a close, or a reset, as
///   Python reports it) is [`Error::Eof`] at a message boundary, and sending to a closed peer is
///   [`Error::BrokenPipe`]. A socket stream cut in the middle of a message is an error, never a
///   clean end. A TCP peer whose host vanished is noticed within
///   [`dead_peer_timeout`](Self::dead_peer_timeout).
/// * **Limits.** A message received over a socket is at most
///   [`max_message`](Self::max_message) bytes (1 GiB unless set): a longer one is
///   [`Error::TooLarge`], and skipped.
/// * **In place.** `send_with`/`recv_with` lend the ring's bytes over shared memory (zero-copy);
///   over a socket they lend a private buffer.
///
/// `Send` (move it to a thread or into a forked child) but not `Sync` (one user at a time, as a
/// socket). Dropping it closes it. A forked child holds the ends its closure owns; a shared-memory
/// end closes when every process holding it has closed it or died, a socket when every process
/// holding it has closed it.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Error, Pipe, Process};
/// let (parent, child) = Pipe::new()?;
/// let mut p = Process::fork(move || {
///     while let Ok(n) = child.recv::<u32>() {
///         child.send(&(n * 2)).unwrap();
///     }
/// })?;
/// parent.send(&21u32)?;
/// assert_eq!(parent.recv::<u32>()?, 42);
/// drop(parent); // the child's recv returns Err(Eof) and its loop ends
/// assert!(p.join()?.success());
/// # Ok(()) }
/// ```
pub struct Connection {
    inner: Inner,
}

/// What carries a connection.
pub(crate) enum Inner {
    Shm(ShmEnd),
    Sock(SockConn),
}

/// Runs `$e` with `$c` bound to whichever end `$s` holds (the same call on both).
macro_rules! each {
    ($s:expr, $c:ident => $e:expr) => {
        match &$s.inner {
            Inner::Shm($c) => $e,
            Inner::Sock($c) => $e,
        }
    };
}

/// `pod` values cross a socket as their bytes in this host's order, which must be little-endian.
fn pod_order() -> Result<()> {
    if cfg!(target_endian = "big") {
        return Err(Error::invalid(
            "send_pod/recv_pod over a socket carry little-endian bytes, and this host is big-endian; use send/recv",
        ));
    }
    Ok(())
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each!(self, c => c.fmt(f))
    }
}

impl Connection {
    pub(crate) fn shm(end: ShmEnd) -> Connection {
        Connection {
            inner: Inner::Shm(end),
        }
    }

    pub(crate) fn sock(conn: SockConn) -> Connection {
        Connection {
            inner: Inner::Sock(conn),
        }
    }

    /// The shared-memory end, if that is what carries this connection.
    /// The socket of a socket connection (`None` over shared memory).
    pub(crate) fn sock_fd(&self) -> Option<RawFd> {
        match &self.inner {
            Inner::Shm(_) => None,
            Inner::Sock(c) => Some(std::os::fd::AsRawFd::as_raw_fd(&c.as_fd())),
        }
    }

    pub(crate) fn shm_end(&self) -> Option<&ShmEnd> {
        match &self.inner {
            Inner::Shm(c) => Some(c),
            Inner::Sock(_) => None,
        }
    }

    // ---- lifetime --------------------------------------------------------------------------------

    /// Closes this end (in this process). Later calls on it fail with [`Error::Misuse`]; the peer
    /// sees [`Error::Eof`] once it has read everything, if no other process holds this end.
    pub fn close(&self) {
        each!(self, c => c.close())
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        each!(self, c => c.is_closed())
    }

    /// Whether this end can receive (false for the writing end of a simplex pipe; a socket
    /// connection is always duplex).
    pub fn readable(&self) -> bool {
        match &self.inner {
            Inner::Shm(c) => c.readable(),
            Inner::Sock(_) => true,
        }
    }

    /// Whether this end can send (false for the reading end of a simplex pipe).
    pub fn writable(&self) -> bool {
        match &self.inner {
            Inner::Shm(c) => c.writable(),
            Inner::Sock(_) => true,
        }
    }

    /// What carries this connection.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let (a, _b) = shmwire::Pipe::new()?;
    /// assert_eq!(a.transport(), shmwire::Transport::SharedMemory);
    /// # Ok(()) }
    /// ```
    pub fn transport(&self) -> Transport {
        match &self.inner {
            Inner::Shm(_) => Transport::SharedMemory,
            Inner::Sock(c) => match c.family() {
                Family::Unix => Transport::Unix,
                Family::Tcp => Transport::Tcp,
            },
        }
    }

    /// The wait strategy of blocked calls on this end (a socket always sleeps in the kernel; the
    /// strategy is kept, and has no effect there).
    pub fn wait_strategy(&self) -> WaitStrategy {
        each!(self, c => c.wait_strategy())
    }

    /// Changes the wait strategy of blocked calls on this end. From inside a
    /// `send_with`/`recv_with` closure on this end it is [`Error::Misuse`] (nothing changes).
    pub fn set_wait_strategy(&self, wait: WaitStrategy) -> Result<()> {
        each!(self, c => c.set_wait_strategy(wait))
    }

    /// The longest message this end accepts over a socket (default
    /// [`DEFAULT_MAX_MESSAGE`](crate::DEFAULT_MAX_MESSAGE), 1 GiB); `None` over shared memory,
    /// where any size the process can allocate passes.
    pub fn max_message(&self) -> Option<usize> {
        match &self.inner {
            Inner::Shm(_) => None,
            Inner::Sock(c) => Some(c.max_message()),
        }
    }

    /// Sets the longest message this end accepts over a socket. A longer message is
    /// [`Error::TooLarge`] for the receive that meets it, and skipped as its bytes arrive (the next
    /// receive gets the message after it). No effect over shared memory.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::{Client, Error, Listener, Process};
    /// let listener = Listener::bind("tcp://127.0.0.1:0")?;
    /// let addr = listener.address();
    /// let mut p = Process::fork(move || {
    ///     let c = Client::connect(&addr).unwrap();
    ///     c.send_bytes(&[0u8; 100]).unwrap();
    ///     c.send_bytes(b"small").unwrap();
    /// })?;
    /// let conn = listener.accept()?;
    /// conn.set_max_message(64)?;
    /// assert!(matches!(conn.recv_bytes(), Err(Error::TooLarge))); // skipped
    /// assert_eq!(conn.recv_bytes()?, b"small");
    /// assert!(p.join()?.success());
    /// # Ok(()) }
    /// ```
    pub fn set_max_message(&self, bytes: usize) -> Result<()> {
        match &self.inner {
            Inner::Shm(_) => Ok(()),
            Inner::Sock(c) => c.set_max_message(bytes),
        }
    }

    /// How long a TCP peer may stay silent to keepalive probes (or leave sent data
    /// unacknowledged) before the connection is declared lost: a call blocked on a peer whose host
    /// vanished fails within it (an `Io` error of kind `TimedOut`). `None` over shared memory and
    /// Unix sockets, whose peers are on this host (a peer that dies there is seen at once).
    /// Default [`DEAD_PEER_TIMEOUT`](crate::DEAD_PEER_TIMEOUT) (20 s).
    pub fn dead_peer_timeout(&self) -> Option<Duration> {
        match &self.inner {
            Inner::Shm(_) => None,
            Inner::Sock(c) => c.dead_peer_timeout(),
        }
    }

    /// Sets [`dead_peer_timeout`](Self::dead_peer_timeout) (whole seconds, at least 2; keepalive
    /// probes start after half of it). No effect except over TCP.
    pub fn set_dead_peer_timeout(&self, timeout: Duration) -> Result<()> {
        match &self.inner {
            Inner::Shm(_) => Ok(()),
            Inner::Sock(c) => c.set_dead_peer_timeout(timeout),
        }
    }

    // ---- sending ---------------------------------------------------------------------------------

    /// Sends any serde value (encoded with postcard). Blocks while the ring (or the socket's
    /// buffer) is full.
    ///
    /// Errors: [`Error::BrokenPipe`] if the other end is closed, [`Error::PeerDied`] if its holders
    /// died (shared memory), [`Error::Misuse`] on the reading end of a simplex pipe or after
    /// `close`.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        match &self.inner {
            Inner::Shm(c) => c.send(value),
            Inner::Sock(c) => c.send_value_at(value, Deadline::NEVER),
        }
    }

    /// [`send`](Self::send), giving up with [`Error::Timeout`] (nothing sent) after `timeout`.
    /// Over a socket, a message of which part was written when the time ran out counts as sent:
    /// its rest goes out first with the next call on this end (the peer never sees half a
    /// message).
    pub fn send_timeout<T: Serialize + ?Sized>(&self, value: &T, timeout: Duration) -> Result<()> {
        match &self.inner {
            Inner::Shm(c) => c.send_timeout(value, timeout),
            Inner::Sock(c) => c.send_value_at(value, Deadline::after(Some(timeout))),
        }
    }

    /// Sends `value` if the ring has room for it now, else [`Error::Full`] (nothing sent): the form
    /// that never waits (over a socket: [`Error::Full`] when the socket's buffer takes none of it; a
    /// message partly written counts as sent, as for [`send_timeout`](Self::send_timeout)), beside [`try_recv`](Self::try_recv).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let (a, b) = shmwire::Pipe::builder().capacity(4096).build()?;
    /// a.try_send(&7u32)?;
    /// let block = vec![0u8; 1000];
    /// while a.try_send(&block).is_ok() {} // fill the ring
    /// assert!(matches!(a.try_send(&block), Err(shmwire::Error::Full)));
    /// assert_eq!(b.recv::<u32>()?, 7);
    /// # Ok(()) }
    /// ```
    pub fn try_send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        match &self.inner {
            Inner::Shm(c) => c.try_send(value),
            Inner::Sock(c) => match c.send_value_at(value, Deadline::after(Some(Duration::ZERO))) {
                Err(Error::Timeout) => Err(Error::Full),
                r => r,
            },
        }
    }

    /// Sends `bytes` as one message, with no encoding; any length.
    #[inline]
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        match &self.inner {
            Inner::Shm(c) => c.send_bytes(bytes),
            Inner::Sock(c) => c.send_bytes_at(bytes, Deadline::NEVER),
        }
    }

    /// [`send_bytes`](Self::send_bytes) with a timeout, which bounds the whole call. Over shared
    /// memory `Timeout` means the message is not delivered: a message larger than half the ring
    /// is streamed in pieces, and one given up part way (the reader alive but not reading) is
    /// discarded by the receiver, which goes on with the next message. Over a socket, as for
    /// [`send_timeout`](Self::send_timeout).
    pub fn send_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.send_bytes_at(bytes, Deadline::after(Some(timeout)))
    }

    /// Writes what a timed send left over a socket (the rest of a message a timeout cut short: see
    /// [`send_bytes_timeout`](Self::send_bytes_timeout)), waiting at most `timeout`: `Ok` once
    /// nothing is left, [`Error::Timeout`] if some still is (it stays, and goes first with the
    /// next call). Over shared memory nothing is ever left: `Ok` at once. A caller that sends a
    /// long message in slices (to check for signals between them) sends it with a short timeout
    /// and then flushes until `Ok`.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<()> {
        match &self.inner {
            Inner::Shm(_) => Ok(()),
            Inner::Sock(c) => c.flush_at(Deadline::after(Some(timeout))),
        }
    }

    pub(crate) fn send_bytes_at(&self, bytes: &[u8], deadline: Deadline) -> Result<()> {
        match &self.inner {
            Inner::Shm(c) => c.send_bytes_at(bytes, deadline),
            Inner::Sock(c) => c.send_bytes_at(bytes, deadline),
        }
    }

    /// Writes a message of `len` bytes in place: `fill` gets the message's bytes inside the ring
    /// (zero-copy; over a socket, a private buffer that is then sent). `len` may be at most
    /// [`max_in_place_len`](Self::max_in_place_len), else [`Error::TooLarge`]. The message is sent
    /// when `fill` returns.
    ///
    /// # Safety
    ///
    /// The caller trusts the peer: over shared memory `fill` gets a `&mut [u8]` over memory the
    /// peer's processes can write. A well-behaved peer does not touch a frame before it is
    /// published, but a buggy or hostile one writing it while `fill` holds the slice is a data race
    /// (undefined behaviour), which the type system cannot rule out. Use it only between processes
    /// you trust; [`send`](Self::send) and [`send_bytes`](Self::send_bytes) never lend the ring's
    /// bytes.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let (a, b) = shmwire::Pipe::new()?;
    /// // SAFETY: both ends are ours.
    /// unsafe {
    ///     a.send_with(8, |buf| buf.copy_from_slice(&7u64.to_le_bytes()))?;
    ///     let v = b.recv_with(|bytes| u64::from_le_bytes(bytes.try_into().unwrap()))?;
    ///     assert_eq!(v, 7);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// Without `unsafe` it does not compile:
    ///
    /// ```compile_fail,E0133
    /// let (a, _b) = shmwire::Pipe::new().unwrap();
    /// a.send_with(8, |buf| buf.fill(0)).unwrap();
    /// ```
    pub unsafe fn send_with<R>(&self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        self.send_with_at(len, Deadline::NEVER, fill)
    }

    /// [`send_with`](Self::send_with), giving up with [`Error::Timeout`] (nothing sent, `fill` not
    /// called over shared memory) if there is no room within `timeout`.
    ///
    /// # Safety
    ///
    /// As for [`send_with`](Self::send_with): the caller trusts the peer.
    pub unsafe fn send_with_timeout<R>(
        &self,
        len: usize,
        timeout: Duration,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        self.send_with_at(len, Deadline::after(Some(timeout)), fill)
    }

    fn send_with_at<R>(
        &self,
        len: usize,
        deadline: Deadline,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        match &self.inner {
            Inner::Shm(c) => c.send_in_place(len, deadline, |tx, r| Ok(fill(tx.payload_mut(r)))),
            Inner::Sock(c) => {
                if len > c.max_message() {
                    return Err(Error::TooLarge);
                }
                c.send_filled(len, deadline, fill)
            }
        }
    }

    /// Sends a plain-old-data value as its raw bytes (no encoding); receive with
    /// [`recv_pod`](Self::recv_pod). Blocks while the ring is full.
    ///
    /// Over a socket the bytes are this host's, which shmwire requires to be little-endian there
    /// (every target it builds for is: x86-64, aarch64, riscv64...): the wire order of a pod is
    /// little-endian, and a big-endian build refuses pods over a socket ([`Error::Invalid`]). A
    /// peer in another language reads a `u64` sent this way as `int.from_bytes(b, "little")`.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let (a, b) = shmwire::Pipe::new()?;
    /// a.send_pod(&[1.5f64, 2.5])?;
    /// assert_eq!(b.recv_pod::<[f64; 2]>()?, [1.5, 2.5]);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn send_pod<T: bytemuck::Pod>(&self, value: &T) -> Result<()> {
        match &self.inner {
            Inner::Shm(c) => c.send_pod(value),
            Inner::Sock(c) => {
                pod_order()?;
                c.send_bytes_at(bytemuck::bytes_of(value), Deadline::NEVER)
            }
        }
    }

    /// [`send_pod`](Self::send_pod), giving up with [`Error::Timeout`] (nothing sent) after
    /// `timeout`.
    pub fn send_pod_timeout<T: bytemuck::Pod>(&self, value: &T, timeout: Duration) -> Result<()> {
        match &self.inner {
            Inner::Shm(c) => c.send_pod_timeout(value, timeout),
            Inner::Sock(c) => {
                pod_order()?;
                c.send_bytes_at(bytemuck::bytes_of(value), Deadline::after(Some(timeout)))
            }
        }
    }

    /// The largest message [`send_with`](Self::send_with) takes: half the ring minus a frame header
    /// (over a socket: [`max_message`](Self::max_message)).
    pub fn max_in_place_len(&self) -> usize {
        match &self.inner {
            Inner::Shm(c) => c.max_in_place_len(),
            Inner::Sock(c) => c.max_message(),
        }
    }

    /// Bytes of the ring each direction uses (over a socket: the kernel's send buffer).
    pub fn capacity(&self) -> usize {
        each!(self, c => c.capacity())
    }

    // ---- receiving -------------------------------------------------------------------------------

    /// Receives a serde value sent with [`send`](Self::send). Blocks until one arrives.
    ///
    /// Errors: [`Error::Eof`] once the other end is closed and everything it sent was received,
    /// [`Error::PeerDied`] once drained if its holders died (shared memory), [`Error::Decode`] if
    /// the message is not a `T` (the message stays: receive it with the right type, or with
    /// [`recv_bytes`](Self::recv_bytes)).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::Error;
    /// let (a, b) = shmwire::Pipe::new()?;
    /// a.send(&u64::MAX)?;
    /// assert!(matches!(b.recv::<bool>(), Err(Error::Decode { .. })));
    /// assert_eq!(b.recv::<u64>()?, u64::MAX); // still there
    /// # Ok(()) }
    /// ```
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.inner {
            Inner::Shm(c) => c.recv(),
            Inner::Sock(c) => c.recv_map(Deadline::NEVER, crate::codec::decode::<T>),
        }
    }

    /// [`recv`](Self::recv), giving up with [`Error::Timeout`] after `timeout` (nothing consumed).
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.recv_map_at(Deadline::after(Some(timeout)), crate::codec::decode::<T>)
    }

    /// [`recv`](Self::recv) without waiting: [`Error::Empty`] if no whole message is there now.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::Error;
    /// let (a, b) = shmwire::Pipe::new()?;
    /// assert!(matches!(b.try_recv::<u32>(), Err(Error::Empty)));
    /// a.send(&7u32)?;
    /// assert_eq!(b.try_recv::<u32>()?, 7);
    /// drop(a);
    /// assert!(matches!(b.try_recv::<u32>(), Err(Error::Eof)));
    /// # Ok(()) }
    /// ```
    pub fn try_recv<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.inner {
            Inner::Shm(c) => c.try_recv(),
            Inner::Sock(c) => match c.recv_map(
                Deadline::after(Some(Duration::ZERO)),
                crate::codec::decode::<T>,
            ) {
                Err(Error::Timeout) => Err(Error::Empty),
                r => r,
            },
        }
    }

    /// One message handed to `take` (from private memory); the message stays if `take` fails.
    pub(crate) fn recv_map_at<R>(
        &self,
        deadline: Deadline,
        take: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        match &self.inner {
            Inner::Shm(c) => c.recv_map_at(deadline, take),
            Inner::Sock(c) => c.recv_map(deadline, take),
        }
    }

    /// The messages as they arrive, each decoded as a `T`: `for m in conn.iter::<T>()`. It ends at
    /// [`Error::Eof`] (the other end closed and everything received); any other error
    /// ([`Error::PeerDied`], [`Error::Decode`], ...) is yielded once, then it ends. Each item blocks
    /// as [`recv`](Self::recv) does.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::{Pipe, Process};
    /// let (a, b) = Pipe::new()?;
    /// let mut p = Process::fork(move || {
    ///     for i in 0..5u32 {
    ///         a.send(&i).unwrap();
    ///     }
    /// })?; // the child exits: its end closes
    /// let got: Vec<u32> = b.iter::<u32>().collect::<shmwire::Result<_>>()?;
    /// assert_eq!(got, [0, 1, 2, 3, 4]);
    /// assert!(p.join()?.success());
    /// # Ok(()) }
    /// ```
    pub fn iter<T: DeserializeOwned>(&self) -> ConnectionIter<'_, T> {
        ConnectionIter {
            conn: self,
            done: false,
            _t: std::marker::PhantomData,
        }
    }

    /// Receives a value sent with [`send_pod`](Self::send_pod) (little-endian over a socket: see
    /// there). A message of another size is [`Error::Decode`], and stays (for
    /// [`recv_bytes`](Self::recv_bytes), say).
    #[inline]
    pub fn recv_pod<T: bytemuck::Pod>(&self) -> Result<T> {
        match &self.inner {
            Inner::Shm(c) => c.recv_pod(),
            Inner::Sock(c) => {
                pod_order()?;
                c.recv_map(Deadline::NEVER, crate::codec::decode_pod::<T>)
            }
        }
    }

    /// [`recv_pod`](Self::recv_pod), giving up with [`Error::Timeout`] after `timeout` (nothing
    /// consumed).
    pub fn recv_pod_timeout<T: bytemuck::Pod>(&self, timeout: Duration) -> Result<T> {
        match &self.inner {
            Inner::Shm(c) => c.recv_pod_timeout(timeout),
            Inner::Sock(c) => {
                pod_order()?;
                c.recv_map(
                    Deadline::after(Some(timeout)),
                    crate::codec::decode_pod::<T>,
                )
            }
        }
    }

    /// Receives one message as bytes.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_bytes_at(Deadline::NEVER)
    }

    /// [`recv_bytes`](Self::recv_bytes) with a timeout.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_bytes_at(Deadline::after(Some(timeout)))
    }

    fn recv_bytes_at(&self, deadline: Deadline) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Shm(c) => c.recv_bytes_at(deadline),
            Inner::Sock(c) => c.recv_bytes_at(deadline),
        }
    }

    /// One message of at most `max` bytes (the handshake's); a longer one is [`Error::TooLarge`].
    pub(crate) fn recv_bytes_limited(&self, max: usize, deadline: Deadline) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Shm(c) => {
                let v = c.recv_bytes_at(deadline)?;
                if v.len() > max {
                    return Err(Error::TooLarge);
                }
                Ok(v)
            }
            Inner::Sock(c) => c.recv_bytes_limited(max, deadline),
        }
    }

    /// Receives one message into `buf` and returns its length. If `buf` is too small the message is
    /// kept and the call fails with [`Error::BufferTooShort { needed }`](Error::BufferTooShort); call
    /// again with a larger buffer.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::Error;
    /// let (a, b) = shmwire::Pipe::new()?;
    /// a.send_bytes(b"hello world")?;
    /// let mut small = [0u8; 4];
    /// assert!(matches!(b.recv_bytes_into(&mut small), Err(Error::BufferTooShort { needed: 11 })));
    /// let mut big = [0u8; 64];
    /// let n = b.recv_bytes_into(&mut big)?;
    /// assert_eq!(&big[..n], b"hello world");
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        match &self.inner {
            Inner::Shm(c) => c.recv_bytes_into(buf),
            Inner::Sock(c) => c.recv_into_at(buf, Deadline::NEVER),
        }
    }

    /// [`recv_bytes_into`](Self::recv_bytes_into) with a timeout.
    pub fn recv_bytes_into_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        match &self.inner {
            Inner::Shm(c) => c.recv_bytes_into_timeout(buf, timeout),
            Inner::Sock(c) => c.recv_into_at(buf, Deadline::after(Some(timeout))),
        }
    }

    /// Reads one message in place: `read` gets a slice of the message (over shared memory, inside
    /// the ring when it was sent in one piece: zero-copy; over a socket, the connection's private
    /// buffer), and the message is consumed when it returns.
    ///
    /// # Safety
    ///
    /// The caller trusts the peer. Over shared memory the slice lies in memory the peer's processes
    /// can write: a well-behaved peer does not touch it until it is consumed, but a buggy or hostile
    /// one writing the bytes while `read` holds the `&[u8]` is a data race (undefined behaviour: two
    /// reads of one byte may disagree, and the compiler assumes they cannot), which the type system
    /// cannot rule out. Use it only between processes you trust; [`recv`](Self::recv),
    /// [`recv_bytes`](Self::recv_bytes) and the other forms decode from a private copy and are sound
    /// whatever the peer does.
    ///
    /// ```compile_fail,E0133
    /// let (_a, b) = shmwire::Pipe::new().unwrap();
    /// let _ = b.recv_with(|bytes| bytes.len()); // `unsafe` is required
    /// ```
    pub unsafe fn recv_with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        match &self.inner {
            // SAFETY: the caller's promise, passed on.
            Inner::Shm(c) => unsafe { c.recv_with(read) },
            Inner::Sock(c) => c.recv_map(Deadline::NEVER, |b| Ok(read(b))),
        }
    }

    /// [`recv_with`](Self::recv_with), giving up with [`Error::Timeout`] after `timeout`.
    ///
    /// # Safety
    ///
    /// As for [`recv_with`](Self::recv_with): the caller trusts the peer.
    pub unsafe fn recv_with_timeout<R>(
        &self,
        timeout: Duration,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        match &self.inner {
            // SAFETY: the caller's promise, passed on.
            Inner::Shm(c) => unsafe { c.recv_with_timeout(timeout, read) },
            Inner::Sock(c) => c.recv_map(Deadline::after(Some(timeout)), |b| Ok(read(b))),
        }
    }

    /// Whether a message can be received without blocking, waiting up to `timeout`: `Duration::ZERO`
    /// (or `Timeout::ZERO`) asks and returns at once, `None` (or `Timeout::NEVER`) waits for ever.
    /// Once the other end is closed and drained it fails with [`Error::Eof`] (or [`Error::PeerDied`]).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use std::time::Duration;
    /// let (a, b) = shmwire::Pipe::new()?;
    /// assert!(!b.poll(Duration::ZERO)?);
    /// a.send(&1u8)?;
    /// assert!(b.poll(Duration::from_millis(10))?);
    /// assert!(b.poll(None)?);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn poll(&self, timeout: impl Into<Timeout>) -> Result<bool> {
        match &self.inner {
            Inner::Shm(c) => c.poll(timeout),
            Inner::Sock(c) => c.poll_at(Deadline::after(timeout.into().duration())),
        }
    }

    /// For your own `poll`/`epoll`/mio/tokio loop, with [`as_fd`](AsFd::as_fd): call it before each
    /// wait. `Ok(true)`: a message (or the end of the stream) is ready now; receive, then call again.
    /// `Ok(false)`: wait for the descriptor to become readable, then call again.
    ///
    /// Over shared memory the descriptor is a hint that never sleeps for ever: it fires when a
    /// message may have arrived, and at the latest one tick after this call
    /// ([`PROBE_INTERVAL`](crate::PROBE_INTERVAL), or 10 ms for a pipe opened by name, whose
    /// processes share no wake-up pipe), so a sender that cannot signal it and a peer that died are
    /// noticed too (then `Ok(true)`, and `recv` reports the end). Over a socket it is the socket:
    /// readable when bytes arrive (this call reads them, and answers whether a whole message is
    /// there).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use std::os::fd::AsFd;
    /// let (a, b) = shmwire::Pipe::new()?;
    /// a.send(&5u8)?;
    /// let fd = b.as_fd();
    /// let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
    /// while !b.prepare_poll()? {
    ///     rustix::event::poll(&mut fds, None)?;
    /// }
    /// assert_eq!(b.recv::<u8>()?, 5);
    /// # Ok(()) }
    /// ```
    pub fn prepare_poll(&self) -> Result<bool> {
        each!(self, c => c.prepare_poll())
    }

    // ---- test hooks ------------------------------------------------------------------------------

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: this process's descriptor of the segment under a shared-memory end (the fuzz
    /// targets and the hostile-peer tests write into it as a peer could); `None` for a socket.
    pub fn __segment_fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.inner {
            Inner::Shm(c) => Some(c.segment().descriptor()),
            Inner::Sock(_) => None,
        }
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: writes `bytes` into the outgoing ring as a raw frame with `tag` and a length field of
    /// `len_field`, bypassing every check, as a hostile peer could (shared memory only).
    pub fn __inject_raw_frame(&self, tag: u32, len_field: u32, bytes: &[u8]) -> Result<()> {
        match &self.inner {
            Inner::Shm(c) => c.__inject_raw_frame(tag, len_field, bytes),
            Inner::Sock(_) => Err(Error::Misuse),
        }
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: publishes `bytes` as one frame and kills this process (SIGKILL) before it stores the
    /// ring's `tail` (shared memory only).
    pub fn __send_bytes_then_die_before_tail(&self, bytes: &[u8]) -> ! {
        match &self.inner {
            Inner::Shm(c) => c.__send_bytes_then_die_before_tail(bytes),
            Inner::Sock(_) => panic!("a socket connection has no ring"),
        }
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: messages longer than `bytes` are sent with the `-1` escape and an 8-byte length
    /// (normally only those over 2 GiB - 1), so the escape can be tested without 2 GiB messages.
    pub fn __set_escape_threshold(&self, bytes: u64) {
        if let Inner::Sock(c) = &self.inner {
            c.set_escape_threshold(bytes);
        }
    }
}

impl crate::wait::select::sealed::Sealed for Connection {}

impl Waitable for Connection {
    fn __arm(&self) -> Result<Armed> {
        match &self.inner {
            Inner::Shm(c) => c.arm(),
            Inner::Sock(c) => c.arm(),
        }
    }

    fn __check(&self, signalled: bool) -> Result<bool> {
        match &self.inner {
            Inner::Shm(c) => c.check(signalled),
            Inner::Sock(c) => c.check(),
        }
    }

    fn __disarm(&self) {
        if let Inner::Shm(c) = &self.inner {
            c.disarm();
        }
    }
}

impl std::os::fd::AsRawFd for Connection {
    /// The descriptor of [`as_fd`](AsFd::as_fd) (for APIs that take `AsRawFd`, such as tokio's
    /// `AsyncFd`); the same rules and panic.
    fn as_raw_fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.as_fd())
    }
}

impl AsFd for Connection {
    /// A descriptor that becomes readable when a message may have arrived (see
    /// [`prepare_poll`](Connection::prepare_poll), to call before each wait on it). Over shared
    /// memory it belongs to this end, in this process, and stays the same (and open) as long as the
    /// end lives; over a socket it is the socket.
    ///
    /// # Panics
    /// Over shared memory, if the process has no file descriptors left to make it (two: an epoll
    /// instance and a timer); call `prepare_poll` first to get that as an error instead.
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::Shm(c) => c.as_fd(),
            Inner::Sock(c) => c.as_fd(),
        }
    }
}

/// The messages of a [`Connection`], each decoded as a `T`: made by [`Connection::iter`]. It ends at
/// [`Error::Eof`]; another error is yielded once, then it ends.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{ConnectionIter, Error, Pipe};
/// let (a, b) = Pipe::new()?;
/// a.send(&1u8)?;
/// a.send("not a number")?;
/// let mut it: ConnectionIter<'_, u8> = b.iter();
/// assert_eq!(it.next().transpose()?, Some(1));
/// assert!(matches!(it.next(), Some(Err(Error::Decode { .. }))));
/// assert!(it.next().is_none());
/// assert_eq!(b.recv::<String>()?, "not a number"); // the message stayed
/// # Ok(()) }
/// ```
pub struct ConnectionIter<'a, T> {
    conn: &'a Connection,
    done: bool,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for ConnectionIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        match self.conn.recv::<T>() {
            Ok(v) => Some(Ok(v)),
            Err(Error::Eof) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<T> std::iter::FusedIterator for ConnectionIter<'_, T> where T: DeserializeOwned {}

impl<T> fmt::Debug for ConnectionIter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionIter")
            .field("conn", self.conn)
            .field("done", &self.done)
            .finish()
    }
}
