//! Locks, semaphores, events, conditions, barriers and shared values between real processes,
//! including holders that are killed or stopped, and objects opened by name in exec'd binaries.

mod common;

use common::within;
use shmwire::{
    Array, Barrier, BoundedSemaphore, Condition, Error, Event, Lock, Process, Queue, RLock,
    Semaphore, SharedMemory, Value,
};
use std::time::{Duration, Instant};

fn roles(role: &str, args: shmwire::spawn::Args) -> i32 {
    match role {
        // Open every kind of object by name and use it.
        "by-name" => {
            let tag: String = args.get().unwrap();
            let lock = Lock::open(&format!("{tag}-lock")).unwrap();
            let count = Value::<u64>::open(&format!("{tag}-count")).unwrap();
            for _ in 0..1000 {
                let _g = lock.acquire().unwrap();
                count.set(count.get().unwrap() + 1).unwrap();
            }
            let arr = Array::<u32>::open(&format!("{tag}-array")).unwrap();
            arr.set(2, 42).unwrap();
            Semaphore::open(&format!("{tag}-sem"))
                .unwrap()
                .release()
                .unwrap();
            let barrier = Barrier::open(&format!("{tag}-barrier")).unwrap();
            barrier.wait().unwrap();
            let rlock = RLock::open(&format!("{tag}-rlock")).unwrap();
            drop(rlock.acquire().unwrap());
            let cond = Condition::open(&format!("{tag}-cond")).unwrap();
            drop(cond.acquire().unwrap());
            Event::open(&format!("{tag}-event")).unwrap().set().unwrap();
            assert!(matches!(
                Value::<i8>::open(&format!("{tag}-count")),
                Err(Error::Incompatible)
            ));
            0
        }
        _ => 2,
    }
}

