//! loom models of the MPMC slot ring (`ring::mpmc`): the crate's own code over loom's atomics and
//! loom-tracked slot bytes. Capacity 2, two producers and a consumer, so that producers wrap around
//! onto a slot the consumer is still reading and take the skip path; a stale producer (preempted
//! between loading `enq` and reading the slot) must never move a slot's lap backwards.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom`

use super::buf::RingBuf;
use super::mpmc::{Attempt, Item, Mpmc, SLOT_HEADER};
use loom::sync::Arc;
use loom::sync::atomic::AtomicU64;

const CAP: u64 = 2;
const SLOT: usize = SLOT_HEADER + 8;

struct Ring {
    enq: AtomicU64,
    deq: AtomicU64,
    slots: RingBuf,
}

impl Ring {
    fn new() -> Arc<Ring> {
        Arc::new(Ring {
            enq: AtomicU64::new(0),
            deq: AtomicU64::new(0),
            slots: RingBuf::new_heap(CAP as usize * SLOT),
        })
    }

    fn view(&self) -> Mpmc<'_> {
        Mpmc {
            enq: &self.enq,
            deq: &self.deq,
            slots: self.slots.clone(),
            cap: CAP,
            slot_size: SLOT,
            spill: None,
            id: 0,
        }
    }
}

/// Puts `v`, retrying (with a yield) while the ring is full, at most `tries` attempts in all (the
/// model must stay finite); whether it went in.
fn put(r: &Mpmc<'_>, me: u32, v: u64, tries: &mut u32) -> bool {
    while *tries > 0 {
        *tries -= 1;
        if let Attempt::Done(()) = r.try_put(me, Item::Inline(&v.to_ne_bytes())).unwrap() {
            return true;
        }
        loom::thread::yield_now();
    }
    false
}

fn try_get(r: &Mpmc<'_>, me: u32) -> Option<u64> {
    match r
        .try_get(me, false, |b| u64::from_ne_bytes(b.try_into().unwrap()))
        .unwrap()
    {
        Attempt::Done(v) => Some(v),
        _ => None,
    }
}

/// One producer puts three items while another puts one and a consumer takes what it can (each
/// with a bounded number of attempts): whatever the interleaving, every item put arrives once, each
/// producer's in order, and the ring is left whole (an empty ring takes `CAP` new items and gives
/// them back).
#[test]
fn loom_mpmc_wraps_and_skips_without_losing_or_wedging() {
    loom::model(|| {
        let ring = Ring::new();
        let (r1, r2, rc) = (ring.clone(), ring.clone(), ring.clone());
        let p1 = loom::thread::spawn(move || put(&r1.view(), 1, 100, &mut 2));
        let p2 = loom::thread::spawn(move || {
            let r = r2.view();
            let mut tries = 4;
            (200..203)
                .take_while(|&v| put(&r, 2, v, &mut tries))
                .count()
        });
        let c = loom::thread::spawn(move || {
            let r = rc.view();
            let mut got = Vec::new();
            for _ in 0..4 {
                if let Some(v) = try_get(&r, 3) {
                    got.push(v);
                }
                if got.len() == 3 {
                    break;
                }
                loom::thread::yield_now();
            }
            got
        });
        let one = p1.join().unwrap();
        let n2 = p2.join().unwrap() as u64;
        let mut got = c.join().unwrap();
        let r = ring.view();
        while let Some(v) = try_get(&r, 4) {
            got.push(v);
        }
        let p2_got: Vec<u64> = got.iter().copied().filter(|&v| v >= 200).collect();
        assert_eq!(
            p2_got,
            (200..200 + n2).collect::<Vec<_>>(),
            "lost, duplicated or reordered: {got:?}"
        );
        assert_eq!(
            got.iter().filter(|&&v| v == 100).count(),
            usize::from(one),
            "{got:?}"
        );
        // Whole again: room for CAP items, which come back in order.
        for v in 0..CAP {
            assert!(
                matches!(
                    r.try_put(4, Item::Inline(&v.to_ne_bytes())).unwrap(),
                    Attempt::Done(())
                ),
                "an empty ring refused a put (wedged)"
            );
        }
        for v in 0..CAP {
            assert_eq!(try_get(&r, 4), Some(v));
        }
    });
}
