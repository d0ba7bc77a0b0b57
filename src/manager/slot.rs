//! Container slots: where each dict and list keeps its lock, its seqlock, its root and its redo
//! record; and the directory that hands slots out.
//!
//! **Writers** take the slot's robust mutex. A change is staged first: new blocks are allocated (the
//! allocator writes each one's `Ref` into the journal's `new` words in the same all-or-nothing step)
//! and filled while nobody can reach them. Then the *redo record* is written (the one word to change
//! and its new value, or up to 64 bytes to copy in place; the new length; up to two blocks to free;
//! a table or array to drain), and `op = REDO` commits it. Applying it (idempotent) makes the sequence
//! odd, writes the word, sets the length, makes the sequence even, forgets `new`, and frees the old
//! blocks (each free clears its journal word in the same step, so nothing is freed twice).
//!
//! **Recovery.** The next holder after a writer died (the mutex says so), or after a writer gave up
//! half way, first takes the allocator's mutex (which rolls back any allocation the dead writer left
//! half done), then: `op = REDO` → applies the record (the change happens, whole); otherwise frees the
//! blocks in `new` (the change never happened). Either way the sequence ends even. Every update that
//! returned `Ok` is there, and no part of one that did not.
//!
//! **Readers** write nothing shared: they read the sequence (even), copy what they need, and read
//! the sequence again; a change means a writer was inside, and they try again. Blocks are freed only
//! after the change that unlinked them made the sequence move, so a reader holding a stale `Ref`
//! always notices. After [`READ_TRIES`] failed tries (a writer that keeps writing, or one stopped or
//! dead inside its window) a reader takes the mutex instead, which waits out a live writer (until the
//! handle's deadline) and repairs a dead one's change.

use super::alloc;
use super::arena::{Arena, ArenaCtl, Ref};
use crate::error::{Error, Result};
use crate::hooks::{Point, hit};
use crate::wait::Deadline;
use crate::wait::mutex::RawMutex;
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Duration;

pub(crate) const SLOTS_PER_PAGE: usize = 64;
/// Pages of slots a directory may have (65,536 containers).
pub(crate) const MAX_PAGES: usize = 1024;
pub(crate) const SLOT_BYTES: u64 = std::mem::size_of::<Slot>() as u64;
const PAGE_BYTES: u64 = SLOT_BYTES * SLOTS_PER_PAGE as u64;
const _: () = assert!(SLOT_BYTES % 64 == 0);

/// Slot states.
const FREE: u64 = 0;
const INIT: u64 = 1;
const LIVE: u64 = 2;

/// Container kinds.
pub(crate) const DICT: u64 = 1;
pub(crate) const LIST: u64 = 2;

/// Journal ops.
const IDLE: u64 = 0;
const REDO: u64 = 1;

/// What the first old block is, for the free after a commit.
pub(crate) const DRAIN_NONE: u64 = 0;
/// A dict's table: its entries are freed too.
pub(crate) const DRAIN_TABLE: u64 = 1;
/// A list's array: its first `drain_len` elements are freed too.
pub(crate) const DRAIN_ARRAY: u64 = 2;

/// A dict bucket keeps an entry's `Ref` in its low 56 bits (a hash tag above).
pub(crate) const REF_MASK: u64 = (1 << 56) - 1;
/// Bytes a redo record can copy in place.
pub(crate) const INLINE: usize = 64;

/// Tries of a lock-free read before it takes the mutex.
pub(crate) const READ_TRIES: u32 = 64;

/// One container's shared state. All atomics: any bytes are a valid value.
#[repr(C, align(64))]
pub(crate) struct Slot {
    pub(crate) lock: RawMutex,
    /// Odd while a writer changes what readers can reach.
    pub(crate) seq: AtomicU64,
    pub(crate) state: AtomicU64,
    /// Which container lives here (never 0 while live; a destroyed one's handles see another; ids
    /// start at a random number per arena, see `init_dir`).
    pub(crate) id: AtomicU64,
    pub(crate) kind: AtomicU64,
    /// Fingerprints of the key and value (or element) types.
    pub(crate) fp_k: AtomicU64,
    pub(crate) fp_v: AtomicU64,
    /// A dict's hash seed.
    pub(crate) seed: AtomicU64,
    /// A dict's table or a list's array (0: none yet).
    pub(crate) root: AtomicU64,
    /// Entries or elements.
    pub(crate) len: AtomicU64,
    /// A dict's buckets in use, tombstones included.
    pub(crate) filled: AtomicU64,
    j: Journal,
}

