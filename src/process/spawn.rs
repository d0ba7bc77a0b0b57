//! The "spawn" start method: run a role of *this program* in a fresh process, as
//! `multiprocessing`'s spawn and the `procspawn` crate do. Safe to use from a program that runs many
//! threads (the child is a new `exec` of the binary, not a copy of a threaded process).
//!
//! The one line `main` needs, first thing:
//!
//! ```no_run
//! # #![allow(clippy::needless_doctest_main)]
//! fn main() {
//!     // In a spawned child this runs the role and exits; in the parent it returns at once.
//!     shmwire::spawn::enter(|role, args| match role {
//!         "echo" => {
//!             let conn = args.get::<shmwire::ConnectionHandle>().unwrap().open().unwrap();
//!             while let Ok(b) = conn.recv_bytes() {
//!                 conn.send_bytes(&b).unwrap();
//!             }
//!             0
//!         }
//!         _ => 2,
//!     });
//!     let (a, b) = shmwire::Pipe::new().unwrap();
//!     let mut child = shmwire::Process::spawn("echo", &b.to_handle().unwrap()).unwrap();
//!     drop(b);
//!     a.send_bytes(b"hi").unwrap();
//!     assert_eq!(a.recv_bytes().unwrap(), b"hi");
//!     drop(a);
//!     child.join().unwrap();
//! }
//! ```
//!
//! In tests, use a `harness = false` target whose `main` calls `enter` (libtest's own `main` cannot).
//! The child gets the role and its arguments (any serde value, postcard-encoded) in its environment,
//! dies with its parent process (`PR_SET_PDEATHSIG`, set by a thread that lives as long as the
//! process, see [`Process`]; and a check of `getppid()` in `enter`), and inherits
//! the descriptors of the handles prepared for it
//! ([`Connection::to_handle`](crate::Connection::to_handle)). It holds them (and the pipe ends they
//! stand for) until it opens them or exits; children it forks or starts do not inherit them.

use crate::codec;
use crate::error::{Error, Result};
use crate::process::Process;
use crate::segment::registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;

const ROLE: &str = "SHMWIRE_SPAWN_ROLE";
const ARGS: &str = "SHMWIRE_SPAWN_ARGS";
const PARENT: &str = "SHMWIRE_SPAWN_PARENT";
const FDS: &str = "SHMWIRE_SPAWN_FDS";

/// The arguments a spawned role was given (see [`enter`], whose example decodes them with
/// [`get`](Args::get)): any serde value the parent passed to [`Process::spawn`].
#[derive(Debug, Clone)]
pub struct Args {
    bytes: Vec<u8>,
}

impl Args {
    /// Decodes them as the type the parent passed to [`Process::spawn`].
    pub fn get<T: DeserializeOwned>(&self) -> Result<T> {
        codec::decode(&self.bytes)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// If this process is a spawned child, runs `run(role, args)`, then closes what the child still holds
/// and exits with the code `run` returns; otherwise returns at once. Call it first thing in `main`.
///
/// ```standalone_crate
/// use shmwire::{Pipe, Process};
///
/// fn main() -> shmwire::Result<()> {
///     // A spawned child re-executes this program: it takes this branch, runs its role and exits.
///     shmwire::spawn::enter(|role, args| match role {
///         "doubler" => {
///             let h: shmwire::ConnectionHandle = args.get().unwrap();
///             let conn = h.open().unwrap();
///             let n: u64 = conn.recv().unwrap();
///             conn.send(&(n * 2)).unwrap();
///             0
///         }
///         _ => 2,
///     });
///     let (mine, theirs) = Pipe::new()?;
///     let child = Process::spawn("doubler", &theirs.to_handle()?)?;
///     drop(theirs);
///     mine.send(&21u64)?;
///     assert_eq!(mine.recv::<u64>()?, 42);
///     assert!(child.join()?.success());
///     Ok(())
/// }
/// ```
pub fn enter(run: impl FnOnce(&str, Args) -> i32) {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let bytes = std::env::var(ARGS)
        .ok()
        .and_then(|a| unhex(&a))
        .unwrap_or_default();
    let parent: Option<i32> = std::env::var(PARENT).ok().and_then(|p| p.parse().ok());
    let fds: Vec<RawFd> = std::env::var(FDS)
        .unwrap_or_default()
        .split(',')
        .filter_map(|f| f.parse().ok())
        .collect();
    // SAFETY: called first thing in `main`, before any thread of ours exists; the variables must not
    // leak into processes this child starts.
    unsafe {
        std::env::remove_var(ROLE);
        std::env::remove_var(ARGS);
        std::env::remove_var(PARENT);
        std::env::remove_var(FDS);
    }
    registry::set_inherited(&fds);
    // SAFETY: plain syscall. The death signal was set before exec; a parent that died before that
    // is noticed here.
    if parent.is_some_and(|p| unsafe { libc::getppid() } != p) {
        std::process::exit(1);
    }
    let code = if role == crate::pool::WORKER_ROLE {
        // A pool's worker (see `Pool`): the pool's own role, before the program's.
        std::panic::catch_unwind(|| crate::pool::spawned_worker(&bytes)).unwrap_or(101)
    } else {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&role, Args { bytes })))
            .unwrap_or(101) // a panic: its message is on stderr
    };
    // Output first (see the forked child's exit in `process`), then what it holds: thread-local
    // destructors that `exit` runs find their segments left (`release_at_exit`).
    let _ = std::io::stdout().flush();
    registry::release_at_exit();
    std::process::exit(code);
}

