//! Kill and stop points inside the real put, get, allocator and participant paths, for the fault
//! tests.
//!
//! With the cargo feature `test-hooks`, a test arms a [`Point`] with a signal
//! (`__arm`); the next time this process passes that point it raises the signal on itself (SIGKILL:
//! a peer dying there; SIGSTOP: a peer stopped there). Signal 0 pauses only the *thread* that passes
//! the point, until `__resume` (so another thread of the same process can act meanwhile; see
//! `__paused`). Without the feature every point compiles to nothing. With it, an unarmed point
//! costs one load of a process-local word.

/// A place in the library where a test may stop or kill the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[non_exhaustive]
pub enum Point {
    /// A producer holds a queue slot (`WRITING`) and has not filled it.
    PutClaimed = 0,
    /// A producer has filled its slot and not published it.
    PutFilled = 1,
    /// A consumer holds a queue slot (`READING`) and has not read it.
    GetClaimed = 2,
    /// A consumer has read its item and not freed the slot.
    GetRead = 3,
    /// A producer holds a spill block it allocated and has not claimed a slot for it.
    SpillAllocated = 4,
    /// The spill allocator's holder has written its redo record and changed part of the bitmap.
    SpillMidChange = 5,
    /// A grower has appended a ring and not sealed the old one.
    GrowAppended = 6,
    /// A producer holds a queue slot (`WRITING`) and has not yet moved the producers' position past it.
    PutClaimedUnmoved = 7,
    /// A reaper has taken a dead participant's bit out of a role mask and not yet woken anyone.
    RoleReaped = 8,
    /// The creator of a named segment has its file and holds none of its tokens yet.
    NamedCreating = 9,
    /// A fork has read a role mask holding the parent's bit and not yet added the child's.
    CopyingRoles = 10,
    /// A segment's last handle in this process is gone (it can no longer be reached) and its drop
    /// has begun: it still holds its tokens and descriptor.
    SegmentDropping = 11,
    /// A manager's allocator holder has made part of an undo-logged change (a split, a merge).
    ManagerAllocMid = 12,
    /// A manager's grower has published a new chunk and not yet put its space in the free lists.
    ManagerGrowing = 13,
    /// A dict or list writer holds the container's lock and has allocated and filled its new block,
    /// and not yet written its redo record.
    ManagerStaged = 14,
    /// A dict or list writer has written its redo record and applied part of it (the sequence odd).
    ManagerCommitting = 15,
    /// A dict or list writer has committed and not yet freed what the change replaced.
    ManagerFreeing = 16,
    /// A dict or list writer holds the container's lock and has changed nothing yet.
    ManagerLocked = 17,
    /// A pool worker has taken a board entry and is recording in its slot what it holds (the
    /// entry not yet freed).
    PoolRecording = 18,
    /// A listener being bound found its name's socket stale (not yet under the reclaim lock).
    ReclaimFound = 19,
    /// A reclaimer holds the reclaim lock and has judged the name's socket stale, and not yet
    /// removed it.
    ReclaimChecked = 20,
    /// A listener being bound (to a name, or to a `unix:` path) has bound its socket and does not
    /// listen yet.
    BoundNotListening = 21,
}

#[cfg(feature = "test-hooks")]
mod armed {
    use super::Point;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    /// Bit `p` set: point `p` is armed.
    static ARMED: AtomicU32 = AtomicU32::new(0);
    /// Bit `p` set: a thread is paused at point `p` (armed with signal 0).
    static PAUSED: AtomicU32 = AtomicU32::new(0);
    /// Per point: the signal, and how many passes to let by first (`signal | skip << 8`).
    static PLAN: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

    #[inline]
    pub(crate) fn hit(p: Point) {
        if ARMED.load(Ordering::Relaxed) & (1 << p as u32) != 0 {
            fire(p);
        }
    }

