//! Liveness tokens: an open-file-description lock (`F_OFD_SETLK`) on one byte of a segment's file per
//! participant slot.
//!
//! The kernel releases an OFD lock when the last descriptor of its open file description is closed,
//! which a dying process does whatever killed it. So "is the holder of slot i alive?" is one
//! `F_OFD_GETLK` on byte i, with no pid involved (pids are reused). A stopped process still holds its
//! lock: stopped is alive.
//!
//! Two rules follow from OFD semantics: a lock never conflicts with the same open file description, so
//! a process must never probe its own slot; and a forked child shares its parent's descriptions, so it
//! must re-open the file and take its own slot (see `registry`).
//!
//! The token bytes lie far beyond the end of the file (locks need no data there).

use std::io;
use std::os::fd::RawFd;

/// Byte offset of slot 0's token.
const TOKEN_BASE: i64 = 1 << 44;

fn flock(typ: libc::c_int, slot: u32) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = TOKEN_BASE + slot as i64;
    fl.l_len = 1;
    fl.l_pid = 0; // required by F_OFD_* commands
    fl
}

fn fcntl_lock(fd: RawFd, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    loop {
        // SAFETY: `fl` is a valid, exclusively borrowed `flock`; fcntl reads and (for GETLK) writes it.
        let r = unsafe { libc::fcntl(fd, cmd, fl as *mut libc::flock) };
        if r != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Tries to take slot `slot`'s token through `fd`'s open file description. `Ok(false)` when another
/// description holds it (its holder is alive).
pub(crate) fn try_take(fd: RawFd, slot: u32) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, slot);
    match fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases slot `slot`'s token held through `fd`.
pub(crate) fn release(fd: RawFd, slot: u32) -> io::Result<()> {
    let mut fl = flock(libc::F_UNLCK, slot);
    fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl)
}

/// Whether some open file description other than `fd`'s holds slot `slot`'s token, i.e. whether the
/// participant in that slot is alive. Never call it on the caller's own slot.
pub(crate) fn is_held(fd: RawFd, slot: u32) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, slot);
    fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}
