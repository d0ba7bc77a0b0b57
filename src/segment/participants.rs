//! Participants: who uses a segment, and whether they live.
//!
//! Every process that maps a segment holds one participant slot, through the slot's liveness token
//! (see `sys::token`), and a claim id (slot and generation) backed by a claim token: lock words and
//! queue slots record claim ids, and the kernel alone says whether an id's holder lives. A role (an
//! end of a pipe) is a bitmask over slots, so "is the role still held?" is one load, and a dead
//! holder is removed from it exactly once, by whoever takes its token first (the reaper).

use super::header::{MAX_ROLES, MAX_SLOTS, ROLES_OFFSET, SLOT_SIZE, SLOTS_OFFSET};
use super::{Segment, names_this_file, registry, reopen};
use crate::error::{Error, Result};
use crate::sys::token;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A claim id is `generation << CLAIM_SLOT_BITS | slot`: 29 bits in all, so that a queue slot's control
/// word can hold it beside its lap and state (see `ring::mpmc`).
pub(crate) const CLAIM_BITS: u32 = 29;
const CLAIM_SLOT_BITS: u32 = 8;
/// Generations of a claim id run from 1 to this (never 0, so an id is never 0; never all ones, so an
/// id is never `ring::mpmc`'s SKIP marker). A slot taken again gets the next generation, so a stale
/// claim id (of a dead holder) could name a live process only after its slot was taken 2^21 - 2 more
/// times, each by a process that opened the segment, before anyone repaired what the id marks; and
/// even then the kernel, not shared memory, says whether the id's holder lives (see `token`).
pub(crate) const CLAIM_GEN_MAX: u32 = (1 << (CLAIM_BITS - CLAIM_SLOT_BITS)) - 2;
const _: () = assert!(MAX_SLOTS <= 1 << CLAIM_SLOT_BITS);
const _: () = assert!(
    ((CLAIM_GEN_MAX as u64) << CLAIM_SLOT_BITS | (MAX_SLOTS as u64 - 1)) < (1 << CLAIM_BITS) - 1
);
const SLOT_FREE: u32 = 0;
const SLOT_LIVE: u32 = 1;

/// One participant slot in shared memory.
#[repr(C)]
struct Slot {
    state: AtomicU32,
    pid: AtomicU32,
    /// Bumped each time the slot is taken, so a stale claim (see [`Segment::claim_id`]) is told apart
    /// from its new holder's.
    generation: AtomicU32,
    /// The CPU this participant last waited on, plus one (0: not known). Written only when it changes.
    cpu: AtomicU32,
}
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_SIZE);

/// The role block in shared memory.
#[repr(C)]
struct Roles {
    masks: [AtomicU64; MAX_ROLES],
    died: AtomicU32,
}
const _: () = assert!(ROLES_OFFSET + std::mem::size_of::<Roles>() <= SLOTS_OFFSET);

impl Segment {
    fn roles(&self) -> &Roles {
        // SAFETY: ROLES_OFFSET is 64-aligned and the block fits before SLOTS_OFFSET; all fields are
        // atomics, for which any bit pattern is valid.
        unsafe { &*(self.map.as_ptr().add(ROLES_OFFSET) as *const Roles) }
    }

    fn slot_at(&self, i: u32) -> &Slot {
        assert!(i < self.hdr.n_slots);
        // SAFETY: i < n_slots (validated <= MAX_SLOTS) and the table ends before kind_offset <= size;
        // `Slot` is all atomics.
        unsafe { &*(self.map.as_ptr().add(SLOTS_OFFSET + i as usize * SLOT_SIZE) as *const Slot) }
    }

    /// Makes sure this process owns its token and slot: a child forked without [`crate::Process::fork`]
    /// shares its parent's open file description, so it must take its own before it does anything.
    #[inline]
    pub(crate) fn ensure_owner(&self) -> Result<()> {
        if self.owner_gen.load(Ordering::Relaxed) == registry::fork_generation() {
            return Ok(());
        }
        self.adopt_after_fork()
    }

    /// Also the first use, in a forked child, of a handle its closure does not own (its slot is
    /// `NO_SLOT`: no roles to copy).
    #[cold]
    pub(super) fn adopt_after_fork(&self) -> Result<()> {
        let _gate = registry::fork_gate(); // the new token is ours before a fork can copy it
        let gen_now = registry::fork_generation();
        crate::sys::membarrier::register();
        let new_fd = reopen(self.raw_fd())?;
        let slot = self.claim_slot(new_fd.as_raw_fd())?;
        self.copy_roles(self.my_slot(), slot);
        let old = self.fd.swap(new_fd.into_raw_fd(), Ordering::Relaxed);
        // SAFETY: `old` was this handle's own descriptor (a copy of the parent's); nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(old) });
        self.set_slot(slot);
        self.owner_gen.store(gen_now, Ordering::Relaxed);
        Ok(())
    }

