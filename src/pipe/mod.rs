//! `Pipe`: a pair of [`Connection`]s over one shared segment holding one SPSC ring per direction.
//!
//! Segment layout (kind area): two ring control blocks, padding to a page, then the ring buffers.
//! Roles: end 0 and end 1. In a duplex pipe end `e` writes ring `e` and reads ring `1 - e`; in a
//! simplex pipe end 0 (the reader) reads ring 0 and end 1 (the writer) writes it.
//!
//! Each ring has a wake-up descriptor (a segment companion), which a sender signals while a reader
//! polls (`shmwire::wait`, `AsFd`): an anonymous pipe. Every process holds it through an open file
//! description of its own (opened through `/proc/self/fd`, read-write and non-blocking), so no other
//! process can make a read or write of it block by clearing `O_NONBLOCK` (a flag of the description,
//! which an eventfd's holders would share), and filling it only makes a signal redundant.

pub(crate) mod connection;
pub(crate) mod handle;
pub(crate) mod listener;
pub(crate) mod rendezvous;

pub use connection::{Connection, ConnectionIter, Transport};
pub use handle::ConnectionHandle;
pub use rendezvous::{Client, Incoming, Listener, ListenerBuilder};

use crate::error::{Error, Result};
use crate::ring::buf::RingBuf;
use crate::ring::spsc::{CTL_SIZE, MAX_CAPACITY, MIN_CAPACITY, RingCtl, Spsc};
use crate::segment::{Kind, Segment, Spec};
use crate::wait::WaitStrategy;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Default capacity of each direction's ring.
pub const DEFAULT_CAPACITY: usize = 2 * 1024 * 1024;

const PARAM_CAP: usize = 0;
const PARAM_DUPLEX: usize = 1;
/// Participants a pipe segment accepts (roles are bitmasks over 64 slots).
/// Processes one pipe admits at once (its participant slots).
pub(crate) const PIPE_SLOTS: u32 = 64;
const PAGE: usize = 4096;

/// Creates pipes: `Pipe::new()` for a duplex pair, `Pipe::simplex()` for `(reader, writer)`, and
/// `Pipe::builder()` for options.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let (a, b) = shmwire::Pipe::new()?;
/// a.send(&(42u32, "hello"))?;
/// let (n, s): (u32, String) = b.recv()?;
/// assert_eq!((n, s.as_str()), (42, "hello"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// A duplex pair: what one end sends, the other receives, both ways (Python's `Pipe()`).
    #[allow(clippy::new_ret_no_self)] // `Pipe::new()` returns the pair, as Python's `Pipe()` does
    pub fn new() -> Result<(Connection, Connection)> {
        Self::builder().build()
    }

    /// A one-way pair `(reader, writer)`, as Python's `Pipe(duplex=False)`: the first end only
    /// receives, the second only sends; the other calls fail with [`Error::Misuse`].
    pub fn simplex() -> Result<(Connection, Connection)> {
        Self::builder().duplex(false).build()
    }

    /// Options: ring capacity, duplex or not, wait strategy, a name.
    pub fn builder() -> PipeBuilder {
        PipeBuilder {
            duplex: true,
            capacity: DEFAULT_CAPACITY,
            wait: WaitStrategy::default(),
            name: None,
            mode: None,
        }
    }

    /// Opens end `end` (0 or 1) of the pipe created with [`PipeBuilder::name`] by another process
    /// (or this one). The caller becomes one more holder of that end.
    ///
    /// Errors: [`Error::NotFound`] if no such pipe exists, [`Error::Invalid`] for a bad name or an
    /// end other than 0 and 1, [`Error::Incompatible`] if the name holds something else,
    /// [`Error::Corrupt`] if its header is damaged.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// use shmwire::{Pipe, Process};
    /// let name = format!("doc-pipe-open-{}", std::process::id());
    /// let (a, _b) = Pipe::builder().name(&name).build()?;
    /// let n = name.clone();
    /// let p = Process::fork(move || {
    ///     let b = Pipe::open(&n, 1).unwrap(); // any process of this user, by name
    ///     b.send("by name").unwrap();
    /// })?;
    /// assert_eq!(a.recv::<String>()?, "by name");
    /// assert!(p.join()?.success());
    /// # Ok(()) }
    /// ```
    pub fn open(name: &str, end: usize) -> Result<Connection> {
        check_end(end)?;
        open_os_name(&crate::segment::names::user_name(name)?, end)
    }
}