/// The redo record.
#[repr(C)]
struct Journal {
    op: AtomicU64,
    /// Blocks allocated for the change in progress.
    new: [AtomicU64; 2],
    /// Blocks to free once it is applied.
    old: [AtomicU64; 2],
    word: AtomicU64,
    to: AtomicU64,
    len: AtomicU64,
    filled: AtomicU64,
    drain: AtomicU64,
    drain_len: AtomicU64,
    /// When non-zero: copy these many bytes of `inline` to `word` (a byte position) instead of
    /// storing `to`.
    inline_len: AtomicU64,
    inline: [AtomicU64; INLINE / 8],
}

/// The directory: who hands out slots (in the arena's control block).
#[repr(C)]
pub(crate) struct DirCtl {
    pub(crate) mutex: RawMutex,
    pub(crate) next_id: AtomicU64,
    pub(crate) npages: AtomicU64,
    pub(crate) pages: [AtomicU64; MAX_PAGES],
}

/// The namespace (a dict of names) lives in slot 0 with this id.
pub(crate) const NAMESPACE_ID: u64 = 1;

/// Writes a new arena's directory: its first page (in the control block), with the namespace in
/// slot 0. Nobody else sees the arena yet.
pub(crate) fn init_dir(ctl: &ArenaCtl, base: *mut u8) {
    let r = Ordering::Relaxed;
    let page = &ctl.first_page as *const _ as usize - base as usize;
    ctl.dir.pages[0].store(Ref::new(0, page as u64).0, r);
    ctl.dir.npages.store(1, r);
    // Ids start at a random number per arena: a handle names its arena by name (or file) and its
    // container by slot and id, so an arena made again under the same name must not give its
    // containers the ids an earlier one gave out (an old handle would open the new container).
    // Below 2^62: no wrap however many containers are made.
    let first = (super::arena::random_seed() >> 2).max(NAMESPACE_ID + 1);
    ctl.dir.next_id.store(first, r);
    let s = &ctl.first_page[0];
    let (fk, fv) = super::manager::namespace_fingerprints();
    s.kind.store(DICT, r);
    s.fp_k.store(fk, r);
    s.fp_v.store(fv, r);
    s.seed.store(
        ctl.prefix.load(r).rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
        r,
    );
    s.id.store(NAMESPACE_ID, r);
    s.state.store(LIVE, r);
}

/// A process's handle on one container: the arena, the slot, the container's id.
pub(crate) struct Container {
    pub(crate) arena: Arc<Arena>,
    pub(crate) index: u32,
    pub(crate) id: u64,
    pub(crate) timeout: Option<Duration>,
    /// The slot's `Ref` and address (slot pages are never freed, so both stay right).
    slot_ref: Ref,
    slot: *const Slot,
}

// SAFETY: `slot` points into the arena's mapping, which `arena` keeps alive; `Slot` is all atomics.
unsafe impl Send for Container {}
// SAFETY: as above.
unsafe impl Sync for Container {}

impl Drop for Container {
    fn drop(&mut self) {
        // Dropped with a closure just forked: the child owns this handle (see `segment::registry`).
        crate::segment::moving::note_segment_moved(&self.arena.seg);
    }
}

