//! `Connection`: one end of a pipe, as Python's `multiprocessing.connection.Connection`.
//!
//! Messages ride the SPSC rings of the pipe's segment. A message that fits in one frame (half the
//! ring) is one `WHOLE` frame; a larger one is a `HEAD` frame carrying its total length followed by
//! `CONT` frames, streamed through the ring while the reader drains it, so any size the caller can
//! allocate passes through any ring.
//!
//! Two ends of a duplex pipe that both send large messages at the same moment would each wait for the
//! other to read. A sender that finds its ring full while its peer's sender waits for room too drains
//! its incoming ring into a private backlog (read first by later `recv`s), so both make progress;
//! only when no other process can be the one reading its end: it is the sole holder of the end, the
//! last reader is itself or dead (or nobody read yet), and this process has forked no child
//! ([`Process::fork`](crate::Process::fork)) since it last read the end (or since the end came into
//! it): such a child may read the end through a handle its closure borrows, holding no role and
//! before it has read anything. (Then the sender waits for that reader, as with any pipe.) A process
//! that reads the end after a fork is one of the readers competing for what arrives, as with any
//! shared pipe, and what it drains goes to its own later receives. Frames in the backlog, and a streamed message
//! received in part, are this process's alone: [`to_handle`](Connection::to_handle) refuses to hand
//! the end over while there are any.
//!
//! Each operation claims its side of the ring (see `wait::claim`) and checks, when it would block,
//! whether the peer's end is still held; a blocked call probes the peer's liveness tokens between
//! sleeps, so a dead peer is an error within [`crate::PROBE_INTERVAL`] or two, never a hang.
//!
//! Files: `send.rs` (sending), `recv.rs` (receiving), `poll.rs` (`wait()`, `AsFd`), and here the end
//! itself and its lifetime.

mod poll;
mod recv;
mod send;

mod api;

pub use api::{Connection, ConnectionIter, Transport};

use crate::error::{Error, Result};
use crate::ring::spsc::{Frame, Reservation, Spsc, TAG_CONT, TAG_HEAD, TAG_WHOLE};
use crate::segment::Segment;
use crate::timeout::Timeout;
use crate::wait::WaitStrategy;
use crate::wait::claim::{ClaimGuard, claim};
use crate::wait::eventcount::Key;
use crate::wait::select::Armed;
use crate::wait::{Deadline, Spinner, block_on};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::{Cell, OnceCell, RefCell, RefMut};
use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Children this process forked with `Process::fork` (a child's copy counts its parent's forks up to
/// its own birth, not beyond).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Called in the parent after each `Process::fork`: from now on the child may read, through a
/// borrowed handle, any end this process held at the fork, so none of them drains until this process
/// reads it again (see the module docs).
pub(crate) fn note_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// One end of a [`Pipe`](crate::Pipe): the shared-memory side of a [`Connection`].
///
/// `Send` (move it to a thread or into a forked child) but not `Sync` (one user at a time, as a
/// socket). Dropping it closes it. A forked child holds the ends its closure owns; the end closes when
/// every process holding it has closed it or died.
pub(crate) struct ShmEnd {
    seg: Arc<Segment>,
    end: usize,
    peer: usize,
    tx: Option<Spsc>,
    rx: Option<Spsc>,
    closed: Cell<bool>,
    st: RefCell<State>,
    /// The eventcount registration of a `wait()` or `prepare_poll` in progress.
    armed: Cell<Option<Key>>,
    /// What `as_fd` returns (see `poll.rs`), made on first use.
    poller: OnceCell<poll::Poller>,
    /// When `prepare_poll` last probed the peer.
    last_probe: Cell<Option<std::time::Instant>>,
    /// `FORKS` when this process last read the end (or when the end came into it).
    forks_seen: Cell<u64>,
}

/// Process-local state of an end.
struct State {
    send_spin: Spinner,
    recv_spin: Spinner,
    /// Frames drained from the incoming ring while a send waited (duplex deadlock avoidance).
    backlog: VecDeque<(u32, Vec<u8>)>,
    /// A streamed message received in part when a timeout or error interrupted it.
    partial: Option<Partial>,
    /// A reused private buffer: values are encoded here before they are copied into the ring, and
    /// frames too large for the stack are copied here before they are decoded.
    scratch: Vec<u8>,
    /// Pieces taken by the call in progress (see `recv::next_piece`).
    pieces: u64,
}

/// A streamed message being assembled. `buf` holds what arrived and grows as more does (by at most
/// doubling): the total its first piece announces is checked against what arrives, never trusted
/// for an allocation.
struct Partial {
    buf: Vec<u8>,
    total: usize,
}

/// Makes room in `buf` for `n` more bytes of a message of `total`.
fn grow(buf: &mut Vec<u8>, n: usize, total: usize) -> Result<()> {
    if buf.capacity() - buf.len() < n {
        let want = (buf.len() + n)
            .max(buf.capacity().saturating_mul(2))
            .min(total);
        buf.try_reserve_exact(want - buf.len())
            .map_err(|_| Error::TooLarge)?;
    }
    Ok(())
}

/// A frame to read: in the ring, or taken earlier into the backlog.
enum Piece {
    Ring(Frame),
    Owned(u32, Vec<u8>),
}

impl Piece {
    fn tag(&self) -> u32 {
        match self {
            Piece::Ring(f) => f.tag,
            Piece::Owned(t, _) => *t,
        }
    }

    fn len(&self) -> usize {
        match self {
            Piece::Ring(f) => f.len,
            Piece::Owned(_, v) => v.len(),
        }
    }

    fn read(&self, rx: &Spsc, offset: usize, dst: &mut [u8]) {
        match self {
            Piece::Ring(f) => rx.read_payload(f, offset, dst),
            Piece::Owned(_, v) => dst.copy_from_slice(&v[offset..offset + dst.len()]),
        }
    }

    /// Appends the payload from `offset` to `dst` (whose spare capacity the caller made room in).
    fn append_to(&self, rx: &Spsc, offset: usize, dst: &mut Vec<u8>) {
        match self {
            Piece::Ring(f) => {
                let n = f.len - offset;
                let at = dst.len();
                rx.read_payload_uninit(f, offset, &mut dst.spare_capacity_mut()[..n]);
                // SAFETY: the `n` bytes after the old length were just initialised.
                unsafe { dst.set_len(at + n) };
            }
            Piece::Owned(_, v) => dst.extend_from_slice(&v[offset..]),
        }
    }

    /// The total length announced by a `HEAD` frame, checked.
    fn total(&self, rx: &Spsc) -> Result<usize> {
        if self.len() < 8 {
            return Err(Error::Corrupt);
        }
        let mut b = [0u8; 8];
        self.read(rx, 0, &mut b);
        let total = u64::from_le_bytes(b);
        if total < (self.len() - 8) as u64 || total > isize::MAX as u64 {
            return Err(Error::Corrupt);
        }
        Ok(total as usize)
    }
}

impl fmt::Debug for ShmEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("end", &self.end)
            .field("readable", &self.rx.is_some())
            .field("writable", &self.tx.is_some())
            .field("closed", &self.closed.get())
            .finish()
    }
}