/// Options for a pipe; finish with [`build`](Self::build).
///
/// ```
/// use shmwire::{Pipe, WaitStrategy};
/// # fn main() -> shmwire::Result<()> {
/// let (reader, writer) = Pipe::builder()
///     .duplex(false)
///     .capacity(64 * 1024)
///     .wait_strategy(WaitStrategy::Sleep)
///     .build()?;
/// writer.send_bytes(b"ping")?;
/// assert_eq!(reader.recv_bytes()?, b"ping");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PipeBuilder {
    duplex: bool,
    capacity: usize,
    wait: WaitStrategy,
    name: Option<String>,
    mode: Option<u32>,
}

impl PipeBuilder {
    /// Who may open it by name besides this user: `0o660` also lets in the users of its group
    /// (the creating process's effective group), `0o600` (the default) nobody else; others never
    /// (any other mode is [`Error::Invalid`]). A process of another user
    /// opens such an object only if it is in that group; without this, it is refused.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Two-way (the default) or one-way (`(reader, writer)`).
    pub fn duplex(mut self, duplex: bool) -> Self {
        self.duplex = duplex;
        self
    }

    /// Bytes of each direction's ring, rounded up to a power of two (4 KiB to 2 GiB; default
    /// 2 MiB). Messages of any size pass; one that fits in half the ring goes in one piece.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// How blocked calls wait (default [`WaitStrategy::Adaptive`]).
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Gives the pipe a name (1 to 200 characters from `[A-Za-z0-9._-]`) in `/dev/shm`, so that
    /// other processes can [`Pipe::open`] its ends. The name goes away when the last process using
    /// the pipe drops it; [`crate::cleanup`] removes it if they all died.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Creates the pipe: in an anonymous sealed segment shared with children forked later, or under
    /// its name. A name already in use is [`Error::Exists`].
    pub fn build(self) -> Result<(Connection, Connection)> {
        let cap = self.checked_capacity()?;
        self.mode.map_or(Ok(()), crate::segment::check_mode)?;
        let rings = if self.duplex { 2 } else { 1 };
        let mut params = [0u64; 8];
        params[PARAM_CAP] = cap as u64;
        params[PARAM_DUPLEX] = self.duplex as u64;
        let spec = Spec {
            kind: Kind::Pipe,
            fingerprint: 0,
            params,
            kind_size: kind_size(cap, rings),
            n_slots: PIPE_SLOTS,
            on_role_closed: wake_everyone,
            growable: false,
            lazy_tail: 0,
        };
        let seg = match &self.name {
            None => Segment::create_anonymous(&spec, wake_fds()?)?,
            Some(n) => Segment::create_named(&crate::segment::names::user_name(n)?, &spec)?,
        };
        if let Some(m) = self.mode {
            seg.set_mode(m)?;
        }
        seg.take_role(0)?;
        seg.take_role(1)?;
        Ok((open_end(&seg, 0, self.wait)?, open_end(&seg, 1, self.wait)?))
    }

    fn checked_capacity(&self) -> Result<usize> {
        let cap = self
            .capacity
            .max(MIN_CAPACITY)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX);
        if self.capacity == 0 || cap > MAX_CAPACITY {
            return Err(Error::invalid(format!(
                "pipe capacity {} is out of range: use 1 byte to 2 GiB",
                self.capacity
            )));
        }
        Ok(cap)
    }
}