    /// This process's slot.
    #[inline]
    pub(crate) fn my_slot(&self) -> u32 {
        self.slot.load(Ordering::Relaxed)
    }

    /// Switches this handle to participant slot `slot`, whose token its descriptor holds, and works
    /// out its claim id: from the slot's generation, whose claim token was taken on this descriptor
    /// when the slot was filled (for a forked or spawned child, by its parent). Taking it again is a
    /// no-op, and takes it if it somehow was not (a scribbled generation), so the id we use is always
    /// backed by a token. Never on a fast path (one `fcntl`).
    pub(crate) fn set_slot(&self, slot: u32) {
        self.slot.store(slot, Ordering::Relaxed);
        let id = if slot < self.hdr.n_slots {
            let id = claim_of(slot, self.slot_at(slot).generation.load(Ordering::Relaxed));
            match token::try_take_claim(self.raw_fd(), id) {
                Ok(true) => id,
                // Someone else holds that id's token (a scribbled generation): take a new one.
                _ => self.fill_slot(self.raw_fd(), slot).unwrap_or(id),
            }
        } else {
            0
        };
        self.claim.store(id, Ordering::Relaxed);
    }

    /// This process's identity for claim words (lock owners, queue slots): its slot and the slot's
    /// generation, never 0 (see [`CLAIM_BITS`]). Its holder keeps the claim token of that id (see
    /// `token`), so [`claim_alive`](Self::claim_alive) asks the kernel alone.
    #[inline]
    pub(crate) fn claim_id(&self) -> u32 {
        self.claim.load(Ordering::Relaxed)
    }

    /// Whether the claim `id` (from [`claim_id`](Self::claim_id)) belongs to a live participant. Only
    /// the kernel decides: an id that is not well formed names nobody (false).
    pub(crate) fn claim_alive(&self, id: u32) -> Result<bool> {
        let (slot, generation) = (id & ((1 << CLAIM_SLOT_BITS) - 1), id >> CLAIM_SLOT_BITS);
        if generation == 0 || generation > CLAIM_GEN_MAX || slot >= self.hdr.n_slots {
            return Ok(false);
        }
        if id == self.claim_id() {
            return Ok(true);
        }
        if slot == self.my_slot() {
            return Ok(false); // an earlier holder of our slot: it left or died before we came
        }
        Ok(token::claim_held(self.raw_fd(), id)?)
    }

    /// Fills slot `i`, whose token `fd` holds: a new generation, and that claim id's token, taken
    /// through `fd`. Returns the claim id.
    pub(super) fn fill_slot(&self, fd: RawFd, i: u32) -> Result<u32> {
        let s = self.slot_at(i);
        // A claim token still held by a holder on its way out (or a scribbled generation) makes us
        // move on to the next generation; a few tries suffice.
        for _ in 0..16 {
            let g = s.generation.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let g = if (1..=CLAIM_GEN_MAX).contains(&g) {
                g
            } else {
                s.generation.store(1, Ordering::Relaxed);
                1
            };
            let id = claim_of(i, g);
            if token::try_take_claim(fd, id)? {
                s.pid.store(std::process::id(), Ordering::Relaxed);
                s.state.store(SLOT_LIVE, Ordering::Release);
                return Ok(id);
            }
        }
        Err(Error::Corrupt)
    }

    /// Takes a free (or dead) slot through `fd`'s open file description.
    pub(super) fn claim_slot(&self, fd: RawFd) -> Result<u32> {
        for i in 0..self.hdr.n_slots {
            if token::try_take(fd, i)? {
                self.reap_held(i);
                if let Err(e) = self.fill_slot(fd, i) {
                    let _ = token::release(fd, i);
                    return Err(e);
                }
                return Ok(i);
            }
        }
        Err(Error::TooManyProcesses {
            limit: self.hdr.n_slots,
        })
    }

