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
        .try_get(
            me,
            false,
            |b| u64::from_ne_bytes(b.try_into().unwrap()),
            || {},
        )
        .unwrap()
    {
        Attempt::Done(v) => Some(v),
        _ => None,
    }
}

/// Drains what is left, then checks that the ring is whole: room for `CAP` new items, which come
/// back in order.
fn drain_and_check_whole(r: &Mpmc<'_>, got: &mut Vec<u64>) {
    while let Some(v) = try_get(r, 9) {
        got.push(v);
    }
    for v in 0..CAP {
        assert!(
            matches!(
                r.try_put(9, Item::Inline(&(1000 + v).to_ne_bytes()))
                    .unwrap(),
                Attempt::Done(())
            ),
            "an empty ring refused a put (wedged): {got:?}"
        );
    }
    for v in 0..CAP {
        assert_eq!(try_get(r, 9), Some(1000 + v));
    }
}

/// A producer that loaded `enq` and was preempted while the ring went round a whole lap (its slot
/// now being read at the next lap) must not move that slot's lap back. (With the old skip rule,
/// "READING at another lap: skip", it did, and the ring wedged.)
#[test]
fn loom_mpmc_stale_producer_moves_no_lap_back() {
    loom::model(|| {
        let ring = Ring::new();
        let r1 = ring.clone();
        let p1 = loom::thread::spawn(move || put(&r1.view(), 1, 100, &mut 2));
        let r = ring.view();
        let mut got = Vec::new();
        let mut tries = 6;
        put(&r, 2, 200, &mut tries);
        put(&r, 2, 201, &mut tries);
        got.extend(try_get(&r, 3));
        put(&r, 2, 202, &mut tries);
        got.extend(try_get(&r, 3));
        got.extend(try_get(&r, 3));
        let one = p1.join().unwrap();
        drain_and_check_whole(&r, &mut got);
        let mine: Vec<u64> = got.iter().copied().filter(|&v| v >= 200).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "reordered: {got:?}");
        assert_eq!(
            got.iter().filter(|&&v| v == 100).count(),
            usize::from(one),
            "{got:?}"
        );
    });
}

/// Two consumers each take one of two items while a producer puts a third: when the first consumer
/// is still reading slot 0 and the second has freed slot 1, the producer skips slot 0 and puts into
/// slot 1 (the skip path). Every item arrives once, and the ring is whole after.
#[test]
fn loom_mpmc_skips_a_slot_being_read() {
    loom::model(|| {
        let ring = Ring::new();
        let r = ring.view();
        let mut tries = 2;
        assert!(put(&r, 1, 10, &mut tries) && put(&r, 1, 11, &mut tries));
        let consumer = |ring: Arc<Ring>, me| {
            loom::thread::spawn(move || {
                let r = ring.view();
                (0..2).find_map(|_| {
                    let v = try_get(&r, me);
                    if v.is_none() {
                        loom::thread::yield_now();
                    }
                    v
                })
            })
        };
        let c1 = consumer(ring.clone(), 2);
        let c2 = consumer(ring.clone(), 3);
        let put_ok = put(&r, 1, 12, &mut 3);
        let mut got: Vec<u64> = [c1.join().unwrap(), c2.join().unwrap()]
            .into_iter()
            .flatten()
            .collect();
        drain_and_check_whole(&r, &mut got);
        got.sort_unstable();
        let want: Vec<u64> = if put_ok {
            vec![10, 11, 12]
        } else {
            vec![10, 11]
        };
        assert_eq!(got, want);
    });
}

/// A producer that died between claiming slot 0 and moving `enq` past it (`enq` still 0, the slot
/// `WRITING` for a dead id): while a consumer repairs the slot, passes it and takes what follows, a
/// live producer puts two items. Both arrive, in order, and the ring is whole after.
#[test]
fn loom_mpmc_claimer_dead_before_moving_the_position() {
    const DEAD: u32 = 7;
    loom::model(|| {
        let ring = Ring::new();
        // The dead producer's claim: what its `try_put` leaves after the claim CAS.
        let r = ring.view();
        r.__claim_only(DEAD);
        let rc = ring.clone();
        let c = loom::thread::spawn(move || {
            let r = rc.view();
            let mut got = Vec::new();
            for _ in 0..4 {
                r.repair(|id| Ok(id != DEAD)).unwrap();
                if let Some(v) = try_get(&r, 3) {
                    got.push(v);
                }
                if got.len() == 2 {
                    break;
                }
                loom::thread::yield_now();
            }
            got
        });
        let mut tries = 4;
        let ok1 = put(&r, 1, 100, &mut tries);
        let ok2 = ok1 && put(&r, 1, 101, &mut tries);
        let mut got = c.join().unwrap();
        drain_and_check_whole(&r, &mut got);
        let want: Vec<u64> = [(ok1, 100), (ok2, 101)]
            .into_iter()
            .filter_map(|(ok, v)| ok.then_some(v))
            .collect();
        assert_eq!(got, want);
    });
}
