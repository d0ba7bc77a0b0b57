//! `Process`: run a closure in a child process (the POSIX "fork" start method).
//!
//! The child runs the closure under `catch_unwind` and always leaves with `_exit`: nothing after the
//! fork returns into the caller's stack (a test harness included), whatever panics (the closure, its
//! value's [`ChildOutcome::exit_code`], printing its error; a panic there is exit code 101). It sets
//! `PR_SET_PDEATHSIG`, and checks `getppid()` right after, so that a parent that died during the fork
//! is noticed too. The death signal follows the *thread* that forks, so only long-lived threads fork:
//! the main thread, or for any other thread the crate's forker thread (see `process/forker.rs`); a
//! child lives as long as its parent *process*, whichever thread asked for it.
//!
//! **Threads.** Forking a program that runs other threads is hazardous, as in C: a lock held by another
//! thread at the moment of the fork stays locked in the child for ever. Allocator locks are handled by
//! the C library; the crate's own locks, and stdout's and stderr's, are held across the fork (the
//! child unlocks its copies first thing, so it prints, flushes and exits even while another thread
//! of the parent prints). Others are not: a `Mutex` of yours, std's lock around panic messages (a
//! child that panics while another thread of the parent was printing a panic may hang), or stdout
//! locked by the forking thread itself when that is not the main thread (its child runs on the
//! forker thread, so the lock stays another thread's). Fork before starting threads, or fork from a
//! process whose other threads hold no locks the child needs.
//!
//! **Handles and fork.** The child holds exactly the handles its closure *owns* (moved in): they stay
//! open in the child after the parent drops its copies (dropping the closure in the parent is that),
//! and a named object whose last user is the child goes away when the child exits. Handles the parent
//! keeps are not held by the child, even though their bytes are in its memory: the child holds none of
//! their liveness tokens, so an end the parent closes is closed (`while let Ok(x) = conn.recv()` in the
//! child ends), and neither are a [`Listener`](crate::Listener)'s socket it does not own, exports
//! waiting for a [`spawn`](Process::spawn), nor anything the parent's other threads were making.
//! Handles a closure only borrows work in the child (each takes a participant slot of its own on first
//! use), but the parent's close closes them, and a borrowed `Listener` fails (its socket stays the
//! parent's). A handle the parent shares with the closure through an `Rc`/`Arc` stays the parent's.
//!
//! The child learns what its closure owns from the parent, which finds out by dropping its copy of
//! the closure: the child waits for that verdict before it runs the closure, so the destructors of
//! what the closure captured must not wait for the child.

#[doc(hidden)]
pub mod foreign;
pub mod forker;
pub mod spawn;
pub mod verdict;

use crate::error::{Error, Result};
use crate::segment::registry;
use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::segment::moving;
use crate::sys::reap;
pub(crate) use crate::sys::reap::reap_dropped;
pub(crate) use forker::run as on_forker;

/// What a child's closure may return; it becomes the exit code: `()` is 0, an `i32` is itself,
/// `Ok(())` is 0 and `Err(e)` prints `e` on stderr and is 1.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::Process;
/// assert_eq!(Process::fork_with(|| 7)?.join()?.code(), Some(7));
/// let failed = Process::fork_with(|| -> Result<(), String> { Err("no luck".into()) })?;
/// assert_eq!(failed.join()?.code(), Some(1));
/// # Ok(()) }
/// ```
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
                // Not `eprintln!`: it panics when stderr is gone (EPIPE); the code is 1 regardless.
                let _ = writeln!(std::io::stderr(), "Error: {e:?}");
                1
            }
        }
    }
}

/// How a child ended: an exit code or a signal.
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// let p = shmwire::Process::fork(|| std::thread::sleep(std::time::Duration::from_secs(60)))?;
/// p.kill()?;
/// let st = p.join()?;
/// assert!(!st.success());
/// assert_eq!(st.signal(), Some(libc::SIGKILL));
/// assert_eq!(st.exitcode(), -9); // as Python reports it
/// # Ok(()) }
/// ```
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

