//! Taking part in `shmwire::wait` and in the caller's own poll loop.
//!
//! A sender writes the ring's wake-up pipe only when a reader registered as polling (`prepare_fd` on
//! the data eventcount), so the fast path stays free of system calls. `wait()` polls that pipe
//! directly, in slices of [`PROBE_INTERVAL`] between which it re-checks and probes the peer. Every
//! process reads and writes the pipe through a non-blocking description of its own (see `pipe`), so
//! no peer can make those calls block.
//!
//! For the caller's own loop, [`AsFd`] gives a descriptor that cannot sleep for ever: an epoll
//! instance private to this process, holding the ring's wake-up pipe (if this process has it) and a
//! timer that [`prepare_poll`](Connection::prepare_poll) arms. It becomes readable when a sender
//! signals, and in any case when the timer fires, after [`PROBE_INTERVAL`] (or
//! `TICK_WITHOUT_WAKE_FD`, 10 ms, when this process holds no wake-up pipe): so a sender that cannot
//! signal (a pipe opened by name shares none; nor does one opened through a handle when the kernel
//! refuses `pidfd_getfd`) is seen at the next tick, and a peer that died, which signals nothing, is
//! found by the probe `prepare_poll` makes when a tick is due. `prepare_poll` empties the pipe and the
//! timer before it registers, so a level-triggered loop does not spin on a descriptor that stays
//! readable; and a message received only in part is not "ready" (its next piece, in the ring, is).

use super::*;
use crate::PROBE_INTERVAL;
use std::os::fd::RawFd;
use std::time::Instant;

/// The tick of a poller that holds no wake-up pipe: every message waits for it.
const TICK_WITHOUT_WAKE_FD: Duration = Duration::from_millis(10);

/// The descriptor `as_fd` returns, and the timer in it.
pub(super) struct Poller {
    epoll: OwnedFd,
    timer: OwnedFd,
    tick: Duration,
}

impl Poller {
    fn new(data_fd: Option<RawFd>) -> Result<Poller> {
        use rustix::event::epoll;
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )?;
        let data = epoll::EventData::new_u64(0);
        epoll::add(&epoll, &timer, data, epoll::EventFlags::IN)?;
        if let Some(fd) = data_fd {
            // SAFETY: the segment keeps its companion descriptors open as long as this end exists,
            // and the epoll instance is the end's own (closing the pipe first would only remove it
            // from the interest list).
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            epoll::add(&epoll, fd, data, epoll::EventFlags::IN)?;
        }
        let tick = if data_fd.is_some() {
            PROBE_INTERVAL
        } else {
            TICK_WITHOUT_WAKE_FD
        };
        Ok(Poller { epoll, timer, tick })
    }

    /// Empties the timer and the wake-up pipe (non-blocking reads), so the epoll instance is no
    /// longer readable for what they reported.
    fn drain(&self, rx: &Spsc) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.timer, &mut b);
        rx.drain_data_fd();
    }

    /// Makes the timer fire once, one tick from now.
    fn arm(&self) -> Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: self.tick.as_secs() as i64,
                tv_nsec: self.tick.subsec_nanos() as _,
            },
        };
        timerfd_settime(&self.timer, TimerfdTimerFlags::empty(), &spec)?;
        Ok(())
    }
}