impl Clone for Container {
    fn clone(&self) -> Self {
        Container {
            arena: self.arena.clone(),
            index: self.index,
            id: self.id,
            timeout: self.timeout,
            slot_ref: self.slot_ref,
            slot: self.slot,
        }
    }
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);
thread_local! {
    static THREAD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A token for the calling thread, unique within this process (to tell a re-entrant call from
/// another thread of the same process waiting its turn).
fn thread_token() -> u64 {
    THREAD.with(|t| {
        if t.get() == 0 {
            t.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    })
}

/// The `Ref` and address of slot `index`.
fn locate(arena: &Arena, index: u32) -> Result<(Ref, *const Slot)> {
    let (page, i) = (
        index as usize / SLOTS_PER_PAGE,
        index as usize % SLOTS_PER_PAGE,
    );
    let dir = &arena.ctl().dir;
    let n = (dir.npages.load(Ordering::Acquire) as usize).min(MAX_PAGES);
    if page >= n {
        return Err(Error::Closed);
    }
    let r = Ref(dir.pages[page].load(Ordering::Relaxed)).add(i as u64 * SLOT_BYTES);
    let p = arena.at(r, SLOT_BYTES)?;
    if p as usize % 64 != 0 {
        return Err(Error::Corrupt);
    }
    Ok((r, p as *const Slot))
}

impl Container {
    /// A handle on the container `id` in slot `index`, which must be a live `kind` of these types.
    pub(crate) fn attach(
        arena: Arc<Arena>,
        index: u32,
        id: u64,
        kind: u64,
        fps: (u64, u64),
    ) -> Result<Container> {
        let (slot_ref, slot) = locate(&arena, index)?;
        let c = Container {
            arena,
            index,
            id,
            timeout: None,
            slot_ref,
            slot,
        };
        let s = c.slot();
        c.check_live(s)?;
        if s.kind.load(Ordering::Relaxed) != kind
            || s.fp_k.load(Ordering::Relaxed) != fps.0
            || s.fp_v.load(Ordering::Relaxed) != fps.1
        {
            return Err(Error::Incompatible);
        }
        Ok(c)
    }

    /// A handle on the live container `id` in slot `index`, whatever its kind and types (audit).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn attach_any(arena: Arc<Arena>, index: u32, id: u64) -> Result<Container> {
        let (slot_ref, slot) = locate(&arena, index)?;
        let c = Container {
            arena,
            index,
            id,
            timeout: Some(Duration::from_secs(10)),
            slot_ref,
            slot,
        };
        c.check_live(c.slot())?;
        Ok(c)
    }

    #[inline]
    pub(crate) fn slot(&self) -> &Slot {
        // SAFETY: checked in `locate` (in the mapping, aligned); all atomics; the arena outlives `self`.
        unsafe { &*self.slot }
    }

    /// Whether this container still lives (not destroyed).
    #[inline]
    fn check_live(&self, s: &Slot) -> Result<()> {
        if s.state.load(Ordering::Acquire) != LIVE || s.id.load(Ordering::Relaxed) != self.id {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// A lock-free read: `f` copies what it needs; it runs again if a writer changed anything
    /// meanwhile, and under the mutex after [`READ_TRIES`] tries. Errors met while a writer was inside
    /// are retried, not returned.
    #[inline]
    pub(crate) fn read<R>(&self, mut f: impl FnMut(&Arena, &Slot) -> Result<R>) -> Result<R> {
        let s = self.slot();
        for i in 0..READ_TRIES {
            // ORDERING: Acquire pairs with the writer's Release of the even sequence: what it wrote
            // before is visible to our copies.
            let s1 = s.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let r = self.check_live(s).and_then(|()| f(&self.arena, s));
                // ORDERING: our copies happen before the second read of the sequence (pairs with
                // the writer's Release fence after making it odd).
                fence(Ordering::Acquire);
                if s.seq.load(Ordering::Relaxed) == s1 {
                    return r;
                }
            }
            if i < 8 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let g = self.lock()?;
        f(&self.arena, g.s)
    }

    /// Takes the mutex (until the handle's deadline), repairs what a dead or failed writer left, and
    /// checks that the container lives.
    pub(crate) fn lock(&self) -> Result<Locked<'_>> {
        let me = self.arena.me()?;
        let s = self.slot();
        let thread = thread_token();
        if s.lock.holder() == me && s.lock.thread.load(Ordering::Relaxed) == thread {
            // Called from inside `modify`'s closure on the same container: waiting would wait
            // for ourselves for ever.
            return Err(Error::Misuse);
        }
        let deadline = Deadline::after(self.timeout);
        s.lock.lock(&self.arena.seg, me, deadline)?;
        s.lock.thread.store(thread, Ordering::Relaxed);
        let g = Locked {
            c: self,
            s,
            me,
            deadline,
            ag: RefCell::new(None),
        };
        let j = &s.j;
        if s.lock.is_inconsistent()
            || j.op.load(Ordering::Acquire) != IDLE
            || j.new[0].load(Ordering::Relaxed) != 0
            || j.new[1].load(Ordering::Relaxed) != 0
            || s.seq.load(Ordering::Relaxed) & 1 != 0
        {
            g.settle()?;
            s.lock.mark_consistent();
        }
        self.check_live(s)?;
        hit(Point::ManagerLocked);
        Ok(g)
    }

    /// The `Ref` of a word of this slot.
    fn field(&self, w: &AtomicU64) -> Ref {
        self.slot_ref
            .add((w as *const AtomicU64 as usize - self.slot as usize) as u64)
    }

    /// The `Ref` of the slot's `len` word, of its `root` word.
    pub(crate) fn len_ref(&self) -> Ref {
        self.field(&self.slot().len)
    }

    pub(crate) fn root_ref(&self) -> Ref {
        self.field(&self.slot().root)
    }

    /// The same container with calls bounded by `timeout`.
    pub(crate) fn with_timeout(&self, timeout: Option<Duration>) -> Container {
        let mut c = self.clone();
        c.timeout = timeout;
        c
    }
}

/// One change, as its redo record will say.
pub(crate) struct Change<'b> {
    /// The word to change (or the first byte to copy `bytes` to).
    pub(crate) word: Ref,
    pub(crate) to: u64,
    pub(crate) bytes: Option<&'b [u8]>,
    pub(crate) len: u64,
    pub(crate) filled: u64,
    /// Blocks to free once applied (`Ref::NULL`: none).
    pub(crate) old: [Ref; 2],
    pub(crate) drain: u64,
    pub(crate) drain_len: u64,
}

impl Change<'_> {
    /// Stores `to` at `word`; length and count as given; nothing to free.
    pub(crate) fn store(word: Ref, to: u64, len: u64, filled: u64) -> Self {
        Change {
            word,
            to,
            bytes: None,
            len,
            filled,
            old: [Ref::NULL; 2],
            drain: DRAIN_NONE,
            drain_len: 0,
        }
    }

    pub(crate) fn freeing(mut self, old: Ref) -> Self {
        self.old[0] = old;
        self
    }

    pub(crate) fn freeing2(mut self, old: Ref) -> Self {
        self.old[1] = old;
        self
    }

    pub(crate) fn draining(mut self, old: Ref, drain: u64, drain_len: u64) -> Self {
        self.old[0] = old;
        self.drain = drain;
        self.drain_len = drain_len;
        self
    }
}

/// A container's mutex, held (released on drop), with the allocator's mutex once asked for.
pub(crate) struct Locked<'a> {
    pub(crate) c: &'a Container,
    pub(crate) s: &'a Slot,
    me: u32,
    deadline: Deadline,
    ag: RefCell<Option<alloc::Guard<'a>>>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // A change given up after its blocks were allocated: give them back now if the allocator is
        // ours (else the next holder does, see `Container::lock`).
        let j = &self.s.j;
        if j.op.load(Ordering::Relaxed) == IDLE {
            for k in 0..2 {
                let r = j.new[k].load(Ordering::Relaxed);
                if r != 0 {
                    if let Some(g) = self.ag.borrow().as_ref() {
                        let _ = g.free(Ref(r), Some(self.c.field(&j.new[k])));
                    }
                }
            }
        }
        drop(self.ag.borrow_mut().take());
        self.s.lock.unlock();
    }
}

