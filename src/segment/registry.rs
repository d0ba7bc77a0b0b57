//! The process-local list of mapped segments, and the hand-over of liveness tokens across `fork`.
//!
//! A forked child holds copies of every handle its parent had, as it holds copies of file descriptors;
//! it must also hold its own token, or its death would go unnoticed and its probes would see its
//! parent's token as its own. [`crate::Process::fork`] therefore, before forking:
//!
//! 1. opens a new open file description of each segment (`/proc/self/fd/N`),
//! 2. takes a fresh participant slot through it and gives that slot every role the parent holds,
//! 3. forks; the child switches to the new description and slot, and the parent closes its copy of
//!    the new descriptor, so that the child alone keeps the new token alive.
//!
//! There is no window in which the child holds a role without a token. A child forked some other way
//! (`libc::fork`) is caught by a `pthread_atfork` handler that bumps [`fork_generation`]; its handles
//! take their own slot on first use.

use super::{Segment, reopen};
use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static SEGMENTS: Mutex<Vec<Weak<Segment>>> = Mutex::new(Vec::new());
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

pub(crate) fn install_fork_handler() {
    HANDLER.call_once(|| {
        // SAFETY: registers a child handler that only performs an atomic add (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(in_child_after_fork)) };
    });
}

fn segments() -> MutexGuard<'static, Vec<Weak<Segment>>> {
    SEGMENTS.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn register(seg: &Arc<Segment>) {
    let mut list = segments();
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(seg));
}

/// The segments this process maps right now.
pub(crate) fn live() -> Vec<Arc<Segment>> {
    segments().iter().filter_map(Weak::upgrade).collect()
}

/// Tokens and slots prepared for a child about to be forked.
pub(crate) struct ForkPrep {
    _guard: MutexGuard<'static, Vec<Weak<Segment>>>,
    items: Vec<(Arc<Segment>, OwnedFd, u32)>,
}

/// Step 1 and 2 above. Holds the registry lock until the fork is done, so no segment appears or
/// disappears in between.
pub(crate) fn prepare_fork() -> Result<ForkPrep> {
    let guard = segments();
    let mut prep = ForkPrep {
        _guard: guard,
        items: Vec::new(),
    };
    let list: Vec<Arc<Segment>> = prep._guard.iter().filter_map(Weak::upgrade).collect();
    for seg in list {
        seg.ensure_owner()?;
        let fd = reopen(seg.raw_fd())?;
        let slot = match seg.claim_slot(fd.as_raw_fd()) {
            Ok(s) => s,
            // Every slot taken (a pipe has 64): the child gets none now, and takes one on first
            // use of this segment if one is free by then.
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::QuotaExceeded => continue,
            Err(e) => {
                prep.abort();
                return Err(e);
            }
        };
        seg.copy_roles(seg.my_slot(), slot);
        prep.items.push((seg, fd, slot));
    }
    Ok(prep)
}

impl ForkPrep {
    /// In the child: switch every segment to the prepared description and slot.
    pub(crate) fn in_child(self) {
        let generation = fork_generation();
        crate::sync::membarrier::register();
        for (seg, fd, slot) in self.items {
            let old = seg.fd.swap(fd.into_raw_fd(), Ordering::Relaxed);
            // SAFETY: in the child, `old` is a copy of the parent's descriptor that only this handle
            // refers to; closing it does not touch the parent's token (the parent keeps its copy).
            unsafe { libc::close(old) };
            seg.set_slot(slot);
            seg.owner_gen.store(generation, Ordering::Relaxed);
            seg.set_slot_pid(slot, std::process::id());
        }
    }

    /// In the parent: give up the child's descriptors (the child's copies keep its tokens alive), and
    /// take from the child the roles of handles that did not move into it (`moved` lists the
    /// (segment, role) pairs that did).
    pub(crate) fn in_parent(self, child: u32, moved: &[(usize, usize)]) {
        for (seg, fd, slot) in self.items {
            seg.set_slot_pid(slot, child);
            let key = Arc::as_ptr(&seg) as usize;
            for role in 0..super::header::MAX_ROLES {
                if !moved.contains(&(key, role)) {
                    seg.drop_role_of(slot, role);
                }
            }
            drop(fd);
        }
    }

