//! Taking part in `shmwire::wait` and in the caller's own poll loop: the eventfd a sender signals only
//! while somebody polls.

use super::*;

impl Connection {
    /// For your own `poll`/`epoll`/mio/tokio loop: call before waiting for [`as_fd`](AsFd::as_fd) to
    /// become readable. `Ok(true)`: a message (or the end of the stream) is ready now, do not wait.
    /// `Ok(false)`: the sender will signal the descriptor when one arrives; after it fires, receive as
    /// usual (a pipe opened by name has no shared descriptor: poll it with a timeout instead).
    pub fn prepare_poll(&self) -> Result<bool> {
        Ok(matches!(self.__arm()?, Armed::Ready))
    }

    /// The pipe's memfd and its eventfds, to pass to another process.
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

    fn ready_now(&self, st: &State, rx: &Spsc) -> bool {
        !st.backlog.is_empty()
            || st.partial.is_some()
            || rx.try_peek().map_or(true, |f| f.is_some())
            || !self.seg.role_open(self.peer)
    }
}

impl Waitable for Connection {
    fn __arm(&self) -> Result<Armed> {
        let st = self.begin()?;
        let rx = self.rx.as_ref().ok_or(Error::Misuse)?;
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

    fn __check(&self, signalled: bool) -> Result<bool> {
        let st = self.begin()?;
        let rx = self.rx.as_ref().ok_or(Error::Misuse)?;
        if let Some(fd) = rx.data_fd() {
            let mut b = [0u8; 8];
            // SAFETY: a non-blocking read of the eventfd's counter into a valid buffer.
            let _ = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 8) };
        }
        if self.ready_now(&st, rx) {
            return Ok(true);
        }
        if !signalled {
            self.seg.probe_role(self.peer)?; // a dead peer makes the end ready (recv reports it)
            return Ok(self.ready_now(&st, rx));
        }
        Ok(false)
    }

    fn __disarm(&self) {
        if let (Some(key), Some(rx)) = (self.armed.take(), self.rx.as_ref()) {
            rx.ctl().data.cancel(key);
        }
    }
}

impl AsFd for Connection {
    /// The eventfd that becomes readable when a message arrives, once
    /// [`prepare_poll`](Connection::prepare_poll) has said so.
    fn as_fd(&self) -> BorrowedFd<'_> {
        if let Some(fd) = self.rx.as_ref().and_then(Spsc::data_fd) {
            // SAFETY: the segment keeps its companion descriptors open as long as this end exists.
            return unsafe { BorrowedFd::borrow_raw(fd) };
        }
        self.own_fd
            .get_or_init(|| {
                use rustix::event::{EventfdFlags, eventfd};
                eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd")
            })
            .as_fd()
    }
}
