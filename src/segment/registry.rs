//! The process-local list of mapped segments, the descriptors a forked child must give up, and the
//! hand-over of liveness tokens across `fork`.
//!
//! **Rule: a forked child holds exactly what its closure owns.** It must hold its own token for every
//! segment its closure owns (or its death would go unnoticed, and its probes would see its parent's
//! token as its own), and no other: not its parent's tokens, not those of exports waiting for a
//! spawn, not a listener's socket it does not own. [`crate::Process::fork`] therefore:
//!
//! 1. before forking, under the registry's locks (so no segment, export or listener appears in
//!    between): opens a new open file description of each segment (`/proc/self/fd/N`), takes a
//!    participant slot through it and gives that slot every role the parent holds (a table that is
//!    full gets the description and no slot);
//! 2. forks; the child switches every segment to its new description (closing its copies of the
//!    parent's, so it holds none of the parent's tokens) and closes the descriptors of pending
//!    exports and of inherited descriptors not yet opened;
//! 3. the parent moves its copies of the child's descriptions to the pending list, still under the
//!    locks (so a child forked later closes them), then drops its copy of the closure, noting which
//!    handles it owned (their `Drop` notes itself in `moving`), takes from the child's slots the roles
//!    that did not move (holding their tokens: a child killed meanwhile keeps its slot until then),
//!    closes its copies, and sends the child that verdict (through a page of shared memory, not a
//!    descriptor); an end that moved into a segment where the child has no slot undoes the fork;
//! 4. the child, before it runs the closure, leaves the segments its closure does not own (a handle
//!    the closure only borrows takes a slot of its own on first use) and closes the listener sockets it
//!    does not own (replaced by an inert socket, so their numbers are never reused under a borrowed
//!    `Listener`).
//!
//! There is no window in which the child holds a role without a token. A child forked some other way
//! (`libc::fork`) is caught by a `pthread_atfork` handler that bumps [`fork_generation`]; its handles
//! take their own slot on first use. Code that creates a process-local token (a segment, a listener)
//! holds the [`fork_gate`] for reading until the token is registered, so a fork from another thread
//! never copies one unregistered; descriptors that leave the lists (an export handed over or
//! withdrawn, a listener dropped, a segment whose last handle goes) are closed under their lock or
//! the gate. A segment leaves the list only at the end of its drop, under the gate, and a fork waits
//! while the list holds one whose last handle is gone (it can no longer be reached, so it cannot be
//! prepared, and its descriptor would be copied with its tokens: a claim token for the child's whole
//! life).
//!
//! When a child (forked or spawned) exits, [`release_at_exit`] gives up what it still holds, as the
//! handles' `Drop` would (roles, slots, tokens, names it was the last to hold), without running any
//! destructor of the caller's.

use super::{NO_SLOT, Segment, reopen};
use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

static SEGMENTS: Mutex<Vec<Weak<Segment>>> = Mutex::new(Vec::new());
static PENDING: Mutex<Pending> = Mutex::new(Pending {
    exports: Vec::new(),
    inherited: Vec::new(),
    listeners: Vec::new(),
    unfinished: Vec::new(),
    clients: Vec::new(),
});
static GATE: RwLock<()> = RwLock::new(());

/// Descriptors that belong to this process, not to any handle a closure could own.
struct Pending {
    /// Exports waiting for a spawn (each holds a token for the child to be).
    exports: Vec<Export>,
    /// Descriptors a spawned child inherited for handles it has not opened yet.
    inherited: Vec<RawFd>,
    /// Listening sockets of the live `Listener`s.
    listeners: Vec<RawFd>,
    /// Our copies of the descriptions of children just forked, kept until [`ForkedParent::finish`]
    /// has trimmed their slots (see there); a child forked meanwhile closes its copies.
    unfinished: Vec<OwnedFd>,
    /// Sockets of clients a `Listener` accepted and has not introduced yet: (listening socket,
    /// client). They go (inert) with their listener in a child that does not own it.
    clients: Vec<(RawFd, RawFd)>,
}

