//! loom models of the ring and its wait/wake protocol: the crate's own code, run over loom's atomics,
//! cells and a futex modelled as a mutex and condition variable (so a lost wake-up is a deadlock).
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom`

use super::buf::RingBuf;
use super::spsc::{Frame, RingCtl, Spsc, TAG_WHOLE};
use crate::error::Result;
use crate::sync::wait::{Deadline, Spinner, WaitStrategy, block_on};
use loom::sync::Arc;

const CAP: usize = 64;

fn pair() -> (Spsc, Spsc) {
    let ctl = Arc::new(RingCtl::new());
    let buf = RingBuf::new_heap(CAP);
    (
        Spsc::new_heap(ctl.clone(), buf.clone(), CAP),
        Spsc::new_heap(ctl, buf, CAP),
    )
}

fn send(tx: &Spsc, spin: &mut Spinner, msg: &[u8]) {
    let r = block_on(
        spin,
        false,
        &tx.ctl().space,
        Deadline::NEVER,
        || tx.try_reserve(msg.len()),
        || Ok(()),
    )
    .unwrap();
    tx.write_payload(&r, 0, msg);
    tx.commit(r, TAG_WHOLE);
}

fn recv(rx: &Spsc, spin: &mut Spinner) -> Vec<u8> {
    let f: Frame = block_on(
        spin,
        false,
        &rx.ctl().data,
        Deadline::NEVER,
        || -> Result<Option<Frame>> { rx.try_peek() },
        || Ok(()),
    )
    .unwrap();
    let mut out = vec![0; f.len];
    rx.read_payload(&f, 0, &mut out);
    rx.consume(f);
    out
}

/// Messages sized so that the writer must wait for room and wrap around: every byte arrives in order,
/// no access races, and no wake-up is lost (else loom reports a deadlock).
#[test]
fn loom_spsc_wraps_and_blocks() {
    loom::model(|| {
        let (tx, rx) = pair();
        let msgs: Vec<Vec<u8>> = vec![vec![1; 16], vec![2; 8], vec![3; 16]];
        let expect = msgs.clone();
        let t = loom::thread::spawn(move || {
            let mut spin = Spinner::new(WaitStrategy::Sleep);
            for m in &msgs {
                send(&tx, &mut spin, m);
            }
        });
        let mut spin = Spinner::new(WaitStrategy::Sleep);
        for m in &expect {
            assert_eq!(&recv(&rx, &mut spin), m);
        }
        t.join().unwrap();
    });
}

/// A reader that sleeps on an empty ring is always woken by the next commit.
#[test]
fn loom_spsc_reader_wakes() {
    loom::model(|| {
        let (tx, rx) = pair();
        let t = loom::thread::spawn(move || {
            let mut spin = Spinner::new(WaitStrategy::Sleep);
            send(&tx, &mut spin, &[7; 8]);
        });
        let mut spin = Spinner::new(WaitStrategy::Sleep);
        assert_eq!(recv(&rx, &mut spin), vec![7; 8]);
        t.join().unwrap();
    });
}

/// Enough traffic to lap the ring twice: the reader keeps arriving at slots that held headers in an
/// earlier lap, which only the writer's guard makes read as "nothing here yet".
#[test]
fn loom_spsc_guard_hides_old_laps() {
    loom::model(|| {
        let (tx, rx) = pair();
        let msgs: Vec<Vec<u8>> = (1..=6u8)
            .map(|i| vec![i; if i % 3 == 0 { 16 } else { 8 }])
            .collect();
        let expect = msgs.clone();
        let t = loom::thread::spawn(move || {
            let mut spin = Spinner::new(WaitStrategy::Sleep);
            for m in &msgs {
                send(&tx, &mut spin, m);
            }
        });
        let mut spin = Spinner::new(WaitStrategy::Sleep);
        for m in &expect {
            assert_eq!(&recv(&rx, &mut spin), m);
        }
        t.join().unwrap();
    });
}