    /// Clears whatever a dead holder of slot `i` left; the caller holds `i`'s token.
    ///
    /// Where the dead holder was a role's last, `died` is set *before* its bit goes: whoever sees the
    /// role closed then reads how it closed (set after, a peer could read a death as a graceful
    /// close). If someone took the role in between (the exchange fails), the role is not closing:
    /// `died` is cleared again, as a graceful close would leave it (`drop_role_of`).
    pub(super) fn reap_held(&self, i: u32) {
        let s = self.slot_at(i);
        if i < 64 {
            let bit = 1u64 << i;
            let died = &self.roles().died;
            for r in 0..MAX_ROLES {
                let mask = &self.roles().masks[r];
                let mut cur = mask.load(Ordering::Acquire);
                while cur & bit != 0 {
                    let last = cur == bit;
                    if last {
                        died.fetch_or(1 << r, Ordering::AcqRel);
                    }
                    // ORDERING: AcqRel: `died` (above) is visible to whoever Acquires the closed mask.
                    match mask.compare_exchange(
                        cur,
                        cur & !bit,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            crate::hooks::hit(crate::hooks::Point::RoleReaped);
                            if last {
                                (self.on_role_closed)(self, r);
                            }
                            break;
                        }
                        Err(now) => {
                            if last {
                                died.fetch_and(!(1 << r), Ordering::AcqRel);
                            }
                            cur = now;
                        }
                    }
                }
            }
        }
        s.state.store(SLOT_FREE, Ordering::Release);
    }

    /// Gives slot `to` every role slot `from` holds (a child's slot, its parent's roles), each only
    /// while `from` still holds it: a role its holder closes meanwhile stays closed (an exchange, not
    /// a load and an OR, which would reopen it).
    pub(super) fn copy_roles(&self, from: u32, to: u32) {
        if from >= 64 || to >= 64 {
            return;
        }
        for r in 0..MAX_ROLES {
            let m = &self.roles().masks[r];
            let mut cur = m.load(Ordering::Acquire);
            while cur & (1 << from) != 0 {
                crate::hooks::hit(crate::hooks::Point::CopyingRoles);
                match m.compare_exchange(cur, cur | 1 << to, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
        }
    }

    /// Adds this process to the holders of `role`. Roles are masks over the first 64 slots: a process
    /// in a higher slot cannot hold one (an error, never a panic: the slot count may come from a
    /// segment another process made).
    pub(crate) fn take_role(&self, role: usize) -> Result<()> {
        self.add_role_of(self.my_slot(), role)
    }

    /// Removes this process from the holders of `role`; the last one out closes it.
    pub(crate) fn drop_role(&self, role: usize) {
        self.drop_role_of(self.my_slot(), role);
    }

    /// Adds slot `slot` to the holders of `role` (a slot prepared for a child); see
    /// [`take_role`](Self::take_role).
    pub(crate) fn add_role_of(&self, slot: u32, role: usize) -> Result<()> {
        if slot >= 64 || role >= MAX_ROLES {
            return Err(Error::io(
                std::io::ErrorKind::QuotaExceeded,
                format!(
                    "participant slot {slot} cannot hold role {role}: roles need a slot below 64"
                ),
            ));
        }
        self.roles().masks[role].fetch_or(1 << slot, Ordering::AcqRel);
        Ok(())
    }

    /// Removes slot `slot` from the holders of `role`; the last one out closes it.
    pub(crate) fn drop_role_of(&self, slot: u32, role: usize) {
        if slot >= 64 {
            return;
        }
        let bit = 1u64 << slot;
        let mask = &self.roles().masks[role];
        if mask.load(Ordering::Acquire) & bit == 0 {
            return; // not a holder (only the holder, or its reaper, removes its bit)
        }
        // A graceful way out: `died` says how the role's *last* holder left, and an earlier holder's
        // death is history once someone else held the role. Cleared before our bit goes, so a peer
        // that sees the role closed by us reads it clear; a holder that dies later sets it again.
        self.roles()
            .died
            .fetch_and(!(1u32 << role), Ordering::AcqRel);
        // ORDERING: Release, so that everything published before closing is visible to a peer that
        // Acquires the closed role.
        let prev = mask.fetch_and(!bit, Ordering::AcqRel);
        if prev & bit != 0 && prev & !bit == 0 {
            (self.on_role_closed)(self, role);
        }
    }

    /// Whether anyone (alive, or dead and not yet reaped) holds `role`.
    #[inline]
    pub(crate) fn role_open(&self, role: usize) -> bool {
        self.roles().masks[role].load(Ordering::Acquire) != 0
    }

    /// Whether this process is the only holder of `role` (a dead holder not yet reaped still counts).
    pub(crate) fn role_held_only_by_me(&self, role: usize) -> bool {
        let me = self.my_slot();
        me < 64 && self.roles().masks[role].load(Ordering::Acquire) == 1u64 << me
    }

    /// The roles this process holds now (bit `r`: role `r`).
    pub(crate) fn my_roles(&self) -> u32 {
        let me = self.my_slot();
        (0..MAX_ROLES)
            .filter(|&r| me < 64 && self.roles().masks[r].load(Ordering::Acquire) & 1 << me != 0)
            .fold(0, |acc, r| acc | 1 << r)
    }

    /// Whether `role` closed because its last holder died.
    pub(crate) fn role_died(&self, role: usize) -> bool {
        self.roles().died.load(Ordering::Acquire) & (1 << role) != 0
    }

    /// Probes the holders of `role` (other than this process) and reaps the dead ones.
    pub(crate) fn probe_role(&self, role: usize) -> Result<()> {
        let me = self.my_slot();
        let mut mask = self.roles().masks[role].load(Ordering::Acquire);
        while mask != 0 {
            let i = mask.trailing_zeros();
            mask &= mask - 1;
            if i == me || i >= self.hdr.n_slots {
                continue;
            }
            self.reap_if_dead(i)?;
        }
        Ok(())
    }

    pub(super) fn reap_if_dead(&self, i: u32) -> Result<()> {
        let fd = self.raw_fd();
        if token::is_held(fd, i)? {
            return Ok(());
        }
        if token::try_take(fd, i)? {
            self.reap_held(i);
            token::release(fd, i)?;
        }
        Ok(())
    }

    /// Records the CPU this process is about to wait on, and says whether the (single) other holder of
    /// `peer_role` last waited on the same one: then the two take turns on one CPU, and spinning for
    /// the peer only burns the time it needs to run.
    ///
    /// Only a process confined to one CPU (`taskset -c N`) trusts this: two unpinned processes meet on
    /// one CPU only for a moment, and sleeping at once would invite the scheduler to keep them there.
    pub(crate) fn peer_shares_cpu(&self, peer_role: usize) -> bool {
        // SAFETY: sched_getcpu has no preconditions (it reads the rseq area or calls getcpu).
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu < 0 {
            return false;
        }
        let mine = cpu as u32 + 1;
        let me = self.my_slot();
        let slot = self.slot_at(me);
        if slot.cpu.load(Ordering::Relaxed) != mine {
            slot.cpu.store(mine, Ordering::Relaxed);
        }
        let others = self.roles().masks[peer_role].load(Ordering::Relaxed) & !(1u64 << me.min(63));
        if others.count_ones() != 1 {
            return false;
        }
        let peer = others.trailing_zeros();
        peer < self.hdr.n_slots
            && self.slot_at(peer).cpu.load(Ordering::Relaxed) == mine
            && pinned_to_one_cpu()
    }

    /// Drops every role this process holds (a graceful exit).
    pub(crate) fn drop_all_roles(&self) {
        for r in 0..MAX_ROLES {
            self.drop_role(r);
        }
    }

    /// Frees a slot that [`registry::prepare_fork`] reserved for a child that was never born.
    pub(super) fn release_prepared(&self, fd: OwnedFd, slot: u32) {
        if slot < 64 {
            for m in &self.roles().masks {
                m.fetch_and(!(1u64 << slot), Ordering::AcqRel);
            }
        }
        self.slot_at(slot).state.store(SLOT_FREE, Ordering::Release);
        drop(fd); // releases the token
    }

    /// Sets the pid shown for slot `i` (a forked child's slot is reserved by its parent).
    pub(super) fn set_slot_pid(&self, i: u32, pid: u32) {
        self.slot_at(i).pid.store(pid, Ordering::Relaxed);
    }

    /// Gives up this process's participation: its roles, its slot and its token; the last participant
    /// of a named segment removes the name, if the name still leads to this segment. The caller owns
    /// its slot (`ensure_owner`); the slot number stays as it was (the handle is going away).
    pub(crate) fn leave(&self) {
        let fd = self.raw_fd();
        let me = self.my_slot();
        if me >= self.hdr.n_slots {
            return;
        }
        self.drop_all_roles();
        self.slot_at(me).state.store(SLOT_FREE, Ordering::Release);
        // The claim token stays until the descriptor is closed (or the process exits): threads of
        // this process may still act under its claim id until then, and must not be judged dead.
        let _ = token::release(fd, me);
        if let Some(name) = &self.name {
            // The last participant out removes the name.
            let anyone = (0..self.hdr.n_slots).any(|i| token::is_held(fd, i).unwrap_or(true));
            if !anyone && names_this_file(name, fd) {
                let _ = rustix::shm::unlink(name.as_str());
            }
        }
    }
}

/// The claim id of generation `generation` of slot `slot`.
fn claim_of(slot: u32, generation: u32) -> u32 {
    (generation << CLAIM_SLOT_BITS) | slot
}

/// Whether this process may run on one CPU only: `sched_getaffinity`, asked only when the peer was last
/// seen on our CPU and at most every 50 ms (so a `taskset` of a running process is noticed soon).
fn pinned_to_one_cpu() -> bool {
    use std::sync::OnceLock;
    use std::time::Instant;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    static CACHE: AtomicU64 = AtomicU64::new(0); // (milliseconds since EPOCH + 1) << 1 | pinned
    let now_ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    let c = CACHE.load(Ordering::Relaxed);
    if c != 0 && now_ms.saturating_sub(c >> 1) < 50 {
        return c & 1 == 1;
    }
    crate::stats::note_other_call();
    // SAFETY: cpu_set_t is plain data and sched_getaffinity fills it.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
            && libc::CPU_COUNT(&set) == 1
    };
    CACHE.store(now_ms << 1 | pinned as u64, Ordering::Relaxed);
    pinned
}
