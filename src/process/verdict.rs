//! How the parent tells a forked child what its closure owns (see `segment::registry`).
//!
//! Through a page of anonymous shared memory mapped before the fork, not a descriptor: a child forked
//! meanwhile by another thread copies a mapping it never looks at, and holds nothing. Layout: a state
//! word (`PENDING`, then `READY`, `ABORT` or `KEEP_ALL`), the two counts, the segment addresses
//! (u64), the listener descriptors (u32). The parent writes the counts and entries, then publishes
//! `READY` (or `ABORT`) with a Release store and wakes the child; the child reads them after an
//! Acquire load of the state, by copying through raw pointers, and checks the counts against the
//! capacity it was made with.

use crate::error::Result;
use crate::segment::registry::Verdict;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const PENDING: u32 = 0;
const READY: u32 = 1;
/// The verdict did not fit (it cannot happen: it names a subset of what was counted): keep all.
const KEEP_ALL: u32 = 2;
/// As `READY`, and the fork is undone: the child runs no closure (`Verdict::abort`).
const ABORT: u32 = 3;
const HEAD: usize = 16;

/// The page, as each process maps it.
pub(crate) struct Page {
    ptr: *mut u8,
    len: usize,
    segments: usize,
    listeners: usize,
}

impl Page {
    /// A page for a verdict naming at most `segments` segments and `listeners` listeners.
    pub(crate) fn new(segments: usize, listeners: usize) -> Result<Page> {
        let len = HEAD + 8 * segments + 4 * listeners;
        // SAFETY: a fresh anonymous shared mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Page {
            ptr: ptr.cast(),
            len,
            segments,
            listeners,
        })
    }

    fn state(&self) -> &AtomicU32 {
        // SAFETY: the mapping is page aligned and at least HEAD bytes; an atomic may alias memory the
        // other process writes.
        unsafe { &*(self.ptr as *const AtomicU32) }
    }

    /// In the parent: publishes `v` and wakes the child.
    pub(crate) fn send(&self, v: &Verdict) {
        let fits = v.segments.len() <= self.segments && v.listeners.len() <= self.listeners;
        if fits {
            // SAFETY: every write lies within the mapping (counts checked against the capacity it
            // was sized for); the child reads nothing before the Release store below.
            unsafe {
                let p = self.ptr;
                p.add(4).cast::<u32>().write(v.segments.len() as u32);
                p.add(8).cast::<u32>().write(v.listeners.len() as u32);
                let segs = p.add(HEAD).cast::<u64>();
                for (i, &s) in v.segments.iter().enumerate() {
                    segs.add(i).write(s as u64);
                }
                let lis = p.add(HEAD + 8 * self.segments).cast::<u32>();
                for (i, &l) in v.listeners.iter().enumerate() {
                    lis.add(i).write(l as u32);
                }
            }
        }
        // ORDERING: Release publishes the entries to the child's Acquire load of the state.
        let state = match (fits, v.abort) {
            (true, false) => READY,
            (true, true) => ABORT,
            (false, _) => KEEP_ALL, // and the child runs its closure: cannot happen (see KEEP_ALL)
        };
        self.state().store(state, Ordering::Release);
        let _ = rustix::thread::futex::wake(self.state(), rustix::thread::futex::Flags::empty(), 1);
    }

    /// In the child: waits for the verdict. `None` (keep everything) if the parent is gone first.
    pub(crate) fn wait(&self, parent: libc::pid_t) -> Option<Verdict> {
        let state = loop {
            // ORDERING: Acquire pairs with the parent's Release store.
            let s = self.state().load(Ordering::Acquire);
            if s != PENDING {
                break s;
            }
            // SAFETY: plain syscall. The death signal kills us if the parent dies; this is the
            // belt to its braces.
            if unsafe { libc::getppid() } != parent {
                return None;
            }
            let slice = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: Duration::from_millis(100).as_nanos() as _,
            };
            let _ = rustix::thread::futex::wait(
                self.state(),
                rustix::thread::futex::Flags::empty(),
                PENDING,
                Some(&slice),
            );
        };
        if state != READY && state != ABORT {
            return None;
        }
        // SAFETY: reads within the mapping, after the Acquire above; the counts are checked against
        // the capacity before they index anything.
        unsafe {
            let p = self.ptr as *const u8;
            let n_segs = p.add(4).cast::<u32>().read() as usize;
            let n_lis = p.add(8).cast::<u32>().read() as usize;
            if n_segs > self.segments || n_lis > self.listeners {
                return None;
            }
            let segs = p.add(HEAD).cast::<u64>();
            let lis = p.add(HEAD + 8 * self.segments).cast::<u32>();
            Some(Verdict {
                segments: (0..n_segs).map(|i| segs.add(i).read() as usize).collect(),
                listeners: (0..n_lis).map(|i| lis.add(i).read() as i32).collect(),
                abort: state == ABORT,
            })
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once (the other process keeps its own).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