pub(crate) use crate::sys::fork::{fork_generation, install_fork_handler};

thread_local! {
    /// Whether this thread holds the gate already (taking it again would deadlock on a waiting fork).
    static GATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The [`fork_gate`], held for reading (or nothing, if this thread holds the gate already).
pub(crate) struct Gate(Option<RwLockReadGuard<'static, ()>>);

impl Drop for Gate {
    fn drop(&mut self) {
        if self.0.is_some() {
            GATED.with(|g| g.set(false));
        }
    }
}

/// The gate as [`prepare_fork`] holds it, for writing.
struct WriteGate(#[allow(dead_code)] RwLockWriteGuard<'static, ()>);

impl Drop for WriteGate {
    fn drop(&mut self) {
        GATED.with(|g| g.set(false));
    }
}

/// Held (for reading) while a token is made and registered; [`prepare_fork`] takes it for writing.
/// Lock order: the gate, then the registry's lists.
pub(crate) fn fork_gate() -> Gate {
    if GATED.with(|g| g.replace(true)) {
        return Gate(None);
    }
    Gate(Some(GATE.read().unwrap_or_else(|p| p.into_inner())))
}

fn segments() -> MutexGuard<'static, Vec<Weak<Segment>>> {
    SEGMENTS.lock().unwrap_or_else(|p| p.into_inner())
}

fn pending() -> MutexGuard<'static, Pending> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn register(seg: &Arc<Segment>) {
    segments().push(Arc::downgrade(seg));
}

/// The segment at `ptr` has closed its descriptor (the end of its drop): it leaves the list. Until
/// then a fork waits for it (see [`prepare_fork`]).
pub(crate) fn unregister(ptr: *const Segment) {
    segments().retain(|w| !std::ptr::eq(w.as_ptr(), ptr));
}

/// The segments this process maps right now.
pub(crate) fn live() -> Vec<Arc<Segment>> {
    segments().iter().filter_map(Weak::upgrade).collect()
}

/// A new `Listener`'s socket: a forked child closes it unless its closure owns the listener.
pub(crate) fn track_listener(fd: RawFd) {
    pending().listeners.push(fd);
}

/// The `Listener` owning socket `fd` is going away in this process: its socket is closed now, under
/// the fork gate, so no child forked meanwhile copies it untracked (the descriptor holds an inert
/// socket until the `Listener` closes it).
pub(crate) fn close_listener(fd: RawFd) {
    let _gate = fork_gate();
    pending().listeners.retain(|&l| l != fd);
    inert(fd); // if it fails, the socket closes with the `Listener` a moment later
}

/// A client socket that the `Listener` owning `listener` accepted (under the fork gate, like this
/// call): a forked child makes it inert unless its closure owns that listener.
pub(crate) fn track_client(listener: RawFd, client: RawFd) {
    pending().clients.push((listener, client));
}

/// The client socket `client` is being closed (under the fork gate).
pub(crate) fn untrack_client(client: RawFd) {
    pending().clients.retain(|&(_, c)| c != client);
}

/// A segment prepared for the child: its new description and slot (`NO_SLOT`: the table was full).
struct Prepared {
    seg: Arc<Segment>,
    fd: OwnedFd,
    slot: u32,
    /// No slot because every slot was taken: the roles we held then (none if we hold no slot).
    stranded: u32,
}

/// What the parent found the closure to own: segments (by address) and listener sockets.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) segments: Vec<usize>,
    pub(crate) listeners: Vec<RawFd>,
    /// The fork is undone: the child gives up what it owns and exits without running its closure
    /// (an end moved into it on a segment where it has no slot, see [`ForkedParent::finish`]).
    pub(crate) abort: bool,
}