impl<'a> Locked<'a> {
    pub(crate) fn arena(&self) -> &'a Arena {
        &self.c.arena
    }

    /// The allocator, taken on first use and held until the change is done.
    fn with_alloc<R>(&self, f: impl FnOnce(&alloc::Guard<'a>) -> Result<R>) -> Result<R> {
        let mut ag = self.ag.borrow_mut();
        if ag.is_none() {
            *ag = Some(self.c.arena.lock_alloc(self.me, self.deadline)?);
        }
        f(ag.as_ref().ok_or(Error::Corrupt)?)
    }

    fn release_alloc(&self) {
        drop(self.ag.borrow_mut().take());
    }

    /// Allocates a block of `payload` bytes for the change in progress (recorded as new block
    /// `which`, 0 or 1).
    pub(crate) fn alloc(&self, payload: u64, which: usize) -> Result<Ref> {
        let into = self.c.field(&self.s.j.new[which & 1]);
        self.with_alloc(|g| g.alloc(payload, into))
    }

    /// Writes the redo record, commits it and applies it.
    pub(crate) fn commit(&self, ch: Change<'_>) -> Result<()> {
        if !ch.old[0].is_null() || !ch.old[1].is_null() {
            // The frees after the commit need the allocator: take it now, so that a stopped
            // holder makes this call time out before anything changed, never after (a `Timeout`
            // means the change did not happen).
            self.with_alloc(|_| Ok(()))?;
        }
        let j = &self.s.j;
        let r = Ordering::Relaxed;
        j.word.store(ch.word.0, r);
        j.to.store(ch.to, r);
        j.len.store(ch.len, r);
        j.filled.store(ch.filled, r);
        j.old[0].store(ch.old[0].0, r);
        j.old[1].store(ch.old[1].0, r);
        j.drain.store(ch.drain, r);
        j.drain_len.store(ch.drain_len, r);
        match ch.bytes {
            Some(b) if b.len() <= INLINE => {
                for (w, part) in j.inline.iter().zip(b.chunks(8)) {
                    let mut word = [0u8; 8];
                    word[..part.len()].copy_from_slice(part);
                    w.store(u64::from_ne_bytes(word), r);
                }
                j.inline_len.store(b.len() as u64, r);
            }
            Some(_) => return Err(Error::Corrupt),
            None => j.inline_len.store(0, r),
        }
        hit(Point::ManagerStaged);
        // SYNC POINT: the commit. Before it, recovery forgets the change; after it, recovery redoes
        // it. ORDERING: Release keeps the record's words before it.
        j.op.store(REDO, Ordering::Release);
        self.apply()
    }

    /// Applies the redo record (idempotent): the change under an odd sequence, then the frees.
    fn apply(&self) -> Result<()> {
        let (s, j) = (self.s, &self.s.j);
        let r = Ordering::Relaxed;
        let odd = s.seq.load(r) | 1;
        s.seq.store(odd, r);
        // ORDERING: readers that see what follows see the odd sequence on their second read.
        fence(Ordering::Release);
        let done = (|| -> Result<()> {
            let word = Ref(j.word.load(r));
            let n = j.inline_len.load(r) as usize;
            if n > 0 {
                if n > INLINE {
                    return Err(Error::Corrupt);
                }
                let mut buf = [0u8; INLINE];
                for (k, w) in j.inline.iter().take(n.div_ceil(8)).enumerate() {
                    buf[k * 8..k * 8 + 8].copy_from_slice(&w.load(r).to_ne_bytes());
                }
                self.c.arena.copy_in(word, &buf[..n])?;
            } else {
                self.c.arena.word(word)?.store(j.to.load(r), r);
            }
            hit(Point::ManagerCommitting);
            s.len.store(j.len.load(r), r);
            s.filled.store(j.filled.load(r), r);
            Ok(())
        })();
        // ORDERING: Release publishes the change (and the blocks filled before it) to readers that
        // Acquire the even sequence.
        s.seq.store(odd.wrapping_add(1), Ordering::Release);
        done?;
        j.new[0].store(0, r);
        j.new[1].store(0, r);
        hit(Point::ManagerFreeing);
        self.release_old()?;
        j.op.store(IDLE, Ordering::Release);
        self.release_alloc();
        Ok(())
    }

    /// Frees what the applied change replaced: a drained table's entries or array's elements, then
    /// the old blocks. Each free clears the word that named the block, so a recovery that does this
    /// again frees each block once. The allocator is held from before the commit (see `commit`)
    /// to the end: releasing it half way would let a stopped holder make a committed change
    /// return `Timeout`.
    fn release_old(&self) -> Result<()> {
        let j = &self.s.j;
        let r = Ordering::Relaxed;
        let old = Ref(j.old[0].load(r));
        let drain = j.drain.load(r);
        if !old.is_null() && drain != DRAIN_NONE {
            let a = self.arena();
            let n = match drain {
                DRAIN_TABLE => a.load(old)?,
                DRAIN_ARRAY => j.drain_len.load(r).min(a.load(old)?),
                _ => return Err(Error::Corrupt),
            };
            // Bounded by the block holding the table or array.
            a.at(old, 8u64.saturating_add(n.saturating_mul(8)))?;
            for i in 0..n {
                let w = old.add(8 + 8 * i);
                let v = a.load(w)?;
                let target = match drain {
                    DRAIN_TABLE if v > 1 => v & REF_MASK,
                    DRAIN_ARRAY if v != 0 => v,
                    _ => continue,
                };
                self.with_alloc(|g| g.free(Ref(target), Some(w)))?;
            }
        }
        for k in 0..2 {
            let b = Ref(j.old[k].load(r));
            if !b.is_null() {
                let at = self.c.field(&j.old[k]);
                self.with_alloc(|g| g.free(b, Some(at)))?;
            }
        }
        Ok(())
    }

    /// Repairs what a dead (or failed) writer left: redoes a committed change, frees the blocks of
    /// one that was not committed, and makes the sequence even.
    fn settle(&self) -> Result<()> {
        let (s, j) = (self.s, &self.s.j);
        // The allocator first: it rolls back an allocation or free the writer left half done (so
        // `new` and `old` are exact), and is held while we read them.
        self.with_alloc(|_| Ok(()))?;
        match j.op.load(Ordering::Acquire) {
            REDO => self.apply()?,
            IDLE => {
                for k in 0..2 {
                    let r = j.new[k].load(Ordering::Relaxed);
                    if r != 0 {
                        let at = self.c.field(&j.new[k]);
                        self.with_alloc(|g| g.free(Ref(r), Some(at)))?;
                    }
                    j.old[k].store(0, Ordering::Relaxed);
                }
            }
            _ => return Err(Error::Corrupt),
        }
        let q = s.seq.load(Ordering::Relaxed);
        if q & 1 != 0 {
            s.seq.store(q.wrapping_add(1), Ordering::Release);
        }
        self.release_alloc();
        Ok(())
    }

    /// Marks the slot free for another container (after its contents were drained).
    pub(crate) fn retire(&self) {
        self.s.id.store(0, Ordering::Relaxed);
        self.s.state.store(FREE, Ordering::Release);
    }
}

