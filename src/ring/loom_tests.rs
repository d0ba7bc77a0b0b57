//! loom models of the ring and its wait/wake protocol: the crate's own code, run over loom's atomics,
//! cells and a futex modelled per word (so a lost wake-up, or one sent to the wrong word, is a
//! deadlock). The `_spinning` models run both sides as a spinning waiter in a process registered for
//! membarrier: the eventcounts go asymmetric, and the writer's notifies have no fence.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom`

use super::buf::RingBuf;
use super::spsc::{Frame, RingCtl, Spsc, TAG_WHOLE};
use crate::error::Result;
use crate::loom::wait_until;
use crate::sys::membarrier;
use crate::wait::{Deadline, Spinner, WaitStrategy, block_on};
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

/// `send` for a spinning writer (one spin, then the asymmetric mode): see `crate::loom::wait_until`.
fn send_spinning(tx: &Spsc, msg: &[u8]) {
    let r = wait_until(&tx.ctl().space, 1, true, || {
        tx.try_reserve(msg.len()).unwrap()
    });
    tx.write_payload(&r, 0, msg);
    tx.commit(r, TAG_WHOLE);
}

/// `recv` for a spinning reader.
fn recv_spinning(rx: &Spsc) -> Vec<u8> {
    let f = wait_until(&rx.ctl().data, 1, true, || rx.try_peek().unwrap());
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

/// `loom_spsc_wraps_and_blocks` with both sides spinning first, in the asymmetric mode: the
/// writer's commit and the reader's consume notify without a fence, and each side's heavy barrier
/// before it sleeps is all that orders the pairs.
#[test]
fn loom_spsc_wraps_and_blocks_spinning() {
    loom::model(|| {
        membarrier::model_registered(true);
        let (tx, rx) = pair();
        let msgs: Vec<Vec<u8>> = vec![vec![1; 16], vec![2; 8], vec![3; 16]];
        let expect = msgs.clone();
        let t = loom::thread::spawn(move || {
            for m in &msgs {
                send_spinning(&tx, m);
            }
        });
        for m in &expect {
            assert_eq!(&recv_spinning(&rx), m);
        }
        t.join().unwrap();
    });
}