/// Descriptions and slots prepared for a child about to be forked, with the locks that keep them
/// complete until the fork.
pub(crate) struct ForkPrep {
    items: Vec<Prepared>,
    segments: MutexGuard<'static, Vec<Weak<Segment>>>,
    pending: MutexGuard<'static, Pending>,
    _gate: WriteGate,
    /// The segments, held until after the locks (fields drop in order): a segment's drop takes the
    /// gate and the list's lock.
    spare: Vec<Arc<Segment>>,
}

/// Step 1 above.
pub(crate) fn prepare_fork() -> Result<ForkPrep> {
    install_fork_handler(); // so that every later fork is told apart, by the forker thread too
    if GATED.with(|g| g.get()) {
        return Err(Error::Misuse); // cannot happen: no caller's code runs while a token is made
    }
    let start = std::time::Instant::now();
    let mut prep = loop {
        let gate = WriteGate(GATE.write().unwrap_or_else(|p| p.into_inner()));
        GATED.with(|g| g.set(true));
        let mut list = segments();
        let live: Vec<Arc<Segment>> = list.iter().filter_map(Weak::upgrade).collect();
        // A segment whose last handle is gone but whose drop has not closed its descriptor yet
        // cannot be reached (nor prepared), and the child would copy its descriptor, and tokens,
        // unseen: let the drop finish (it takes the gate, then leaves the list) and look again.
        // Once upgraded, none can go (`spare` holds them until after the locks). An entry dead for
        // a whole second has no drop running (a child forked behind our back copied it while its
        // drop ran in a thread it does not have): it goes.
        if live.len() < list.len() && start.elapsed() > std::time::Duration::from_secs(1) {
            list.retain(|w| w.strong_count() > 0);
        }
        if live.len() == list.len() {
            break ForkPrep {
                items: Vec::new(),
                segments: list,
                pending: pending(),
                _gate: gate,
                spare: live,
            };
        }
        drop((list, gate));
        drop(live); // after the locks: one may be a segment's last handle
        std::thread::sleep(std::time::Duration::from_micros(100));
    };
    for seg in prep.spare.clone() {
        if let Err(e) = prep.add(seg) {
            prep.abort();
            return Err(e);
        }
    }
    Ok(prep)
}

impl ForkPrep {
    fn add(&mut self, seg: Arc<Segment>) -> Result<()> {
        if seg.my_slot() != NO_SLOT {
            seg.ensure_owner()?; // a handle forked behind our back takes its own slot first
        }
        let fd = reopen(seg.raw_fd())?;
        let mine = seg.my_slot();
        let slot = if mine == NO_SLOT {
            NO_SLOT // we hold no slot (a handle we only borrowed from our parent): neither does the child
        } else {
            match seg.claim_slot(fd.as_raw_fd()) {
                Ok(s) => {
                    seg.copy_roles(mine, s);
                    s
                }
                // Every slot taken: the child gets a description without one, and takes a slot
                // on first use of this segment if one is free by then.
                Err(Error::TooManyProcesses { .. }) => NO_SLOT,
                Err(e) => return Err(e),
            }
        };
        let stranded = if slot == NO_SLOT { seg.my_roles() } else { 0 };
        self.items.push(Prepared {
            seg,
            fd,
            slot,
            stranded,
        });
        Ok(())
    }

    /// Whether the child must wait for the parent's [`Verdict`] before it runs its closure.
    pub(crate) fn needs_verdict(&self) -> bool {
        !self.items.is_empty() || !self.pending.listeners.is_empty()
    }

