//! `Process`: run a closure in a child process (the POSIX "fork" start method).
//!
//! The child runs the closure under `catch_unwind` and always leaves with `_exit`: it never returns
//! into the caller's stack (a test harness included). It sets `PR_SET_PDEATHSIG`, so it dies with the
//! thread that forked it, and checks `getppid()` right after, so that a parent that died during the
//! fork is noticed too.
//!
//! **Handles and fork.** The child holds the handles its closure *owns* (moved in): they stay open in
//! the child after the parent drops its copies (dropping the closure in the parent is that). Handles the
//! parent keeps are not held by the child, even though their bytes are in its memory, so an end the
//! parent closes is closed: `while let Ok(x) = conn.recv()` in the child ends. (Handles a closure only
//! borrows work in the child, but the parent's close closes them.)
//!
//! **Threads.** Forking a program that runs other threads is hazardous, as in C: a lock held by another
//! thread at the moment of the fork stays locked in the child for ever (allocator locks are handled by
//! the C library; others, such as a `Mutex` of yours or stdout's lock, are not). Fork before starting
//! threads, or fork from a process whose other threads hold no locks the child needs.

use crate::error::{Error, Result};
use crate::segment::{Segment, registry};
use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    /// While the parent drops a forked closure: the (segment, role) pairs that moved to the child.
    static MOVING: RefCell<Option<Vec<(usize, usize)>>> = const { RefCell::new(None) };
}

/// Called by handles on drop: if the parent is dropping a closure it just forked, this handle went to
/// the child.
pub(crate) fn note_moved_to_child(seg: &Arc<Segment>, role: usize) {
    MOVING.with(|m| {
        if let Some(v) = m.borrow_mut().as_mut() {
            v.push((Arc::as_ptr(seg) as usize, role));
        }
    });
}

/// What a child's closure may return; it becomes the exit code.
pub trait ChildOutcome {
    /// The exit code.
    fn exit_code(self) -> i32;
}

impl ChildOutcome for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl ChildOutcome for i32 {
    fn exit_code(self) -> i32 {
        self
    }
}

impl<E: fmt::Debug> ChildOutcome for std::result::Result<(), E> {
    fn exit_code(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("Error: {e:?}");
                1
            }
        }
    }
}

/// How a child ended: an exit code or a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    code: Option<i32>,
    signal: Option<i32>,
}

impl ExitStatus {
    fn from_wait(status: libc::c_int) -> Self {
        if libc::WIFEXITED(status) {
            ExitStatus {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        } else {
            ExitStatus {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        }
    }

    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit code, if it exited (a panic in the closure is 101, an `Err` returned is 1).
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// Python's `Process.exitcode`: the code, or minus the signal (`-9` after SIGKILL).
    pub fn exitcode(&self) -> i32 {
        self.code.unwrap_or_else(|| -self.signal.unwrap_or(0))
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (_, Some(s)) => write!(f, "killed by signal {s}"),
            _ => write!(f, "unknown"),
        }
    }
}

/// A child process started by [`Process::fork`].
#[derive(Debug)]
pub struct Process {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    /// Set once reaped (then the pid may be reused: never signal it again).
    status: std::cell::Cell<Option<ExitStatus>>,
}

impl Process {
    /// Runs `f` in a forked child and returns at once.
    ///
    /// The child runs `f` under `catch_unwind` (a panic prints its message on stderr and exits 101),
    /// closes what it still holds, flushes stdout and leaves with `_exit` (code 0). It dies with its
    /// parent. See the module docs about handles and threads. For an exit code of your choosing, or
    /// `?` inside the closure, use [`fork_with`](Self::fork_with).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let mut child = shmwire::Process::fork(|| println!("hello from the child"))?;
    /// assert!(child.join()?.success());
    /// # Ok(()) }
    /// ```
    pub fn fork<F: FnOnce()>(f: F) -> Result<Process> {
        Self::fork_with(f)
    }

    /// [`fork`](Self::fork) where the closure's value becomes the exit code: `()` is 0, an `i32` is
    /// itself, `Ok(())` is 0 and `Err(e)` prints `e` on stderr and is 1.
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let mut child = shmwire::Process::fork_with(|| 7)?;
    /// assert_eq!(child.join()?.code(), Some(7));
    /// let mut child = shmwire::Process::fork_with(|| -> Result<(), String> { Err("no".into()) })?;
    /// assert_eq!(child.join()?.code(), Some(1));
    /// # Ok(()) }
    /// ```
    pub fn fork_with<F, R>(f: F) -> Result<Process>
    where
        F: FnOnce() -> R,
        R: ChildOutcome,
    {
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let _ = std::io::stdout().flush(); // or the child would print the parent's buffered output too
        let mut prep = registry::prepare_fork()?;
        // SAFETY: fork has no memory-safety preconditions; the child only runs `child_main`, which
        // never returns. Hazards with other threads are documented above.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            prep.abort();
            return Err(Error::Io(e));
        }
        if pid == 0 {
            prep.in_child();
            child_main(parent, f);
        }
        // The closure (and every handle it owns) now belongs to the child: drop the parent's copy,
        // noting which handles moved, so the child keeps exactly those.
        MOVING.with(|m| *m.borrow_mut() = Some(Vec::new()));
        drop(f);
        let moved = MOVING.with(|m| m.borrow_mut().take()).unwrap_or_default();
        prep.in_parent(pid as u32, &moved);
        Ok(Process::from_pid(pid))
    }

