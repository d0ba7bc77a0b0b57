//! Locks, semaphores, events, conditions, barriers and shared values between real processes,
//! including holders that are killed or stopped, and objects opened by name in exec'd binaries.

mod common;

use common::within;
use shmwire::{
    Array, Barrier, BoundedSemaphore, Condition, Error, Event, Lock, PROBE_INTERVAL, Process,
    Queue, RLock, Semaphore, SharedMemory, Value, WaitStrategy,
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
        barrier_enrolled_party_that_dies_before_waiting_breaks_it,
        barrier_wait_in_an_ended_round_is_refused_without_arriving,
        event_set_then_clear_wakes_the_waiters,
        huge_timeouts_wait_without_panicking,
        named_objects_hold_their_first_value_as_soon_as_they_open,
        value_and_array_across_processes,
        value_guard_is_a_private_copy,
        shared_memory_copies_in_and_out,
        every_object_by_name_in_an_exec_d_binary,
        semaphore_permits_are_given_back_on_drop,
        every_blocking_call_of_the_family_has_a_timeout,
        condition_wait_timeout_keeps_its_bound_while_a_stopped_process_holds_the_lock,
        condition_wait_while_timeout_returns_once_the_condition_clears,
        condition_notify_wakes_one_and_the_other_waiter_times_out,
        condition_sleep_interruptible_tells_a_notify_for_another_from_its_own,
        condition_ping_pong_loses_no_wakeup,
        condition_sleep_interruptible_asks_between_signals_and_stays_registered,
        barrier_wait_timeout_times_out_and_breaks_it_for_the_others,
        idle_waiters_sleep_until_woken_not_every_probe_interval,
        wait_strategy_reaches_every_waiter,
        builders_name_objects_that_others_open,
        pod_values_open_by_size_and_alignment,
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
    // A timeout breaks it for everyone, as in Python; the party that timed out hears `Timeout`.
    let b3 = b.clone();
    let other =
        Process::fork(move || assert!(matches!(b3.wait(), Err(Error::BrokenBarrier)))).unwrap();
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(150)),
        Err(Error::Timeout)
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

