//! loom models of the undo log (`undo`), on the crate's own `UndoLog` and `RawMutex`: the holder
//! of the mutex runs an allocator-like operation (what `manager::alloc`'s `take` does to a free
//! block, in miniature: shrink the free block, write the new block's header, move the free list's
//! head, store the new block's `Ref` into the caller's journal word; four logged stores, then the
//! commit) and dies at its `k`th crash point, for every `k` (each step of `UndoLog::set` and
//! `commit`: entry address, entry value, count, word; the commit); or finishes. Recoverers take the
//! mutex over from the dead holder (`take_over_if_dead`, as `lock_alloc` does), roll back if it is
//! inconsistent, and check, in every interleaving:
//!
//! * the words are exactly as before the operation (death before the commit) or as after it
//!   (death after the commit, or none): never torn;
//! * the accounting holds: the free and used bytes add up to the heap, and the journal word names
//!   a block exactly when one is allocated (never allocated and unrecorded);
//! * the log is empty, the mutex consistent again, and the log works for the next operation.
//!
//! What this does not cover: the TLSF lists themselves (`Guard::take`, `free_inner`, `grow` run
//! only on a mapped arena, which loom cannot host), and the container redo record of
//! `manager::slot`; those are covered by the fault tests' kills at `ManagerAllocMid` and friends.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom`

use super::UndoLog;
use crate::loom::{AtomicU32, AtomicU64, Died, Ordering, die_after};
use crate::wait::mutex::RawMutex;
use loom::sync::Arc;
use std::panic::{AssertUnwindSafe, catch_unwind};

const HOLDER: u32 = 1;
/// Bytes of the model heap.
const TOTAL: u64 = 256;
/// The allocated bit of a block header.
const USED: u64 = 1 << 63;
/// Word indices: the free block's size, the allocated block's header, the free list's head, the
/// caller's journal word.
const FREE_SIZE: usize = 0;
const NEW_HDR: usize = 1;
const HEAD: usize = 2;
const JOURNAL: usize = 3;
const BEFORE: [u64; 4] = [TOTAL, 0, 0x100, 0];
const AFTER: [u64; 4] = [TOTAL - 32, 32 | USED, 0x120, 0x110];
/// Crash points of one operation: four per logged store, one for the commit.
const POINTS: usize = 4 * 4 + 1;

struct World {
    m: RawMutex,
    log: UndoLog<8>,
    words: [AtomicU64; 4],
    /// 1 once the holder died (the kernel's answer to a probe of its token).
    dead: AtomicU32,
}

impl World {
    fn words(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed))
    }
}

/// The operation: allocate 32 bytes from the free block into the journal word, all or nothing.
fn split(w: &World) {
    let l = &w.log;
    let free = w.words[FREE_SIZE].load(Ordering::Relaxed);
    l.set(FREE_SIZE as u64, &w.words[FREE_SIZE], free - 32)
        .unwrap();
    l.set(NEW_HDR as u64, &w.words[NEW_HDR], 32 | USED).unwrap();
    l.set(HEAD as u64, &w.words[HEAD], 0x120).unwrap();
    l.set(JOURNAL as u64, &w.words[JOURNAL], 0x110).unwrap();
    l.commit();
}

/// The allocator's accounting, recounted from the words (as `Guard::recover` recounts).
fn check_accounting(now: [u64; 4]) {
    let used = now[NEW_HDR] & !USED;
    assert_eq!(
        now[FREE_SIZE] + used,
        TOTAL,
        "free + used != heap: {now:x?}"
    );
    assert_eq!(
        now[NEW_HDR] & USED != 0,
        now[JOURNAL] != 0,
        "a block allocated and unrecorded, or recorded and free: {now:x?}"
    );
}

/// Takes the mutex (over from the dead holder if need be; `tries` attempts, `None`: until it
/// gets it), recovers, checks; `expect` is the state the interrupted operation must have left.
/// Whether it got the mutex (then released again).
fn recover_and_check(
    w: &World,
    me: u32,
    expect: [u64; 4],
    k: Option<usize>,
    tries: Option<usize>,
) -> bool {
    let mut left = tries;
    loop {
        let took =
            w.m.take_over_if_dead(me, |id| {
                Ok(!(id == HOLDER && w.dead.load(Ordering::Acquire) == 1))
            })
            .unwrap();
        if took || w.m.try_lock(me) {
            break;
        }
        match &mut left {
            Some(0) => return false,
            Some(n) => *n -= 1,
            None => {}
        }
        loom::thread::yield_now();
    }
    if w.m.is_inconsistent() {
        w.log.rollback(|a| w.words.get(a as usize));
        w.m.mark_consistent();
    }
    let now = w.words();
    assert!(
        now == BEFORE || now == AFTER,
        "torn after a death at point {k:?}: {now:x?}"
    );
    assert_eq!(now, expect, "death at point {k:?}");
    check_accounting(now);
    assert!(w.log.is_empty(), "the log is left full");
    w.m.unlock();
    true
}

/// The holder dies at crash point `k` (`None`: finishes); `recoverers` processes recover.
fn model(k: Option<usize>, recoverers: u32) {
    loom::model(move || {
        let w = Arc::new(World {
            m: RawMutex::new(),
            log: UndoLog::new(),
            words: BEFORE.map(AtomicU64::new),
            dead: AtomicU32::new(0),
        });
        assert!(w.m.try_lock(HOLDER));
        let holder = {
            let w = w.clone();
            loom::thread::spawn(move || {
                die_after(k);
                let r = catch_unwind(AssertUnwindSafe(|| split(&w)));
                die_after(None);
                match r {
                    Ok(()) => w.m.unlock(),
                    Err(p) => {
                        assert!(p.is::<Died>(), "a real panic in the holder");
                        // Dead holding the mutex: its token is released (by the kernel).
                        w.dead.store(1, Ordering::Release);
                    }
                }
            })
        };
        // Death before the commit's store undoes everything; at or after it, nothing.
        let expect = match k {
            Some(k) if k < POINTS - 1 => BEFORE,
            _ => AFTER,
        };
        if recoverers == 1 {
            recover_and_check(&w, 2, expect, k, None);
            holder.join().unwrap();
        } else {
            // Bounded tries (loom bounds each execution's length); whoever is left recovers last.
            let others: Vec<_> = (1..recoverers)
                .map(|i| {
                    let w = w.clone();
                    loom::thread::spawn(move || recover_and_check(&w, 10 + i, expect, k, Some(2)))
                })
                .collect();
            recover_and_check(&w, 2, expect, k, Some(2));
            for t in others {
                t.join().unwrap();
            }
            holder.join().unwrap();
            assert!(recover_and_check(&w, 4, expect, k, Some(0)));
        }
        // The log serves the next operation: from BEFORE, a whole one gives AFTER.
        if expect == BEFORE {
            assert!(w.m.try_lock(3));
            split(&w);
            assert_eq!(w.words(), AFTER);
            assert!(w.log.is_empty());
            w.m.unlock();
        }
    });
}

/// The holder dies at each step in turn, or finishes; one recoverer.
#[test]
fn loom_undo_holder_dies_at_every_step() {
    for k in (0..POINTS).map(Some).chain([None]) {
        model(k, 1);
    }
}

/// Two recoverers find the holder dead at once (at a step in the middle of a store, before the
/// commit, and after it): one takes over and rolls back, the other waits and finds it whole.
#[test]
fn loom_undo_two_recoverers() {
    for k in [Some(6), Some(POINTS - 2), Some(POINTS - 1)] {
        model(k, 2);
    }
}
