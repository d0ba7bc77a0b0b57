//! Pool between real processes: map/imap/starmap against the serial computation with both start
//! methods, callbacks, panics, workers killed mid-task, terminate, close and join,
//! maxtasksperchild, initializers, two threads at once, the parent's death, other builds.

mod common;

use common::{Rng, gone};
use shmwire::{Error, Pipe, Pool, Process, StartMethod};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    shmwire::spawn::enter(|_, _| 2);
    common::run(tests![
        map_imap_starmap_equal_serial_fork,
        map_imap_starmap_equal_serial_spawn,
        a_pool_of_n_runs_n_distinct_processes,
        apply_async_callbacks_run_in_the_parent,
        a_panicking_task_fails_alone_and_the_pool_goes_on,
        a_worker_killed_twenty_times_during_a_long_map,
        killed_workers_with_retries_lose_nothing,
        killed_workers_of_a_spawn_pool,
        terminate_mid_map_fails_pending_results,
        close_then_join_finishes_the_work_and_refuses_more,
        maxtasksperchild_replaces_workers_without_losing_or_repeating,
        initializer_runs_in_every_worker,
        a_panicking_initializer_breaks_the_pool_without_a_hang,
        two_threads_use_one_pool_at_once,
        large_arguments_and_results,
        the_parents_death_kills_the_workers_fork,
        the_parents_death_kills_the_workers_spawn,
        dropping_the_pool_reaps_every_worker,
        a_worker_of_another_build_refuses_tasks,
        spawn_refuses_a_function_outside_the_executable,
        async_results_answer_every_timeout_form,
        a_failed_map_leaves_the_other_calls_outcomes_alone,
        a_short_piece_header_from_a_lying_worker_breaks_nothing,
        a_frame_claiming_four_billion_results_allocates_nothing,
        a_worker_killed_as_it_records_its_chunk_fails_no_task,
        a_killed_worker_fails_only_the_task_it_was_running,
        a_result_type_whose_decoding_panics_fails_its_task_alone,
        an_argument_the_initializers_arena_block_leaves_no_room_for_is_refused,
        a_frame_of_no_known_kind_leaves_a_ring_the_successor_can_use,
        imap_yields_an_unencodable_item_s_error_in_its_place,
        two_killing_tasks_of_one_chunk_each_fail_once,
        a_scribbled_initializer_length_allocates_nothing,
        a_callback_that_waits_for_the_pool_is_refused_not_hung,
        a_callback_that_joins_its_pool_is_refused_not_hung,
        two_threads_terminating_at_once_both_return_after_the_workers_are_gone,
    ]);
}

fn tasks() -> u64 {
    if common::long() { 1_000_000 } else { 100_000 }
}

fn f(x: u64) -> u64 {
    x.wrapping_mul(2_654_435_761) ^ (x >> 3)
}

fn add(a: u64, b: u64) -> u64 {
    a * 3 + b
}

fn _pid_of(_: u64) -> u32 {
    std::process::id()
}