// ---- the directory ------------------------------------------------------------------------------

/// The directory's mutex, held.
struct DirGuard<'a>(&'a DirCtl);

impl Drop for DirGuard<'_> {
    fn drop(&mut self) {
        self.0.mutex.unlock();
    }
}

/// Makes a new, empty container of `kind` for these types, and a handle on it.
pub(crate) fn new_container(
    arena: &Arc<Arena>,
    kind: u64,
    fps: (u64, u64),
    timeout: Option<Duration>,
) -> Result<Container> {
    let seed = super::arena::random_seed();
    let (index, id) = create(arena, kind, fps, seed, timeout)?;
    Ok(Container::attach(arena.clone(), index, id, kind, fps)?.with_timeout(timeout))
}

/// Makes a new, empty container of `kind` for these types in a free slot; returns its slot and id.
fn create(
    arena: &Arena,
    kind: u64,
    fps: (u64, u64),
    seed: u64,
    timeout: Option<Duration>,
) -> Result<(u32, u64)> {
    let me = arena.me()?;
    let deadline = Deadline::after(timeout);
    let dir = &arena.ctl().dir;
    dir.mutex.lock(&arena.seg, me, deadline)?;
    let _g = DirGuard(dir);
    if dir.mutex.is_inconsistent() {
        recover_dir(arena, me, deadline)?;
        dir.mutex.mark_consistent();
    }
    let n = (dir.npages.load(Ordering::Acquire) as usize).min(MAX_PAGES);
    let mut found = None;
    'pages: for p in 0..n {
        for i in 0..SLOTS_PER_PAGE {
            let index = (p * SLOTS_PER_PAGE + i) as u32;
            let (_, s) = locate(arena, index)?;
            // SAFETY: checked by `locate`; all atomics.
            if unsafe { &*s }.state.load(Ordering::Acquire) == FREE {
                found = Some(index);
                break 'pages;
            }
        }
    }
    let index = match found {
        Some(i) => i,
        None => {
            if n >= MAX_PAGES {
                return Err(Error::Full);
            }
            let g = arena.lock_alloc(me, deadline)?;
            g.alloc(PAGE_BYTES + 64, arena.ctl_ref(&dir.pages[n]))?;
            drop(g);
            adopt_page(arena, n)?;
            (n * SLOTS_PER_PAGE) as u32
        }
    };
    let (_, s) = locate(arena, index)?;
    // SAFETY: checked by `locate`; all atomics.
    let s = unsafe { &*s };
    let r = Ordering::Relaxed;
    s.state.store(INIT, r);
    s.kind.store(kind, r);
    s.fp_k.store(fps.0, r);
    s.fp_v.store(fps.1, r);
    s.seed.store(seed, r);
    s.root.store(0, r);
    s.len.store(0, r);
    s.filled.store(0, r);
    let j = &s.j;
    for w in [
        &j.op,
        &j.new[0],
        &j.new[1],
        &j.old[0],
        &j.old[1],
        &j.inline_len,
    ] {
        w.store(0, r);
    }
    let q = s.seq.load(r);
    s.seq.store((q | 1).wrapping_add(1), r);
    s.lock.prefer_cheap_release();
    let id = dir.next_id.fetch_add(1, r).max(NAMESPACE_ID + 1);
    s.id.store(id, r);
    // ORDERING: Release: a handle that Acquires LIVE sees the fields above.
    s.state.store(LIVE, Ordering::Release);
    Ok((index, id))
}

