//! The fork generation: how many forks separate this process from the first process that loaded the
//! crate, counted by a `pthread_atfork` child handler. A handle that remembers the generation it was
//! made in knows, with one load, that it now lives in a forked child (see `segment::registry`).

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static HANDLER: Once = Once::new();

/// How many forks separate this process from the first process that loaded the crate.
#[inline]
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

extern "C" fn in_child_after_fork() {
    // Async-signal-safe: one atomic add.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Installs the child handler (once per process).
pub(crate) fn install_fork_handler() {
    HANDLER.call_once(|| {
        // SAFETY: registers a child handler that only performs an atomic add (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(in_child_after_fork)) };
    });
}

/// In a forked child: maps every shared mapping of the file behind `new_fd` again, at the same
/// address and offset, through `new_fd` (`MAP_FIXED` replaces it in one step; the bytes are the same
/// shared memory). An inherited mapping holds a reference to the parent's open file description, and
/// with it the parent's liveness token (OFD locks live as long as the description): without this,
/// a parent that dies would still look alive to everybody while its child lives.
///
/// Reads `/proc/self/maps`; mappings it cannot replace are left as they were (the error is returned
/// after the others are done).
pub(crate) fn remap_through(new_fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: fstat writes into a zeroed `stat` we own; `new_fd` is only read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(new_fd, &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (major, minor) = (libc::major(st.st_dev) as u64, libc::minor(st.st_dev) as u64);
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut result = Ok(());
    for line in maps.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let same_dev = dev.split_once(':').is_some_and(|(a, b)| {
            u64::from_str_radix(a, 16).ok() == Some(major)
                && u64::from_str_radix(b, 16).ok() == Some(minor)
        });
        if inode.parse::<u64>().ok() != Some(st.st_ino) || !same_dev || !perms.ends_with('s') {
            continue;
        }
        let (Some((start, end)), Ok(offset)) =
            (range.split_once('-'), u64::from_str_radix(offset, 16))
        else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let mut prot = libc::PROT_NONE;
        if perms.starts_with('r') {
            prot |= libc::PROT_READ;
        }
        if perms.as_bytes().get(1) == Some(&b'w') {
            prot |= libc::PROT_WRITE;
        }
        // SAFETY: replaces, at the same address, length, protection and file offset, a shared
        // mapping of this very file by a mapping of it through `new_fd`: the memory behind every
        // address stays the same shared pages, so no reference into it changes meaning.
        let got = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                end - start,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                new_fd,
                offset as libc::off_t,
            )
        };
        if got == libc::MAP_FAILED {
            result = Err(std::io::Error::last_os_error());
        }
    }
    result
}
