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
//! Beside its slot token, a participant holds a *claim token*: a lock on the byte that names its claim
//! id (slot and generation, see `Segment::claim_id`). A claim id written into a lock word or a queue
//! slot is then judged alive or dead by the kernel alone: nothing read from shared memory can make a
//! live claimer look dead.
//!
//! The token bytes lie far beyond the end of the file (locks need no data there).

use std::io;
use std::os::fd::RawFd;

/// Byte offset of slot 0's token.
const TOKEN_BASE: i64 = 1 << 44;
/// Byte offset of claim id 0's token (claim ids are below 2^32).
const CLAIM_BASE: i64 = 1 << 45;

fn slot_byte(slot: u32) -> i64 {
    TOKEN_BASE + i64::from(slot)
}

fn claim_byte(id: u32) -> i64 {
    CLAIM_BASE + i64::from(id)
}

fn flock(typ: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_pid = 0; // required by F_OFD_* commands
    fl
}

fn fcntl_lock(fd: RawFd, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    loop {
        crate::stats::note_other_call();
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
    try_take_at(fd, slot_byte(slot))
}

/// Releases slot `slot`'s token held through `fd`.
pub(crate) fn release(fd: RawFd, slot: u32) -> io::Result<()> {
    release_at(fd, slot_byte(slot))
}

/// Whether some open file description other than `fd`'s holds slot `slot`'s token, i.e. whether the
/// participant in that slot is alive. Never call it on the caller's own slot.
pub(crate) fn is_held(fd: RawFd, slot: u32) -> io::Result<bool> {
    is_held_at(fd, slot_byte(slot))
}

/// Tries to take the token of claim id `id` (see [`try_take`]).
pub(crate) fn try_take_claim(fd: RawFd, id: u32) -> io::Result<bool> {
    try_take_at(fd, claim_byte(id))
}

/// Whether another open file description than `fd`'s holds the token of claim id `id`: whether the
/// claimer lives. Never call it on the caller's own id.
pub(crate) fn claim_held(fd: RawFd, id: u32) -> io::Result<bool> {
    is_held_at(fd, claim_byte(id))
}

fn try_take_at(fd: RawFd, byte: i64) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, byte);
    match fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn release_at(fd: RawFd, byte: i64) -> io::Result<()> {
    let mut fl = flock(libc::F_UNLCK, byte);
    fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl)
}

fn is_held_at(fd: RawFd, byte: i64) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, byte);
    fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}