/// Makes the block just allocated into `pages[n]` page `n`: its first 64-aligned byte (a slot is a
/// cache line's multiple), zeroed, then counted. Idempotent until counted.
fn adopt_page(arena: &Arena, n: usize) -> Result<()> {
    let dir = &arena.ctl().dir;
    let r = Ref(dir.pages[n].load(Ordering::Relaxed));
    let aligned = Ref::new(r.chunk(), r.offset().div_ceil(64) * 64);
    arena.zero(aligned, PAGE_BYTES)?;
    dir.pages[n].store(aligned.0, Ordering::Relaxed);
    // ORDERING: Release: the zeroed page before the count that lets others at it.
    dir.npages.store(n as u64 + 1, Ordering::Release);
    Ok(())
}

/// After a creator died: counts a page it allocated (zeroing it again) and frees the slots it was
/// filling. The allocator is taken first, so that an allocation it left half done is rolled back.
fn recover_dir(arena: &Arena, me: u32, deadline: Deadline) -> Result<()> {
    let g = arena.lock_alloc(me, deadline)?;
    let dir = &arena.ctl().dir;
    let n = (dir.npages.load(Ordering::Acquire) as usize).min(MAX_PAGES);
    if n < MAX_PAGES && dir.pages[n].load(Ordering::Relaxed) != 0 {
        adopt_page(arena, n)?;
    }
    drop(g);
    let n = (dir.npages.load(Ordering::Acquire) as usize).min(MAX_PAGES);
    for index in 0..(n * SLOTS_PER_PAGE) as u32 {
        let (_, s) = locate(arena, index)?;
        // SAFETY: checked by `locate`; all atomics.
        let s = unsafe { &*s };
        if s.state.load(Ordering::Acquire) == INIT {
            s.id.store(0, Ordering::Relaxed);
            s.state.store(FREE, Ordering::Release);
        }
    }
    Ok(())
}