/// A child process started by [`Process::fork`] (or [`Process::spawn`]).
///
/// ```
/// # fn main() -> shmwire::Result<()> {
/// use shmwire::Process;
/// use std::time::Duration;
/// let p = Process::fork(|| std::thread::sleep(Duration::from_secs(60)))?;
/// assert!(p.is_alive());
/// assert!(matches!(p.join_timeout(Duration::from_millis(10)), Err(shmwire::Error::Timeout)));
/// p.terminate()?;
/// assert_eq!(p.join()?.exitcode(), -libc::SIGTERM); // as Python reports it
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Process {
    pid: libc::pid_t,
    /// Names the child for good (a pid names whoever has it now): signals go through it.
    pidfd: Option<OwnedFd>,
    /// The process that made this handle (the child's parent): only there is the raw pid safe.
    owner: libc::pid_t,
    /// Set once reaped (then the pid may be reused: never signal it again).
    status: std::cell::Cell<Option<ExitStatus>>,
    /// Kill the child (SIGKILL) and reap it when this handle is dropped.
    kill_on_drop: std::cell::Cell<bool>,
}

impl Process {
    /// Runs `f` in a forked child and returns at once.
    ///
    /// **Threads first:** forking a process that runs other threads is hazardous, as in C: a lock
    /// another thread holds at the moment of the fork (a `Mutex` of yours, a library's) stays locked
    /// in the child for ever. Fork before starting threads, use [`fork_checked`](Self::fork_checked)
    /// (which refuses when other threads run), or [`spawn`](Self::spawn) (which re-executes the
    /// program and is safe from a threaded parent). See the module docs for what the crate does about
    /// its own locks and stdout's.
    ///
    /// The child runs `f` under `catch_unwind` (a panic prints its message on stderr and exits 101),
    /// closes what it still holds, flushes stdout and leaves with `_exit` (code 0). It dies with its
    /// parent. See the module docs about handles and threads. For an exit code of your choosing, or
    /// `?` inside the closure, use [`fork_with`](Self::fork_with).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let child = shmwire::Process::fork(|| println!("hello from the child"))?;
    /// assert!(child.join()?.success());
    /// # Ok(()) }
    /// ```
    pub fn fork<F: FnOnce()>(f: F) -> Result<Process> {
        Self::fork_with(f)
    }