/// Iterations of the inline spin of `quick_frame` (a few microseconds).
const QUICK_SPINS: u32 = 256;

impl ShmEnd {
    pub(crate) fn from_parts(
        seg: Arc<Segment>,
        end: usize,
        tx: Option<Spsc>,
        rx: Option<Spsc>,
        wait: WaitStrategy,
    ) -> ShmEnd {
        ShmEnd {
            seg,
            end,
            peer: 1 - end,
            tx,
            rx,
            closed: Cell::new(false),
            armed: Cell::new(None),
            poller: OnceCell::new(),
            last_probe: Cell::new(None),
            forks_seen: Cell::new(FORKS.load(Ordering::Relaxed)),
            st: RefCell::new(State {
                send_spin: Spinner::new(wait),
                recv_spin: Spinner::new(wait),
                backlog: VecDeque::new(),
                partial: None,
                scratch: Vec::new(),
                pieces: 0,
            }),
        }
    }

    // ---- lifetime --------------------------------------------------------------------------------

    /// Closes this end (in this process). Later calls on it fail with [`Error::Misuse`]; the peer
    /// sees [`Error::Eof`] once it has read everything, if no other process holds this end.
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        if self.seg.ensure_owner().is_ok() {
            self.seg.drop_role(self.end);
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Whether this process holds frames of this end that no other process can see: drained into
    /// the backlog, or a streamed message received in part (also when a `send_with`/`recv_with`
    /// closure is running on it).
    pub(crate) fn holds_private_frames(&self) -> bool {
        self.st
            .try_borrow()
            .map_or(true, |st| !st.backlog.is_empty() || st.partial.is_some())
    }

    /// Whether a child forked since this process last read the end (or since the end came into it)
    /// may read it (see the module docs). Once this process reads after a fork, it is one of the
    /// readers that compete for what arrives, and what it drains it delivers to its own receives.
    fn maybe_read_by_a_child(&self) -> bool {
        FORKS.load(Ordering::Relaxed) != self.forks_seen.get()
    }

    /// Whether this end can receive (false for the writing end of a simplex pipe).
    pub fn readable(&self) -> bool {
        self.rx.is_some()
    }

    /// Whether this end can send (false for the reading end of a simplex pipe).
    pub fn writable(&self) -> bool {
        self.tx.is_some()
    }

    /// The wait strategy of blocked calls on this end.
    pub fn wait_strategy(&self) -> WaitStrategy {
        // Inside a `send_with`/`recv_with` closure on this end the state is lent out: the strategy
        // cannot have changed since the call began, and the default is as good an answer as any.
        self.st
            .try_borrow()
            .map_or(WaitStrategy::default(), |st| st.send_spin.strategy())
    }

    /// Changes the wait strategy of blocked calls on this end. From inside a
    /// `send_with`/`recv_with` closure on this end it is [`Error::Misuse`] (nothing changes).
    pub fn set_wait_strategy(&self, wait: WaitStrategy) -> Result<()> {
        let mut st = self.st.try_borrow_mut().map_err(|_| Error::Misuse)?;
        st.send_spin = Spinner::new(wait);
        st.recv_spin = Spinner::new(wait);
        Ok(())
    }

    fn begin(&self) -> Result<RefMut<'_, State>> {
        if self.closed.get() {
            return Err(Error::Misuse);
        }
        self.seg.ensure_owner()?;
        // A call from inside a `send_with`/`recv_with` closure on the same end is misuse, not a panic.
        let mut st = self.st.try_borrow_mut().map_err(|_| Error::Misuse)?;
        st.pieces = 0;
        Ok(st)
    }