    /// In the child, before anything else (steps 2 and 4): hold only the new descriptions, give up
    /// pending descriptors, then leave what `verdict` (read from the parent) says the closure does
    /// not own. The child is single-threaded here; the locks are released at the end. Returns whether
    /// the child runs its closure (false: the parent undid the fork).
    pub(crate) fn in_child(mut self, verdict: impl FnOnce() -> Option<Verdict>) -> bool {
        let generation = fork_generation();
        crate::sys::membarrier::register();
        for p in &self.items {
            let old = p.seg.fd.swap(p.fd.as_raw_fd(), Ordering::Relaxed);
            // SAFETY: in the child, `old` is a copy of the parent's descriptor that only this handle
            // refers to (and it now refers to the new one); closing it does not touch the parent's
            // token (the parent keeps its copy).
            unsafe { libc::close(old) };
            // The inherited mappings refer to the parent's description too (and keep its token):
            // map them again through ours.
            let _ = crate::sys::fork::remap_through(p.fd.as_raw_fd());
            p.seg.set_slot(p.slot);
            if p.slot == NO_SLOT {
                p.seg.owner_gen.store(super::STALE, Ordering::Relaxed);
            } else {
                p.seg.owner_gen.store(generation, Ordering::Relaxed);
                p.seg.set_slot_pid(p.slot, std::process::id());
            }
        }
        let items: Vec<Prepared> = std::mem::take(&mut self.items);
        for p in items {
            let _ = p.fd.into_raw_fd(); // the segment owns it now
            std::mem::forget(p.seg); // no destructor runs here (the parent's memory holds the rest)
        }
        for e in std::mem::take(&mut self.pending.exports) {
            drop(e.fd); // the token of a child yet to be spawned: never ours
            std::mem::forget(e.seg);
        }
        for fd in std::mem::take(&mut self.pending.inherited) {
            // SAFETY: descriptors inherited for handles not opened yet belong to this list alone.
            unsafe { libc::close(fd) };
        }
        drop(std::mem::take(&mut self.pending.unfinished)); // other children's tokens: never ours
        match verdict() {
            Some(v) => {
                self.apply(&v);
                !v.abort
            }
            None => true,
        }
    }

    fn apply(&mut self, v: &Verdict) {
        for seg in self.segments.iter().filter_map(Weak::upgrade) {
            let key = Arc::as_ptr(&seg) as usize;
            if !v.segments.contains(&key) && seg.my_slot() != NO_SLOT {
                leave_for_good(&seg);
            }
        }
        let keep: Vec<RawFd> = self.pending.listeners.clone();
        for fd in keep {
            if !v.listeners.contains(&fd) {
                if !inert(fd) {
                    // SAFETY: no closure of this child owns the listener: nobody may use it here.
                    unsafe { libc::close(fd) };
                }
                self.pending.listeners.retain(|&l| l != fd);
            }
        }
        // The clients those listeners were introducing: the parent answers them, or closes them.
        for (l, c) in std::mem::take(&mut self.pending.clients) {
            if v.listeners.contains(&l) {
                self.pending.clients.push((l, c));
            } else if !inert(c) {
                // SAFETY: as for the listeners above: nobody may use this client socket here.
                unsafe { libc::close(c) };
            }
        }
    }

    /// How many segments and listeners a verdict may name (those the child may own).
    pub(crate) fn capacity(&self) -> (usize, usize) {
        (self.items.len(), self.pending.listeners.len())
    }

    /// In the parent, right after the fork: keep our copies of the descriptions of the child's slots
    /// in the pending list (while the locks still keep other forks out: a child forked later closes
    /// them), close those of descriptions without a slot, and let other threads go on (the closure's
    /// drop may make handles); keep the slots for [`ForkedParent::finish`].
    pub(crate) fn forked(mut self) -> ForkedParent {
        let mut held = Vec::new();
        let items = std::mem::take(&mut self.items)
            .into_iter()
            .map(|p| {
                if p.slot != NO_SLOT {
                    held.push(p.fd.as_raw_fd());
                    self.pending.unfinished.push(p.fd);
                }
                (p.seg, p.slot, p.stranded)
            })
            .collect();
        ForkedParent {
            items,
            listeners: self.pending.listeners.clone(),
            held,
        }
    }

    /// The fork failed: free the prepared slots.
    pub(crate) fn abort(&mut self) {
        for p in self.items.drain(..) {
            if p.slot != NO_SLOT {
                p.seg.release_prepared(p.fd, p.slot);
            }
        }
    }
}