    /// [`fork`](Self::fork) where the closure's value becomes the exit code: `()` is 0, an `i32` is
    /// itself, `Ok(())` is 0 and `Err(e)` prints `e` on stderr and is 1.
    ///
    /// Fails with [`Error::TooManyProcesses`] when the closure owns a pipe end on a segment whose participant
    /// slots are all taken (the child could not hold it): the child is undone, dropping the closure
    /// unrun, and is reaped before this returns.
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
        let parent = rustix::process::getpid().as_raw_nonzero().get();
        // Held across the fork, so no other thread holds them then; the child unlocks its copies.
        let mut out = std::io::stdout().lock();
        let _ = out.flush(); // or the child would print the parent's buffered output too
        let mut stdio = Some((out, std::io::stderr().lock()));
        let mut dropped = Some(reap::for_fork());
        let mut prep = registry::prepare_fork()?;
        let page = match prep.needs_verdict() {
            false => None,
            true => match verdict::Page::new(prep.capacity().0, prep.capacity().1) {
                Ok(p) => Some(p),
                Err(e) => {
                    prep.abort();
                    return Err(e);
                }
            },
        };
        let mut prep = Some(prep);
        let mut f = Some(f);
        let mut pid: libc::pid_t = -1;
        let mut err = None;
        let mut job = || {
            // SAFETY: fork has no memory-safety preconditions; the child only runs `child_main`,
            // which never returns. Hazards with other threads are documented above.
            pid = unsafe { libc::fork() };
            if pid == 0 {
                drop(stdio.take()); // first: the child may print from here on
                child_main(parent, &mut f, &mut prep, &mut dropped, page.as_ref());
            }
            if pid < 0 {
                err = Some(std::io::Error::last_os_error());
            }
        };
        // SAFETY (on_forker): in this process the job touches only `pid` and `err`; the closure,
        // the prepared slots and the guards are used only in the child, which has no other thread.
        // (Dropping a stdio guard there unlocks it whichever thread locked it: std's reentrant lock
        // only counts down and unlocks.)
        let forked = unsafe { on_forker(&mut job) };
        drop(stdio.take());
        let mut prep = prep.take().expect("taken only in the child");
        if let Err(e) = forked.and(err.map_or(Ok(()), |e| Err(Error::Io(e)))) {
            prep.abort();
            return Err(e);
        }
        let parent_half = prep.forked(); // other threads may go on from here
        crate::pipe::connection::note_fork(); // the child may read our ends through borrowed handles
        drop(dropped.take());
        // The closure (and every handle it owns) now belongs to the child: drop the parent's copy,
        // noting what moved, so the child keeps exactly that.
        let (moved, unwound) = moving::collect(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(f.take())))
        });
        let verdict = parent_half.finish(pid as u32, &moved.roles, moved.segments, moved.listeners);
        if let Some(page) = &page {
            page.send(&verdict);
        }
        let child = Process::from_pid(pid);
        if verdict.abort {
            // It drops the closure it was given, unrun (releasing what it owns), and exits.
            let _ = child.join();
        }
        if let Err(panic) = unwound {
            drop(child); // reaped later
            std::panic::resume_unwind(panic);
        }
        if verdict.abort {
            // The closure owns a pipe end on a segment whose participant slots are all taken: no
            // slot for the child to hold it, so the fork was undone (the child exited without
            // running the closure, which it dropped).
            return Err(Error::TooManyProcesses {
                limit: crate::pipe::PIPE_SLOTS,
            });
        }
        Ok(child)
    }

    /// A handle on our child `pid`.
    pub(crate) fn from_pid(pid: libc::pid_t) -> Process {
        let pidfd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        Process {
            pid,
            pidfd,
            owner: rustix::process::getpid().as_raw_nonzero().get(),
            status: std::cell::Cell::new(None),
            kill_on_drop: std::cell::Cell::new(false),
        }
    }

    /// Whether dropping this handle kills the child (SIGKILL) and reaps it (`true`), or lets it run
    /// on, to be reaped later, dying with this process at the latest (`false`, the default, as a
    /// dropped `multiprocessing.Process` runs on).
    ///
    /// ```
    /// # fn main() -> shmwire::Result<()> {
    /// let p = shmwire::Process::fork(|| std::thread::sleep(std::time::Duration::from_secs(60)))?;
    /// let pid = p.pid();
    /// p.kill_on_drop(true);
    /// drop(p); // killed and reaped here
    /// assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    /// # Ok(()) }
    /// ```
    pub fn kill_on_drop(&self, yes: bool) {
        self.kill_on_drop.set(yes);
    }

    /// [`fork`](Self::fork), refused with [`Error::Threaded`] when this process runs other threads
    /// (a fork copies the locks they hold, which then stay locked in the child for ever; see the
    /// module docs). The crate's own forker thread does not count. Use it where a program may not
    /// know what threads its libraries started; Python 3.12 warns in the same case.
    ///
    /// ```standalone_crate
    /// # fn main() -> shmwire::Result<()> {
    /// let p = shmwire::Process::fork_checked(|| println!("only one thread here"))?;
    /// assert!(p.join()?.success());
    /// let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
    /// assert!(matches!(
    ///     shmwire::Process::fork_checked(|| ()),
    ///     Err(shmwire::Error::Threaded { .. })
    /// ));
    /// t.join().unwrap();
    /// # Ok(()) }
    /// ```
    pub fn fork_checked<F: FnOnce()>(f: F) -> Result<Process> {
        let threads = thread_count()?;
        let ours = usize::from(forker::running());
        if threads > 1 + ours {
            return Err(Error::Threaded {
                threads: threads - ours,
            });
        }
        Self::fork(f)
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

    /// Sends `sig` to the child, if it has not ended (so never to a recycled pid). Through its pidfd:
    /// a `Process` copied into a forked child names a sibling, which its parent may have reaped and
    /// whose pid may be another process's by now. Without pidfds (Linux before 5.3), only the
    /// process that made the `Process` may signal (the pid stays its child until it reaps it).
    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.status.get().is_some() {
            return Ok(());
        }
        let r = match &self.pidfd {
            // SAFETY: plain syscall on our pidfd (no siginfo, no flags).
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                ) as libc::c_int
            },
            // SAFETY: plain syscall; in the process that made this handle the pid is our unreaped
            // child (`status` is unset), so it cannot have been reused.
            None if rustix::process::getpid().as_raw_nonzero().get() == self.owner => unsafe {
                libc::kill(self.pid, sig)
            },
            None => {
                return Err(Error::io(
                    std::io::ErrorKind::Unsupported,
                    "this Process belongs to another process, and without a pidfd its pid may \
                     name someone else by now: not signalled",
                ));
            }
        };
        if r != 0 {
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

impl crate::wait::select::sealed::Sealed for Process {}
impl crate::wait::select::Waitable for Process {
    fn __arm(&self) -> Result<crate::wait::select::Armed> {
        use crate::wait::select::Armed;
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
        if self.kill_on_drop.get() && self.status.get().is_none() {
            let _ = self.kill();
            let _ = self.join();
            return;
        }
        // Reap it if it is done; a running child goes on (and dies with us), and is reaped later.
        let seen = self.status.get().is_some();
        match self.try_join() {
            Ok(None) => reap::keep(self.pid, self.pidfd.take()),
            // A failure nobody looked at: the test harness hears of it (feature `test-hooks`).
            Ok(Some(st)) if !seen && !st.success() => {
                crate::hooks::note_unseen_failure(self.pid, st.code(), st.signal());
            }
            _ => {}
        }
    }
}

/// Threads of this process (`/proc/self/status`).
fn thread_count() -> Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or(Error::Corrupt)
}

