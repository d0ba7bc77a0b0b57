//! The counts of a run, and the accounting of items: every acknowledged item present exactly once,
//! except at most one per killed consumer ("in flight at kill").

use super::ledger::{id_seq, id_slot};
use std::collections::HashMap;

/// What a round (or a whole run) counted. `hangs`, `lost`, `duplicated`, `leaked` and `wrong` must
/// stay 0.
#[derive(Default, Clone, Debug, serde::Serialize)]
pub struct Counts {
    pub rounds: u64,
    pub kills: u64,
    pub stops: u64,
    /// Kills after which the survivors showed progress (or ended, as they should) in time.
    pub recoveries: u64,
    pub in_flight: u64,
    pub hangs: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Segments left in /dev/shm after `cleanup()`, and processes left behind.
    pub leaked: u64,
    /// Anything else wrong: an unexpected error, a damaged item, a broken invariant, a panic.
    pub wrong: u64,
    pub ops: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.rounds += o.rounds;
        self.kills += o.kills;
        self.stops += o.stops;
        self.recoveries += o.recoveries;
        self.in_flight += o.in_flight;
        self.hangs += o.hangs;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.leaked += o.leaked;
        self.wrong += o.wrong;
        self.ops += o.ops;
    }

    pub fn failures(&self) -> u64 {
        self.hangs + self.lost + self.duplicated + self.leaked + self.wrong
    }
}

/// The producers' side: per slot, how many items were acknowledged (sequence numbers `0..acked`)
/// and whether the producer was killed (then its next item may be present, unacknowledged).
pub struct Produced {
    pub acked: HashMap<usize, (u64, bool)>,
}

/// Checks `received` (every consumer's log and the final drain) against what was acknowledged.
/// Returns (in flight, lost, duplicated, wrong).
pub fn tally_items(p: &Produced, received: &[u64], killed_consumers: u64) -> (u64, u64, u64, u64) {
    let mut seen: HashMap<u64, u32> = HashMap::with_capacity(received.len());
    for &r in received {
        *seen.entry(r).or_default() += 1;
    }
    let (mut dup, mut wrong) = (0u64, 0u64);
    for (&i, &n) in &seen {
        if n > 1 {
            dup += u64::from(n - 1);
        }
        let ok = match p.acked.get(&id_slot(i)) {
            Some(&(acked, killed)) => id_seq(i) < acked || (killed && id_seq(i) == acked),
            None => false,
        };
        if !ok {
            eprintln!(
                "stress: WRONG: item {}:{} was never acknowledged to its producer",
                id_slot(i),
                id_seq(i)
            );
            wrong += 1;
        }
    }
    let mut missing = Vec::new();
    for (&slot, &(acked, _)) in &p.acked {
        for seq in 0..acked {
            if !seen.contains_key(&super::ledger::id(slot, seq)) {
                missing.push((slot, seq));
            }
        }
    }
    let missing_n = missing.len() as u64;
    let in_flight = missing_n.min(killed_consumers);
    if missing_n > in_flight {
        missing.sort_unstable();
        eprintln!(
            "stress: LOST: {missing_n} acknowledged item(s) never taken, {killed_consumers} consumer(s) \
             killed; the first (producer slot, sequence): {:?}",
            &missing[..missing.len().min(5)]
        );
    }
    let missing = missing_n;
    (in_flight, missing - in_flight, dup, wrong)
}
