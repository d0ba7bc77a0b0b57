//! The one error type of the crate.
//!
//! Every variant is matchable without looking at a message (`Error::Eof`, `Error::Eof { .. }` and
//! `matches!(e, Error::BufferTooShort { needed })` all work), and every message says what happened and
//! what the caller can do about it.

use std::io;

/// What went wrong, in a form a caller can match on.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::{Error, Queue};
/// let q = Queue::<u32>::new(1)?;
/// q.put(1)?;
/// match q.put_nowait(2) {
///     Err(Error::Full) => {} // no room now: try later, or put with a timeout
///     other => panic!("{other:?}"),
/// }
/// assert!(matches!(Queue::<u32>::open("no-such-queue"), Err(Error::NotFound)));
/// // Every message says what happened and what to do:
/// println!("{}", Error::Full);
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end (or the queue was closed) and everything it sent has been received.
    #[error(
        "end of stream: the peer closed its end and every message it sent was received; stop reading"
    )]
    Eof,
    /// The receiving end is closed: nobody can read what would be sent.
    #[error(
        "broken pipe: the peer closed its end, so nothing sent now could be read; stop sending"
    )]
    BrokenPipe,
    /// The queue (or connection) was closed, so nothing more can be put into it.
    #[error("closed: this object was closed and takes no more items; create a new one")]
    Closed,
    /// A blocking call reached its timeout before it could complete; nothing was lost, try again.
    #[error(
        "timed out: the call did not complete within its timeout (nothing was sent, taken or locked; a barrier wait breaks the barrier); retry, or give up"
    )]
    Timeout,
    /// A non-blocking put found no room.
    #[error("full: there is no room right now; retry later or use a blocking put")]
    Full,
    /// A non-blocking get found nothing.
    #[error("empty: nothing to take right now; retry later or use a blocking get")]
    Empty,
    /// The caller's buffer is smaller than the next message. The message was kept: call again with a
    /// buffer of at least `needed` bytes.
    #[error(
        "buffer too short: the next message needs {needed} bytes; it was kept, call again with a larger buffer"
    )]
    BufferTooShort {
        /// Size of the pending message in bytes.
        needed: usize,
    },
    /// Every process holding the other end died (killed or crashed) without closing it.
    #[error(
        "peer died: every process on the other side exited without closing (killed or crashed); what it sent before was delivered: restart it, or treat its work as lost"
    )]
    PeerDied,
    /// A pool worker died while running a task.
    #[error("worker died: a pool worker process died while running the task; the pool replaced it")]
    WorkerDied,
    /// A task panicked in a worker (the worker goes on).
    #[error("a task panicked in a pool worker: {message}; the pool goes on, fix the task")]
    TaskPanicked {
        /// The panic's message.
        message: String,
    },
    /// A barrier's round was cancelled: the barrier was aborted or reset, or a party timed out or
    /// died while waiting.
    #[error(
        "broken barrier: this round was cancelled by abort(), reset(), or a party that timed out or died; call reset() if broken() says so, then wait again"
    )]
    BrokenBarrier,
    /// A lock was released by a process or thread that does not own it.
    #[error(
        "not owner: this thread does not hold the lock, so it cannot release it; release it from the thread that acquired it"
    )]
    NotOwner,
    /// The call is not allowed on this object in its state (`send` on the receiving end of a simplex
    /// pipe, any call after `close`, a call from inside a `send_with`/`recv_with` closure on the
    /// same end, handing over an end that holds part of a message).
    #[error(
        "misuse: this call is not allowed on this object now (the wrong end of a simplex pipe, after close, or re-entered); fix the calling code"
    )]
    Misuse,
    /// Another live process is using this end of a pipe at this very moment (two processes must not
    /// send, or receive, on one end at once).
    #[error(
        "busy: another thread or process is using this end of the pipe right now; give each its own pipe, or take turns"
    )]
    Busy,
    /// An index past the end.
    #[error("index {index} out of range: the array holds {len} elements; use an index below {len}")]
    OutOfRange {
        /// The index asked for.
        index: usize,
        /// How many elements there are.
        len: usize,
    },
    /// Released more times than acquired: `task_done` more often than items were taken, a
    /// `BoundedSemaphore` released past its initial value.
    #[error(
        "called too often: task_done() or release() was called more times than get() or acquire(); nothing changed, check the calling code's balance"
    )]
    CalledTooOften,
    /// A handle was opened in the process that made it (it is for another process: a spawned child
    /// or an unrelated one); use the object itself here.
    #[error(
        "handle opened by its maker: this process holds the object already; use it directly, and pass the handle to another process"
    )]
    OpenedByMaker,
    /// `Process::fork_checked` refused: this process runs other threads, whose locks a fork would
    /// copy locked.
    #[error(
        "this process runs {threads} threads, and a fork copies the locks they hold into the child for ever; fork before starting threads, use Process::spawn, or Process::fork if the other threads hold no lock the child needs"
    )]
    Threaded {
        /// How many threads the process runs (the crate's own forker not counted).
        threads: usize,
    },
    /// Every participant slot of the object is held by a live process: at most `limit` processes
    /// use one object at once (a pipe: 64; other objects: 256).
    #[error(
        "too many processes: all {limit} participant slots of this object are held by live processes; let some exit or drop their handles, or share the work through fewer processes"
    )]
    TooManyProcesses {
        /// How many processes the object admits at once.
        limit: u32,
    },
    /// Nothing exists under this name (or key).
    #[error(
        "not found: nothing exists under this name or key; create it first, or check the spelling and the user"
    )]
    NotFound,
    /// A live object has this name already.
    #[error(
        "exists: a live object has this name already; choose another name, or open the existing one"
    )]
    Exists,
    /// An argument the call cannot take (a bad name, a size out of range); nothing was changed.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A value could not be encoded (serde refused it); nothing was sent.
    #[error("cannot encode the value ({0}); nothing was sent, check the type's Serialize impl")]
    Encode(String),
    /// A message or item did not decode as the requested type (the codec's `reason`, or bytes left
    /// over after the value). On a `Connection` the message stays for the next call (`recv_bytes`
    /// takes it) and `bytes` is empty; on a `Queue` the item was taken and `bytes` holds it.
    #[error(
        "cannot decode the message or item as the requested type ({reason}); use the type that was sent (a Connection kept the message: take it with recv_bytes; a Queue item's bytes are in this error)"
    )]
    Decode {
        /// What the codec said.
        reason: String,
        /// The item's bytes, when it was taken (a `Queue`); empty when it was kept (a `Connection`).
        bytes: Vec<u8>,
    },
    /// A message or object is larger than this path can carry (or than this process can allocate
    /// to receive it: the message is kept), or a message over a socket is longer than the
    /// connection's limit ([`Connection::set_max_message`](crate::Connection::set_max_message)):
    /// that one is skipped, and the next call receives the message after it.
    #[error(
        "too large: the message exceeds what this call can carry (send_with takes at most half the ring, a queue item at most its spill area; a received message, what this process could allocate: it is kept; over a socket, a message past the connection's limit: it was skipped); use send_bytes, a larger ring, QueueBuilder::spill_size or Connection::set_max_message"
    )]
    TooLarge,
    /// The authkey handshake failed: the peer's answer to our challenge was wrong, or it rejected
    /// ours (the two sides do not hold the same key), or it broke the handshake's protocol. Nothing
    /// was exchanged; the connection is closed.
    #[error(
        "authentication failed: the peer does not hold the same authkey (or does not speak the multiprocessing.connection handshake); nothing was exchanged, check the key on both sides"
    )]
    AuthenticationFailed,
    /// The shared object was made by an incompatible layout version, is of another kind, or holds
    /// items of another type tag (a queue's encoded items) or another size or alignment (raw data).
    #[error(
        "incompatible: the shared object is of another kind, layout version, type tag or element size and alignment than this call expects; open it with its maker's type tag and element type"
    )]
    Incompatible,
    /// Shared memory holds values that cannot be valid: a hostile or broken peer wrote them.
    #[error(
        "corrupt: the shared memory holds an impossible value (a broken or hostile peer wrote it); stop using this object and make a new one"
    )]
    Corrupt,
    /// An operating system call failed.
    #[error(
        "the operating system refused a call: {0}; check the message, and the limits of /dev/shm and of open files"
    )]
    Io(#[from] io::Error),
}

/// `Result` with [`Error`].
///
/// ```
/// fn first(q: &shmwire::Queue<u32>) -> shmwire::Result<u32> {
///     q.get_nowait()
/// }
/// # let q = shmwire::Queue::<u32>::new(0).unwrap();
/// # q.put(1).unwrap();
/// # assert_eq!(first(&q).unwrap(), 1);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Io(e.into())
    }
}

impl Error {
    /// An [`Error::Io`] of the given kind with a message.
    pub(crate) fn io(kind: io::ErrorKind, msg: impl Into<String>) -> Self {
        Error::Io(io::Error::new(kind, msg.into()))
    }

    /// An [`Error::Invalid`] with a message.
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}