    /// The fork failed: free the prepared slots.
    pub(crate) fn abort(&mut self) {
        for (seg, fd, slot) in self.items.drain(..) {
            seg.release_prepared(fd, slot);
        }
    }
}

/// Drops every role this process holds in every segment: a graceful exit.
pub(crate) fn release_all() {
    for seg in live() {
        if seg.ensure_owner().is_ok() {
            seg.drop_all_roles();
        }
    }
}

/// A description and slot prepared for a child that will be *spawned* (re-executed), holding the role
/// of the handle it will open (see `ConnectionHandle`).
pub(crate) struct Export {
    seg: Arc<Segment>,
    fd: OwnedFd,
    slot: u32,
    role: usize,
    companions: Vec<std::os::fd::RawFd>,
}

thread_local! {
    /// While `Process::spawn` encodes its arguments: the descriptors of the handles they contain.
    static SPAWNING: std::cell::RefCell<Option<Vec<std::os::fd::RawFd>>> = const { std::cell::RefCell::new(None) };
}

/// Called when a handle prepared by [`prepare_export`] is serialized: if that happens while
/// `Process::spawn` encodes its arguments, the export goes to that child.
pub(crate) fn note_handle_serialized(fd: std::os::fd::RawFd) {
    SPAWNING.with(|s| {
        if let Some(v) = s.borrow_mut().as_mut() {
            v.push(fd);
        }
    });
}

/// Runs `encode` and returns, with its result, the exports whose handles it serialized.
pub(crate) fn exports_serialized_by<T>(encode: impl FnOnce() -> T) -> (T, Vec<Export>) {
    SPAWNING.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let out = encode();
    let fds = SPAWNING.with(|s| s.borrow_mut().take()).unwrap_or_default();
    let mut all = EXPORTS.lock().unwrap_or_else(|p| p.into_inner());
    let (mine, rest): (Vec<Export>, Vec<Export>) =
        all.drain(..).partition(|e| fds.contains(&e.fd.as_raw_fd()));
    *all = rest;
    (out, mine)
}

static EXPORTS: Mutex<Vec<Export>> = Mutex::new(Vec::new());

/// Prepares `role` of `seg` for the next spawned child: a new open file description (its token) and
/// slot holding the role. Returns the descriptor number the child inherits and the slot.
pub(crate) fn prepare_export(seg: &Arc<Segment>, role: usize) -> Result<(std::os::fd::RawFd, u32)> {
    seg.ensure_owner()?;
    let fd = reopen(seg.raw_fd())?;
    let slot = seg.claim_slot(fd.as_raw_fd())?;
    seg.add_role_of(slot, role);
    let raw = fd.as_raw_fd();
    let companions = seg.companions().collect();
    EXPORTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Export {
            seg: seg.clone(),
            fd,
            slot,
            role,
            companions,
        });
    Ok((raw, slot))
}

/// The handle holding `role` of `seg` is going away in this process: exports of that end that no
/// spawn took are withdrawn (their slots freed), so the end closes as it would without them.
pub(crate) fn withdraw_exports(seg: &Arc<Segment>, role: usize) {
    let mut all = EXPORTS.lock().unwrap_or_else(|p| p.into_inner());
    if all.is_empty() {
        return;
    }
    let (gone, keep): (Vec<Export>, Vec<Export>) = all
        .drain(..)
        .partition(|e| Arc::ptr_eq(&e.seg, seg) && e.role == role);
    *all = keep;
    drop(all);
    for e in gone {
        e.seg.release_prepared(e.fd, e.slot);
    }
}

impl Export {
    /// The descriptors the child must inherit.
    pub(crate) fn inherited(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        std::iter::once(self.fd.as_raw_fd()).chain(self.companions.iter().copied())
    }

    /// The child was spawned: it holds its copy of the description; give up ours.
    pub(crate) fn handed_to(self, child: u32) {
        self.seg.set_slot_pid(self.slot, child);
    }

    /// The spawn failed: keep the export for a later spawn.
    pub(crate) fn put_back(self) {
        EXPORTS.lock().unwrap_or_else(|p| p.into_inner()).push(self);
    }
}