/// A pipe has ends 0 and 1.
fn check_end(end: usize) -> Result<()> {
    if end > 1 {
        return Err(Error::invalid(format!(
            "pipe end {end} does not exist; a pipe has ends 0 and 1"
        )));
    }
    Ok(())
}

fn kind_size(cap: usize, rings: usize) -> usize {
    PAGE + rings * cap
}

/// The pipe parameters of a segment, validated (a named segment may come from anyone, a received one
/// from a hostile client).
fn params(seg: &Segment) -> Result<(usize, bool)> {
    let h = seg.header();
    if h.n_slots != PIPE_SLOTS {
        return Err(Error::Corrupt); // roles are masks over 64 slots: more could not all hold an end
    }
    let cap = h.params[PARAM_CAP];
    let duplex = match h.params[PARAM_DUPLEX] {
        0 => false,
        1 => true,
        _ => return Err(Error::Corrupt),
    };
    if !cap.is_power_of_two() || !(MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&cap) {
        return Err(Error::Corrupt);
    }
    let cap = cap as usize;
    let rings = if duplex { 2 } else { 1 };
    if seg.kind_area().1 < kind_size(cap, rings) {
        return Err(Error::Corrupt);
    }
    Ok((cap, duplex))
}

/// One wake-up pipe per ring, signalled when a frame is published while a reader polls it (`wait`),
/// each held through a description of our own (see the module docs).
fn wake_fds() -> Result<Vec<OwnedFd>> {
    let mut fds = Vec::with_capacity(2);
    for _ in 0..2 {
        let (r, _w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        fds.push(own_description(r.as_fd())?); // the pipe lives on through it
    }
    Ok(fds)
}

/// A new open file description of the pipe behind `fd`, read-write and non-blocking, that only this
/// process (and the children it forks) holds. Opening a pipe read-write never blocks.
fn own_description(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A view of ring `i`.
fn ring(seg: &Segment, i: usize, cap: usize) -> Spsc {
    let (base, _) = seg.kind_area();
    const _: () = assert!(2 * CTL_SIZE <= PAGE);
    // SAFETY: `params` checked that the kind area holds the control blocks and `rings * cap` bytes
    // after the first page; the segment (kept alive by the caller's `Arc`) stays mapped while the
    // view lives, and the area was zero-filled at creation.
    unsafe {
        let ctl = base.add(i * CTL_SIZE) as *const RingCtl;
        let buf = RingBuf::new(base.add(PAGE + i * cap), cap);
        let mut r = Spsc::new(ctl, buf, cap);
        r.set_data_fd(seg.companion(i));
        r
    }
}

/// Opens `end` of the named pipe `os_name`, becoming one more holder of it.
pub(crate) fn open_os_name(os_name: &str, end: usize) -> Result<Connection> {
    check_end(end)?;
    let seg = Segment::open_named(os_name, Kind::Pipe, 0, wake_everyone)?;
    params(&seg)?;
    seg.take_role(end)?;
    open_end(&seg, end, WaitStrategy::default())
}

/// Opens `end` of the pipe whose memfd (and wake-up pipes) this process received: through a listener's
/// socket (`prepared_slot` None: a new description and slot are taken, then the role), or inherited
/// by a spawned child (the description and slot, already holding the role, were prepared by the
/// parent).
pub(crate) fn adopt_end(
    memfd: OwnedFd,
    prepared_slot: Option<u32>,
    companions: Vec<OwnedFd>,
    end: usize,
) -> Result<Connection> {
    adopt_end_capped(memfd, prepared_slot, companions, end, MAX_CAPACITY)
}

/// [`adopt_end`], refusing (`InvalidData`) a pipe whose rings are larger than `max_capacity`: what a
/// receiver allocates for one frame is bounded by half of it.
pub(crate) fn adopt_end_capped(
    memfd: OwnedFd,
    prepared_slot: Option<u32>,
    companions: Vec<OwnedFd>,
    end: usize,
    max_capacity: usize,
) -> Result<Connection> {
    check_end(end)?;
    let companions = check_received(memfd.as_fd(), companions)?;
    let seg = Segment::adopt(
        memfd,
        prepared_slot,
        Kind::Pipe,
        0,
        wake_everyone,
        companions,
    )?;
    let (cap, _) = params(&seg)?;
    if cap > max_capacity {
        return Err(Error::io(
            std::io::ErrorKind::InvalidData,
            format!(
                "the pipe's rings hold {cap} bytes each, more than the {max_capacity} accepted, \
                 so it was refused; build the pipe with a smaller capacity"
            ),
        ));
    }
    if prepared_slot.is_none() {
        seg.take_role(end)?;
    }
    open_end(&seg, end, WaitStrategy::default())
}

/// Checks descriptors that another process handed us, before they are used, and returns the wake-up
/// descriptors to use. The memory must be a memfd sealed against shrinking and growing (else whoever
/// holds it could truncate it under our mapping, and we would die of SIGBUS). Each companion must be
/// an anonymous pipe, and we use it through a description of our own (see the module docs): whatever
/// the sender does with its descriptions, our reads and writes of it never block.
fn check_received(memfd: BorrowedFd<'_>, companions: Vec<OwnedFd>) -> Result<Vec<OwnedFd>> {
    use rustix::fs::SealFlags;
    let refused = |why: &str, then: &str| {
        Error::io(
            std::io::ErrorKind::InvalidData,
            format!("{why}, so it was refused; {then}"),
        )
    };
    let seals_hint = || "pass only ends of pipes made by shmwire";
    let seals = rustix::fs::fcntl_get_seals(memfd)
        .map_err(|_| refused("the pipe's memory is not a memfd", seals_hint()))?;
    if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
        return Err(refused(
            "the pipe's memory is not sealed against resizing",
            seals_hint(),
        ));
    }
    let mut own = Vec::with_capacity(companions.len());
    for e in companions {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", e.as_raw_fd()))?;
        let st = rustix::fs::fstat(&e)?;
        let is_fifo = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo;
        // "pipe:[N]": an anonymous pipe (a named FIFO shows its path, and opening one could block).
        if !is_fifo || !link.as_os_str().as_encoded_bytes().starts_with(b"pipe:[") {
            return Err(refused(
                &format!(
                    "a descriptor passed as a wake-up pipe of the pipe is {}",
                    link.display()
                ),
                seals_hint(),
            ));
        }
        let mine = own_description(e.as_fd())?;
        let again = rustix::fs::fstat(&mine)?;
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
            return Err(refused(
                "a wake-up pipe of the pipe changed while it was opened",
                "pass the end again",
            ));
        }
        own.push(mine); // the sender's description is closed when `e` drops
    }
    Ok(own)
}

/// The `Connection` for `end` of the pipe in `seg` (the caller has taken the role).
pub(crate) fn open_end(seg: &Arc<Segment>, end: usize, wait: WaitStrategy) -> Result<Connection> {
    let (cap, duplex) = params(seg)?;
    let (tx, rx) = match (duplex, end) {
        (true, e) => (Some(ring(seg, e, cap)), Some(ring(seg, 1 - e, cap))),
        (false, 0) => (None, Some(ring(seg, 0, cap))),
        (false, _) => (Some(ring(seg, 0, cap)), None),
    };
    Ok(Connection::shm(connection::ShmEnd::from_parts(
        seg.clone(),
        end,
        tx,
        rx,
        wait,
    )))
}

/// Called when an end closes (its last holder closed it or died): wake every sleeper on both rings so
/// each re-checks the ends and returns `Eof`, `BrokenPipe` or `PeerDied`.
fn wake_everyone(seg: &Segment, _role: usize) {
    if let Ok((cap, duplex)) = params(seg) {
        for i in 0..if duplex { 2 } else { 1 } {
            ring(seg, i, cap).wake_all();
        }
    }
}