    /// A handle on our child `pid`.
    pub(crate) fn from_pid(pid: libc::pid_t) -> Process {
        let pidfd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        Process {
            pid,
            pidfd,
            status: std::cell::Cell::new(None),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the child to end and returns how it ended.
    pub fn join(&self) -> Result<ExitStatus> {
        if let Some(s) = self.status.get() {
            return Ok(s);
        }
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: `status` is a valid out-pointer; `pid` is our unreaped child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                let s = ExitStatus::from_wait(status);
                self.status.set(Some(s));
                return Ok(s);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Io(e));
            }
        }
    }

    /// [`join`](Self::join), giving up with [`Error::Timeout`] after `timeout` (the child runs on).
    pub fn join_timeout(&self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_join()? {
                return Ok(s);
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            self.sleep_until_exit(left);
        }
    }

    /// The exit status if the child has ended, without waiting.
    pub fn try_join(&self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status.get() {
            return Ok(Some(s));
        }
        let mut status: libc::c_int = 0;
        // SAFETY: as in `join`.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match r {
            0 => Ok(None),
            r if r == self.pid => {
                let s = ExitStatus::from_wait(status);
                self.status.set(Some(s));
                Ok(Some(s))
            }
            _ => Err(Error::Io(std::io::Error::last_os_error())),
        }
    }

    fn sleep_until_exit(&self, max: Duration) {
        match &self.pidfd {
            Some(fd) => {
                use rustix::event::{PollFd, PollFlags, poll};
                let mut fds = [PollFd::new(fd, PollFlags::IN)];
                let ts = rustix::time::Timespec {
                    tv_sec: max.as_secs().min(i64::MAX as u64) as i64,
                    tv_nsec: max.subsec_nanos() as _,
                };
                let _ = poll(&mut fds, Some(&ts));
            }
            None => std::thread::sleep(max.min(Duration::from_millis(1))),
        }
    }

    /// Whether the child is still running.
    pub fn is_alive(&self) -> bool {
        matches!(self.try_join(), Ok(None))
    }

    /// Python's `exitcode`: `None` while running, else the code or minus the signal.
    pub fn exitcode(&self) -> Option<i32> {
        self.try_join().ok().flatten().map(|s| s.exitcode())
    }

    /// Asks the child to stop (SIGTERM).
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Kills the child (SIGKILL).
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends `sig` to the child, if it has not been reaped (so never to a recycled pid).
    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.status.get().is_some() {
            return Ok(());
        }
        // SAFETY: plain syscall; the pid is our unreaped child, so it cannot have been reused.
        if unsafe { libc::kill(self.pid, sig) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(Error::Io(e));
            }
        }
        Ok(())
    }

    /// A descriptor that becomes readable when the child ends (a pidfd), if the kernel has them.
    pub fn exit_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }
}

impl crate::select::Waitable for Process {
    fn __arm(&self) -> Result<crate::select::Armed> {
        use crate::select::Armed;
        if self.status.get().is_some() || self.exited_unreaped() {
            return Ok(Armed::Ready);
        }
        Ok(self.pidfd.as_ref().map_or(Armed::Tick, |f| {
            Armed::Fd(std::os::fd::AsRawFd::as_raw_fd(f))
        }))
    }

    fn __check(&self, _signalled: bool) -> Result<bool> {
        Ok(self.status.get().is_some() || self.exited_unreaped())
    }
}

impl Process {
    /// Whether the child has ended, without reaping it (so `join` still reports its status).
    fn exited_unreaped(&self) -> bool {
        // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child waitable.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) == 0
                && info.si_pid() == self.pid
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Reap it if it is done; a running child goes on (and dies with us).
        let _ = self.try_join();
    }
}

fn child_main<F, R>(parent: libc::pid_t, f: F) -> !
where
    F: FnOnce() -> R,
    R: ChildOutcome,
{
    // SAFETY: prctl/getppid/_exit are plain syscalls.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let code = match outcome {
        Ok(r) => r.exit_code(),
        Err(_) => 101, // the panic hook already printed the message on stderr
    };
    registry::release_all();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: ends the child without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}
