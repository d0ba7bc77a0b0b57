//! Children whose [`Process`](super::Process) was dropped while they ran, reaped later.
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
    let (idtype, id) = match &d.pidfd {
        Some(fd) => (libc::P_PIDFD, fd.as_raw_fd() as libc::id_t),
        None => (libc::P_PID, d.pid as libc::id_t),
    };
    // SAFETY: `info` is a valid out-pointer; WNOHANG never blocks.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        if libc::waitid(idtype, id, &mut info, libc::WEXITED | libc::WNOHANG) == 0 {
            return info.si_pid() != 0;
        }
    }
    // ECHILD: not our child (reaped by someone else); EINTR: try again next time.
    std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
}