/// A slot in use, for the audit: `(index, id, kind, root, len)`.
#[cfg(feature = "test-hooks")]
pub(crate) type LiveSlot = (u32, u64, u64, Ref, u64);

/// Slots in use and their containers' roots, for the audit (test hook).
#[cfg(feature = "test-hooks")]
pub(crate) fn live_slots(arena: &Arena) -> Result<Vec<LiveSlot>> {
    let dir = &arena.ctl().dir;
    let n = (dir.npages.load(Ordering::Acquire) as usize).min(MAX_PAGES);
    let mut out = Vec::new();
    for index in 0..(n * SLOTS_PER_PAGE) as u32 {
        let (_, s) = locate(arena, index)?;
        // SAFETY: checked by `locate`; all atomics.
        let s = unsafe { &*s };
        if s.state.load(Ordering::Acquire) == LIVE {
            out.push((
                index,
                s.id.load(Ordering::Relaxed),
                s.kind.load(Ordering::Relaxed),
                Ref(s.root.load(Ordering::Relaxed)),
                s.len.load(Ordering::Relaxed),
            ));
        }
    }
    Ok(out)
}

/// The slot pages allocated from the heap (audit).
#[cfg(feature = "test-hooks")]
pub(crate) fn heap_pages(arena: &Arena) -> Vec<Ref> {
    let dir = &arena.ctl().dir;
    let n = (dir.npages.load(Ordering::Acquire) as usize).min(MAX_PAGES);
    (1..n)
        .map(|p| Ref(dir.pages[p].load(Ordering::Relaxed)))
        .collect()
}