    /// Claims the reading side of `rx`, and records this process as its last reader.
    #[inline]
    fn claim_rx<'a>(&'a self, rx: &'a Spsc) -> Result<ClaimGuard<'a>> {
        let seg = &self.seg;
        let me = seg.claim_id();
        let guard = claim(&rx.ctl().rx.claim, me, |id| seg.claim_alive(id))?;
        rx.note_reader(me);
        let forks = FORKS.load(Ordering::Relaxed);
        if forks != self.forks_seen.get() {
            self.forks_seen.set(forks);
        }
        Ok(guard)
    }

    /// Claims the writing side of `tx`. A claim taken over from a dead writer may come with a frame
    /// that writer published without storing `tail`: the ring's tail is brought up to date first.
    /// (The reading side needs no such repair: a reader's only store is `head`, one word, so a dead
    /// reader left the frame either consumed or not.)
    #[inline]
    fn claim_tx<'a>(&'a self, tx: &'a Spsc) -> Result<ClaimGuard<'a>> {
        let seg = &self.seg;
        let mut took_over = false;
        let guard = claim(&tx.ctl().tx.claim, seg.claim_id(), |id| {
            let alive = seg.claim_alive(id)?;
            took_over = !alive;
            Ok(alive)
        })?;
        if took_over {
            tx.recover_tail()?;
        }
        Ok(guard)
    }

    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    /// Test hook: writes `bytes` into the outgoing ring as a raw frame with `tag` and a length field of
    /// `len_field`, bypassing every check, as a hostile peer could.
    pub fn __inject_raw_frame(&self, tag: u32, len_field: u32, bytes: &[u8]) -> Result<()> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(Error::Misuse);
        };
        let Some(r) = tx.try_reserve(bytes.len())? else {
            return Err(Error::Full);
        };
        tx.write_payload(&r, 0, bytes);
        tx.commit_raw(r, tag, len_field);
        Ok(())
    }

    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    /// Test hook: publishes `bytes` as one frame and kills this process (SIGKILL) before it stores the
    /// ring's `tail`, as a writer killed between those two stores would leave the ring.
    pub fn __send_bytes_then_die_before_tail(&self, bytes: &[u8]) -> ! {
        let _st = self.begin().expect("usable end");
        let tx = self.tx.as_ref().expect("a writing end");
        let _claim = self.claim_tx(tx).expect("the writer's claim");
        let r = tx
            .try_reserve(bytes.len())
            .expect("a sound ring")
            .expect("room in the ring");
        tx.write_payload(&r, 0, bytes);
        tx.publish(r, TAG_WHOLE, bytes.len() as u32);
        // SAFETY: plain syscalls; the process dies here.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
            libc::_exit(99)
        }
    }
}

impl Drop for ShmEnd {
    fn drop(&mut self) {
        crate::segment::moving::note_moved_to_child(&self.seg, self.end);
        crate::segment::registry::withdraw_exports(&self.seg, self.end);
        self.close();
    }
}