impl Process {
    /// Starts this program again as a child running `role` (see [`spawn::enter`](enter)), with
    /// `args` (any serde value). The handles made by
    /// [`Connection::to_handle`](crate::Connection::to_handle) that `args` contains go to this child:
    /// it inherits their descriptors and holds their ends from this moment. The child dies with its
    /// parent process, whichever thread spawned it.
    pub fn spawn<A: Serialize + ?Sized>(role: &str, args: &A) -> Result<Process> {
        crate::process::reap_dropped();
        let (payload, exports) = registry::exports_serialized_by(|| codec::encode(args));
        let (payload, exe) = match (payload, std::env::current_exe()) {
            (Ok(p), Ok(exe)) => (hex(&p), exe),
            (Err(e), _) => {
                exports.put_back();
                return Err(e);
            }
            (_, Err(e)) => {
                exports.put_back();
                return Err(e.into());
            }
        };
        let keep: Vec<RawFd> = exports.inherited().to_vec();
        let fd_list: Vec<String> = keep.iter().map(|f| f.to_string()).collect();
        let mut cmd = std::process::Command::new(exe);
        cmd.env(ROLE, role)
            .env(ARGS, payload)
            .env(PARENT, std::process::id().to_string())
            .env(FDS, fd_list.join(","));
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
        // system calls (fcntl, prctl) on descriptors it does not free.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &keep {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        // On a thread that lives as long as this process: the death signal follows the thread.
        let mut spawned = None;
        // SAFETY (on_forker): the job touches `cmd` (a `Command`, which is `Send`) and `spawned`
        // (its result, `Send` too).
        let ran = unsafe { crate::process::on_forker(&mut || spawned = Some(cmd.spawn())) };
        match (ran, spawned) {
            (Ok(()), Some(Ok(child))) => {
                let pid = child.id();
                exports.handed_to(pid);
                Ok(Process::from_pid(pid as libc::pid_t))
            }
            (ran, spawned) => {
                exports.put_back();
                Err(match (ran, spawned) {
                    (_, Some(Err(e))) => Error::Io(e),
                    (Err(e), _) => e,
                    _ => Error::io(std::io::ErrorKind::Other, "the spawn did not run"),
                })
            }
        }
    }
}

/// Whether this process was spawned with a role and its `main` never called [`enter`] (the role is
/// still in its environment).
pub(crate) fn role_unentered() -> bool {
    std::env::var_os(ROLE).is_some()
}

/// Starts `program` (a path to this program's own executable, such as `/proc/self/exe`) as a child
/// running `role` with the already encoded `args`, inheriting the descriptors `fds` (close-on-exec
/// in this process; the child finds them with `registry::take_inherited`). As
/// [`Process::spawn`], it dies with this process.
pub(crate) fn spawn_raw(
    program: &std::path::Path,
    role: &str,
    args: &[u8],
    fds: &[RawFd],
) -> Result<Process> {
    crate::process::reap_dropped();
    let keep: Vec<RawFd> = fds.to_vec();
    let fd_list: Vec<String> = keep.iter().map(|f| f.to_string()).collect();
    let mut cmd = std::process::Command::new(program);
    if let Some(a0) = std::env::args_os().next() {
        cmd.arg0(a0);
    }
    cmd.env(ROLE, role)
        .env(ARGS, hex(args))
        .env(PARENT, std::process::id().to_string())
        .env(FDS, fd_list.join(","));
    // SAFETY: as in `Process::spawn`: only async-signal-safe calls on descriptors it does not free.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    let mut spawned = None;
    // SAFETY (on_forker): the job touches `cmd` and `spawned`, both `Send`.
    let ran = unsafe { crate::process::on_forker(&mut || spawned = Some(cmd.spawn())) };
    match (ran, spawned) {
        (Ok(()), Some(Ok(child))) => Ok(Process::from_pid(child.id() as libc::pid_t)),
        (_, Some(Err(e))) => Err(Error::Io(e)),
        (Err(e), _) => Err(e),
        _ => Err(Error::io(
            std::io::ErrorKind::Other,
            "the spawn did not run",
        )),
    }
}