/// Replaces descriptor `fd` by a socket that neither listens nor connects, closing what it was: a
/// `Listener` still holding the number then fails (`accept` is an error, `poll` says hang-up)
/// instead of touching a reused number. False if no socket could be made (`fd` is as it was).
fn inert(fd: RawFd) -> bool {
    // SAFETY: plain syscalls on a new socket of ours and on `fd`, a listener socket of this process,
    // which dup3 replaces atomically.
    unsafe {
        let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return false;
        }
        let done = libc::dup3(s, fd, libc::O_CLOEXEC) >= 0;
        libc::close(s);
        done
    }
}

/// The parent's half of a fork, once the child exists: the segments and the child's slots in them,
/// the listeners the child had a copy of, and our copies of the descriptions holding the child's
/// slot tokens (in the pending list until this is dropped).
pub(crate) struct ForkedParent {
    /// Segment, the child's slot, and (if it has none) the roles we held then.
    items: Vec<(Arc<Segment>, u32, u32)>,
    listeners: Vec<RawFd>,
    held: Vec<RawFd>,
}

impl ForkedParent {
    /// Step 3: the child's slots keep only the roles that moved into it (`moved`: (segment address,
    /// role)); returns the verdict for the child, given the segments whose handles moved and the
    /// listeners that moved.
    ///
    /// The parent writes into the child's slots while it holds their tokens (its copies of the
    /// child's descriptions): a child killed meanwhile keeps its slot until then, so no other process
    /// can take the slot and have its roles trimmed instead.
    ///
    /// A role that moved into the child on a segment where it has no slot (every slot taken) would be
    /// held by no one: the verdict then undoes the fork (`abort`), and the child drops its closure
    /// unrun and exits.
    pub(crate) fn finish(
        self,
        child: u32,
        moved: &[(usize, usize)],
        segments: Vec<usize>,
        listeners: Vec<RawFd>,
    ) -> Verdict {
        let keys: Vec<usize> = self
            .items
            .iter()
            .map(|(s, _, _)| Arc::as_ptr(s) as usize)
            .collect();
        let mut abort = false;
        for (seg, slot, stranded) in &self.items {
            if *slot == NO_SLOT {
                let key = Arc::as_ptr(seg) as usize;
                abort |= moved
                    .iter()
                    .any(|&(s, r)| s == key && stranded & 1 << r != 0);
                continue;
            }
            seg.set_slot_pid(*slot, child);
            let key = Arc::as_ptr(seg) as usize;
            for role in 0..super::header::MAX_ROLES {
                if !moved.contains(&(key, role)) {
                    seg.drop_role_of(*slot, role);
                }
            }
        }
        let mut segs = segments;
        segs.extend(moved.iter().map(|&(s, _)| s));
        segs.retain(|s| keys.contains(s));
        segs.sort_unstable();
        segs.dedup();
        let mut lis = listeners;
        lis.retain(|l| self.listeners.contains(l));
        Verdict {
            segments: segs,
            listeners: lis,
            abort,
        }
    }
}

impl ForkedParent {
    /// Step 3 for a foreign fork (`process::foreign`): the child keeps every role the parent held.
    pub(crate) fn finish_keeping_all(self, child: u32) -> Verdict {
        let moved: Vec<(usize, usize)> = self
            .items
            .iter()
            .flat_map(|(s, _, _)| {
                (0..super::header::MAX_ROLES).map(move |r| (Arc::as_ptr(s) as usize, r))
            })
            .collect();
        self.finish(child, &moved, Vec::new(), Vec::new())
    }
}

impl Drop for ForkedParent {
    /// Closes our copies of the child's descriptions, under the pending list's lock (so no child
    /// forked meanwhile copies them): from here the child's slots are the child's alone.
    fn drop(&mut self) {
        let mut all = pending();
        let (mine, rest): (Vec<OwnedFd>, Vec<OwnedFd>) = std::mem::take(&mut all.unfinished)
            .into_iter()
            .partition(|fd| self.held.contains(&fd.as_raw_fd()));
        all.unfinished = rest;
        drop(mine);
    }
}