fn barrier_enrolled_party_that_dies_before_waiting_breaks_it() {
    // A party that enrols and is killed before it ever waits (the action runner of a two-phase
    // barrier) breaks the round for the others, as one that waited before would.
    let b = Barrier::new(2).unwrap();
    let b1 = b.clone();
    let doomed = Process::fork(move || {
        b1.enrol().unwrap();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let waiter = {
        let b = b.clone();
        Process::fork(move || {
            let got = b.wait();
            assert!(matches!(got, Err(Error::BrokenBarrier)), "{got:?}");
        })
        .unwrap()
    };
    await_true("the other waiting", || b.n_waiting() == 1);
    doomed.kill().unwrap();
    let st = waiter.join_timeout(shmwire::PROBE_INTERVAL * 20).unwrap();
    assert!(st.success(), "{st}");
    let _ = doomed.join();
}

fn barrier_wait_in_an_ended_round_is_refused_without_arriving() {
    // A party that read the generation before a reset cancelled the round it meant to join is
    // refused (BrokenBarrier) and does not arrive in the next round, which then passes.
    let b = Barrier::new(2).unwrap();
    let g = b.generation();
    let waiter = {
        let b = b.clone();
        Process::fork(move || {
            let got = b.wait_in(g, Some(Duration::from_secs(20)));
            assert!(matches!(got, Err(Error::BrokenBarrier)), "{got:?}");
        })
        .unwrap()
    };
    await_true("one waiting", || b.n_waiting() == 1);
    b.reset().unwrap();
    assert!(
        waiter
            .join_timeout(Duration::from_secs(10))
            .unwrap()
            .success()
    );
    assert_ne!(b.generation(), g);
    assert!(matches!(b.wait_in(g, None), Err(Error::BrokenBarrier)));
    assert_eq!(b.n_waiting(), 0, "a refused party arrived");
    let now = b.generation();
    let other = {
        let b = b.clone();
        Process::fork(move || {
            b.wait_in(now, Some(Duration::from_secs(10))).unwrap();
        })
        .unwrap()
    };
    b.wait_in(now, Some(Duration::from_secs(10))).unwrap();
    assert!(other.join().unwrap().success());
    assert!(!b.broken());
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

/// Waits (at most `limit`) for `p` to end and returns its status; a process still running then is
/// killed, and the test fails.
fn join_within(p: Process, limit: Duration, what: &str) -> shmwire::ExitStatus {
    match p.join_timeout(limit) {
        Ok(st) => st,
        Err(e) => {
            let _ = p.kill();
            let _ = p.join();
            panic!("{what}: still running after {limit:?} ({e})");
        }
    }
}

/// `getrusage(RUSAGE_THREAD)` of the calling thread.
fn thread_usage() -> libc::rusage {
    // SAFETY: a plain syscall filling a zeroed struct of the right type.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut u), 0);
        u
    }
}

/// CPU time (user + system) the calling thread has used.
fn thread_cpu() -> Duration {
    let u = thread_usage();
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(u.ru_utime) + us(u.ru_stime))
}

fn semaphore_permits_are_given_back_on_drop() {
    // A permit taken in one process holds the count down until that process drops it.
    let sem = Semaphore::new(1).unwrap();
    let (held, go) = (Event::new().unwrap(), Event::new().unwrap());
    let (s, h, g) = (sem.clone(), held.clone(), go.clone());
    let p = Process::fork(move || {
        let permit = s.acquire_permit().unwrap();
        h.set().unwrap();
        g.wait().unwrap();
        drop(permit);
    })
    .unwrap();
    held.wait().unwrap();
    assert_eq!(sem.value(), 0);
    assert!(sem.try_acquire_permit().unwrap().is_none());
    assert!(matches!(
        sem.acquire_permit_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    go.set().unwrap();
    let permit = sem.acquire_permit_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(sem.value(), 0);
    drop(permit);
    assert_eq!(sem.value(), 1);
    assert!(p.join().unwrap().success());
    // `forget` keeps it taken (to be given back by `release`).
    sem.try_acquire_permit().unwrap().unwrap().forget();
    assert_eq!(sem.value(), 0);
    sem.release().unwrap();
    // A bounded semaphore's permits; a release past the bound still refuses.
    let b = BoundedSemaphore::new(2).unwrap();
    let (p1, p2) = (b.acquire_permit().unwrap(), b.acquire_permit().unwrap());
    assert!(b.try_acquire_permit().unwrap().is_none());
    let b2 = b.clone();
    let k = Process::fork(move || {
        let _p = b2.acquire_permit_timeout(Duration::from_secs(10)).unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    drop(p1);
    assert!(k.join().unwrap().success());
    drop(p2);
    assert_eq!(b.value(), 2);
    assert!(matches!(b.release(), Err(Error::CalledTooOften)));
}

fn every_blocking_call_of_the_family_has_a_timeout() {
    // A process takes every lock of the family and stops: each timed call gives up with the one
    // rule's answer, no sooner than its timeout and well before the bound, and changes nothing.
    let v = Value::new(1u64).unwrap();
    let a = Array::<u32>::new(&[1, 2, 3]).unwrap();
    let (cond, lock, rlock) = (
        Condition::new().unwrap(),
        Lock::new().unwrap(),
        RLock::new().unwrap(),
    );
    let (v2, a2, c2, l2, r2) = (
        v.clone(),
        a.clone(),
        cond.clone(),
        lock.clone(),
        rlock.clone(),
    );
    let holder = Process::fork(move || {
        let _g = (
            v2.get_lock().unwrap(),
            a2.get_lock().unwrap(),
            c2.acquire().unwrap(),
            l2.acquire().unwrap(),
            r2.acquire().unwrap(),
        );
        // SAFETY: stops itself while holding them all.
        unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
    })
    .unwrap();
    await_state(holder.pid(), "T");
    let d = Duration::from_millis(120);
    let timed_out = |what: &str, f: &mut dyn FnMut() -> bool| {
        let t = Instant::now();
        assert!(f(), "{what}: not a timeout");
        let took = t.elapsed();
        assert!(
            took >= d,
            "{what}: gave up after {took:?}, before its timeout"
        );
        assert!(
            took < d * 2 + Duration::from_secs(10),
            "{what}: took {took:?}"
        );
    };
    let is_timeout = |r: shmwire::Result<()>| matches!(r, Err(Error::Timeout));
    timed_out("Value::get_lock_timeout", &mut || {
        is_timeout(v.get_lock_timeout(d).map(drop))
    });
    timed_out("Value::get_timeout", &mut || {
        is_timeout(v.get_timeout(d).map(drop))
    });
    timed_out("Value::set_timeout", &mut || {
        is_timeout(v.set_timeout(5, d))
    });
    timed_out("Array::get_lock_timeout", &mut || {
        is_timeout(a.get_lock_timeout(d).map(drop))
    });
    timed_out("Array::get_timeout", &mut || {
        is_timeout(a.get_timeout(0, d).map(drop))
    });
    timed_out("Array::set_timeout", &mut || {
        is_timeout(a.set_timeout(0, 9, d))
    });
    timed_out("Array::to_vec_timeout", &mut || {
        is_timeout(a.to_vec_timeout(d).map(drop))
    });
    timed_out("Condition::acquire_timeout", &mut || {
        is_timeout(cond.acquire_timeout(d).map(drop))
    });
    timed_out("Lock::acquire_timeout", &mut || {
        is_timeout(lock.acquire_timeout(d).map(drop))
    });
    timed_out("RLock::acquire_timeout", &mut || {
        is_timeout(rlock.acquire_timeout(d).map(drop))
    });
    let sem = Semaphore::new(0).unwrap();
    timed_out("Semaphore::acquire_timeout", &mut || {
        is_timeout(sem.acquire_timeout(d))
    });
    timed_out("Semaphore::acquire_permit_timeout", &mut || {
        is_timeout(sem.acquire_permit_timeout(d).map(drop))
    });
    let bsem = BoundedSemaphore::new(0).unwrap();
    timed_out("BoundedSemaphore::acquire_permit_timeout", &mut || {
        is_timeout(bsem.acquire_permit_timeout(d).map(drop))
    });
    let ev = Event::new().unwrap();
    timed_out("Event::wait_timeout", &mut || {
        matches!(ev.wait_timeout(d), Ok(false))
    });
    let bar = Barrier::new(2).unwrap();
    timed_out("Barrier::wait_timeout", &mut || {
        is_timeout(bar.wait_timeout(d).map(drop))
    });
    holder.signal(libc::SIGCONT).unwrap();
    assert!(holder.join().unwrap().success());
    assert_eq!(v.get().unwrap(), 1, "a timed-out set wrote");
    assert_eq!(a.to_vec().unwrap(), [1, 2, 3], "a timed-out set wrote");
    // A condition that never clears: the guard is given up with the timeout.
    let mut g = Some(cond.acquire().unwrap());
    timed_out("Condition::wait_while_timeout", &mut || {
        is_timeout(
            cond.wait_while_timeout(g.take().unwrap(), || true, d)
                .map(drop),
        )
    });
    assert!(
        !cond.lock().is_locked(),
        "the lock is still held after the timeout"
    );
    let g = cond.acquire().unwrap();
    let (g, notified) = cond.wait_timeout(g, d).unwrap();
    assert!(!notified);
    drop(g);
}

fn condition_wait_timeout_keeps_its_bound_while_a_stopped_process_holds_the_lock() {
    // The waiter's timeout passes while a stopped process holds the lock it must take back: it gets
    // `Timeout` (without the lock) within the documented bound (the timeout again), not a hang.
    let cond = Condition::new().unwrap();
    let has_lock = Event::new().unwrap();
    let (c, h) = (cond.clone(), has_lock.clone());
    let waiter = Process::fork(move || {
        let g = c.acquire().unwrap();
        h.set().unwrap();
        let t = Instant::now();
        let got = c.wait_timeout(g, Duration::from_millis(500));
        let took = t.elapsed();
        assert!(
            matches!(got, Err(Error::Timeout)),
            "got {:?}",
            got.map(|(_, n)| n)
        );
        assert!(took >= Duration::from_millis(500), "gave up after {took:?}");
    })
    .unwrap();
    has_lock.wait().unwrap();
    let c = cond.clone();
    let holder = Process::fork(move || {
        let _g = c.acquire().unwrap(); // once the waiter has released it to wait
        // SAFETY: stops itself while holding the lock.
        unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
    })
    .unwrap();
    await_state(holder.pid(), "T");
    let st = join_within(
        waiter,
        Duration::from_secs(10),
        "the timed condition waiter",
    );
    assert!(st.success(), "{st}");
    holder.signal(libc::SIGCONT).unwrap();
    assert!(holder.join().unwrap().success());
}

fn condition_wait_while_timeout_returns_once_the_condition_clears() {
    let cond = Condition::new().unwrap();
    let go = Value::new(0u32).unwrap();
    let (c, g2) = (cond.clone(), go.clone());
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(50));
        let _g = c.acquire().unwrap();
        g2.store(1);
        c.notify_all().unwrap();
    })
    .unwrap();
    let g = cond.acquire().unwrap();
    let g = cond
        .wait_while_timeout(g, || go.load() == 0, Duration::from_secs(10))
        .unwrap();
    assert!(cond.lock().is_locked());
    drop(g);
    assert!(p.join().unwrap().success());
}

fn barrier_wait_timeout_times_out_and_breaks_it_for_the_others() {
    // Python: the party whose wait times out breaks the barrier; it hears `Timeout` (the one rule
    // for time), the party waiting beside it and later arrivals `BrokenBarrier`, until reset.
    let b = Barrier::new(3).unwrap();
    let b2 = b.clone();
    let other = Process::fork(move || {
        let got = b2.wait_timeout(Duration::from_secs(30));
        assert!(matches!(got, Err(Error::BrokenBarrier)), "got {got:?}");
    })
    .unwrap();
    await_true("the first party waiting", || b.n_waiting() == 1);
    let b3 = b.clone();
    let timed = Process::fork(move || {
        let t = Instant::now();
        let got = b3.wait_timeout(Duration::from_millis(200));
        assert!(matches!(got, Err(Error::Timeout)), "got {got:?}");
        assert!(t.elapsed() >= Duration::from_millis(200));
    })
    .unwrap();
    let st = join_within(timed, Duration::from_secs(10), "the timed party");
    assert!(st.success(), "the party that timed out: {st}");
    let st = join_within(other, Duration::from_secs(10), "the party beside it");
    assert!(st.success(), "the party beside it: {st}");
    assert!(b.broken());
    assert!(matches!(
        b.wait_timeout(Duration::from_secs(1)),
        Err(Error::BrokenBarrier)
    ));
    b.reset().unwrap();
    let b4 = b.clone();
    let kids: Vec<Process> = (0..2)
        .map(|_| {
            let b = b4.clone();
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

fn idle_waiters_sleep_until_woken_not_every_probe_interval() {
    // An Event or Semaphore waiter has nobody to probe (no holder can die unnoticed): it sleeps until
    // its deadline or a wake-up, instead of waking every PROBE_INTERVAL. Counted by the waiter's
    // voluntary context switches over a wait of ten intervals (slices would make at least nine).
    let ev = Event::new().unwrap();
    let sem = Semaphore::new(0).unwrap();
    let switches = Array::<u64>::zeroed(3).unwrap();
    let (e, s, sw) = (ev.clone(), sem.clone(), switches.clone());
    let p = Process::fork(move || {
        let span = PROBE_INTERVAL * 10;
        let before = thread_usage().ru_nvcsw;
        assert!(!e.wait_timeout(span).unwrap());
        let mid = thread_usage().ru_nvcsw;
        assert!(matches!(s.acquire_timeout(span), Err(Error::Timeout)));
        let after = thread_usage().ru_nvcsw;
        sw.set(0, (mid - before) as u64).unwrap();
        sw.set(1, (after - mid) as u64).unwrap();
        // And a wake-up still reaches an unbounded sleeper.
        let before = thread_usage().ru_nvcsw;
        e.wait().unwrap();
        s.acquire().unwrap();
        sw.set(2, (thread_usage().ru_nvcsw - before) as u64)
            .unwrap();
    })
    .unwrap();
    std::thread::sleep(PROBE_INTERVAL * 25);
    ev.set().unwrap();
    sem.release().unwrap();
    let st = join_within(p, Duration::from_secs(20), "the idle waiter");
    assert!(st.success(), "{st}");
    let got = switches.to_vec().unwrap();
    assert!(
        got[0] < 5,
        "an Event waiter woke {} times in 10 intervals",
        got[0]
    );
    assert!(
        got[1] < 5,
        "a Semaphore waiter woke {} times in 10 intervals",
        got[1]
    );
    assert!(got[2] < 8, "an unbounded waiter woke {} times", got[2]);
}

fn wait_strategy_reaches_every_waiter() {
    // A waiter built with `SpinThenSleep(d)` spins for `d` before it sleeps (CPU time spent in the
    // wait), one built with `Sleep` sleeps at once: the strategy reaches every blocking call of the
    // family. The parent holds the locks; a child waits on each, with a timeout, and reports the
    // CPU time each wait used.
    let spin = Duration::from_millis(250);
    for (i, strategy) in [WaitStrategy::SpinThenSleep(spin), WaitStrategy::Sleep]
        .into_iter()
        .enumerate()
    {
        let lock = Lock::builder().wait_strategy(strategy).build().unwrap();
        let rlock = RLock::builder().wait_strategy(strategy).build().unwrap();
        let sem = Semaphore::builder(0)
            .wait_strategy(strategy)
            .build()
            .unwrap();
        let bsem = BoundedSemaphore::builder(0)
            .wait_strategy(strategy)
            .build()
            .unwrap();
        let ev = Event::builder().wait_strategy(strategy).build().unwrap();
        let bar = Barrier::builder(2).wait_strategy(strategy).build().unwrap();
        let val = Value::builder(0u64)
            .wait_strategy(strategy)
            .build()
            .unwrap();
        let arr = Array::builder(&[0u8; 4])
            .wait_strategy(strategy)
            .build()
            .unwrap();
        let cond = Condition::builder()
            .wait_strategy(strategy)
            .build()
            .unwrap();
        // An opened (or cloned) handle takes its strategy from `set_wait_strategy`.
        let mut opened = Lock::new().unwrap();
        assert_eq!(opened.wait_strategy(), WaitStrategy::Adaptive);
        opened.set_wait_strategy(strategy);
        for (name, s) in [
            ("Lock", lock.wait_strategy()),
            ("RLock", rlock.wait_strategy()),
            ("Semaphore", sem.wait_strategy()),
            ("BoundedSemaphore", bsem.wait_strategy()),
            ("Event", ev.wait_strategy()),
            ("Barrier", bar.wait_strategy()),
            ("Value", val.wait_strategy()),
            ("Array", arr.wait_strategy()),
            ("Condition", cond.wait_strategy()),
            ("set_wait_strategy", opened.wait_strategy()),
        ] {
            assert_eq!(s, strategy, "{name}");
        }
        let cpu = Array::<u64>::zeroed(10).unwrap();
        let _held = (
            lock.acquire().unwrap(),
            rlock.acquire().unwrap(),
            val.get_lock().unwrap(),
            arr.get_lock().unwrap(),
            cond.acquire().unwrap(),
            opened.acquire().unwrap(),
        );
        let (lock, rlock, sem, bsem, ev, bar, val, arr, cond, opened, c) = (
            lock.clone(),
            rlock.clone(),
            sem.clone(),
            bsem.clone(),
            ev.clone(),
            bar.clone(),
            val.clone(),
            arr.clone(),
            cond.clone(),
            opened.clone(),
            cpu.clone(),
        );
        let p = Process::fork(move || {
            let d = Duration::from_millis(400);
            let waits: [&dyn Fn() -> bool; 10] = [
                &|| lock.acquire_timeout(d).is_err(),
                &|| rlock.acquire_timeout(d).is_err(),
                &|| sem.acquire_timeout(d).is_err(),
                &|| bsem.acquire_permit_timeout(d).is_err(),
                &|| !ev.wait_timeout(d).unwrap(),
                &|| bar.wait_timeout(d).is_err(),
                &|| val.get_lock_timeout(d).is_err(),
                &|| arr.get_lock_timeout(d).is_err(),
                &|| cond.acquire_timeout(d).is_err(),
                &|| opened.acquire_timeout(d).is_err(),
            ];
            for (k, wait) in waits.iter().enumerate() {
                let t = thread_cpu();
                assert!(wait(), "wait {k} did not time out");
                c.set(k, (thread_cpu() - t).as_micros() as u64).unwrap();
            }
            // A spin longer than the timeout ends at the deadline (bound: the timeout, x10).
            let (long, d) = (
                WaitStrategy::SpinThenSleep(Duration::from_secs(5)),
                Duration::from_millis(100),
            );
            let (mut lock, mut sem, mut ev, mut bar) = (lock, sem, ev, bar);
            lock.set_wait_strategy(long);
            sem.set_wait_strategy(long);
            ev.set_wait_strategy(long);
            bar.set_wait_strategy(long);
            let waits: [(&str, &dyn Fn() -> bool); 4] = [
                ("Lock", &|| lock.acquire_timeout(d).is_err()),
                ("Semaphore", &|| sem.acquire_timeout(d).is_err()),
                ("Event", &|| !ev.wait_timeout(d).unwrap()),
                ("Barrier", &|| bar.wait_timeout(d).is_err()),
            ];
            for (name, wait) in waits {
                let t = Instant::now();
                assert!(wait(), "{name}: did not time out");
                let took = t.elapsed();
                assert!(took < d * 10, "{name}: a 100 ms timeout took {took:?}");
            }
        })
        .unwrap();
        let st = join_within(p, Duration::from_secs(30), "the waiter");
        assert!(st.success(), "{st}");
        let used = cpu.to_vec().unwrap();
        let names = [
            "Lock",
            "RLock",
            "Semaphore",
            "BoundedSemaphore",
            "Event",
            "Barrier",
            "Value",
            "Array",
            "Condition",
            "set_wait_strategy",
        ];
        for (name, us) in names.iter().zip(used) {
            let us = Duration::from_micros(us);
            if i == 0 {
                // Spinning 250 ms of wall time: even a CPU shared four ways gives it far more.
                assert!(us >= Duration::from_millis(25), "{name}: spun only {us:?}");
            } else {
                assert!(us < Duration::from_millis(25), "{name}: used {us:?} asleep");
            }
        }
    }
}

fn builders_name_objects_that_others_open() {
    let tag = format!("bld{}", std::process::id());
    let n = |k: &str| format!("{tag}-{k}");
    let lock = Lock::builder().name(&n("lock")).build().unwrap();
    let _rlock = RLock::builder().name(&n("rlock")).build().unwrap();
    let sem = Semaphore::builder(0).name(&n("sem")).build().unwrap();
    let _bsem = BoundedSemaphore::builder(3)
        .name(&n("bsem"))
        .build()
        .unwrap();
    let ev = Event::builder().name(&n("event")).build().unwrap();
    let bar = Barrier::builder(2).name(&n("barrier")).build().unwrap();
    let val = Value::builder(5u32).name(&n("value")).build().unwrap();
    let arr = Array::builder(&[1u16, 2, 3])
        .name(&n("array"))
        .build()
        .unwrap();
    let _cond = Condition::builder().name(&n("cond")).build().unwrap();
    assert!(matches!(
        Lock::builder().name(&n("lock")).build(),
        Err(Error::Exists)
    ));
    // A plain semaphore has no bound to keep: it does not open as a bounded one.
    assert!(matches!(
        BoundedSemaphore::open(&n("sem")),
        Err(Error::Incompatible)
    ));
    let t = tag.clone();
    let p = Process::fork(move || {
        let n = |k: &str| format!("{t}-{k}");
        let mut lock = Lock::open(&n("lock")).unwrap();
        lock.set_wait_strategy(WaitStrategy::Sleep);
        drop(lock.acquire().unwrap());
        drop(RLock::open(&n("rlock")).unwrap().acquire().unwrap());
        assert_eq!(BoundedSemaphore::open(&n("bsem")).unwrap().value(), 3);
        assert_eq!(Value::<u32>::open(&n("value")).unwrap().get().unwrap(), 5);
        assert_eq!(
            Array::<u16>::open(&n("array")).unwrap().to_vec().unwrap(),
            [1, 2, 3]
        );
        drop(Condition::open(&n("cond")).unwrap().acquire().unwrap());
        Barrier::open(&n("barrier"))
            .unwrap()
            .wait_timeout(Duration::from_secs(10))
            .unwrap();
        Semaphore::open(&n("sem")).unwrap().release().unwrap();
        Event::open(&n("event")).unwrap().set().unwrap();
    })
    .unwrap();
    bar.wait_timeout(Duration::from_secs(10)).unwrap();
    sem.acquire_timeout(Duration::from_secs(10)).unwrap();
    assert!(ev.wait_timeout(Duration::from_secs(10)).unwrap());
    assert!(p.join().unwrap().success());
    assert!(!lock.is_locked());
    assert_eq!(val.get().unwrap(), 5);
    assert_eq!(arr.len(), 3);
}

mod here {
    /// A point, as one program defines it.
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Debug, PartialEq)]
    #[repr(C)]
    pub struct Point {
        pub x: f64,
        pub y: f64,
    }
}

mod there {
    /// The same layout under another name, as another program (or crate version) defines it.
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Debug, PartialEq)]
    #[repr(C)]
    pub struct Pt {
        pub a: f64,
        pub b: f64,
    }
}

fn pod_values_open_by_size_and_alignment() {
    // Plain data is compatible by what matters to its bytes, size and alignment, not by the name of
    // its type; a different size or alignment, or a Value opened as an Array, is `Incompatible`.
    let tag = format!("pod{}", std::process::id());
    let (vn, pn, an) = (format!("{tag}-v"), format!("{tag}-p"), format!("{tag}-a"));
    let _v = Value::<u64>::create(&vn, 7).unwrap();
    let _p = Value::create(&pn, here::Point { x: 1.0, y: 2.0 }).unwrap();
    let _a = Array::<u32>::create(&an, &[1, 2, 3]).unwrap();
    let p = Process::fork(move || {
        let i = Value::<i64>::open(&vn).unwrap();
        assert_eq!(i.get().unwrap(), 7);
        let pt = Value::<there::Pt>::open(&pn).unwrap().get().unwrap();
        assert_eq!((pt.a, pt.b), (1.0, 2.0));
        assert_eq!(
            Array::<i32>::open(&an).unwrap().to_vec().unwrap(),
            [1, 2, 3]
        );
        for r in [
            Value::<u32>::open(&vn).map(drop),      // another size
            Value::<[u32; 2]>::open(&vn).map(drop), // another alignment
            Value::<[f64; 3]>::open(&pn).map(drop), // another size
            Array::<u16>::open(&an).map(drop),      // another element size
            Value::<u32>::open(&an).map(drop),      // an Array is not a Value
            Array::<u64>::open(&vn).map(drop),      // nor a Value an Array
        ] {
            assert!(matches!(r, Err(Error::Incompatible)), "{r:?}");
        }
    })
    .unwrap();
    let st = p.join().unwrap();
    assert!(st.success(), "{st}");
}

extern "C" fn on_usr1(_: libc::c_int) {}

/// `sleep_interruptible` (Python's Condition.wait): a signal ends the futex sleep early and
/// `between()` is asked (an error from it ends the wait with that error); otherwise the wait goes
/// on still registered, so the notify that comes later wakes it (`Ok(true)`); and a timeout is
/// `Ok(false)`.
fn condition_sleep_interruptible_asks_between_signals_and_stays_registered() {
    let cond = Condition::new().unwrap();
    let c = cond.clone();
    let kid = Process::fork(move || {
        // SAFETY: a handler that does nothing, installed without SA_RESTART (as Python's are).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        }
        let g = c.acquire().unwrap();
        let (g, notified) = c.wait_timeout(g, Duration::from_millis(1)).unwrap();
        assert!(!notified);
        drop(g);
        let t0 = Instant::now();
        let g = c.acquire().unwrap();
        let r = c.sleep_interruptible(
            g,
            Some(t0 + Duration::from_millis(100)),
            || Ok::<(), ()>(()),
        );
        assert_eq!(r.unwrap(), Ok(false));
        assert!(t0.elapsed() >= Duration::from_millis(100));
        let mut calls = 0;
        let g = c.acquire().unwrap();
        let r = c.sleep_interruptible(g, None, || {
            calls += 1;
            if calls < 2 { Ok(()) } else { Err("stop") }
        });
        assert_eq!(r.unwrap(), Err("stop"));
        let g = c.acquire().unwrap();
        let r = c.sleep_interruptible(g, None, || Ok::<(), ()>(()));
        assert_eq!(r.unwrap(), Ok(true));
    })
    .unwrap();
    let usr1 = |pid: u32| {
        await_state(pid, "S");
        std::thread::sleep(Duration::from_millis(150));
        // SAFETY: signals our own child, which handles SIGUSR1.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) }, 0);
    };
    std::thread::sleep(Duration::from_millis(300)); // past the timed sleep
    usr1(kid.pid()); // between() -> Ok: sleeps on
    usr1(kid.pid()); // between() -> Err: the wait ends
    usr1(kid.pid()); // the last wait: between() -> Ok, still registered
    std::thread::sleep(Duration::from_millis(100));
    {
        let _g = cond.acquire().unwrap();
        cond.notify().unwrap();
    }
    let st = join_within(kid, Duration::from_secs(20), "the interruptible waiter");
    assert!(st.success(), "{st}");
}

fn condition_sleep_interruptible_tells_a_notify_for_another_from_its_own() {
    // Two processes sleep in `sleep_interruptible` (a timeout, a signal handler that returns);
    // one notify wakes one of them (`true`). Then a signal ends the other's sleep early: the
    // sequence moved, but for the sleeper the kernel woke, so it sleeps on to its deadline and
    // answers `false` then (the deadline is looked at before the sequence).
    let cond = Condition::new().unwrap();
    let answers = Array::<u32>::zeroed(2).unwrap();
    let kids: Vec<Process> = (0..2)
        .map(|i| {
            let (c, a) = (cond.clone(), answers.clone());
            Process::fork(move || {
                // SAFETY: a handler that does nothing, installed without SA_RESTART (as Python's).
                unsafe {
                    let mut sa: libc::sigaction = std::mem::zeroed();
                    sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
                    assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
                }
                let g = c.acquire().unwrap();
                let until = Instant::now() + Duration::from_millis(1500);
                let r = c.sleep_interruptible(g, Some(until), || Ok::<(), ()>(()));
                let notified = r.unwrap().unwrap();
                a.set(i, if notified { 1 } else { 2 }).unwrap();
            })
            .unwrap()
        })
        .collect();
    for k in &kids {
        await_state(k.pid(), "S");
    }
    std::thread::sleep(Duration::from_millis(100)); // both asleep in the wait, not before it
    {
        let _g = cond.acquire().unwrap();
        cond.notify().unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    for k in &kids {
        // SAFETY: signals our own child, which handles SIGUSR1 (or has exited: then ESRCH).
        unsafe { libc::kill(k.pid() as libc::pid_t, libc::SIGUSR1) };
    }
    for k in kids {
        let st = join_within(k, Duration::from_secs(20), "a condition waiter");
        assert!(st.success(), "{st}");
    }
    let mut got = answers.to_vec().unwrap();
    got.sort_unstable();
    assert_eq!(got, [1, 2], "one notified (1), one timed out (2)");
}

fn condition_notify_wakes_one_and_the_other_waiter_times_out() {
    // Two processes sleep in `wait_timeout`; one `notify()` wakes one of them, which answers
    // `true`; the other sleeps on until its timeout and answers `false` (Python's return value),
    // although the sequence moved while it slept.
    let cond = Condition::new().unwrap();
    let answers = Array::<u32>::zeroed(2).unwrap();
    let kids: Vec<Process> = (0..2)
        .map(|i| {
            let (c, a) = (cond.clone(), answers.clone());
            Process::fork(move || {
                let g = c.acquire().unwrap();
                let (g, notified) = c.wait_timeout(g, Duration::from_millis(1500)).unwrap();
                drop(g);
                a.set(i, if notified { 1 } else { 2 }).unwrap();
            })
            .unwrap()
        })
        .collect();
    for k in &kids {
        await_state(k.pid(), "S");
    }
    std::thread::sleep(Duration::from_millis(100)); // both asleep in the wait, not before it
    {
        let _g = cond.acquire().unwrap();
        cond.notify().unwrap();
    }
    for k in kids {
        let st = join_within(k, Duration::from_secs(20), "a condition waiter");
        assert!(st.success(), "{st}");
    }
    let mut got = answers.to_vec().unwrap();
    got.sort_unstable();
    assert_eq!(got, [1, 2], "one notified (1), one timed out (2)");
}

/// Two processes take turns through one condition, round after round: each waits until the other
/// has moved the turn and notified. A waiter that saw the sequence move before the notifier had
/// recorded the notify it could not deliver (the waiter was between its futex calls) slept on
/// and lost it: its wait timed out.
fn condition_ping_pong_loses_no_wakeup() {
    const ROUNDS: u64 = 3000;
    fn play(me: u64, cond: &Condition, turn: &Value<u64>) {
        for round in 0..ROUNDS {
            let mut g = cond.acquire().unwrap();
            while turn.get().unwrap() % 2 != me {
                let (g2, notified) = cond.wait_timeout(g, Duration::from_secs(2)).unwrap();
                g = g2;
                assert!(
                    notified || turn.get().unwrap() % 2 != me,
                    "round {round}: a notify was lost (the wait timed out with the turn ours)"
                );
            }
            turn.set(turn.get().unwrap() + 1).unwrap();
            cond.notify().unwrap();
            drop(g);
        }
    }
    let cond = Condition::new().unwrap();
    let turn = Value::new(0u64).unwrap();
    let (c, t) = (cond.clone(), turn.clone());
    let kid = Process::fork(move || play(1, &c, &t)).unwrap();
    play(0, &cond, &turn);
    let st = join_within(kid, Duration::from_secs(60), "the other player");
    assert!(st.success(), "the other player: {st:?}");
    assert_eq!(turn.get().unwrap(), 2 * ROUNDS);
}