fn slow_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn equal_serial(m: StartMethod) {
    let n = tasks();
    let pool = Pool::builder()
        .processes(4)
        .start_method(m)
        .build()
        .unwrap();
    let serial: Vec<u64> = (0..n).map(f).collect();
    assert_eq!(pool.map(f, 0..n).unwrap(), serial, "map");
    let small = n / 10;
    assert_eq!(
        pool.map_chunked(f, 0..small, 1).unwrap(),
        serial[..small as usize],
        "map_chunked(.., 1)"
    );
    let got: Vec<u64> = pool.imap(f, 0..n).map(|r| r.unwrap()).collect();
    assert_eq!(got, serial, "imap");
    let mut got: Vec<u64> = pool.imap_unordered(f, 0..n).map(|r| r.unwrap()).collect();
    let mut want = serial.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "imap_unordered");
    let pairs: Vec<(u64, u64)> = (0..n).map(|i| (i, i % 7)).collect();
    let serial2: Vec<u64> = pairs.iter().map(|&(a, b)| add(a, b)).collect();
    assert_eq!(pool.starmap(add, &pairs).unwrap(), serial2, "starmap");
    assert_eq!(
        pool.starmap_async(add, &pairs).unwrap().get().unwrap(),
        serial2,
        "starmap_async"
    );
    assert_eq!(
        pool.map_async(f, 0..n).unwrap().get().unwrap(),
        serial,
        "map_async"
    );
    assert_eq!(pool.map(f, Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
    pool.close();
    pool.join().unwrap();
}

fn map_imap_starmap_equal_serial_fork() {
    equal_serial(StartMethod::Fork);
}

fn map_imap_starmap_equal_serial_spawn() {
    equal_serial(StartMethod::Spawn);
}

fn a_pool_of_n_runs_n_distinct_processes() {
    for m in [StartMethod::Fork, StartMethod::Spawn] {
        let n = 4;
        let pool = Pool::builder()
            .processes(n)
            .start_method(m)
            .build()
            .unwrap();
        // Each task holds its worker long enough that every worker takes one.
        let got: HashSet<u32> = pool
            .map_chunked(slow_pid, vec![400u64; n], 1)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(got.len(), n, "{m:?}: {got:?}");
        let pids: HashSet<u32> = pool.pids().into_iter().collect();
        assert_eq!(got, pids, "{m:?}");
        assert!(!got.contains(&std::process::id()));
        drop(pool);
        for p in pids {
            assert!(gone(p), "{m:?}: worker {p} outlived its pool");
        }
    }
}

fn square_or_panic(x: i64) -> i64 {
    if x < 0 {
        panic!("negative input {x}");
    }
    x * x
}

fn apply_async_callbacks_run_in_the_parent() {
    let pool = Pool::new(3).unwrap();
    let me = std::process::id();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut results = Vec::new();
    for x in [-2i64, 5, -1, 10] {
        let (ok, err) = (seen.clone(), seen.clone());
        let r = pool
            .apply_async_with(
                square_or_panic,
                x,
                move |v: &i64| {
                    let t = std::thread::current().name().map(str::to_owned);
                    ok.lock().unwrap().push((x, Ok(*v), std::process::id(), t));
                },
                move |e: &Error| {
                    let t = std::thread::current().name().map(str::to_owned);
                    let msg = match e {
                        Error::TaskPanicked { message } => message.clone(),
                        other => format!("unexpected {other:?}"),
                    };
                    err.lock()
                        .unwrap()
                        .push((x, Err(msg), std::process::id(), t));
                },
            )
            .unwrap();
        results.push((x, r));
    }
    for (x, r) in &results {
        match r.get() {
            Ok(v) => assert_eq!(v, x * x),
            Err(Error::TaskPanicked { message }) => {
                assert!(*x < 0);
                assert!(
                    message.contains(&format!("negative input {x}")),
                    "{message}"
                );
            }
            Err(e) => panic!("{x}: {e:?}"),
        }
        assert!(r.ready());
        assert_eq!(r.successful().unwrap(), *x >= 0);
        assert!(matches!(r.get(), Err(Error::Misuse)), "a second get");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (x, out, pid, thread) in seen.iter() {
        assert_eq!(*pid, me, "callbacks run in the parent");
        assert_eq!(
            thread.as_deref(),
            Some("shmwire-pool"),
            "on the result thread"
        );
        match out {
            Ok(v) => assert_eq!(*v, x * x),
            Err(m) => assert!(*x < 0 && m.contains("negative input"), "{m}"),
        }
    }
}

fn a_panicking_task_fails_alone_and_the_pool_goes_on() {
    let pool = Pool::new(2).unwrap();
    let pids: HashSet<u32> = pool.pids().into_iter().collect();
    let xs: Vec<i64> = (-1..200)
        .map(|i| if i == 77 { -77 } else { i.max(0) })
        .collect();
    match pool.map(square_or_panic, &xs) {
        Err(Error::TaskPanicked { message }) => assert!(message.contains("-77"), "{message}"),
        other => panic!("map of a panicking task: {other:?}"),
    }
    let got: Vec<Result<i64, Error>> = pool.imap(square_or_panic, &xs).collect();
    assert_eq!(got.len(), xs.len());
    for (x, r) in xs.iter().zip(&got) {
        match r {
            Ok(v) => assert_eq!(*v, x * x),
            Err(Error::TaskPanicked { message }) => {
                assert!(*x < 0 && message.contains(&x.to_string()))
            }
            Err(e) => panic!("{x}: {e:?}"),
        }
    }
    // The same workers went on.
    assert_eq!(pool.apply(square_or_panic, 12).unwrap(), 144);
    assert_eq!(pool.pids().into_iter().collect::<HashSet<_>>(), pids);
}

fn busy(x: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(800));
    f(x)
}

/// Kills a random worker of `pool` `kills` times, `every` apart; returns how many it killed.
fn killer(pool: &Pool, kills: usize, every: Duration, seed: u64) -> usize {
    let mut rng = Rng(seed);
    let mut done = 0;
    let mut last = HashSet::new();
    while done < kills {
        std::thread::sleep(every);
        let pids = pool.pids();
        let p = pids[rng.below(pids.len() as u64) as usize];
        if p == 0 || last.contains(&p) {
            continue;
        }
        // SAFETY: plain syscall; the pid is a live worker of this test's pool (reaped by the pool
        // or its zygote only after its death is seen, so not reused meanwhile).
        if unsafe { libc::kill(p as i32, libc::SIGKILL) } == 0 {
            last.insert(p);
            done += 1;
        }
    }
    done
}

fn a_worker_killed_twenty_times_during_a_long_map() {
    let pool = Pool::new(4).unwrap();
    let n = 12_000u64;
    let start = Instant::now();
    let (got, killed) = std::thread::scope(|s| {
        let k = s.spawn(|| killer(&pool, 20, Duration::from_millis(80), 7));
        let got: Vec<Result<u64, Error>> = pool.imap_chunked(busy, 0..n, 10).collect();
        (got, k.join().unwrap())
    });
    let took = start.elapsed();
    assert_eq!(killed, 20);
    assert_eq!(got.len() as u64, n);
    let mut died = 0;
    for (i, r) in got.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, f(i as u64), "task {i}"),
            Err(Error::WorkerDied) => died += 1,
            Err(e) => panic!("task {i}: {e:?}"),
        }
    }
    assert!(died <= killed, "{died} tasks died of {killed} kills");
    println!("({died} tasks WorkerDied of 20 kills, {took:?})");
    // Every worker is a live one again.
    let pids = pool.pids();
    assert_eq!(pids.len(), 4);
    assert!(pids.iter().all(|&p| !gone(p)));
    assert_eq!(
        pool.map(f, 0..1000).unwrap(),
        (0..1000).map(f).collect::<Vec<_>>()
    );
}

