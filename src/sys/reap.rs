//! Children whose [`Process`](crate::Process) was dropped while they ran, reaped later.
//!
//! As Python's `multiprocessing` keeps `_children`: a dropped `Process` whose child still runs leaves
//! its pid (and pidfd) here, and the list is reaped without blocking at the next fork or spawn and
//! in [`cleanup`](crate::cleanup), so no child stays a zombie for long. A pidfd names its process for
//! good, so reaping by pidfd (`P_PIDFD`) can never take the status of another child that was given
//! a recycled pid; without pidfds, the pid is ours until we reap it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

pub(crate) struct Dropped {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
}

static DROPPED: Mutex<Vec<Dropped>> = Mutex::new(Vec::new());

fn list() -> MutexGuard<'static, Vec<Dropped>> {
    DROPPED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps a running child whose `Process` is dropped, to be reaped later.
pub(crate) fn keep(pid: libc::pid_t, pidfd: Option<OwnedFd>) {
    list().push(Dropped { pid, pidfd });
}

/// Reaps, without blocking, the kept children that have ended.
pub(crate) fn reap_dropped() {
    reap(&mut list());
}

/// Reaps what it can and holds the list across a fork: the child empties its copy (those are not
/// its children) through this guard.
pub(crate) fn for_fork() -> MutexGuard<'static, Vec<Dropped>> {
    let mut l = list();
    reap(&mut l);
    l
}

fn reap(list: &mut Vec<Dropped>) {
    list.retain(|d| !reaped(d));
}

/// Whether `d` has been reaped now (or is no child of ours to reap).
fn reaped(d: &Dropped) -> bool {
    match &d.pidfd {
        // A kernel without P_PIDFD (before 5.4) says EINVAL: then by pid, which is still ours.
        Some(fd) => match wait_nohang(libc::P_PIDFD, fd.as_raw_fd() as libc::id_t) {
            Err(libc::EINVAL) => wait_nohang(libc::P_PID, d.pid as libc::id_t),
            r => r,
        },
        None => wait_nohang(libc::P_PID, d.pid as libc::id_t),
    }
    // ECHILD: not our child (reaped by someone else); EINTR: try again next time.
    .unwrap_or_else(|e| e != libc::EINTR)
}

/// `waitid(.., WEXITED | WNOHANG)`: whether a child was reaped, or the errno.
fn wait_nohang(idtype: libc::idtype_t, id: libc::id_t) -> Result<bool, i32> {
    // SAFETY: `info` is a valid out-pointer; WNOHANG never blocks.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        if libc::waitid(idtype, id, &mut info, libc::WEXITED | libc::WNOHANG) == 0 {
            if info.si_pid() != 0 {
                // A dropped child's failure nobody looked at (feature `test-hooks`).
                let (code, st) = (info.si_code, info.si_status());
                match code {
                    libc::CLD_EXITED if st != 0 => {
                        crate::hooks::note_unseen_failure(info.si_pid(), Some(st), None)
                    }
                    libc::CLD_KILLED | libc::CLD_DUMPED => {
                        crate::hooks::note_unseen_failure(info.si_pid(), None, Some(st))
                    }
                    _ => {}
                }
            }
            return Ok(info.si_pid() != 0);
        }
    }
    Err(std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL))
}