/// Leaves `seg` for good in this process: its roles, slot and name (`leave`), and marks the handle
/// slot-less and stale, so that a later drop or use takes a slot of its own instead of acting on the
/// slot it left (which another process may hold by then).
fn leave_for_good(seg: &Segment) {
    seg.leave();
    seg.set_slot(NO_SLOT);
    seg.owner_gen.store(super::STALE, Ordering::Relaxed);
}

/// Gives up everything this process still holds in every segment, as dropping the handles would:
/// roles, slots, and the names of named segments it was the last to hold (tokens that `leave` keeps
/// go with the process). Runs no destructor but the crate's own; for a process about to exit, after
/// it has flushed its output. Handles dropped later (a thread-local's destructor run by `exit`, a
/// thread still running) find their segments left, and touch no slot another process may hold by
/// then.
pub(crate) fn release_at_exit() {
    for seg in live() {
        if seg.my_slot() != NO_SLOT && seg.owner_gen.load(Ordering::Relaxed) == fork_generation() {
            leave_for_good(&seg);
        }
    }
}

/// A description and slot prepared for a child that will be *spawned* (re-executed), holding the role
/// of the handle it will open (see `ConnectionHandle`).
///
/// It stays in the process's list (so that a forked child closes its descriptor) until a spawned
/// child has it (then its descriptor is closed under the list's lock) or its end goes.
struct Export {
    seg: Arc<Segment>,
    fd: OwnedFd,
    slot: u32,
    role: usize,
    companions: Vec<RawFd>,
    /// Taken by a spawn in progress.
    taken: bool,
}

/// The exports a spawn takes: (descriptor, slot, role) of each, and the descriptors its child
/// inherits.
pub(crate) struct Taken {
    keys: Vec<(RawFd, u32, usize)>,
    inherited: Vec<RawFd>,
}

thread_local! {
    /// While `Process::spawn` encodes its arguments: (descriptor, slot, role) of the handles they
    /// contain.
    static SPAWNING: std::cell::RefCell<Option<Vec<(RawFd, u32, usize)>>> = const { std::cell::RefCell::new(None) };
}

/// Called when a handle prepared by [`prepare_export`] is serialized: if that happens while
/// `Process::spawn` encodes its arguments, the export goes to that child. (A handle names its export
/// by descriptor, slot and role, so a stale handle whose descriptor number was reused takes nothing.)
pub(crate) fn note_handle_serialized(fd: RawFd, slot: u32, role: usize) {
    SPAWNING.with(|s| {
        if let Some(v) = s.borrow_mut().as_mut() {
            v.push((fd, slot, role));
        }
    });
}

/// Runs `encode` and returns, with its result, the exports whose handles it serialized (taken for
/// the spawn: give them with [`Taken::handed_to`] or back with [`Taken::put_back`]).
pub(crate) fn exports_serialized_by<T>(encode: impl FnOnce() -> T) -> (T, Taken) {
    SPAWNING.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let out = encode();
    let keys = SPAWNING.with(|s| s.borrow_mut().take()).unwrap_or_default();
    let mut taken = Taken {
        keys: Vec::new(),
        inherited: Vec::new(),
    };
    for e in pending().exports.iter_mut() {
        let key = (e.fd.as_raw_fd(), e.slot, e.role);
        if !e.taken && keys.contains(&key) {
            e.taken = true;
            taken.keys.push(key);
            taken.inherited.push(key.0);
            taken.inherited.extend_from_slice(&e.companions);
        }
    }
    (out, taken)
}