fn killed_workers_with_retries_lose_nothing() {
    let pool = Pool::builder().processes(3).retries(30).build().unwrap();
    let n = 6_000u64;
    let got = std::thread::scope(|s| {
        s.spawn(|| killer(&pool, 8, Duration::from_millis(100), 11));
        pool.map_chunked(busy, 0..n, 25)
    });
    assert_eq!(got.unwrap(), (0..n).map(f).collect::<Vec<_>>());
}

fn killed_workers_of_a_spawn_pool() {
    let pool = Pool::builder()
        .processes(3)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    let n = 4_000u64;
    let got: Vec<Result<u64, Error>> = std::thread::scope(|s| {
        s.spawn(|| killer(&pool, 5, Duration::from_millis(150), 3));
        pool.imap_chunked(busy, 0..n, 5).collect()
    });
    let died = got
        .iter()
        .enumerate()
        .filter(|(i, r)| match r {
            Ok(v) => {
                assert_eq!(*v, f(*i as u64));
                false
            }
            Err(Error::WorkerDied) => true,
            Err(e) => panic!("{e:?}"),
        })
        .count();
    assert!(died <= 5);
}

fn slow(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    x
}

fn terminate_mid_map_fails_pending_results() {
    let pool = Pool::new(3).unwrap();
    let pids = pool.pids();
    let r = pool.map_async(slow, 0..1000).unwrap();
    let one = pool.apply_async(slow, 5).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (_, took) = common::within(Duration::from_secs(5), || pool.terminate());
    assert!(matches!(r.get(), Err(Error::Closed)));
    assert!(matches!(one.get(), Ok(5) | Err(Error::Closed)));
    for p in pids {
        assert!(gone(p), "worker {p} outlived terminate");
    }
    assert!(matches!(pool.map(f, 0..3), Err(Error::Closed)));
    assert!(matches!(pool.apply(f, 3), Err(Error::Closed)));
    pool.join().unwrap();
    println!("(terminate took {took:?})");
}

fn close_then_join_finishes_the_work_and_refuses_more() {
    let pool = Pool::new(2).unwrap();
    assert!(matches!(pool.join(), Err(Error::Misuse)), "join while open");
    let pids = pool.pids();
    let rs: Vec<_> = (0..20u64)
        .map(|i| pool.apply_async(slow, i).unwrap())
        .collect();
    let m = pool.map_async(f, 0..5000).unwrap();
    pool.close();
    assert!(
        matches!(pool.map(f, 0..3), Err(Error::Closed)),
        "map after close"
    );
    assert!(matches!(pool.apply_async(f, 3), Err(Error::Closed)));
    let mut it = pool.imap(f, 0..3);
    assert!(matches!(it.next(), Some(Err(Error::Closed))));
    assert!(it.next().is_none());
    common::within(Duration::from_secs(20), || pool.join().unwrap());
    for (i, r) in rs.iter().enumerate() {
        assert!(r.ready());
        assert_eq!(r.get().unwrap(), i as u64);
    }
    assert_eq!(m.get().unwrap(), (0..5000).map(f).collect::<Vec<_>>());
    for p in pids {
        assert!(gone(p), "worker {p} outlived join");
    }
}

fn tag_pid(x: u64) -> (u64, u32) {
    (x, std::process::id())
}