impl ShmEnd {
    /// For your own `poll`/`epoll`/mio/tokio loop, with [`as_fd`](AsFd::as_fd): call it before each
    /// wait. `Ok(true)`: a message (or the end of the stream) is ready now; receive, then call again.
    /// `Ok(false)`: wait for the descriptor to become readable, then call again.
    ///
    /// The descriptor is a hint that never sleeps for ever: it fires when a message may have
    /// arrived, and at the latest one tick after this call ([`PROBE_INTERVAL`], or 10 ms for a
    /// pipe opened by name, whose processes share no wake-up pipe), so a sender that cannot signal it
    /// and a peer that died are noticed too (then `Ok(true)`, and `recv` reports the end).
    pub fn prepare_poll(&self) -> Result<bool> {
        let st = self.begin()?;
        let Some(rx) = self.rx.as_ref() else {
            return Err(Error::Misuse);
        };
        if let Some(key) = self.armed.take() {
            rx.ctl().data.cancel(key); // each call registers anew
        }
        if self.ready_now(&st, rx) {
            return Ok(true);
        }
        let poller = self.poller()?;
        poller.drain(rx);
        // A tick may have fired: the peer may have died (nothing signals that).
        let now = Instant::now();
        if self
            .last_probe
            .get()
            .is_none_or(|t| now - t >= PROBE_INTERVAL)
        {
            self.last_probe.set(Some(now));
            self.seg.probe_role(self.peer)?;
        }
        // Register, then look again: a sender that published before it could see us registered
        // is seen here; one that publishes later signals the wake-up pipe.
        let key = rx.ctl().data.prepare_fd();
        if self.ready_now(&st, rx) {
            rx.ctl().data.cancel(key);
            return Ok(true);
        }
        self.armed.set(Some(key));
        poller.arm()?;
        Ok(false)
    }

    /// This end's poller, made on first use.
    fn poller(&self) -> Result<&Poller> {
        if let Some(p) = self.poller.get() {
            return Ok(p);
        }
        let p = Poller::new(self.rx.as_ref().and_then(Spsc::data_fd))?;
        Ok(self.poller.get_or_init(|| p))
    }

    /// The pipe's memfd and its wake-up pipes, to pass to another process.
    pub(crate) fn descriptors(&self) -> Vec<std::os::fd::RawFd> {
        std::iter::once(self.seg.descriptor())
            .chain(self.seg.companions())
            .collect()
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    pub(crate) fn end(&self) -> usize {
        self.end
    }

    /// Whether a `recv` would find something now: a frame set aside, one in the ring (a whole
    /// message, or the next piece of one received in part: the part alone is not ready, or a loop
    /// would spin while its sender is stopped), a damaged ring (`recv` reports it), or a closed peer.
    fn ready_now(&self, st: &State, rx: &Spsc) -> bool {
        !st.backlog.is_empty()
            || rx.try_peek().map_or(true, |f| f.is_some())
            || !self.seg.role_open(self.peer)
    }
}

impl ShmEnd {
    pub(crate) fn arm(&self) -> Result<Armed> {
        let st = self.begin()?;
        let Some(rx) = self.rx.as_ref() else {
            return Err(Error::Misuse);
        };
        if let Some(key) = self.armed.take() {
            rx.ctl().data.cancel(key);
        }
        if self.ready_now(&st, rx) {
            return Ok(Armed::Ready);
        }
        let key = rx.ctl().data.prepare_fd();
        if self.ready_now(&st, rx) {
            rx.ctl().data.cancel(key);
            return Ok(Armed::Ready);
        }
        self.armed.set(Some(key));
        Ok(rx.data_fd().map_or(Armed::Tick, Armed::Fd))
    }

    pub(crate) fn check(&self, signalled: bool) -> Result<bool> {
        let st = self.begin()?;
        let Some(rx) = self.rx.as_ref() else {
            return Err(Error::Misuse);
        };
        rx.drain_data_fd();
        if self.ready_now(&st, rx) {
            return Ok(true);
        }
        if !signalled {
            self.seg.probe_role(self.peer)?; // a dead peer makes the end ready (recv reports it)
            return Ok(self.ready_now(&st, rx));
        }
        Ok(false)
    }

    pub(crate) fn disarm(&self) {
        if let (Some(key), Some(rx)) = (self.armed.take(), self.rx.as_ref()) {
            rx.ctl().data.cancel(key);
        }
    }
}

impl ShmEnd {
    /// The descriptor of `AsFd` (see the module docs).
    ///
    /// # Panics
    /// If the process has no file descriptors left to make it (two: an epoll instance and a timer).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        match self.poller() {
            Ok(p) => p.epoll.as_fd(),
            Err(e) => panic!("Connection::as_fd: cannot make its descriptor: {e}"),
        }
    }
}