/// Prepares `role` of `seg` for the next spawned child: a new open file description (its token) and
/// slot holding the role. Returns the descriptor number the child inherits and the slot. While one
/// export of the end waits for its spawn, further calls return it again: an end has at most one.
pub(crate) fn prepare_export(seg: &Arc<Segment>, role: usize) -> Result<(RawFd, u32)> {
    let _gate = fork_gate();
    let mut all = pending();
    if let Some(e) = all
        .exports
        .iter()
        .find(|e| Arc::ptr_eq(&e.seg, seg) && e.role == role && !e.taken)
    {
        return Ok((e.fd.as_raw_fd(), e.slot));
    }
    seg.ensure_owner()?;
    let fd = reopen(seg.raw_fd())?;
    let slot = seg.claim_slot(fd.as_raw_fd())?;
    if let Err(e) = seg.add_role_of(slot, role) {
        seg.release_prepared(fd, slot);
        return Err(e);
    }
    let raw = fd.as_raw_fd();
    all.exports.push(Export {
        seg: seg.clone(),
        fd,
        slot,
        role,
        companions: seg.companions().collect(),
        taken: false,
    });
    Ok((raw, slot))
}

/// The handle holding `role` of `seg` is going away in this process: exports of that end that no
/// spawn took are withdrawn (their slots freed, their descriptors closed under the list's lock), so
/// the end closes as it would without them.
pub(crate) fn withdraw_exports(seg: &Arc<Segment>, role: usize) {
    let mut all = pending();
    if all.exports.is_empty() {
        return;
    }
    let (gone, keep): (Vec<Export>, Vec<Export>) = all
        .exports
        .drain(..)
        .partition(|e| Arc::ptr_eq(&e.seg, seg) && e.role == role && !e.taken);
    all.exports = keep;
    let mut segs = Vec::with_capacity(gone.len());
    for e in gone {
        e.seg.release_prepared(e.fd, e.slot);
        segs.push(e.seg);
    }
    drop(all);
    drop(segs); // after the lock: a segment's drop may take the fork gate
}

impl Taken {
    /// The descriptors the child must inherit.
    pub(crate) fn inherited(&self) -> &[RawFd] {
        &self.inherited
    }

    /// The child was spawned: it holds its copies of the descriptions; close ours (under the lock, so
    /// a concurrent fork never copies them).
    pub(crate) fn handed_to(self, child: u32) {
        let mut all = pending();
        let (mine, rest): (Vec<Export>, Vec<Export>) = all
            .exports
            .drain(..)
            .partition(|e| e.taken && self.keys.contains(&(e.fd.as_raw_fd(), e.slot, e.role)));
        all.exports = rest;
        let mut segs = Vec::with_capacity(mine.len());
        for e in mine {
            e.seg.set_slot_pid(e.slot, child);
            drop(e.fd);
            segs.push(e.seg);
        }
        drop(all);
        drop(segs); // after the lock: a segment's drop may take the fork gate
    }

    /// The spawn failed: keep the exports for a later spawn.
    pub(crate) fn put_back(self) {
        for e in pending().exports.iter_mut() {
            if e.taken && self.keys.contains(&(e.fd.as_raw_fd(), e.slot, e.role)) {
                e.taken = false;
            }
        }
    }
}

/// In a spawned child: the descriptors it inherited for the handles in its arguments. They become
/// close-on-exec at once (a program this child starts must not hold them), are given up by children
/// it forks, and belong to the first [`take_inherited`] of each.
pub(crate) fn set_inherited(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: plain fcntl on a descriptor number; an invalid one makes it fail, nothing more.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    pending().inherited.extend_from_slice(fds);
}

/// Takes the inherited descriptor `fd`, if this process inherited it for a handle and it has not
/// been taken yet.
pub(crate) fn take_inherited(fd: RawFd) -> Option<OwnedFd> {
    let mut p = pending();
    let i = p.inherited.iter().position(|&x| x == fd)?;
    p.inherited.swap_remove(i);
    // SAFETY: the descriptor was inherited for this handle and listed once; it leaves the list here,
    // so it has exactly one owner from now on.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