fn maxtasksperchild_replaces_workers_without_losing_or_repeating() {
    for m in [StartMethod::Fork, StartMethod::Spawn] {
        let k = 5;
        let pool = Pool::builder()
            .processes(3)
            .start_method(m)
            .maxtasksperchild(k)
            .build()
            .unwrap();
        let n = if m == StartMethod::Fork { 600 } else { 150 };
        let got = pool.map_chunked(tag_pid, 0..n, 1).unwrap();
        let mut per_pid: BTreeMap<u32, u64> = BTreeMap::new();
        for (i, &(x, pid)) in got.iter().enumerate() {
            assert_eq!(x, i as u64, "{m:?}: every task once, in order");
            *per_pid.entry(pid).or_default() += 1;
        }
        assert!(per_pid.values().all(|&c| c <= k), "{m:?}: {per_pid:?}");
        assert!(
            per_pid.len() as u64 >= n / k,
            "{m:?}: {} workers",
            per_pid.len()
        );
        // Chunks of several tasks: a worker retires at the end of its chunk.
        let got = pool.map_chunked(tag_pid, 0..n, 4).unwrap();
        assert_eq!(
            got.iter().map(|t| t.0).collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>()
        );
        pool.close();
        pool.join().unwrap();
    }
}

static INIT: AtomicU64 = AtomicU64::new(0);

fn set_init(v: u64) {
    INIT.store(v, Ordering::SeqCst);
}

fn read_init(_: u64) -> u64 {
    INIT.load(Ordering::SeqCst)
}

fn bad_init(v: u64) {
    panic!("initializer refuses {v}");
}

fn initializer_runs_in_every_worker() {
    for m in [StartMethod::Fork, StartMethod::Spawn] {
        let pool = Pool::builder()
            .processes(3)
            .start_method(m)
            .initializer(set_init, 4242)
            .maxtasksperchild(7)
            .build()
            .unwrap();
        let got = pool.map_chunked(read_init, 0..100, 1).unwrap();
        assert!(got.iter().all(|&v| v == 4242), "{m:?}: {got:?}");
        assert_eq!(INIT.load(Ordering::SeqCst), 0, "not in the parent");
    }
}