    #[cold]
    fn fire(p: Point) {
        let plan = &PLAN[p as usize];
        let v = plan.load(Ordering::Relaxed);
        if v >> 8 > 0 {
            plan.store(v - (1 << 8), Ordering::Relaxed);
            return;
        }
        ARMED.fetch_and(!(1 << p as u32), Ordering::Relaxed);
        let signal = (v & 0xff) as i32;
        if signal == 0 {
            // ORDERING: SeqCst, so the resumer sees the pause and this thread sees the resume.
            PAUSED.fetch_or(1 << p as u32, Ordering::SeqCst);
            while PAUSED.load(Ordering::SeqCst) & (1 << p as u32) != 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            return;
        }
        // SAFETY: plain syscalls on this process.
        unsafe { libc::kill(libc::getpid(), signal) };
    }

    pub(crate) fn paused(p: Point) -> bool {
        PAUSED.load(Ordering::SeqCst) & (1 << p as u32) != 0
    }

    pub(crate) fn resume(p: Point) {
        PAUSED.fetch_and(!(1 << p as u32), Ordering::SeqCst);
    }

    pub(crate) fn arm(p: Point, signal: i32, skip: u64) {
        PLAN[p as usize].store((signal as u64 & 0xff) | skip << 8, Ordering::Relaxed);
        ARMED.fetch_or(1 << p as u32, Ordering::Relaxed);
    }

    pub(crate) fn disarm_all() {
        ARMED.store(0, Ordering::Relaxed);
    }
}

/// Notes that a child whose `Process` was dropped without anyone asking its status failed (exit
/// `code`, or killed by `signal`): with `test-hooks`, the test harness fails the test that let it
/// pass unseen (`__unseen_child_failures`). Nothing without the feature.
pub(crate) fn note_unseen_failure(pid: i32, code: Option<i32>, signal: Option<i32>) {
    #[cfg(all(feature = "test-hooks", not(loom)))]
    UNSEEN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(match (code, signal) {
            (Some(c), _) => format!("child {pid} exited with code {c}, and was dropped unjoined"),
            (None, Some(s)) => {
                format!("child {pid} was killed by signal {s}, and was dropped unjoined")
            }
            _ => format!("child {pid} failed, and was dropped unjoined"),
        });
    #[cfg(not(all(feature = "test-hooks", not(loom))))]
    let _ = (pid, code, signal);
}

#[cfg(all(feature = "test-hooks", not(loom)))]
static UNSEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Test hook: reaps the dropped children that have ended, then returns (and forgets) the failures
/// of dropped children that nobody looked at.
#[cfg(all(feature = "test-hooks", not(loom)))]
pub fn __unseen_child_failures() -> Vec<String> {
    crate::sys::reap::reap_dropped();
    std::mem::take(&mut *UNSEEN.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Marks point `p` on a real path (see the module docs).
#[inline(always)]
pub(crate) fn hit(p: Point) {
    #[cfg(feature = "test-hooks")]
    armed::hit(p);
    #[cfg(not(feature = "test-hooks"))]
    let _ = p;
}

/// Test hook: the `skip + 1`th pass of this process through `p` raises `signal` (SIGKILL, SIGSTOP) on
/// the process, or with `signal` 0 pauses the passing thread until [`__resume`]; the point is then
/// disarmed.
#[cfg(feature = "test-hooks")]
pub fn __arm(p: Point, signal: i32, skip: u64) {
    armed::arm(p, signal, skip);
}

/// Test hook: whether a thread of this process is paused at `p` (armed with signal 0).
#[cfg(feature = "test-hooks")]
pub fn __paused(p: Point) -> bool {
    armed::paused(p)
}

/// Test hook: lets the thread paused at `p` go on.
#[cfg(feature = "test-hooks")]
pub fn __resume(p: Point) {
    armed::resume(p);
}

/// Test hook: disarms every point.
#[cfg(feature = "test-hooks")]
pub fn __disarm_all() {
    armed::disarm_all();
}