/// The child's whole life: nothing here returns or unwinds into the caller (every panic, in the
/// closure or after it, is caught and becomes exit code 101), and it ends in `_exit`.
fn child_main<F, R>(
    parent: libc::pid_t,
    f: &mut Option<F>,
    prep: &mut Option<registry::ForkPrep>,
    dropped: &mut Option<std::sync::MutexGuard<'static, Vec<reap::Dropped>>>,
    page: Option<&verdict::Page>,
) -> !
where
    F: FnOnce() -> R,
    R: ChildOutcome,
{
    let life = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: plain syscalls.
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
        if let Some(mut d) = dropped.take() {
            d.clear(); // our parent's children, not ours
        }
        let run = match prep.take() {
            Some(p) => p.in_child(|| page?.wait(parent)),
            None => true,
        };
        let f = f.take().expect("the closure runs once");
        if !run {
            drop(f); // the parent undid the fork: what the closure owns goes, unused
            return 1;
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => r.exit_code(),
            Err(payload) => {
                std::mem::forget(payload); // its destructor is the caller's code
                101 // the panic hook already printed the message on stderr
            }
        }
    }));
    let code = life.unwrap_or_else(|payload| {
        std::mem::forget(payload);
        101
    });
    let _ = std::panic::catch_unwind(|| {
        // Output first, while the child still holds everything: a peer that sees its ends close
        // has its output, and a flush that blocks leaves nothing released under running threads.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        registry::release_at_exit(); // roles, slots, names; what `leave` keeps goes with `_exit`
    });
    // SAFETY: ends the child without running the parent's destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}
