//! Locks, semaphores, events, conditions, barriers and shared values between real processes,
//! including holders that are killed or stopped, and objects opened by name in exec'd binaries.

mod common;

use common::within;
use shmwire::{
    Array, Barrier, BoundedSemaphore, Condition, Error, Event, Lock, Process, Queue, RLock,
    Semaphore, Value,
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
        value_and_array_across_processes,
        every_object_by_name_in_an_exec_d_binary,
    ]);
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
    let lock = Lock::new().unwrap();
    let count = Value::new(0u64).unwrap();
    let workers: Vec<Process> = (0..4)
        .map(|_| {
            let (lock, count) = (lock.clone(), count.clone());
            Process::fork(move || {
                for _ in 0..3000 {
                    let _g = lock.acquire().unwrap();
                    let v = count.get().unwrap();
                    count.set(v + 1).unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    // A holder that stops itself inside the critical section: others time out, never steal.
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
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    assert!(matches!(
        lock.acquire_timeout(shmwire::PROBE_INTERVAL * 3),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= shmwire::PROBE_INTERVAL * 3);
    assert!(lock.try_acquire().unwrap().is_none());
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
    assert!(matches!(s.release(), Err(Error::Misuse)));
    s.acquire().unwrap();
    let s2 = s.clone();
    let p = Process::fork(move || s2.release().unwrap()).unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(s.value(), 1);
    assert!(matches!(s.release(), Err(Error::Misuse)));
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
                    q.put(&b.wait().unwrap()).unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    for _ in 0..3 {
        indices.put(&b.wait().unwrap()).unwrap();
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
    assert!(matches!(Barrier::new(0), Err(Error::Io(_))));
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
    assert!(matches!(a.get(9), Err(Error::Misuse)));
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
        Err(Error::Io(_))
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