fn main() {
    shmwire::spawn::enter(roles);
    common::run(tests![
        lock_keeps_a_counter_exact,
        lock_holder_killed_is_recovered_and_reported_until_consistent,
        stopped_lock_holder_is_not_robbed,
        rlock_recursion_and_ownership,
        rlock_holder_killed,
        semaphore_bounds_concurrency,
        bounded_semaphore_refuses_extra_release,
        event_across_processes,
        condition_notify_all_wakes_eight_waiters,
        barrier_of_eight,
        barrier_abort_reset_and_timeout,
        barrier_breaks_when_a_party_dies,
        barrier_breaks_when_a_party_dies_inside_wait,
        barrier_notices_a_dead_party_whose_slot_was_reused,
        barrier_reset_breaks_the_parties_waiting,
        barrier_reset_racing_an_arrival_loses_nothing,
        event_set_then_clear_wakes_the_waiters,
        huge_timeouts_wait_without_panicking,
        named_objects_hold_their_first_value_as_soon_as_they_open,
        value_and_array_across_processes,
        value_guard_is_a_private_copy,
        shared_memory_copies_in_and_out,
        every_object_by_name_in_an_exec_d_binary,
    ]);
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`, ...), from `/proc/PID/stat`.
fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')').next()?.trim_start().chars().next()
}

/// Waits (at most 10 s) until process `pid` is in one of `states` (for example `"T"`, stopped).
fn await_state(pid: u32, states: &str) {
    let t = Instant::now();
    while !proc_state(pid).is_some_and(|c| states.contains(c)) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "process {pid} never reached {states:?} (it is {:?})",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (at most 10 s) until `cond()` holds.
fn await_true(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(10), "never saw {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn lock_keeps_a_counter_exact() {
    let lock = Lock::new().unwrap();
    let count = Value::new(0u64).unwrap();
    let kids: Vec<Process> = (0..8)
        .map(|_| {
            let (lock, count) = (lock.clone(), count.clone());
            Process::fork(move || {
                for _ in 0..2000 {
                    let g = lock.acquire().unwrap();
                    assert!(!g.owner_died());
                    let v = count.get().unwrap();
                    count.set(v + 1).unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    assert_eq!(count.get().unwrap(), 16_000);
    assert!(!lock.is_locked());
}

fn lock_holder_killed_is_recovered_and_reported_until_consistent() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let (l, h) = (lock.clone(), held.clone());
    let dying = Process::fork(move || {
        let _g = l.acquire().unwrap();
        h.set().unwrap();
        // SAFETY: dies holding the lock, as a crash would.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    held.wait().unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    let (g, took) = within(Duration::from_secs(2), || lock.acquire().unwrap());
    assert!(
        g.owner_died(),
        "the next acquire must say the owner died ({took:?})"
    );
    drop(g);
    // Later lockers keep hearing it, in other processes too, until someone marks it consistent.
    let l = lock.clone();
    let other = Process::fork(move || {
        let g = l.acquire().unwrap();
        assert!(g.owner_died());
    })
    .unwrap();
    assert!(other.join().unwrap().success());
    let g = lock.acquire().unwrap();
    assert!(g.owner_died());
    g.mark_consistent();
    assert!(!g.owner_died());
    drop(g);
    assert!(!lock.acquire().unwrap().owner_died());
}

fn stopped_lock_holder_is_not_robbed() {
    // A holder stops itself inside the critical section; only then are the workers let go, so that
    // they contend (and probe the holder, again and again) while it holds the lock. Nobody may take
    // it until the holder is continued and releases it.
    let lock = Lock::new().unwrap();
    let count = Value::new(0u64).unwrap();
    let go = Event::new().unwrap();
    let (l, held) = (lock.clone(), Event::new().unwrap());
    let h = held.clone();
    let stopped = Process::fork(move || {
        let _g = l.acquire().unwrap();
        h.set().unwrap();
        // SAFETY: stops itself while holding the lock.
        unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
    })
    .unwrap();
    held.wait().unwrap();
    await_state(stopped.pid(), "T");
    let started = Value::new(0u32).unwrap();
    let workers: Vec<Process> = (0..4)
        .map(|_| {
            let (lock, count, go, started) =
                (lock.clone(), count.clone(), go.clone(), started.clone());
            Process::fork(move || {
                go.wait().unwrap();
                started.fetch_add(1);
                for _ in 0..3000 {
                    let g = lock.acquire().unwrap();
                    assert!(!g.owner_died(), "a stopped holder was taken for dead");
                    let v = count.get().unwrap();
                    count.set(v + 1).unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    go.set().unwrap();
    await_true("every worker started", || started.load() == 4);
    let t = Instant::now();
    assert!(matches!(
        lock.acquire_timeout(shmwire::PROBE_INTERVAL * 3),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= shmwire::PROBE_INTERVAL * 3);
    assert!(lock.try_acquire().unwrap().is_none());
    // The workers have been probing the stopped holder for several intervals by now.
    std::thread::sleep(shmwire::PROBE_INTERVAL * 3);
    assert_eq!(
        count.load(),
        0,
        "a worker got the lock while its holder was stopped"
    );
    for w in &workers {
        assert!(w.is_alive(), "a worker ended while the lock was held");
    }
    assert_eq!(proc_state(stopped.pid()), Some('T'));
    stopped.signal(libc::SIGCONT).unwrap();
    assert!(stopped.join().unwrap().success());
    for w in workers {
        assert!(w.join().unwrap().success());
    }
    assert_eq!(
        count.get().unwrap(),
        12_000,
        "the counter is exact after SIGCONT"
    );
    assert!(!lock.acquire().unwrap().owner_died());
}

fn rlock_recursion_and_ownership() {
    let r = RLock::new().unwrap();
    let a = r.acquire().unwrap();
    let b = r.acquire().unwrap();
    assert_eq!(r.levels(), 2);
    // Another thread of this process does not own it.
    let r2 = r.clone();
    std::thread::spawn(move || assert!(matches!(r2.release(), Err(Error::NotOwner))))
        .join()
        .unwrap();
    // Nor another process, which has to wait.
    let r3 = r.clone();
    let p = Process::fork(move || {
        assert!(matches!(r3.release(), Err(Error::NotOwner)));
        assert!(matches!(
            r3.acquire_timeout(Duration::from_millis(50)),
            Err(Error::Timeout)
        ));
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    drop(b);
    assert_eq!(r.levels(), 1);
    drop(a);
    assert_eq!(r.levels(), 0);
    assert!(matches!(r.release(), Err(Error::NotOwner)));
    let r4 = r.clone();
    let p = Process::fork(move || {
        let _g = r4.acquire_timeout(Duration::from_secs(5)).unwrap();
    })
    .unwrap();
    assert!(p.join().unwrap().success());
}

fn rlock_holder_killed() {
    let r = RLock::new().unwrap();
    let r2 = r.clone();
    let dying = Process::fork(move || {
        let _a = r2.acquire().unwrap();
        let _b = r2.acquire().unwrap();
        // SAFETY: dies holding two levels.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    dying.join().unwrap();
    let (g, _) = within(Duration::from_secs(2), || r.acquire().unwrap());
    assert!(g.owner_died());
    assert_eq!(r.levels(), 1, "a fresh holder starts at one level");
}

fn semaphore_bounds_concurrency() {
    let sem = Semaphore::new(2).unwrap();
    let inside = Value::new(0u32).unwrap();
    let most = Value::new(0u32).unwrap();
    let kids: Vec<Process> = (0..6)
        .map(|_| {
            let (sem, inside, most) = (sem.clone(), inside.clone(), most.clone());
            Process::fork(move || {
                for _ in 0..5 {
                    sem.acquire().unwrap();
                    let now = inside.fetch_add(1) + 1;
                    let mut m = most.load();
                    while now > m {
                        match most.compare_exchange(m, now) {
                            Ok(_) => break,
                            Err(x) => m = x,
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    inside.fetch_sub(1);
                    sem.release().unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    assert!(
        most.load() <= 2,
        "at most two inside at once, saw {}",
        most.load()
    );
    assert_eq!(most.load(), 2);
    assert_eq!(sem.value(), 2);
    assert!(sem.try_acquire().unwrap());
    assert!(sem.try_acquire().unwrap());
    assert!(!sem.try_acquire().unwrap());
    assert!(matches!(
        sem.acquire_timeout(Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
}

fn bounded_semaphore_refuses_extra_release() {
    let s = BoundedSemaphore::new(1).unwrap();
    assert!(matches!(s.release(), Err(Error::CalledTooOften)));
    s.acquire().unwrap();
    let s2 = s.clone();
    let p = Process::fork(move || s2.release().unwrap()).unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(s.value(), 1);
    assert!(matches!(s.release(), Err(Error::CalledTooOften)));
    assert_eq!(s.value(), 1);
}

fn event_across_processes() {
    let e = Event::new().unwrap();
    assert!(!e.is_set());
    assert!(!e.wait_timeout(Duration::from_millis(30)).unwrap());
    let e2 = e.clone();
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(100));
        e2.set().unwrap();
    })
    .unwrap();
    let t = Instant::now();
    e.wait().unwrap();
    assert!(t.elapsed() >= Duration::from_millis(80));
    assert!(e.is_set());
    assert!(e.wait_timeout(Duration::ZERO).unwrap());
    e.clear().unwrap();
    assert!(!e.is_set());
    assert!(p.join().unwrap().success());
}

fn condition_notify_all_wakes_eight_waiters() {
    let cond = Condition::new().unwrap();
    let go = Value::new(0u32).unwrap();
    let waiting = Value::new(0u32).unwrap();
    let kids: Vec<Process> = (0..8)
        .map(|_| {
            let (cond, go, waiting) = (cond.clone(), go.clone(), waiting.clone());
            Process::fork(move || {
                let g = cond.acquire().unwrap();
                waiting.fetch_add(1);
                let g = cond.wait_while(g, || go.load() == 0).unwrap();
                drop(g);
            })
            .unwrap()
        })
        .collect();
    let t = Instant::now();
    while waiting.load() < 8 {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    {
        let _g = cond.acquire().unwrap();
        go.store(1);
        cond.notify_all().unwrap();
    }
    for k in kids {
        assert!(k.join_timeout(Duration::from_secs(10)).unwrap().success());
    }
    // wait_timeout reports a timeout.
    let g = cond.acquire().unwrap();
    let (g, notified) = cond.wait_timeout(g, Duration::from_millis(30)).unwrap();
    assert!(!notified);
    drop(g);
}

fn barrier_of_eight() {
    let b = Barrier::new(8).unwrap();
    assert_eq!(b.parties(), 8);
    let indices = Queue::<u32>::new(0).unwrap();
    let kids: Vec<Process> = (0..7)
        .map(|_| {
            let (b, q) = (b.clone(), indices.clone());
            Process::fork(move || {
                for _ in 0..3 {
                    q.put(b.wait().unwrap()).unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    for _ in 0..3 {
        indices.put(b.wait().unwrap()).unwrap();
    }
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    let mut got: Vec<u32> = (0..24).map(|_| indices.get().unwrap()).collect();
    got.sort_unstable();
    let want: Vec<u32> = (0..8).flat_map(|i| [i, i, i]).collect();
    assert_eq!(got, want, "each round hands out 0..8 once");
}

fn barrier_breaks_when_a_party_dies() {
    // Three parties pass one round together; then one is killed before the second round. The other
    // two, waiting for it, get BrokenBarrier instead of waiting forever.
    let b = Barrier::new(3).unwrap();
    let (b1, b2) = (b.clone(), b.clone());
    let doomed = Process::fork(move || {
        b1.wait().unwrap();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let other = Process::fork(move || {
        b2.wait().unwrap();
        assert!(matches!(b2.wait(), Err(Error::BrokenBarrier)));
    })
    .unwrap();
    b.wait().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    doomed.kill().unwrap();
    let t = Instant::now();
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    let took = t.elapsed();
    assert!(
        took < shmwire::PROBE_INTERVAL * 20,
        "a dead party noticed after {took:?}"
    );
    assert!(other.join().unwrap().success());
    let _ = doomed.join();
    // After a reset it works again for the parties that are left (and new ones).
    b.reset().unwrap();
    let b3 = b.clone();
    let k = Process::fork(move || {
        b3.wait().unwrap();
    })
    .unwrap();
    let b4 = b.clone();
    let k2 = Process::fork(move || {
        b4.wait().unwrap();
    })
    .unwrap();
    b.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(k.join().unwrap().success());
    assert!(k2.join().unwrap().success());
}

fn barrier_abort_reset_and_timeout() {
    let b = Barrier::new(3).unwrap();
    let b2 = b.clone();
    let waiter =
        Process::fork(move || assert!(matches!(b2.wait(), Err(Error::BrokenBarrier)))).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    b.abort();
    assert!(waiter.join().unwrap().success());
    assert!(b.broken());
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    b.reset().unwrap();
    assert!(!b.broken());
    // A timeout breaks it for everyone, as in Python.
    let b3 = b.clone();
    let other =
        Process::fork(move || assert!(matches!(b3.wait(), Err(Error::BrokenBarrier)))).unwrap();
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(150)),
        Err(Error::BrokenBarrier)
    ));
    assert!(other.join().unwrap().success());
    b.reset().unwrap();
    let kids: Vec<Process> = (0..2)
        .map(|_| {
            let b = b.clone();
            Process::fork(move || {
                b.wait().unwrap();
            })
            .unwrap()
        })
        .collect();
    b.wait().unwrap();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    assert!(matches!(Barrier::new(0), Err(Error::Invalid(_))));
}

fn barrier_breaks_when_a_party_dies_inside_wait() {
    // Three parties: one arrives and is killed while it waits; the one waiting beside it and the
    // last to arrive get BrokenBarrier, within the documented bound (two PROBE_INTERVALs), x10.
    let b = Barrier::new(3).unwrap();
    let b1 = b.clone();
    let doomed = Process::fork(move || {
        let _ = b1.wait();
        std::process::exit(3); // never reached: the barrier cannot trip without the third party
    })
    .unwrap();
    await_true("the first party waiting", || b.n_waiting() == 1);
    let b2 = b.clone();
    let other = Process::fork(move || {
        let t = Instant::now();
        let got = b2.wait_timeout(Duration::from_secs(30));
        assert!(matches!(got, Err(Error::BrokenBarrier)), "got {got:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
    })
    .unwrap();
    await_true("two parties waiting", || b.n_waiting() == 2);
    await_state(doomed.pid(), "S");
    doomed.kill().unwrap();
    assert_eq!(doomed.join().unwrap().signal(), Some(libc::SIGKILL));
    let (st, took) = within(shmwire::PROBE_INTERVAL * 20, || {
        other.join_timeout(Duration::from_secs(10)).unwrap()
    });
    assert!(
        st.success(),
        "the party waiting beside the dead one: {st} after {took:?}"
    );
    assert!(b.broken());
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
}

fn barrier_notices_a_dead_party_whose_slot_was_reused() {
    // A party dies inside `wait`; a new process then takes its participant slot (the lowest free
    // one) and never touches the barrier. The dead party must still count as dead.
    let b = Barrier::new(3).unwrap();
    let b1 = b.clone();
    let doomed = Process::fork(move || {
        let _ = b1.wait();
        std::process::exit(3);
    })
    .unwrap();
    await_true("the first party waiting", || b.n_waiting() == 1);
    await_state(doomed.pid(), "S");
    doomed.kill().unwrap();
    assert_eq!(doomed.join().unwrap().signal(), Some(libc::SIGKILL));
    let (b2, quit) = (b.clone(), Event::new().unwrap());
    let q = quit.clone();
    let heir = Process::fork(move || {
        let _keep = b2; // holds the dead party's slot, alive, and never waits
        q.wait_timeout(Duration::from_secs(30)).unwrap();
    })
    .unwrap();
    let t = Instant::now();
    let got = b.wait_timeout(Duration::from_secs(10));
    let took = t.elapsed();
    assert!(matches!(got, Err(Error::BrokenBarrier)), "got {got:?}");
    assert!(
        took < shmwire::PROBE_INTERVAL * 20,
        "the dead party was noticed only after {took:?}"
    );
    quit.set().unwrap();
    assert!(heir.join().unwrap().success());
}

fn barrier_reset_breaks_the_parties_waiting() {
    // Python: "any threads currently waiting receive BrokenBarrierError".
    let b = Barrier::new(3).unwrap();
    let kids: Vec<Process> = (0..2)
        .map(|_| {
            let b = b.clone();
            Process::fork(move || {
                let got = b.wait_timeout(Duration::from_secs(20));
                assert!(
                    matches!(got, Err(Error::BrokenBarrier)),
                    "a party waiting through reset() got {got:?}"
                );
            })
            .unwrap()
        })
        .collect();
    await_true("two parties waiting", || b.n_waiting() == 2);
    b.reset().unwrap();
    for k in kids {
        let st = k.join_timeout(Duration::from_secs(10)).unwrap();
        assert!(st.success(), "{st}");
    }
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
    // A full round passes after the reset.
    let kids: Vec<Process> = (0..2)
        .map(|_| {
            let b = b.clone();
            Process::fork(move || {
                b.wait_timeout(Duration::from_secs(10)).unwrap();
            })
            .unwrap()
        })
        .collect();
    b.wait_timeout(Duration::from_secs(10)).unwrap();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
}

fn barrier_reset_racing_an_arrival_loses_nothing() {
    // A reset stopped between reading the barrier's state and writing it; meanwhile a round passes
    // and a party arrives for the next one. When the reset goes on, that party was waiting through
    // it: it gets BrokenBarrier at once, instead of waiting in a round whose count forgot it.
    let b = Barrier::new(2).unwrap();
    let br = b.clone();
    let resetter = Process::fork(move || br.__reset_interrupted(libc::SIGSTOP).unwrap()).unwrap();
    await_state(resetter.pid(), "T");
    let ba = b.clone();
    let a = Process::fork(move || {
        ba.wait_timeout(Duration::from_secs(10)).unwrap();
        let got = ba.wait_timeout(Duration::from_secs(10));
        assert!(matches!(got, Err(Error::BrokenBarrier)), "got {got:?}");
    })
    .unwrap();
    b.wait_timeout(Duration::from_secs(10)).unwrap();
    await_true("the party waiting in the next round", || b.n_waiting() == 1);
    resetter.signal(libc::SIGCONT).unwrap();
    assert!(resetter.join().unwrap().success());
    let (st, _) = within(shmwire::PROBE_INTERVAL * 20, || {
        a.join_timeout(Duration::from_secs(10)).unwrap()
    });
    assert!(st.success(), "{st}");
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
    // Two parties pass the next round, and only two.
    let b2 = b.clone();
    let k = Process::fork(move || {
        b2.wait_timeout(Duration::from_secs(10)).unwrap();
    })
    .unwrap();
    b.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(k.join().unwrap().success());
}

fn event_set_then_clear_wakes_the_waiters() {
    // Python wakes a process already waiting on `set(); clear()`; `wait(timeout)` then answers with
    // the flag as it finds it (multiprocessing.Event), and `wait()` returns. The waiters are stopped
    // while they sleep, so that both calls land before either can look: the flag is then clear.
    let e = Event::new().unwrap();
    let (e1, e2) = (e.clone(), e.clone());
    let timed = Process::fork(move || {
        let t = Instant::now();
        let got = e1.wait_timeout(Duration::from_secs(30)).unwrap();
        assert!(!got, "the flag was clear again");
        assert!(t.elapsed() < Duration::from_secs(10), "not woken");
    })
    .unwrap();
    let untimed = Process::fork(move || e2.wait().unwrap()).unwrap();
    await_state(timed.pid(), "S");
    await_state(untimed.pid(), "S");
    std::thread::sleep(Duration::from_millis(50)); // past any spinning, asleep on the word
    for p in [&timed, &untimed] {
        await_state(p.pid(), "S");
        p.signal(libc::SIGSTOP).unwrap();
        await_state(p.pid(), "T");
    }
    e.set().unwrap();
    e.clear().unwrap();
    for p in [&timed, &untimed] {
        p.signal(libc::SIGCONT).unwrap();
    }
    for p in [timed, untimed] {
        let (st, _) = within(shmwire::PROBE_INTERVAL * 20, || {
            p.join_timeout(Duration::from_secs(5))
        });
        let st = st.expect("a waiter slept through set(); clear()");
        assert!(st.success(), "{st}");
    }
    assert!(!e.is_set());
    assert!(!e.wait_timeout(Duration::from_millis(20)).unwrap());
}

fn huge_timeouts_wait_without_panicking() {
    // `Duration::MAX` is a timeout that never comes, not an overflow.
    let b = Barrier::new(2).unwrap();
    let (cond, sem, ev) = (
        Condition::new().unwrap(),
        Semaphore::new(0).unwrap(),
        Event::new().unwrap(),
    );
    let (b2, c2, s2, e2) = (b.clone(), cond.clone(), sem.clone(), ev.clone());
    let p = Process::fork(move || {
        b2.wait_timeout(Duration::MAX).unwrap();
        // The parent is waiting on the condition once it can take the lock after us.
        loop {
            let _g = c2.acquire().unwrap();
            c2.notify_all().unwrap();
            if s2.value() == 1 {
                break;
            }
            drop(_g);
            std::thread::sleep(Duration::from_millis(5));
        }
        e2.set().unwrap();
    })
    .unwrap();
    b.wait_timeout(Duration::MAX).unwrap();
    let g = cond.acquire().unwrap();
    sem.release().unwrap(); // under the lock: the child notifies only once we wait
    let (g, notified) = cond.wait_timeout(g, Duration::MAX).unwrap();
    assert!(notified);
    drop(g);
    assert!(ev.wait_timeout(Duration::MAX).unwrap());
    sem.acquire_timeout(Duration::MAX).unwrap();
    assert!(p.join().unwrap().success());
}

fn named_objects_hold_their_first_value_as_soon_as_they_open() {
    // The creator is stopped as soon as the object can be opened by name: it must already hold the
    // value it was created with.
    let tag = format!("init{}", std::process::id());
    let (vn, an, sn) = (
        format!("{tag}-value"),
        format!("{tag}-array"),
        format!("{tag}-sem"),
    );
    let n = vn.clone();
    let c = Process::fork(move || {
        let _v = Value::<u64>::__create_interrupted(&n, 42, libc::SIGSTOP).unwrap();
    })
    .unwrap();
    await_state(c.pid(), "T");
    let v = Value::<u64>::open(&vn).unwrap();
    let seen = v.get().unwrap();
    c.signal(libc::SIGCONT).unwrap();
    assert!(c.join().unwrap().success());
    assert_eq!(
        seen, 42,
        "a named Value opened before its first value was written"
    );

    let n = an.clone();
    let c = Process::fork(move || {
        let _a = Array::<u32>::__create_interrupted(&n, &[1, 2, 3], libc::SIGSTOP).unwrap();
    })
    .unwrap();
    await_state(c.pid(), "T");
    let a = Array::<u32>::open(&an).unwrap();
    let seen = a.to_vec().unwrap();
    c.signal(libc::SIGCONT).unwrap();
    assert!(c.join().unwrap().success());
    assert_eq!(seen, [1, 2, 3], "a named Array opened before it was filled");

    let n = sn.clone();
    let c = Process::fork(move || {
        let _s = Semaphore::__create_interrupted(&n, 3, libc::SIGSTOP).unwrap();
    })
    .unwrap();
    await_state(c.pid(), "T");
    let s = Semaphore::open(&sn).unwrap();
    let seen = s.value();
    c.signal(libc::SIGCONT).unwrap();
    assert!(c.join().unwrap().success());
    assert_eq!(
        seen, 3,
        "a named Semaphore opened before its count was written"
    );
}

fn value_guard_is_a_private_copy() {
    // No reference into bytes another process writes: what a guard shows does not change under it,
    // even when a process writes the value without the lock; the guard's changes are written back
    // when it drops.
    let v = Value::new(1u64).unwrap();
    let wrote = Event::new().unwrap();
    let g = v.get_lock().unwrap();
    let first = *g;
    let (v2, w2) = (v.clone(), wrote.clone());
    let p = Process::fork(move || {
        v2.store(7); // lock-free: it does not wait for the guard
        w2.set().unwrap();
    })
    .unwrap();
    wrote.wait().unwrap();
    let second = *g;
    drop(g);
    assert!(p.join().unwrap().success());
    assert_eq!(
        (first, second),
        (1, 1),
        "the value changed under a live guard"
    );
    assert_eq!(v.load(), 7);
    {
        let mut g = v.get_lock().unwrap();
        *g += 1;
    }
    assert_eq!(v.load(), 8);
}

fn value_and_array_across_processes() {
    let v = Value::new(0i64).unwrap();
    let a = Array::<u64>::zeroed(9).unwrap();
    let kids: Vec<Process> = (0..8)
        .map(|i| {
            let (v, a) = (v.clone(), a.clone());
            Process::fork(move || {
                for _ in 0..10_000 {
                    v.fetch_add(1); // atomic, no lock
                }
                a.set(i, i as u64 * 10).unwrap();
                let mut g = a.get_lock().unwrap();
                g[8] += 1;
            })
            .unwrap()
        })
        .collect();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    assert_eq!(v.load(), 80_000);
    assert_eq!(v.get().unwrap(), 80_000);
    let got = a.to_vec().unwrap();
    assert_eq!(&got[..8], &[0, 10, 20, 30, 40, 50, 60, 70]);
    assert_eq!(got[8], 8);
    assert_eq!(a.len(), 9);
    assert!(matches!(
        a.get(9),
        Err(Error::OutOfRange { index: 9, len: _ })
    ));
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Debug, PartialEq)]
    #[repr(C)]
    struct Point {
        x: f64,
        y: f64,
    }
    let p = Value::new(Point { x: 1.0, y: 2.0 }).unwrap();
    let p2 = p.clone();
    let k = Process::fork(move || {
        let mut g = p2.get_lock().unwrap();
        g.x += 10.0;
    })
    .unwrap();
    assert!(k.join().unwrap().success());
    assert_eq!(p.get().unwrap(), Point { x: 11.0, y: 2.0 });
}

fn shared_memory_copies_in_and_out() {
    // The safe accessors copy (at any alignment) and refuse a range past the end, writing nothing.
    let name = format!("blk{}", std::process::id());
    let m = SharedMemory::create(&name, 1000).unwrap();
    let pattern: Vec<u8> = (0..997u32).map(|i| (i * 7 + 3) as u8).collect();
    let n = name.clone();
    let p = Process::fork(move || {
        let m = SharedMemory::open(&n).unwrap();
        m.write(3, &pattern).unwrap();
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    let mut got = vec![0u8; 997];
    m.read(3, &mut got).unwrap();
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, &b)| b == (i as u32 * 7 + 3) as u8)
    );
    let mut one = [0u8; 1];
    m.read(999, &mut one).unwrap();
    assert_eq!(one[0], (996u32 * 7 + 3) as u8);
    let before = m.to_vec();
    assert!(matches!(m.write(998, b"abc"), Err(Error::Invalid(_))));
    assert!(matches!(
        m.read(usize::MAX, &mut one),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        m.read(0, &mut [0u8; 1001]),
        Err(Error::Invalid(_))
    ));
    assert_eq!(m.to_vec(), before, "a refused write changed the block");
}

fn every_object_by_name_in_an_exec_d_binary() {
    let tag = format!("n{}", std::process::id());
    let lock = Lock::create(&format!("{tag}-lock")).unwrap();
    let count = Value::<u64>::create(&format!("{tag}-count"), 0).unwrap();
    let arr = Array::<u32>::create(&format!("{tag}-array"), &[0; 4]).unwrap();
    let sem = Semaphore::create(&format!("{tag}-sem"), 0).unwrap();
    let barrier = Barrier::create(&format!("{tag}-barrier"), 2).unwrap();
    let _rlock = RLock::create(&format!("{tag}-rlock")).unwrap();
    let _cond = Condition::create(&format!("{tag}-cond")).unwrap();
    let event = Event::create(&format!("{tag}-event")).unwrap();
    assert!(matches!(
        Lock::create(&format!("{tag}-lock")),
        Err(Error::Exists)
    ));
    assert!(matches!(
        Event::open(&format!("{tag}-lock")),
        Err(Error::Incompatible)
    ));
    let child = Process::spawn("by-name", &tag).unwrap();
    for _ in 0..1000 {
        let _g = lock.acquire().unwrap();
        count.set(count.get().unwrap() + 1).unwrap();
    }
    sem.acquire_timeout(Duration::from_secs(10)).unwrap();
    barrier.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(event.wait_timeout(Duration::from_secs(10)).unwrap());
    assert!(child.join().unwrap().success());
    assert_eq!(count.get().unwrap(), 2000);
    assert_eq!(arr.get(2).unwrap(), 42);
}
