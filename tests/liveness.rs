//! Liveness between real processes: claim ids of every participant slot, probes that loops of short
//! waits still make, and the takeover of a lock from a dead holder.

mod common;

use shmwire::hooks::Point;
use shmwire::{Error, Event, Lock, PROBE_INTERVAL, Process, Queue, RLock};
use std::time::{Duration, Instant};

fn main() {
    common::run(tests![
        the_holder_in_the_last_participant_slot_is_alive,
        short_gets_in_a_loop_repair_a_dead_producer,
        short_acquires_in_a_loop_recover_a_dead_holder,
        rlock_taken_over_from_a_dead_holder_works_for_its_new_holders,
        hostile_writes_to_lock_words_never_crash_or_hang,
    ]);
}

/// The documented bound for noticing a dead peer is two probe intervals; tests allow 10x.
fn bound() -> Duration {
    PROBE_INTERVAL * 2 * 10
}

/// Issue 8, item 3: 256 processes share a lock (every participant slot taken); the one in the last
/// slot holds it. Nobody takes it from that live holder.
fn the_holder_in_the_last_participant_slot_is_alive() {
    let lock = Lock::new().unwrap();
    let quit = Event::new().unwrap();
    let held = Event::new().unwrap();
    // The test process holds slot 0; 254 sleepers take slots 1 to 254.
    let sleepers: Vec<Process> = (0..254)
        .map(|_| {
            let (lock, quit) = (lock.clone(), quit.clone());
            Process::fork(move || {
                let _keep = lock;
                quit.wait().unwrap();
            })
            .unwrap()
        })
        .collect();
    let (l, q, h) = (lock.clone(), quit.clone(), held.clone());
    let holder = Process::fork(move || {
        let g = l.acquire().unwrap();
        h.set().unwrap();
        q.wait().unwrap();
        drop(g);
    })
    .unwrap();
    assert!(held.wait_timeout(Duration::from_secs(30)).unwrap());
    // Acquiring probes the holder (several times within the timeout) and must find it alive.
    let t = Instant::now();
    let r = lock.acquire_timeout(PROBE_INTERVAL * 4);
    assert!(
        matches!(r, Err(Error::Timeout)),
        "the live holder in the last slot was robbed: owner_died = {:?}",
        r.map(|g| g.owner_died())
    );
    assert!(t.elapsed() >= PROBE_INTERVAL * 4);
    quit.set().unwrap();
    assert!(holder.join().unwrap().success());
    for s in sleepers {
        assert!(s.join().unwrap().success());
    }
    let g = lock.acquire_timeout(Duration::from_secs(5)).unwrap();
    assert!(!g.owner_died(), "the holder released it alive");
}

