//! A hostile peer: a process that maps our segments and writes garbage into them (headers,
//! positions, lengths, tags, slot words, claim ids, lock words, spill bitmaps, arena offsets) while
//! honest processes use them. The honest side gets results or errors (`Error::Corrupt`, a timeout),
//! never a crash, a panic, a read out of bounds, an unbounded loop or a call past its bound.
//!
//! Also: the segments' protections against a peer that resizes them (sealed memfds for every
//! unnamed object; the hazard that remains for named ones is stated in the README's threat model),
//! and permissions across users.

mod common;

use common::{Rng, within};
use shmwire::{Error, Manager, Process};
use std::time::{Duration, Instant};

fn main() {
    common::run(tests![
        a_dict_whose_entries_share_one_hash_grows_in_bounded_time,
    ]);
}

/// A peer writes one hash into every entry of a large dict; the next insert that grows the table
/// moves every entry to the same bucket run. That must be bounded (linear in the table), not a
/// probe of the whole run per entry.
fn a_dict_whose_entries_share_one_hash_grows_in_bounded_time() {
    let n: u32 = if common::long() { 1 << 20 } else { 1 << 18 };
    let m = Manager::new().unwrap();
    let d = m.dict::<u32, u8>().unwrap();
    d.update((0..n).map(|i| (i, 1u8))).unwrap();
    let hostile = d.clone();
    let p = Process::fork(move || {
        assert_eq!(hostile.__same_hash_everywhere(42).unwrap(), n as u64);
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    // Insert new keys until one of them grows the table: the table holds at most 4(n + 1)
    // buckets and grows past 3/4 full, so within 3n + 3 entries. Each call returns (an entry, or
    // Corrupt) within a bound linear in the table; 10 s is orders of magnitude above it.
    let mut outcome = None;
    for i in n..4 * n {
        let (r, took) = within(Duration::from_secs(60), || d.insert(i, 2));
        assert!(
            took < Duration::from_secs(10),
            "insert {i} took {took:?}: a rehash of entries sharing one hash is quadratic"
        );
        match r {
            Ok(_) => {}
            Err(Error::Corrupt) => {
                outcome = Some("Corrupt");
                break;
            }
            Err(e) => panic!("insert {i}: {e}"),
        }
    }
    let outcome = outcome.unwrap_or("grown");
    println!("  ({n} entries with one hash: the growth gave {outcome})");
}