fn a_panicking_initializer_breaks_the_pool_without_a_hang() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(bad_init, 9)
        .build()
        .unwrap();
    let (r, _) = common::within(Duration::from_secs(10), || pool.map(f, 0..10));
    match r {
        Err(Error::TaskPanicked { message }) => {
            assert!(message.contains("initializer refuses 9"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(pool.apply(f, 1), Err(Error::TaskPanicked { .. })));
}

fn two_threads_use_one_pool_at_once() {
    let pool = Pool::new(3).unwrap();
    let n = 20_000u64;
    std::thread::scope(|s| {
        let a = s.spawn(|| pool.map(f, 0..n).unwrap());
        let b = s.spawn(|| {
            let pairs: Vec<(u64, u64)> = (0..n).map(|i| (i, 1)).collect();
            pool.starmap(add, pairs).unwrap()
        });
        let c = s.spawn(|| {
            (0..500u64)
                .map(|i| pool.apply_async(f, i).unwrap())
                .map(|r| r.get().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(a.join().unwrap(), (0..n).map(f).collect::<Vec<_>>());
        assert_eq!(
            b.join().unwrap(),
            (0..n).map(|i| add(i, 1)).collect::<Vec<_>>()
        );
        assert_eq!(c.join().unwrap(), (0..500).map(f).collect::<Vec<_>>());
    });
}

fn grow(v: Vec<u8>) -> Vec<u8> {
    let mut out = v.clone();
    out.extend(v.iter().map(|b| b.wrapping_add(1)));
    out
}

fn large_arguments_and_results() {
    let pool = Pool::builder()
        .processes(2)
        .result_ring_size(4096)
        .build()
        .unwrap();
    let mut rng = Rng(5);
    let inputs: Vec<Vec<u8>> = [0usize, 1, 100, 5000, 70_000, 1 << 20]
        .iter()
        .map(|&n| {
            let mut v = vec![0u8; n];
            rng.fill(&mut v);
            v
        })
        .collect();
    let got = pool.map_chunked(grow, &inputs, 2).unwrap();
    for (i, g) in inputs.iter().zip(&got) {
        assert_eq!(*g, grow(i.clone()));
    }
    let small = Pool::builder()
        .processes(1)
        .arena_size(1 << 16)
        .build()
        .unwrap();
    assert!(matches!(
        small.apply(grow, vec![0u8; 1 << 17]),
        Err(Error::TooLarge)
    ));
    assert_eq!(small.apply(grow, vec![1u8; 3]).unwrap(), [1, 1, 1, 2, 2, 2]);
}

fn parents_death(m: StartMethod) {
    let (tx, rx) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        let pool = Pool::builder()
            .processes(3)
            .start_method(m)
            .build()
            .unwrap();
        assert_eq!(pool.map(f, 0..100).unwrap().len(), 100);
        tx.send(&pool.pids()).unwrap();
        let _r = pool.map_async(slow, 0..100_000).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let pids: Vec<u32> = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(pids.len(), 3);
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGKILL));
    let until = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| !gone(p)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in pids {
        assert!(gone(p), "{m:?}: worker {p} outlived its parent");
    }
}

fn the_parents_death_kills_the_workers_fork() {
    parents_death(StartMethod::Fork);
}

fn the_parents_death_kills_the_workers_spawn() {
    parents_death(StartMethod::Spawn);
}

fn dropping_the_pool_reaps_every_worker() {
    for m in [StartMethod::Fork, StartMethod::Spawn] {
        let pool = Pool::builder()
            .processes(3)
            .start_method(m)
            .build()
            .unwrap();
        let _pending = pool.map_async(slow, 0..10_000).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let pids = pool.pids();
        common::within(Duration::from_secs(5), || drop(pool));
        for p in pids {
            assert!(gone(p), "{m:?}: worker {p} outlived the pool");
        }
    }
}

fn a_worker_of_another_build_refuses_tasks() {
    // A copy of this very program is another file: another build, as far as a worker can tell.
    let copy = std::env::temp_dir().join(format!("shmwire-pool-copy-{}", std::process::id()));
    std::fs::copy("/proc/self/exe", &copy).unwrap();
    Pool::__set_spawn_program(Some(copy.clone()));
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Spawn)
        .build();
    Pool::__set_spawn_program(None);
    let pool = pool.unwrap();
    let (r, _) = common::within(Duration::from_secs(20), || pool.map(f, 0..10));
    assert!(matches!(r, Err(Error::Incompatible)), "{r:?}");
    assert!(matches!(pool.apply(f, 1), Err(Error::Incompatible)));
    drop(pool);
    let _ = std::fs::remove_file(copy);
}

fn spawn_refuses_a_function_outside_the_executable() {
    let pool = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    // SAFETY: only the pointer's value is used: the pool refuses it before anything calls it.
    let outside: fn(i32) -> i32 = unsafe {
        std::mem::transmute::<unsafe extern "C" fn(i32) -> i32, fn(i32) -> i32>(libc::abs)
    };
    assert!(matches!(pool.apply(outside, -3), Err(Error::Invalid(_))));
    assert_eq!(pool.apply(|x: i32| x.abs(), -3).unwrap(), 3);
}

fn async_results_answer_every_timeout_form() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(slow_pid, 300).unwrap();
    assert!(!r.ready());
    assert!(matches!(r.successful(), Err(Error::Misuse)));
    assert!(matches!(
        r.get_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert!(!r.wait_timeout(Duration::from_millis(10)));
    r.wait();
    assert!(r.ready() && r.successful().unwrap());
    assert_eq!(r.get_timeout(Duration::ZERO).unwrap(), pool.pids()[0]);
    let mut it = pool.imap(slow_pid, [300u64]);
    assert!(matches!(
        it.next_timeout(Duration::from_millis(20)),
        Some(Err(Error::Timeout))
    ));
    assert!(matches!(
        it.next_timeout(Duration::from_secs(20)),
        Some(Ok(_))
    ));
    assert!(it.next().is_none());
}

/// A `map` that failed early ignores the outcomes of its other tasks; those arriving together with
/// another call's must not shift that call's (they did: the next call got the wrong values, or
/// waited for ever for its last ones).
fn a_failed_map_leaves_the_other_calls_outcomes_alone() {
    let pool = Pool::new(1).unwrap();
    let xs: Vec<i64> = std::iter::once(-1).chain(1..60).collect();
    for round in 0..50 {
        let a = pool.map_async(square_or_panic, &xs).unwrap();
        let b = pool.map_async(f, 0..300u64).unwrap();
        let c = pool.apply_async(f, 7).unwrap();
        assert!(
            matches!(a.get(), Err(Error::TaskPanicked { .. })),
            "round {round}"
        );
        let (got, _) = common::within(Duration::from_secs(20), || {
            b.get_timeout(Duration::from_secs(20))
        });
        assert_eq!(
            got.unwrap(),
            (0..300).map(f).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(
            c.get_timeout(Duration::from_secs(20)).unwrap(),
            f(7),
            "round {round}"
        );
    }
}

/// The pool goes on after a worker's task `liar` wrote into its result ring what no worker writes:
/// the liar's own task is its value or `WorkerDied` (unless its result lies behind a frame the
/// reader cannot step over, `hidden`: a liar can always withhold its results), nothing waits past
/// its bound, and the liar's successor completes later work (one worker: nobody else could).
fn survives_a_lie(liar: fn(u64) -> u64, hidden: bool) {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(liar, 0).unwrap();
    let wait = Duration::from_secs(if hidden { 1 } else { 10 });
    let (got, _) = common::within(Duration::from_secs(20), || r.get_timeout(wait));
    match got {
        Ok(7) | Err(Error::WorkerDied) => {}
        Err(Error::Timeout) if hidden => {}
        other => panic!("{other:?}"),
    }
    let (m, _) = common::within(Duration::from_secs(20), || {
        pool.map_async(f, 0..1000u64)
            .unwrap()
            .get_timeout(Duration::from_secs(10))
    });
    assert_eq!(m.unwrap(), (0..1000).map(f).collect::<Vec<_>>());
    let pids = pool.pids();
    common::within(Duration::from_secs(10), || drop(pool));
    for p in pids {
        assert!(gone(p), "worker {p} outlived the pool");
    }
}

fn short_head(_: u64) -> u64 {
    // A piece header is `[total u64]` then the frame's first bytes: 3 bytes is none.
    assert!(Pool::__worker_raw_frame(2, &[1, 2, 3]));
    7
}

/// A piece header too short to hold its total took the result thread down (a slice out of range):
/// every call then waited for ever.
fn a_short_piece_header_from_a_lying_worker_breaks_nothing() {
    survives_a_lie(short_head, false);
}

fn claims_many(_: u64) -> u64 {
    let mut frame = Vec::new();
    frame.extend_from_slice(&0u64.to_le_bytes()); // chunk
    frame.extend_from_slice(&0u32.to_le_bytes()); // first task
    frame.extend_from_slice(&u32::MAX.to_le_bytes()); // results: none follow
    assert!(Pool::__worker_raw_frame(1, &frame));
    7
}

/// A frame whose header claims 2^32 - 1 results (and carries none) made the result thread reserve
/// room for all of them: an allocation of the liar's choosing.
fn a_frame_claiming_four_billion_results_allocates_nothing() {
    survives_a_lie(claims_many, false);
}

/// A worker killed right after it noted the chunk it took, before it noted that it had begun none
/// of its tasks, left the count of its previous chunk in its slot: that many tasks of the new
/// chunk, none of which had begun, failed with `WorkerDied`.
fn a_worker_killed_as_it_records_its_chunk_fails_no_task() {
    // The zygote, forked by `build`, inherits the armed point: each worker it forks kills itself
    // as it records its second chunk.
    shmwire::hooks::__arm(shmwire::hooks::Point::PoolRecording, libc::SIGKILL, 1);
    let pool = Pool::builder().processes(1).build();
    shmwire::hooks::__disarm_all();
    let pool = pool.unwrap();
    let (got, _) = common::within(Duration::from_secs(30), || pool.map_chunked(f, 0..40u64, 5));
    assert_eq!(got.unwrap(), (0..40).map(f).collect::<Vec<_>>());
}

fn die_at_30(x: u64) -> u64 {
    if x == 30 {
        // SAFETY: plain syscall on this (worker) process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    f(x)
}

/// A worker killed while it runs a task: that task is `WorkerDied` (no retries) and every other one
/// completes, those that had ended with their results not yet published included (they were
/// `WorkerDied` too: up to a frame's worth of tasks per death).
fn a_killed_worker_fails_only_the_task_it_was_running() {
    let pool = Pool::new(2).unwrap();
    let (got, _) = common::within(Duration::from_secs(20), || {
        pool.imap_chunked(die_at_30, 0..64u64, 64)
            .collect::<Vec<_>>()
    });
    assert_eq!(got.len(), 64);
    for (i, r) in got.iter().enumerate() {
        match r {
            Err(Error::WorkerDied) if i == 30 => {}
            Ok(v) if i != 30 => assert_eq!(*v, f(i as u64)),
            other => panic!("task {i}: {other:?}"),
        }
    }
}

/// A result type whose `Deserialize` panics on one value (a validating type that unwraps).
#[derive(serde::Serialize, Debug, PartialEq)]
struct Picky(u64);

impl<'de> serde::Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <u64 as serde::Deserialize>::deserialize(d)?;
        assert!(v != 13, "Picky refuses 13");
        Ok(Picky(v))
    }
}

fn picky(x: u64) -> Picky {
    Picky(x)
}

/// The result thread decodes each value into the caller's type: a `Deserialize` that panicked there
/// took the thread down, and every call of the pool then waited for ever.
fn a_result_type_whose_decoding_panics_fails_its_task_alone() {
    let pool = Pool::new(2).unwrap();
    let (got, _) = common::within(Duration::from_secs(20), || {
        let mut it = pool.imap(picky, 0..20u64);
        (0..20)
            .map(|_| it.next_timeout(Duration::from_secs(10)).unwrap())
            .map(|r| r.map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
    });
    for (i, r) in got.iter().enumerate() {
        match r {
            Err(m) if i == 13 => assert!(m.contains("Picky refuses 13"), "{m}"),
            Ok(v) if i != 13 => assert_eq!(*v, Picky(i as u64)),
            other => panic!("task {i}: {other:?}"),
        }
    }
    let (m, _) = common::within(Duration::from_secs(20), || {
        pool.map_async(picky, 0..20u64)
            .unwrap()
            .get_timeout(Duration::from_secs(10))
    });
    assert!(matches!(m, Err(Error::Decode { .. })), "{m:?}");
    assert_eq!(pool.apply(f, 3).unwrap(), f(3));
}

fn len_of(v: Vec<u8>) -> usize {
    v.len()
}

/// The initializer's argument holds a block of the arena for the pool's life: a task whose
/// arguments fit the arena but not beside that block was accepted and then waited for room that
/// never came (for ever).
fn an_argument_the_initializers_arena_block_leaves_no_room_for_is_refused() {
    let pool = Pool::builder()
        .processes(1)
        .arena_size(1 << 16)
        .initializer(set_init, 1)
        .build()
        .unwrap();
    // 65,500 bytes, its length (3) and the task's length word (4): the whole 64 KiB arena.
    let big = vec![7u8; 65_500];
    let (r, _) = common::within(Duration::from_secs(20), || {
        pool.apply_async(len_of, &big)
            .and_then(|r| r.get_timeout(Duration::from_secs(10)))
    });
    assert!(matches!(r, Err(Error::TooLarge)), "{r:?}");
    // What fits beside the block runs.
    assert_eq!(pool.apply(len_of, vec![7u8; 60_000]).unwrap(), 60_000);
}

fn bad_tag(_: u64) -> u64 {
    assert!(Pool::__worker_raw_frame(9, &[0; 16]));
    7
}

/// A frame of no known kind is left in the ring (the reader cannot step over it): the liar is
/// killed, and its ring was handed to the successor with that frame still at the reader's
/// position, so every successor found its ring corrupt and exited at once, for ever.
fn a_frame_of_no_known_kind_leaves_a_ring_the_successor_can_use() {
    survives_a_lie(bad_tag, true);
}

/// An argument whose `Serialize` refuses one value.
struct Touchy(u64);

impl serde::Serialize for Touchy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 300 {
            return Err(<S::Error as serde::ser::Error>::custom(
                "Touchy refuses 300",
            ));
        }
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Touchy)
    }
}

fn touchy(t: Touchy) -> u64 {
    f(t.0)
}

/// `imap` over items one of which cannot be encoded: that item's error comes in its place and the
/// rest go on. The items taken with it from the input (up to 64) were dropped without a word, and
/// the results after them came at the wrong places.
fn imap_yields_an_unencodable_item_s_error_in_its_place() {
    let pool = Pool::new(2).unwrap();
    for in_order in [true, false] {
        let (got, _) = common::within(Duration::from_secs(20), || {
            let items = (0..1000u64).map(Touchy);
            let it = if in_order {
                pool.imap(touchy, items)
            } else {
                pool.imap_unordered(touchy, items)
            };
            it.collect::<Vec<_>>()
        });
        assert_eq!(got.len(), 1000, "in order: {in_order}");
        let mut values = Vec::new();
        let mut failed = Vec::new();
        for (i, r) in got.into_iter().enumerate() {
            match r {
                Ok(v) => values.push((i, v)),
                // (postcard keeps no message of a custom serialization error)
                Err(Error::Encode(_)) => failed.push(i),
                Err(e) => panic!("{i}: {e:?}"),
            }
        }
        assert_eq!(failed.len(), 1, "in order: {in_order}");
        if in_order {
            assert_eq!(failed, [300]);
            assert!(values.iter().all(|&(i, v)| v == f(i as u64)));
        } else {
            let mut v: Vec<u64> = values.into_iter().map(|p| p.1).collect();
            let mut want: Vec<u64> = (0..1000).filter(|&i| i != 300).map(f).collect();
            v.sort_unstable();
            want.sort_unstable();
            assert_eq!(v, want);
        }
    }
}

fn die_at_30_and_40(x: u64) -> u64 {
    if x == 30 || x == 40 {
        // SAFETY: plain syscall on this (worker) process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    f(x)
}

/// Two tasks of one chunk that kill their worker: each is `WorkerDied` once, and no task that
/// failed so runs again (a dispatch that ran again tasks `0..40` ran the failed task 30 again,
/// which killed its worker again, for ever).
fn two_killing_tasks_of_one_chunk_each_fail_once() {
    let pool = Pool::new(1).unwrap();
    let (got, _) = common::within(Duration::from_secs(20), || {
        let mut it = pool.imap_chunked(die_at_30_and_40, 0..64u64, 64);
        (0..64)
            .map(|_| it.next_timeout(Duration::from_secs(10)).unwrap())
            .collect::<Vec<_>>()
    });
    for (i, r) in got.iter().enumerate() {
        match r {
            Err(Error::WorkerDied) if i == 30 || i == 40 => {}
            Ok(v) if i != 30 && i != 40 => assert_eq!(*v, f(i as u64)),
            other => panic!("task {i}: {other:?}"),
        }
    }
}

fn scribble_init(len: u64) -> u64 {
    assert!(Pool::__worker_scribble_init_len(len));
    len
}

/// A lying worker writes 1 TiB as the length of the initializer's argument: the next worker
/// allocated that much before it checked it against the arena (the allocation failed, the worker
/// aborted, and its successors after it, for ever: nothing ran again). Now the argument lies
/// outside the arena: the initializer fails, and the pool is broken, which it says.
fn a_scribbled_initializer_length_allocates_nothing() {
    let pool = Pool::builder()
        .processes(1)
        .initializer(set_init, 5)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    assert_eq!(pool.apply(scribble_init, 1 << 40).unwrap(), 1 << 40);
    let (r, _) = common::within(Duration::from_secs(20), || {
        pool.apply_async(read_init, 0)
            .and_then(|r| r.get_timeout(Duration::from_secs(10)))
    });
    match r {
        Err(Error::TaskPanicked { message }) => {
            assert!(message.contains("outside the arena"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

/// A callback runs on the result thread: one that waits for another result of the pool (an
/// `apply` there) waited for itself, for ever, and every other call with it. It is refused with
/// `Misuse`.
fn a_callback_that_waits_for_the_pool_is_refused_not_hung() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (p2, s2) = (pool.clone(), seen.clone());
    let r = pool
        .apply_async_with(
            f,
            1,
            move |_| {
                let got = p2.apply(f, 2).map_err(|e| e.to_string());
                let mut it = p2.imap(f, [3u64]);
                let next = it.next().map(|r| r.map_err(|e| e.to_string()));
                s2.lock().unwrap().push((got, next));
            },
            |_| {},
        )
        .unwrap();
    let (got, _) = common::within(Duration::from_secs(20), || {
        r.get_timeout(Duration::from_secs(10))
    });
    assert_eq!(got.unwrap(), f(1));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let misuse = Error::Misuse.to_string();
    assert_eq!(seen[0].0, Err(misuse.clone()));
    assert_eq!(seen[0].1, Some(Err(misuse)));
    // The pool goes on.
    assert_eq!(pool.apply(f, 4).unwrap(), f(4));
}

/// `close` then `join` in a callback while other work is pending: `join` waited for the result
/// thread (the callback's own) to deliver that work, for ever. It is refused with `Misuse`, and a
/// `join` elsewhere finishes the work.
fn a_callback_that_joins_its_pool_is_refused_not_hung() {
    let pool = Arc::new(Pool::new(1).unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (p2, s2) = (pool.clone(), seen.clone());
    let first = pool
        .apply_async_with(
            f,
            1,
            move |_| {
                p2.close();
                s2.lock()
                    .unwrap()
                    .push(p2.join().map_err(|e| e.to_string()));
            },
            |_| {},
        )
        .unwrap();
    let later = pool.apply_async(slow, 9).unwrap();
    let (got, _) = common::within(Duration::from_secs(20), || {
        first.get_timeout(Duration::from_secs(10))
    });
    assert_eq!(got.unwrap(), f(1));
    assert_eq!(*seen.lock().unwrap(), [Err(Error::Misuse.to_string())]);
    common::within(Duration::from_secs(20), || pool.join().unwrap());
    assert_eq!(later.get().unwrap(), 9);
}

/// `terminate` promises the workers are reaped when it returns. Two threads calling it at once:
/// the second found the result thread's handle taken by the first and returned at once, while the
/// workers still ran.
fn two_threads_terminating_at_once_both_return_after_the_workers_are_gone() {
    for round in 0..20 {
        let pool = Pool::new(3).unwrap();
        let pids = pool.pids();
        let _pending = pool.map_async(slow, 0..1000).unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    pool.terminate();
                    for &p in &pids {
                        assert!(gone(p), "round {round}: worker {p} outlived terminate");
                    }
                });
            }
        });
    }
}
