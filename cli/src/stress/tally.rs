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

/// The accounting of one round's items: per producer slot, a bit per sequence number up to what it
/// had acknowledged (plus the one a killed producer may have sent unacknowledged). Its memory is a
/// bit per acknowledged item, so a long run's checker stays small and flat (a table of every id
/// received cost the supervisor tens of MiB per round).
pub struct Tally {
    /// slot -> (acknowledged, killed, bits of the sequence numbers seen).
    slots: HashMap<usize, (u64, bool, Vec<u64>)>,
    dup: u64,
    wrong: u64,
}

impl Tally {
    /// `acked`: per producer slot, how many items were acknowledged (sequence numbers `0..acked`) and
    /// whether it was killed (then its next item may be present, unacknowledged).
    pub fn new(acked: impl IntoIterator<Item = (usize, (u64, bool))>) -> Tally {
        let slots = acked
            .into_iter()
            .map(|(slot, (n, killed))| {
                let bits = n + u64::from(killed);
                (slot, (n, killed, vec![0u64; bits.div_ceil(64) as usize]))
            })
            .collect();
        Tally {
            slots,
            dup: 0,
            wrong: 0,
        }
    }

    /// One item taken by a consumer (or left in the queue, or in the list).
    pub fn add(&mut self, i: u64) {
        let (slot, seq) = (id_slot(i), id_seq(i));
        let Some((acked, killed, bits)) = self.slots.get_mut(&slot) else {
            return self.never_acked(slot, seq);
        };
        if seq > *acked || (seq == *acked && !*killed) {
            return self.never_acked(slot, seq);
        }
        let (w, b) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if bits[w] & b != 0 {
            self.dup += 1;
        }
        bits[w] |= b;
    }

    fn never_acked(&mut self, slot: usize, seq: u64) {
        eprintln!("stress: WRONG: item {slot}:{seq} was never acknowledged to its producer");
        self.wrong += 1;
    }

    /// Every acknowledged item must have been seen, except at most one per killed consumer.
    /// Returns (in flight, lost, duplicated, wrong).
    pub fn finish(self, killed_consumers: u64) -> (u64, u64, u64, u64) {
        let (mut missing_n, mut first) = (0u64, Vec::new());
        let mut slots: Vec<_> = self.slots.iter().collect();
        slots.sort_unstable_by_key(|&(&slot, _)| slot);
        for (&slot, (acked, _, bits)) in slots {
            for seq in 0..*acked {
                if bits[(seq / 64) as usize] & (1 << (seq % 64)) == 0 {
                    missing_n += 1;
                    if first.len() < 5 {
                        first.push((slot, seq));
                    }
                }
            }
        }
        let in_flight = missing_n.min(killed_consumers);
        if missing_n > in_flight {
            eprintln!(
                "stress: LOST: {missing_n} acknowledged item(s) never taken, {killed_consumers} consumer(s) \
                 killed; the first (producer slot, sequence): {first:?}"
            );
        }
        (in_flight, missing_n - in_flight, self.dup, self.wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ledger::id;
    use super::*;

    #[test]
    fn every_acknowledged_item_once() {
        let mut t = Tally::new([(0, (3, false)), (1, (2, true))]);
        for i in [id(0, 0), id(0, 1), id(0, 2), id(1, 0), id(1, 1), id(1, 2)] {
            t.add(i);
        }
        assert_eq!(t.finish(0), (0, 0, 0, 0));
    }

    #[test]
    fn lost_duplicated_and_unacknowledged_items_are_counted() {
        let mut t = Tally::new([(0, (4, false))]);
        // 0:1 twice, 0:3 missing, 0:4 never acknowledged (the producer was not killed), 5:0 from
        // no producer.
        for i in [id(0, 0), id(0, 1), id(0, 1), id(0, 2), id(0, 4), id(5, 0)] {
            t.add(i);
        }
        assert_eq!(t.finish(0), (0, 1, 1, 2));
        let mut t = Tally::new([(0, (2, false))]);
        t.add(id(0, 0));
        // One killed consumer: the missing item was in flight at its kill.
        assert_eq!(t.finish(1), (1, 0, 0, 0));
    }
}