/// Issue 8, item 4: an unbounded queue's producer dies holding a slot; a consumer that only ever
/// waits 50 ms at a time still repairs it (the probe is due by time since the queue's last probe, not
/// since the call began) and gets the items behind it.
fn short_gets_in_a_loop_repair_a_dead_producer() {
    let q = Queue::<u64>::new(0).unwrap();
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::PutClaimed, libc::SIGKILL, 0);
        let _ = qc.put(1);
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    for i in 2..=5u64 {
        q.put(i).unwrap();
    }
    let t = Instant::now();
    let mut got = Vec::new();
    while got.len() < 4 {
        match q.get_timeout(Duration::from_millis(50)) {
            Ok(v) => got.push(v),
            Err(Error::Timeout) => {
                assert!(
                    t.elapsed() < bound(),
                    "never repaired: stuck behind the dead producer"
                )
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(got, vec![2, 3, 4, 5]);
}

/// The same for a lock whose holder died: `acquire_timeout(50 ms)` in a retry loop gets it.
fn short_acquires_in_a_loop_recover_a_dead_holder() {
    let lock = Lock::new().unwrap();
    let l = lock.clone();
    let dying = Process::fork(move || {
        let g = l.acquire().unwrap();
        std::mem::forget(g);
        // SAFETY: plain syscall on ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    let t = Instant::now();
    let g = loop {
        match lock.acquire_timeout(Duration::from_millis(50)) {
            Ok(g) => break g,
            Err(Error::Timeout) => assert!(t.elapsed() < bound(), "never recovered"),
            Err(e) => panic!("{e:?}"),
        }
    };
    assert!(g.owner_died());
    g.mark_consistent();
}

/// An RLock whose holder died: whoever takes it over holds it cleanly (its own levels, its release
/// works), and so do the processes after it; exactly the first is told the owner died.
fn rlock_taken_over_from_a_dead_holder_works_for_its_new_holders() {
    let lock = RLock::new().unwrap();
    let l = lock.clone();
    let dying = Process::fork(move || {
        let g = l.acquire().unwrap();
        let g2 = l.acquire().unwrap();
        std::mem::forget((g, g2));
        // SAFETY: plain syscall on ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    let died_seen = Queue::<bool>::new(0).unwrap();
    let workers: Vec<Process> = (0..4)
        .map(|_| {
            let (l, seen) = (lock.clone(), died_seen.clone());
            Process::fork(move || {
                for _ in 0..200 {
                    let g = l.acquire_timeout(Duration::from_secs(10)).unwrap();
                    let inner = l.acquire().unwrap();
                    assert_eq!(l.levels(), 2);
                    if g.owner_died() {
                        seen.put(true).unwrap();
                        g.mark_consistent();
                    }
                    drop(inner);
                    drop(g);
                    assert_eq!(l.levels(), 0);
                }
            })
            .unwrap()
        })
        .collect();
    for w in workers {
        assert!(w.join().unwrap().success());
    }
    assert_eq!(
        died_seen.qsize(),
        1,
        "exactly one new holder is told the owner died"
    );
}

/// Hostile words in a lock's shared words (owner, state, eventcount, RLock thread and count) while
/// honest processes take and release it: errors or a lock marked inconsistent, never a crash, a
/// panic, or a call past its deadline.
fn hostile_writes_to_lock_words_never_crash_or_hang() {
    let (lname, rname) = ("hostile-lock", "hostile-rlock");
    let lock = Lock::create(lname).unwrap();
    let rlock = RLock::create(rname).unwrap();
    let timeout = Duration::from_millis(50);
    let honest: Vec<Process> = (0..3)
        .map(|_| {
            let (l, r) = (lock.clone(), rlock.clone());
            Process::fork_with(move || -> Result<(), String> {
                let t = Instant::now();
                let mut worst = Duration::ZERO;
                while t.elapsed() < Duration::from_secs(2) {
                    let s = Instant::now();
                    if let Ok(g) = l.acquire_timeout(timeout) {
                        if g.owner_died() {
                            g.mark_consistent();
                        }
                    }
                    if let Ok(g) = r.acquire_timeout(timeout) {
                        let _ = r.acquire_timeout(timeout);
                        let _ = r.release();
                        drop(g);
                    }
                    worst = worst.max(s.elapsed());
                }
                if worst > 2 * timeout + Duration::from_secs(2) {
                    return Err(format!("a call took {worst:?}"));
                }
                Ok(())
            })
            .unwrap()
        })
        .collect();
    let prefix = std::env::var("SHMWIRE_PREFIX").unwrap_or_default();
    let (mut writes, t) = (0, Instant::now());
    while t.elapsed() < Duration::from_secs(2) {
        for (i, name) in [lname, rname].into_iter().enumerate() {
            let path = format!("/dev/shm/shmwire.{prefix}.u.{name}");
            writes += common::scribble(
                &path,
                4096,
                16 << 10,
                Duration::from_millis(20),
                i as u64 + writes,
            );
        }
    }
    for p in honest {
        let st = p.join().unwrap();
        assert!(st.success(), "an honest process failed: {st:?}");
    }
    eprint!("[{writes} hostile writes] ");
}
