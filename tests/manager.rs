//! Manager, SharedDict and SharedList between real processes: the seeds' programs, many processes
//! against a reference model, growth and reuse, writers killed at random points, stopped lock
//! holders, names, handles that travel, hostile bytes.

mod common;

use common::Rng;
use shmwire::hooks::Point;
use shmwire::{Error, Manager, Process, Queue, SharedDict, SharedList, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

fn roles(role: &str, args: shmwire::spawn::Args) -> i32 {
    match role {
        // Open a manager by name and add 1 to `counts["hits"]` `n` times.
        "count-by-name" => {
            let (name, n): (String, u64) = args.get().unwrap();
            let m = Manager::open(&name).unwrap();
            let d = m.named_dict::<String, u64>("counts").unwrap();
            for _ in 0..n {
                d.modify("hits", |v| *v += 1).unwrap();
            }
            // Values that grow the arena: the other process maps the new chunks as it meets them.
            let big = m.named_list::<Vec<u8>>("big").unwrap();
            for i in 0..4u8 {
                big.push(vec![i; 1 << 20]).unwrap();
            }
            assert!(matches!(
                m.named_dict::<String, String>("counts"),
                Err(Error::Incompatible)
            ));
            0
        }
        // Use a dict handle passed as the spawn's arguments (an anonymous manager's).
        "use-handle" => {
            let d: SharedDict<String, u64> = args.get().unwrap();
            let v = d.get("from-parent").unwrap().unwrap();
            d.insert("from-child".to_string(), v + 1).unwrap();
            0
        }
        // Take a dict handle from a named queue and write through it.
        "handle-from-queue" => {
            let name: String = args.get().unwrap();
            let q = Queue::<SharedDict<String, u64>>::open(&name).unwrap();
            let d = q.get_timeout(Duration::from_secs(10)).unwrap();
            d.insert("via-queue".to_string(), 42).unwrap();
            0
        }
        _ => 2,
    }
}

fn main() {
    shmwire::spawn::enter(roles);
    common::run(tests![
        seeds_counter_with_modify_and_with_a_lock,
        seed_list_child_and_parent_print_the_same,
        dict_calls_do_what_python_s_do,
        list_calls_do_what_python_s_do,
        replace_all_if_swaps_only_an_unchanged_list_and_loses_no_other_write,
        eight_processes_mixed_operations_match_a_reference_model,
        growth_to_256_mib_and_back_reuses_freed_space,
        killed_at_random_points_contents_equal_completed_updates,
        a_writer_killed_inside_its_window_leaves_no_reader_spinning,
        readers_write_nothing_shared,
        a_stopped_lock_holder_makes_others_time_out_never_steal,
        a_stopped_allocator_holder_times_out_other_writers,
        named_dict_with_other_types_is_incompatible,
        two_exec_d_binaries_share_a_dict_by_name,
        a_handle_sent_through_a_queue_opens_the_same_dict,
        handles_nest_inside_containers,
        max_bytes_is_full_and_loses_nothing,
        destroyed_containers_are_closed_and_their_memory_reused,
        named_objects_through_the_namespace,
        hostile_bytes_never_crash_or_hang_the_honest_side,
        nothing_left_in_dev_shm,
        a_removal_that_times_out_changed_nothing,
        a_removal_that_cannot_shrink_still_returns_the_value,
        hostile_shared_entries_never_make_a_snapshot_allocate_beyond_the_arena,
        a_stale_handle_never_opens_a_recreated_manager_s_container,
    ]);
}

/// Waits until process `pid` is stopped (SIGSTOP took effect).
fn wait_stopped(pid: u32) {
    let t = Instant::now();
    loop {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = s
            .rsplit(')')
            .next()
            .and_then(|r| r.trim_start().chars().next());
        if state == Some('T') || state == Some('t') {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{pid} never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn shm_path(name: &str) -> String {
    let prefix = std::env::var("SHMWIRE_PREFIX").unwrap_or_default();
    format!("/dev/shm/shmwire.{prefix}.u.{name}")
}

// ---- the seeds ----------------------------------------------------------------------------------

fn seeds_counter_with_modify_and_with_a_lock() {
    // Seeds 002 and 004: 100 processes each take 1 from `count`; the parent prints {"count": 0}.
    let m = Manager::new().unwrap();
    let dic = m.dict_from([("count".to_string(), 100i64)]).unwrap();
    let kids: Vec<Process> = (0..100)
        .map(|_| {
            let d = dic.clone();
            Process::fork(move || d.modify("count", |v| *v -= 1).unwrap()).unwrap()
        })
        .collect();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    assert_eq!(format!("{dic:?}"), r#"{"count": 0}"#);

    // As the seeds write it: an explicit Lock around a read and a write.
    let lock = m.lock().unwrap();
    let dic = m.dict_from([("count".to_string(), 100i64)]).unwrap();
    let kids: Vec<Process> = (0..100)
        .map(|_| {
            let (d, lock) = (dic.clone(), lock.clone());
            Process::fork(move || {
                let _g = lock.acquire().unwrap();
                let v = d.get("count").unwrap().unwrap();
                d.insert("count".to_string(), v - 1).unwrap();
            })
            .unwrap()
        })
        .collect();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    assert_eq!(format!("{dic:?}"), r#"{"count": 0}"#);
}

fn seed_list_child_and_parent_print_the_same() {
    // Seed 000: the child does num[0] -= 1 on [1, 2, 3]; both print [0, 2, 3].
    let m = Manager::new().unwrap();
    let num = m.list_from([1i64, 2, 3]).unwrap();
    let child = num.clone();
    let p = Process::fork(move || {
        child.modify(0, |v| *v -= 1).unwrap();
        assert_eq!(format!("{child:?}"), "[0, 2, 3]");
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(format!("{num:?}"), "[0, 2, 3]");
}

// ---- the calls ----------------------------------------------------------------------------------

fn dict_calls_do_what_python_s_do() {
    let m = Manager::new().unwrap();
    let d = m.dict::<String, Vec<u32>>().unwrap();
    assert!(d.is_empty().unwrap());
    assert_eq!(d.insert("a".to_string(), vec![1]).unwrap(), None);
    assert_eq!(
        d.insert("a".to_string(), vec![2, 3]).unwrap(),
        Some(vec![1])
    );
    assert_eq!(d.get("a").unwrap(), Some(vec![2, 3]));
    assert_eq!(d.get("b").unwrap(), None);
    assert!(d.contains_key("a").unwrap() && !d.contains_key("b").unwrap());
    assert_eq!(d.get_or_insert("b".to_string(), vec![9]).unwrap(), vec![9]);
    assert_eq!(d.get_or_insert("b".to_string(), vec![8]).unwrap(), vec![9]);
    assert!(matches!(
        d.modify("zz", |v| v.push(1)),
        Err(Error::NotFound)
    ));
    assert_eq!(
        d.modify("a", |v| {
            v.push(4);
            v.len()
        })
        .unwrap(),
        3
    );
    d.update((0..100).map(|i| (format!("k{i}"), vec![i])))
        .unwrap();
    assert_eq!(d.len().unwrap(), 102);
    // A child sees it all, and changes it.
    let dc = d.clone();
    let p = Process::fork(move || {
        assert_eq!(dc.get("k42").unwrap(), Some(vec![42]));
        assert_eq!(dc.remove("k42").unwrap(), Some(vec![42]));
        assert_eq!(dc.remove("k42").unwrap(), None);
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(d.len().unwrap(), 101);
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys.len(), 101);
    assert!(keys.contains(&"a".to_string()) && !keys.contains(&"k42".to_string()));
    let items: BTreeMap<String, Vec<u32>> = d.items().unwrap().into_iter().collect();
    assert_eq!(items["a"], vec![2, 3, 4]);
    assert_eq!(d.values().unwrap().len(), 101);
    // Many removals shrink the table; the rest stay.
    for i in 0..100 {
        d.remove(&format!("k{i}")).unwrap();
    }
    assert_eq!(d.len().unwrap(), 2);
    assert_eq!(d.get("b").unwrap(), Some(vec![9]));
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
    assert_eq!(format!("{d:?}"), "{}");
    d.insert("x".to_string(), vec![1, 2]).unwrap();
    assert_eq!(format!("{d:?}"), r#"{"x": [1, 2]}"#);
    // Inside `modify`'s closure, the same dict can be read but not written (that would wait for
    // itself): `Misuse`, and nothing changes.
    let r = d.modify("x", |v| {
        assert_eq!(d.get("x").unwrap(), Some(vec![1, 2]));
        v.push(3);
        d.insert("y".to_string(), vec![])
    });
    assert!(matches!(r, Ok(Err(Error::Misuse))), "{r:?}");
    assert_eq!(d.get("x").unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(d.get("y").unwrap(), None);
    m.__audit().unwrap();
}

fn list_calls_do_what_python_s_do() {
    let m = Manager::new().unwrap();
    let l = m.list::<String>().unwrap();
    assert!(matches!(
        l.pop(),
        Err(Error::OutOfRange { index: 0, len: 0 })
    ));
    assert!(matches!(
        l.get(0),
        Err(Error::OutOfRange { index: 0, len: 0 })
    ));
    l.push("a".to_string()).unwrap();
    l.extend(["b", "c", "d"].map(String::from)).unwrap();
    assert_eq!(l.to_vec().unwrap(), ["a", "b", "c", "d"]);
    l.insert(1, "x".to_string()).unwrap();
    l.insert(5, "end".to_string()).unwrap();
    assert!(matches!(
        l.insert(9, "no".to_string()),
        Err(Error::OutOfRange { index: 9, len: 6 })
    ));
    assert_eq!(l.to_vec().unwrap(), ["a", "x", "b", "c", "d", "end"]);
    assert_eq!(l.remove(2).unwrap(), "b");
    assert!(matches!(
        l.remove(5),
        Err(Error::OutOfRange { index: 5, len: 5 })
    ));
    assert_eq!(l.pop().unwrap(), "end");
    l.set(0, "A".to_string()).unwrap();
    assert!(matches!(
        l.set(4, "no".to_string()),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(
        l.modify(1, |s| {
            s.push('!');
            s.len()
        })
        .unwrap(),
        2
    );
    assert_eq!(l.index(&"c".to_string()).unwrap(), 2);
    assert!(matches!(l.index(&"zz".to_string()), Err(Error::NotFound)));
    assert_eq!(format!("{l:?}"), r#"["A", "x!", "c", "d"]"#);
    let lc = l.clone();
    let p = Process::fork(move || {
        for i in 0..1000 {
            lc.push(format!("n{i}")).unwrap();
        }
        for _ in 0..900 {
            lc.pop().unwrap();
        }
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(l.len().unwrap(), 104);
    assert_eq!(l.get(103).unwrap(), "n99");
    l.clear().unwrap();
    assert!(l.is_empty().unwrap());
    m.__audit().unwrap();
}

// ---- many processes -----------------------------------------------------------------------------

/// What process `p`'s `i`th dict operation is: (kind, key number, value).
/// `replace_all_if` (Python's slice assignment, `sort`, `remove`...): refused on a stale snapshot,
/// any new length; a process deleting from the front by compare-and-swap while another pushes
/// loses none of the pushes.
fn replace_all_if_swaps_only_an_unchanged_list_and_loses_no_other_write() {
    let m = Manager::new().unwrap();
    let l = m.list::<u64>().unwrap();
    l.extend(0..5).unwrap();
    assert!(!l.replace_all_if(&[0, 1, 2], &[9]).unwrap());
    assert!(!l.replace_all_if(&[0, 1, 2, 3, 5], &[9]).unwrap());
    assert_eq!(l.to_vec().unwrap(), [0, 1, 2, 3, 4]);
    assert!(l.replace_all_if(&[0, 1, 2, 3, 4], &[0, 7, 2]).unwrap());
    assert_eq!(l.to_vec().unwrap(), [0, 7, 2]);
    let long: Vec<u64> = (1..=40).collect();
    assert!(l.replace_all_if(&[0, 7, 2], &long).unwrap());
    assert_eq!(l.to_vec().unwrap(), long);
    assert!(l.replace_all_if(&long, &[]).unwrap());
    assert!(l.is_empty().unwrap());
    assert!(l.replace_all_if(&[], &[5]).unwrap());
    assert_eq!(l.to_vec().unwrap(), [5]);

    l.clear().unwrap();
    l.extend(0..300).unwrap();
    let child = l.clone();
    let p = Process::fork(move || {
        for i in 1000..1300u64 {
            child.push(i).unwrap();
        }
    })
    .unwrap();
    for _ in 0..300 {
        loop {
            let v = l.to_vec().unwrap();
            if l.replace_all_if(&v, &v[1..]).unwrap() {
                break;
            }
        }
    }
    assert!(p.join().unwrap().success());
    assert_eq!(l.to_vec().unwrap(), (1000..1300).collect::<Vec<u64>>());
}

fn plan(rng: &mut Rng) -> (u64, u64, u64) {
    (rng.below(8), rng.below(48), rng.next() % 1_000_000)
}

fn eight_processes_mixed_operations_match_a_reference_model() {
    let ops = if common::long() { 100_000 } else { 20_000 };
    let procs = 8u64;
    let m = Manager::new().unwrap();
    let d = m.dict::<String, u64>().unwrap();
    let l = m.list::<(u64, u64)>().unwrap();
    d.insert("total".to_string(), 0).unwrap();
    let kids: Vec<Process> = (0..procs)
        .map(|p| {
            let (d, l, m) = (d.clone(), l.clone(), m.clone());
            Process::fork_with(move || -> Result<(), String> {
                let mut rng = Rng(p + 1);
                let mut model: HashMap<String, u64> = HashMap::new();
                let mut pushed = 0u64;
                let mut taken: Vec<(u64, u64)> = Vec::new();
                let mut r2 = Rng(1000 + p);
                for i in 0..ops {
                    let (op, k, v) = plan(&mut rng);
                    let key = format!("{p}:{k}");
                    let e = |what: &str| format!("process {p}, op {i} ({what}) on {key}");
                    match op {
                        0 | 1 => {
                            let old = d.insert(key.clone(), v).map_err(|x| e(&x.to_string()))?;
                            if old != model.insert(key.clone(), v) {
                                return Err(e("insert returned another old value"));
                            }
                        }
                        2 => {
                            let old = d.remove(&key).map_err(|x| e(&x.to_string()))?;
                            if old != model.remove(&key) {
                                return Err(e("remove"));
                            }
                        }
                        3 => {
                            if d.get(&key).map_err(|x| e(&x.to_string()))?
                                != model.get(&key).copied()
                            {
                                return Err(e("get"));
                            }
                        }
                        4 => {
                            let got = d.modify(&key, |x| {
                                *x += 1;
                                *x
                            });
                            match (got, model.get_mut(&key)) {
                                (Ok(n), Some(x)) if n == *x + 1 => *x += 1,
                                (Err(Error::NotFound), None) => {}
                                (g, _) => return Err(e(&format!("modify: {g:?}"))),
                            }
                            d.modify("total", |t| *t += 1)
                                .map_err(|x| e(&x.to_string()))?;
                        }
                        5 => {
                            let got = d
                                .get_or_insert(key.clone(), v)
                                .map_err(|x| e(&x.to_string()))?;
                            if got != *model.entry(key.clone()).or_insert(v) {
                                return Err(e("get_or_insert"));
                            }
                        }
                        6 => {
                            // The list: push, pop, insert, remove, get, at random.
                            let len = l.len().map_err(|x| e(&x.to_string()))?;
                            match r2.below(5) {
                                0 | 1 => {
                                    l.push((p, pushed)).map_err(|x| e(&x.to_string()))?;
                                    pushed += 1;
                                }
                                2 => match l.pop() {
                                    Ok(x) => taken.push(x),
                                    Err(Error::OutOfRange { .. }) => {}
                                    Err(x) => return Err(e(&x.to_string())),
                                },
                                3 => match l.insert(r2.below(len as u64 + 1) as usize, (p, pushed))
                                {
                                    Ok(()) => pushed += 1,
                                    Err(Error::OutOfRange { .. }) => {} // it shrank meanwhile
                                    Err(x) => return Err(e(&x.to_string())),
                                },
                                _ => match l.remove(r2.below(len as u64 + 1) as usize) {
                                    Ok(x) => taken.push(x),
                                    Err(Error::OutOfRange { .. }) => {}
                                    Err(x) => return Err(e(&x.to_string())),
                                },
                            }
                        }
                        _ => {
                            // A snapshot: our own keys in it are exactly our model (nobody else
                            // writes them).
                            let items = d.items().map_err(|x| e(&x.to_string()))?;
                            let mine: HashMap<String, u64> = items
                                .into_iter()
                                .filter(|(k, _)| k.starts_with(&format!("{p}:")))
                                .collect();
                            if mine != model {
                                return Err(e("the snapshot disagrees with the model"));
                            }
                        }
                    }
                }
                // What this process took from the list, for the parent's count.
                m.named_list::<(u64, u64)>(&format!("taken-{p}"))
                    .and_then(|t| t.extend(taken))
                    .map_err(|x| format!("process {p}: {x}"))?;
                m.named_dict::<String, u64>("pushed")
                    .and_then(|t| t.insert(format!("{p}"), pushed))
                    .map_err(|x| format!("process {p}: {x}"))?;
                Ok(())
            })
            .unwrap()
        })
        .collect();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    // The dict: each process's keys are its model, replayed here.
    let mut want: HashMap<String, u64> = HashMap::new();
    let mut total = 0;
    for p in 0..procs {
        let mut rng = Rng(p + 1);
        let mut model: HashMap<String, u64> = HashMap::new();
        for _ in 0..ops {
            let (op, k, v) = plan(&mut rng);
            let key = format!("{p}:{k}");
            match op {
                0 | 1 => {
                    model.insert(key, v);
                }
                2 => {
                    model.remove(&key);
                }
                4 => {
                    if let Some(x) = model.get_mut(&key) {
                        *x += 1;
                    }
                    total += 1;
                }
                5 => {
                    model.entry(key).or_insert(v);
                }
                _ => {}
            }
        }
        want.extend(model);
    }
    want.insert("total".to_string(), total);
    let got: HashMap<String, u64> = d.items().unwrap().into_iter().collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    // The list: every element pushed is either still there or was taken, once.
    let pushed = m.named_dict::<String, u64>("pushed").unwrap();
    let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
    for x in l.to_vec().unwrap() {
        *seen.entry(x).or_default() += 1;
    }
    for p in 0..procs {
        for x in m
            .named_list::<(u64, u64)>(&format!("taken-{p}"))
            .unwrap()
            .to_vec()
            .unwrap()
        {
            *seen.entry(x).or_default() += 1;
        }
    }
    for p in 0..procs {
        let n = pushed.get(&format!("{p}")).unwrap().unwrap();
        for s in 0..n {
            assert_eq!(seen.remove(&(p, s)), Some(1), "element {p}.{s}");
        }
    }
    assert!(seen.is_empty(), "elements nobody pushed: {seen:?}");
    m.__audit().unwrap();
}

// ---- memory -------------------------------------------------------------------------------------

fn growth_to_256_mib_and_back_reuses_freed_space() {
    let total: u64 = if common::long() { 1 << 30 } else { 256 << 20 };
    let m = Manager::new().unwrap();
    let d = m.dict::<u64, Vec<u8>>().unwrap();
    let big = 64 << 10;
    let n = total / big;
    for i in 0..n {
        d.insert(i, vec![i as u8; big as usize]).unwrap();
    }
    let full = m.stats().unwrap();
    assert!(full.used >= total && full.mapped >= total, "{full:?}");
    // Another process empties it.
    let dc = d.clone();
    let p = Process::fork(move || {
        for i in 0..n {
            assert_eq!(dc.remove(&i).unwrap().map(|v| v.len() as u64), Some(big));
        }
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    let empty = m.stats().unwrap();
    assert!(empty.used < 1 << 20, "{empty:?}");
    assert!(empty.free >= total, "{empty:?}");
    assert_eq!(empty.mapped, full.mapped);
    // Filled again with values of another size, in a list this time: the freed space is reused
    // (merged free blocks hold any size), the file does not grow.
    let l = m.list::<Vec<u8>>().unwrap();
    let small = 5000u64;
    let lc = l.clone();
    let p = Process::fork(move || {
        for i in 0..total / small {
            lc.push(vec![i as u8; small as usize]).unwrap();
        }
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    let again = m.stats().unwrap();
    assert!(again.used >= total, "{again:?}");
    assert_eq!(
        again.mapped, full.mapped,
        "before {full:?}, after {again:?}"
    );
    assert_eq!(l.get(7).unwrap(), vec![7u8; small as usize]);
    l.clear().unwrap();
    assert!(m.stats().unwrap().used < 1 << 20);
    m.__audit().unwrap();
}

fn max_bytes_is_full_and_loses_nothing() {
    let m = Manager::builder().max_bytes(4 << 20).build().unwrap();
    assert_eq!(m.max_bytes(), Some(4 << 20));
    let d = m.dict::<u64, Vec<u8>>().unwrap();
    let mut i = 0u64;
    let err = loop {
        match d.insert(i, vec![1u8; 100_000]) {
            Ok(_) => i += 1,
            Err(e) => break e,
        }
        assert!(i < 1000, "never full");
    };
    assert!(matches!(err, Error::Full), "{err:?}");
    assert!(i >= 30, "only {i} values of 100 kB fit in 4 MiB");
    let s = m.stats().unwrap();
    assert!(s.mapped <= 4 << 20, "{s:?}");
    // Nothing lost: every value that went in is there; a smaller one still fits in what is left.
    assert_eq!(d.len().unwrap() as u64, i);
    for k in 0..i {
        assert_eq!(d.get(&k).unwrap().map(|v| v.len()), Some(100_000));
    }
    d.remove(&0).unwrap();
    d.insert(0, vec![2u8; 100_000]).unwrap();
    m.__audit().unwrap();
}

fn destroyed_containers_are_closed_and_their_memory_reused() {
    let m = Manager::new().unwrap();
    let before = m.stats().unwrap();
    for round in 0..50 {
        let d = m.dict::<u32, String>().unwrap();
        let l = m.list::<u32>().unwrap();
        d.update((0..200).map(|i| (i, format!("v{i}")))).unwrap();
        l.extend(0..200).unwrap();
        let (d2, l2) = (d.clone(), l.clone());
        d.destroy().unwrap();
        l.destroy().unwrap();
        assert!(matches!(d2.get(&1), Err(Error::Closed)), "round {round}");
        assert!(matches!(l2.push(1), Err(Error::Closed)));
        assert!(matches!(d2.len(), Err(Error::Closed)));
    }
    let after = m.stats().unwrap();
    assert_eq!(after.mapped, before.mapped, "{before:?} {after:?}");
    assert!(
        after.used <= before.used + (64 << 10),
        "{before:?} {after:?}"
    );
    assert_eq!(m.__audit().unwrap(), 1, "only the namespace lives");
}

// ---- failure ------------------------------------------------------------------------------------

/// One step of the kill test, decided by its number: dict inserts (new keys: growth and rehash; same
/// keys: replacement, in place or not), removals (tombstones, shrinking), list pushes, inserts,
/// removals, sets and pops, large values (arena growth), and now and then a clear.
#[derive(Debug, Clone)]
enum Step {
    Insert(u32, Vec<u8>),
    Remove(u32),
    Push(Vec<u8>),
    ListInsert(u64, Vec<u8>),
    ListRemove(u64),
    Set(u64, Vec<u8>),
    Pop,
    ClearDict,
}

fn step(i: u64) -> Step {
    let mut r = Rng(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let size = match r.below(20) {
        0 => 100_000 + r.below(400_000) as usize, // grows the arena
        1..=4 => r.below(2000) as usize,
        _ => r.below(40) as usize,
    };
    let v = vec![(i % 251) as u8; size];
    match r.below(100) {
        0..=39 => Step::Insert(r.below(3000) as u32, v),
        40..=58 => Step::Remove(r.below(3000) as u32),
        59 if r.below(8) == 0 => Step::ClearDict,
        59 => Step::Remove(r.below(3000) as u32),
        60..=71 => Step::Push(v),
        72..=79 => Step::ListInsert(r.next(), v),
        80..=86 => Step::ListRemove(r.next()),
        87..=93 => Step::Set(r.next(), v),
        _ => Step::Pop,
    }
}

#[derive(Clone, PartialEq, Debug, Default)]
struct Model {
    d: BTreeMap<u32, Vec<u8>>,
    l: Vec<Vec<u8>>,
}

impl Model {
    fn apply(&mut self, s: &Step) {
        let n = self.l.len() as u64;
        match s.clone() {
            Step::Insert(k, v) => {
                self.d.insert(k, v);
            }
            Step::Remove(k) => {
                self.d.remove(&k);
            }
            Step::Push(v) => self.l.push(v),
            Step::ListInsert(i, v) => self.l.insert((i % (n + 1)) as usize, v),
            Step::ListRemove(i) if n > 0 => {
                self.l.remove((i % n) as usize);
            }
            Step::Set(i, v) if n > 0 => self.l[(i % n) as usize] = v,
            Step::Pop => {
                self.l.pop();
            }
            Step::ClearDict => self.d.clear(),
            _ => {}
        }
    }
}

fn run_step(
    d: &SharedDict<u32, Vec<u8>>,
    l: &SharedList<Vec<u8>>,
    s: &Step,
) -> shmwire::Result<()> {
    let n = l.len()? as u64;
    match s.clone() {
        Step::Insert(k, v) => d.insert(k, v).map(drop),
        Step::Remove(k) => d.remove(&k).map(drop),
        Step::Push(v) => l.push(v),
        Step::ListInsert(i, v) => l.insert((i % (n + 1)) as usize, v),
        Step::ListRemove(i) if n > 0 => l.remove((i % n) as usize).map(drop),
        Step::Set(i, v) if n > 0 => l.set((i % n) as usize, v),
        Step::Pop if n > 0 => l.pop().map(drop),
        Step::ClearDict => d.clear(),
        _ => Ok(()),
    }
}

fn killed_at_random_points_contents_equal_completed_updates() {
    let kills = if common::long() { 500 } else { 50 };
    let m = Manager::new().unwrap();
    let d = m.dict::<u32, Vec<u8>>().unwrap();
    let l = m.list::<Vec<u8>>().unwrap();
    let done = Value::new(0u64).unwrap();
    let mut model = Model::default();
    let mut rng = Rng(0x5eed);
    let points = [
        Point::ManagerAllocMid,
        Point::ManagerGrowing,
        Point::ManagerStaged,
        Point::ManagerCommitting,
        Point::ManagerFreeing,
    ];
    let mut in_flight_applied = 0;
    for kill in 0..kills {
        let start = done.load();
        let hook = (rng.below(3) != 0).then(|| {
            (
                points[rng.below(points.len() as u64) as usize],
                rng.below(if kill % 2 == 0 { 4 } else { 40 }),
            )
        });
        let (dc, lc, donec) = (d.clone(), l.clone(), done.clone());
        let p = Process::fork(move || {
            if let Some((point, skip)) = hook {
                shmwire::hooks::__arm(point, libc::SIGKILL, skip);
            }
            for i in start..start + 3000 {
                run_step(&dc, &lc, &step(i)).unwrap();
                donec.store(i + 1);
            }
            loop {
                std::thread::sleep(Duration::from_millis(10)); // until killed
            }
        })
        .unwrap();
        if hook.is_none() {
            std::thread::sleep(Duration::from_micros(200 + rng.below(20_000)));
        } else {
            // The hook kills it; if its point is not reached soon, kill it anyway.
            let t = Instant::now();
            while p.is_alive() && t.elapsed() < Duration::from_millis(300) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = p.kill();
        assert_eq!(
            p.join().unwrap().signal(),
            Some(libc::SIGKILL),
            "kill {kill}"
        );
        let n = done.load();
        for i in start..n {
            model.apply(&step(i));
        }
        let got = Model {
            d: d.items().unwrap().into_iter().collect(),
            l: l.to_vec().unwrap(),
        };
        if got != model {
            // The step in flight may have completed (it was killed before counting it), whole.
            let mut next = model.clone();
            next.apply(&step(n));
            assert!(
                got == next,
                "kill {kill} ({hook:?}): after {n} steps the contents are neither before nor after step {n} ({:?}); dict {} vs {} entries, list {} vs {}",
                step(n),
                got.d.len(),
                model.d.len(),
                got.l.len(),
                model.l.len()
            );
            model = next;
            done.store(n + 1);
            in_flight_applied += 1;
        }
        m.__audit()
            .unwrap_or_else(|e| panic!("kill {kill} ({hook:?}) at step {n}: {e}"));
    }
    println!(
        "  {kills} kills; {in_flight_applied} steps in flight were applied whole, the rest not at all; {} dict entries, {} list elements, {:?}",
        model.d.len(),
        model.l.len(),
        m.stats().unwrap()
    );
}

fn a_writer_killed_inside_its_window_leaves_no_reader_spinning() {
    // Killed with the sequence odd: a reader gives up its lock-free tries, takes the lock from the
    // dead, and the repair finishes the change.
    for point in [Point::ManagerCommitting, Point::ManagerFreeing] {
        let m = Manager::new().unwrap();
        let d = m
            .dict_from((0..100u32).map(|i| (i, vec![0u8; 200])))
            .unwrap();
        let dc = d.clone();
        let p = Process::fork(move || {
            shmwire::hooks::__arm(point, libc::SIGKILL, 0);
            dc.insert(7, vec![1u8; 300]).unwrap();
        })
        .unwrap();
        assert_eq!(p.join().unwrap().signal(), Some(libc::SIGKILL));
        let (v, _) = common::within(Duration::from_secs(3), || d.get(&7).unwrap());
        assert_eq!(
            v,
            Some(vec![1u8; 300]),
            "{point:?}: the committed change is redone whole"
        );
        assert_eq!(d.len().unwrap(), 100);
        m.__audit().unwrap();
    }
}

fn readers_write_nothing_shared() {
    // Four processes read a dict and a list hard: not one byte of the arena changes (the seqlock's
    // readers copy and re-check; they take no lock and bump no counter).
    let name = format!("readers-{}", std::process::id());
    let m = Manager::create(&name).unwrap();
    let d = m
        .dict_from((0..1000u64).map(|k| (k, format!("v{k}"))))
        .unwrap();
    let l = m.list_from((0..100u64).map(|k| vec![k; 3])).unwrap();
    let arena = |path: &str| std::fs::read(path).unwrap()[8192..].to_vec(); // past the slot table
    let before = arena(&shm_path(&name));
    let kids: Vec<Process> = (0..4)
        .map(|p| {
            let (d, l) = (d.clone(), l.clone());
            Process::fork(move || {
                for i in 0..50_000u64 {
                    let k = (i * 7 + p) % 1000;
                    assert_eq!(d.get(&k).unwrap(), Some(format!("v{k}")));
                    assert_eq!(l.get((k % 100) as usize).unwrap(), vec![k % 100; 3]);
                }
                assert_eq!(d.items().unwrap().len(), 1000);
                assert_eq!(l.to_vec().unwrap().len(), 100);
                assert!(d.contains_key(&999).unwrap() && l.index(&vec![5; 3]).unwrap() == 5);
            })
            .unwrap()
        })
        .collect();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    let after = arena(&shm_path(&name));
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(changed, 0, "readers changed {changed} bytes of the arena");
}

fn a_stopped_lock_holder_makes_others_time_out_never_steal() {
    let t = Duration::from_millis(200);
    for point in [Point::ManagerLocked, Point::ManagerCommitting] {
        let m = Manager::new().unwrap();
        let d = m
            .dict_from([("a".to_string(), 1u64), ("b".to_string(), 2)])
            .unwrap();
        let other = m.list_from([1u8, 2, 3]).unwrap();
        let dc = d.clone();
        let p = Process::fork(move || {
            shmwire::hooks::__arm(point, libc::SIGSTOP, 0);
            dc.insert("a".to_string(), 10).unwrap();
        })
        .unwrap();
        wait_stopped(p.pid());
        let dt = d.with_timeout(t);
        let (r, took) = common::within(t * 10, || dt.insert("b".to_string(), 20));
        assert!(matches!(r, Err(Error::Timeout)), "{point:?}: {r:?}");
        assert!(took >= t, "{took:?}");
        assert!(matches!(dt.modify("b", |v| *v += 1), Err(Error::Timeout)));
        assert!(matches!(dt.clear(), Err(Error::Timeout)));
        // Readers: outside the writer's window they read at once; inside it, they time out
        // (never a half-written value).
        let (r, _) = common::within(t * 10, || dt.get("b"));
        match point {
            Point::ManagerLocked => assert_eq!(r.unwrap(), Some(2)),
            _ => assert!(matches!(r, Err(Error::Timeout)), "{r:?}"),
        }
        // Another container goes on.
        other.with_timeout(t).push(4).unwrap();
        assert_eq!(other.to_vec().unwrap(), [1, 2, 3, 4]);
        p.signal(libc::SIGCONT).unwrap();
        assert!(p.join().unwrap().success());
        assert_eq!(d.get("a").unwrap(), Some(10));
        dt.insert("b".to_string(), 20).unwrap();
        assert_eq!(format!("{d:?}").len(), r#"{"a": 10, "b": 20}"#.len());
        m.__audit().unwrap();
    }
}

fn a_stopped_allocator_holder_times_out_other_writers() {
    let t = Duration::from_millis(200);
    let m = Manager::new().unwrap();
    let d1 = m.dict::<u32, String>().unwrap();
    let d2 = m.dict::<u32, String>().unwrap();
    let c1 = d1.clone();
    let p = Process::fork(move || {
        shmwire::hooks::__arm(Point::ManagerAllocMid, libc::SIGSTOP, 0);
        c1.insert(1, "x".repeat(100)).unwrap();
    })
    .unwrap();
    wait_stopped(p.pid());
    // Another dict needs the allocator: it times out; reads go on.
    let (r, _) = common::within(t * 10, || d2.with_timeout(t).insert(1, "y".to_string()));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert_eq!(d2.get(&1).unwrap(), None);
    let l = m.with_timeout(t).list::<u8>().unwrap(); // a slot: no allocation
    assert!(matches!(l.push(1), Err(Error::Timeout)));
    p.signal(libc::SIGCONT).unwrap();
    assert!(p.join().unwrap().success());
    d2.insert(1, "y".to_string()).unwrap();
    assert_eq!(d1.get(&1).unwrap(), Some("x".repeat(100)));
    m.__audit().unwrap();
}

// ---- names and handles --------------------------------------------------------------------------

fn named_dict_with_other_types_is_incompatible() {
    let m = Manager::new().unwrap();
    let d = m.named_dict::<String, u64>("counts").unwrap();
    d.insert("x".to_string(), 1).unwrap();
    assert!(matches!(
        m.named_dict::<String, String>("counts"),
        Err(Error::Incompatible)
    ));
    assert!(matches!(
        m.named_dict::<u64, u64>("counts"),
        Err(Error::Incompatible)
    ));
    assert!(matches!(
        m.named_list::<u64>("counts"),
        Err(Error::Incompatible)
    ));
    // A forked child finds the same one by name.
    let mc = m.clone();
    let p = Process::fork(move || {
        let d = mc.named_dict::<String, u64>("counts").unwrap();
        assert_eq!(d.get("x").unwrap(), Some(1));
        d.insert("y".to_string(), 2).unwrap();
        assert!(matches!(
            mc.named_list::<String>("counts"),
            Err(Error::Incompatible)
        ));
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(d.get("y").unwrap(), Some(2));
    // Destroyed, the name makes a new one, of any type.
    d.destroy().unwrap();
    let l = m.named_list::<String>("counts").unwrap();
    assert!(l.is_empty().unwrap());
}

fn two_exec_d_binaries_share_a_dict_by_name() {
    let name = format!("mgr-{}", std::process::id());
    let m = Manager::create(&name).unwrap();
    assert!(matches!(Manager::create(&name), Err(Error::Exists)));
    let d = m.named_dict::<String, u64>("counts").unwrap();
    d.insert("hits".to_string(), 0).unwrap();
    let n = 2000u64;
    let kids: Vec<Process> = (0..2)
        .map(|_| Process::spawn("count-by-name", &(name.clone(), n)).unwrap())
        .collect();
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    assert_eq!(d.get("hits").unwrap(), Some(2 * n));
    let big = m.named_list::<Vec<u8>>("big").unwrap();
    assert_eq!(big.len().unwrap(), 8);
    let mut firsts: Vec<u8> = (0..8).map(|i| big.get(i).unwrap()[1 << 19]).collect();
    firsts.sort();
    assert_eq!(firsts, [0, 0, 1, 1, 2, 2, 3, 3]);
    assert!(m.stats().unwrap().mapped > 8 << 20);
    assert!(matches!(Manager::open("mgr-no-such"), Err(Error::NotFound)));
}

fn a_handle_sent_through_a_queue_opens_the_same_dict() {
    let m = Manager::new().unwrap();
    let d = m.dict::<String, u64>().unwrap();
    // To a forked child through a queue.
    let q = Queue::<SharedDict<String, u64>>::new(0).unwrap();
    let qc = q.clone();
    let p = Process::fork(move || {
        let d = qc.get().unwrap();
        d.insert("forked".to_string(), 1).unwrap();
    })
    .unwrap();
    q.put(&d).unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(d.get("forked").unwrap(), Some(1));
    // To a spawned child (an exec'd binary that never mapped the manager) as its arguments.
    d.insert("from-parent".to_string(), 41).unwrap();
    let p = Process::spawn("use-handle", &d).unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(d.get("from-child").unwrap(), Some(42));
    // To a spawned child through a named queue.
    let qname = format!("mq-{}", std::process::id());
    let nq = Queue::<SharedDict<String, u64>>::builder()
        .name(&qname)
        .build()
        .unwrap();
    let p = Process::spawn("handle-from-queue", &qname).unwrap();
    nq.put(&d).unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(d.get("via-queue").unwrap(), Some(42));
    // A handle of a destroyed dict decodes to an error, not to another dict.
    let gone = m.dict::<String, u64>().unwrap();
    gone.destroy().unwrap();
    q.put(&gone).unwrap();
    assert!(matches!(q.get(), Err(Error::Decode { .. })));
}

fn handles_nest_inside_containers() {
    // Python allows a dict of lists: a list handle stored as a dict value.
    let m = Manager::new().unwrap();
    let d = m.dict::<String, SharedList<u32>>().unwrap();
    let inner = m.list_from([1u32, 2]).unwrap();
    d.insert("inner".to_string(), &inner).unwrap();
    let dc = d.clone();
    let p = Process::fork(move || {
        let l = dc.get("inner").unwrap().unwrap();
        l.push(3).unwrap();
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(inner.to_vec().unwrap(), [1, 2, 3]);
    // A manager travels too.
    let q = Queue::<Manager>::new(0).unwrap();
    q.put(&m).unwrap();
    let m2 = q.get().unwrap();
    assert_eq!(m2.named_dict::<u8, u8>("x").unwrap().len().unwrap(), 0);
}

fn named_objects_through_the_namespace() {
    let m = Manager::new().unwrap();
    let q = m.named_queue::<u32>("jobs", 0).unwrap();
    let ev = m.named_event("go").unwrap();
    let _v = m.named_value("n", 5u64).unwrap();
    let lock = m.named_lock("l").unwrap();
    assert!(matches!(m.named_lock("jobs"), Err(Error::Incompatible)));
    let mc = m.clone();
    let p = Process::fork(move || {
        // A child finds them by name through the manager (and so would an unrelated process).
        mc.named_event("go").unwrap().wait().unwrap();
        let q = mc.named_queue::<u32>("jobs", 0).unwrap();
        let v = mc.named_value("n", 0u64).unwrap();
        let lock = mc.named_lock("l").unwrap();
        let _g = lock.acquire().unwrap();
        q.put(v.get().unwrap() as u32 + 1).unwrap();
    })
    .unwrap();
    ev.set().unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), 6);
    assert!(p.join().unwrap().success());
    drop(lock.acquire().unwrap());
    // The plain ones, shared with children forked later.
    let q = m.queue::<u8>(1).unwrap();
    let e = m.event().unwrap();
    let v = m.value(1i32).unwrap();
    q.put(1).unwrap();
    e.set().unwrap();
    assert_eq!(v.get().unwrap(), 1);
    drop(m.lock().unwrap().acquire().unwrap());
}

// ---- hostile bytes and leftovers ----------------------------------------------------------------

fn hostile_writes(name: &str) -> (Vec<Process>, Duration) {
    let timeout = Duration::from_millis(50);
    let slack = Duration::from_secs(2);
    let m = Manager::open(name).unwrap().with_timeout(timeout);
    let kids = (0..3)
        .map(|k| {
            let m = m.clone();
            Process::fork_with(move || -> Result<(), String> {
                let mut r = Rng(k + 1);
                let d = m.named_dict::<u32, Vec<u8>>("d");
                let l = m.named_list::<Vec<u8>>("l");
                let (Ok(d), Ok(l)) = (d, l) else {
                    return Ok(()); // the namespace itself may be scribbled already
                };
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(3) {
                    let call = Instant::now();
                    let v = vec![k as u8; r.below(3000) as usize];
                    let _ = match r.below(8) {
                        0 => d.insert(r.below(500) as u32, v).map(drop),
                        1 => d.remove(&(r.below(500) as u32)).map(drop),
                        2 => d.get(&(r.below(500) as u32)).map(drop),
                        3 => d.items().map(drop),
                        4 => l.push(v),
                        5 => l.pop().map(drop),
                        6 => l.insert(r.below(100) as usize, v),
                        _ => l.to_vec().map(drop),
                    };
                    if call.elapsed() > timeout + slack {
                        return Err(format!("a call took {:?}", call.elapsed()));
                    }
                }
                Ok(())
            })
            .unwrap()
        })
        .collect();
    (kids, timeout)
}

fn hostile_bytes_never_crash_or_hang_the_honest_side() {
    let name = format!("hostile-m-{}", std::process::id());
    let m = Manager::create(&name).unwrap();
    let d = m.named_dict::<u32, Vec<u8>>("d").unwrap();
    d.update((0..300).map(|i| (i, vec![1u8; 50 + i as usize])))
        .unwrap();
    m.named_list::<Vec<u8>>("l")
        .unwrap()
        .extend((0..100).map(|i| vec![2u8; i]))
        .unwrap();
    let (kids, _) = hostile_writes(&name);
    // The control block (allocator, directory, namespace) and the heap.
    let writes = common::scribble(&shm_path(&name), 8192, 96 << 10, Duration::from_secs(2), 11);
    assert!(writes > 1000);
    for k in kids {
        assert!(k.join().unwrap().success(), "an honest process failed");
    }
    // This process survives whatever is there now: errors, never a panic or a hang.
    let t = Duration::from_millis(50);
    let (_, took) = common::within(Duration::from_secs(20), || {
        let m = m.with_timeout(t);
        let _ = m.stats();
        let _ = m.named_dict::<u32, Vec<u8>>("d").and_then(|d| d.items());
        let _ = d.with_timeout(t).items();
        let _ = d.with_timeout(t).insert(1, vec![9; 10]);
        let _ = m.dict::<u8, u8>().and_then(|x| x.insert(1, 1));
        let _ = m.__audit();
    });
    println!("  {writes} hostile writes; the honest side's last calls took {took:?}");
}

fn nothing_left_in_dev_shm() {
    let name = format!("gone-m-{}", std::process::id());
    let path = shm_path(&name);
    {
        let m = Manager::create(&name).unwrap();
        let d = m.named_dict::<u8, u8>("x").unwrap();
        assert!(std::path::Path::new(&path).exists());
        let kids: Vec<Process> = (0..4)
            .map(|i| {
                let name = name.clone();
                Process::fork(move || {
                    let m = Manager::open(&name).unwrap();
                    m.named_dict::<u8, u8>("x").unwrap().insert(i, i).unwrap();
                })
                .unwrap()
            })
            .collect();
        // One more, killed while it holds the manager.
        let n2 = name.clone();
        let killed = Process::fork(move || {
            let _m = Manager::open(&n2).unwrap();
            std::thread::sleep(Duration::from_secs(60));
        })
        .unwrap();
        for k in kids {
            assert!(k.join().unwrap().success());
        }
        std::thread::sleep(Duration::from_millis(50));
        killed.kill().unwrap();
        killed.join().unwrap();
        assert_eq!(d.len().unwrap(), 4);
    }
    assert!(
        !std::path::Path::new(&path).exists(),
        "{path} is still there"
    );
}

// ---- the second reading -------------------------------------------------------------------------

/// A removal needs the allocator to free what it removed: when the allocator's holder is stopped,
/// the call times out *before* anything changed (a `Timeout` means nothing happened).
fn a_removal_that_times_out_changed_nothing() {
    let t = Duration::from_millis(200);
    let m = Manager::new().unwrap();
    let d1 = m.dict::<u32, String>().unwrap();
    let d2 = m
        .dict_from([(1u32, "one".to_string()), (2, "two".to_string())])
        .unwrap();
    let l = m.list_from(["a".to_string(), "b".to_string()]).unwrap();
    let c1 = d1.clone();
    let p = Process::fork(move || {
        shmwire::hooks::__arm(Point::ManagerAllocMid, libc::SIGSTOP, 0);
        c1.insert(1, "x".repeat(100)).unwrap();
    })
    .unwrap();
    wait_stopped(p.pid());
    let (r, _) = common::within(t * 10, || d2.with_timeout(t).remove(&1));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert_eq!(
        d2.get(&1).unwrap().as_deref(),
        Some("one"),
        "a timed-out remove removed"
    );
    let (r, _) = common::within(t * 10, || l.with_timeout(t).pop());
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert_eq!(l.to_vec().unwrap(), ["a", "b"], "a timed-out pop popped");
    let (r, _) = common::within(t * 10, || l.with_timeout(t).remove(0));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    let (r, _) = common::within(t * 10, || d2.with_timeout(t).clear());
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert_eq!(d2.len().unwrap(), 2, "a timed-out clear cleared");
    p.signal(libc::SIGCONT).unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(d2.remove(&1).unwrap().as_deref(), Some("one"));
    assert_eq!(l.pop().unwrap(), "b");
    m.__audit().unwrap();
}

/// `pop` and `remove` shrink a mostly empty array or table afterwards; when the arena has no room
/// for the smaller one, the removal still returns its value (the shrink is only an economy).
fn a_removal_that_cannot_shrink_still_returns_the_value() {
    let m = Manager::builder().max_bytes(1 << 20).build().unwrap();
    let a = m.list::<u8>().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    let f = m.list::<Vec<u8>>().unwrap();
    // The list's and dict's entries lie between the filler's, so freeing them frees small holes.
    for i in 0..100u8 {
        a.push(i).unwrap();
        d.insert(i, i).unwrap();
        f.push(Vec::new()).unwrap();
    }
    // Fill the arena: values of shrinking sizes in new lists until not even a small one fits.
    let mut fill = Vec::new();
    for size in [65536usize, 4096, 256, 16, 0] {
        loop {
            let Ok(g) = m.list::<Vec<u8>>() else { break };
            let mut n = 0;
            while g.push(vec![7u8; size]).is_ok() {
                n += 1;
            }
            fill.push(g);
            if n == 0 {
                break;
            }
        }
    }
    let p = Process::fork_with(move || -> Result<(), String> {
        for i in (0..100u8).rev() {
            match a.pop() {
                Ok(v) if v == i => {}
                other => return Err(format!("pop of {i}: {other:?}")),
            }
            match d.remove(&i) {
                Ok(Some(v)) if v == i => {}
                other => return Err(format!("remove of {i}: {other:?}")),
            }
        }
        Ok(())
    })
    .unwrap();
    let st = p.join().unwrap();
    assert!(st.success(), "the child failed: {st:?}");
    m.__audit().unwrap();
}

/// Finds the 8-aligned words of `bytes` for which `f(position, word)` holds.
fn words_where(bytes: &[u8], mut f: impl FnMut(usize, u64) -> bool) -> Vec<usize> {
    (0..bytes.len() / 8)
        .map(|i| i * 8)
        .filter(|&p| f(p, u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap())))
        .collect()
}

/// A hostile process points every element of a list (and every bucket of a dict) at one large
/// value: a snapshot must not allocate the value's size times the count (the arena holds at most
/// its own size of values), whatever the bytes say. The honest side runs under an address-space
/// limit: an allocation past the arena's size fails it.
fn hostile_shared_entries_never_make_a_snapshot_allocate_beyond_the_arena() {
    use std::os::unix::fs::FileExt;
    const BIG: u64 = 4 << 20;
    const N: usize = 1000;
    let name = format!("hostile-snap-{}", std::process::id());
    let m = Manager::builder()
        .name(&name)
        .initial_bytes(24 << 20)
        .build()
        .unwrap();
    let mapped = m.stats().unwrap().mapped;
    let l = m.named_list::<Vec<u8>>("l").unwrap();
    let d = m.named_dict::<u32, Vec<u8>>("d").unwrap();
    l.push(vec![0xabu8; BIG as usize]).unwrap();
    l.extend((1..N).map(|_| vec![1u8])).unwrap();
    d.insert(0, vec![0xcdu8; BIG as usize]).unwrap();
    d.update((1..N as u32).map(|i| (i, vec![1u8]))).unwrap();
    assert_eq!(
        m.stats().unwrap().mapped,
        mapped,
        "it grew: the layout below needs one chunk"
    );
    let path = shm_path(&name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut bytes).unwrap();
    let word = |p: usize| u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap());
    let put = |p: usize, w: u64| file.write_all_at(&w.to_le_bytes(), p as u64).unwrap();
    // The large element: its length word (4 MiB and the length's varint), then 0xab bytes.
    let elem = words_where(&bytes, |p, w| {
        (BIG + 1..BIG + 8).contains(&w) && bytes.get(p + 8 + (w - BIG) as usize) == Some(&0xab)
    });
    assert_eq!(elem.len(), 1, "{elem:?}");
    // The array: its capacity, then the large element's Ref (file position - chunk 0's offset).
    let arr = words_where(&bytes, |p, w| {
        w == 1024
            && p + 16 <= bytes.len()
            && elem[0]
                .checked_sub(word(p + 8) as usize)
                .is_some_and(|k| k % 4096 == 0 && k < 1 << 20)
    });
    assert_eq!(arr.len(), 1, "{arr:?}");
    let w0 = word(arr[0] + 8);
    let kind_offset = elem[0] - w0 as usize;
    for i in 1..N {
        put(arr[0] + 8 + 8 * i, w0);
    }
    // The dict's large entry (hash, key length 1 | value length << 32) and its bucket word.
    let entry = words_where(&bytes, |p, w| {
        (BIG + 1..BIG + 8).contains(&(w >> 32))
            && w & 0xffff_ffff == 1
            && p >= 8
            && bytes.get(p + 9 + ((w >> 32) - BIG) as usize) == Some(&0xcd)
    });
    assert_eq!(entry.len(), 1, "{entry:?}");
    let eref = (entry[0] - 8 - kind_offset) as u64;
    // Its bucket in the live table (freed older tables may still hold the word): the table is the
    // block of 2048 buckets (header: its size, 16416 bytes) whose buckets include the word.
    let cap = 2048usize;
    let tag = word(entry[0] - 8) >> 56;
    let tables: std::collections::BTreeSet<usize> =
        words_where(&bytes, |_, w| w & ((1 << 56) - 1) == eref && w >> 56 == tag)
            .into_iter()
            .filter_map(|b| {
                (0..=cap)
                    .map(|k| b - 8 * k)
                    .find(|&p| word(p) == cap as u64 && word(p - 8) & !15 == 16416)
            })
            .collect();
    assert_eq!(tables.len(), 1, "{tables:?}");
    let start = *tables.first().unwrap();
    let bw = (0..cap)
        .map(|k| word(start + 8 + 8 * k))
        .find(|w| w & ((1 << 56) - 1) == eref)
        .unwrap();
    for k in 0..cap {
        let p = start + 8 + 8 * k;
        if word(p) > 1 {
            put(p, bw);
        }
    }
    let (lc, dc) = (l.clone(), d.clone());
    let p = Process::fork_with(move || -> Result<(), String> {
        let lim = libc::rlimit {
            rlim_cur: 1 << 30,
            rlim_max: 1 << 30,
        };
        // SAFETY: a plain syscall on this process.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
        let t = Duration::from_millis(200);
        match lc.with_timeout(t).to_vec() {
            Err(Error::Corrupt) => {}
            other => return Err(format!("to_vec: {:?}", other.map(|v| v.len()))),
        }
        match dc.with_timeout(t).values() {
            Err(Error::Corrupt) => {}
            other => return Err(format!("values: {:?}", other.map(|v| v.len()))),
        }
        Ok(())
    })
    .unwrap();
    let st = p.join().unwrap();
    drop((l, d, m));
    assert!(st.success(), "the honest child failed: {st:?}");
}

/// A handle names its container by slot and id; a manager made again under the same name (a
/// restarted service) must not let an old handle open the new manager's container of that slot.
fn a_stale_handle_never_opens_a_recreated_manager_s_container() {
    let name = format!("stale-m-{}", std::process::id());
    let qname = format!("stale-q-{}", std::process::id());
    let q = Queue::<SharedDict<String, u64>>::builder()
        .name(&qname)
        .build()
        .unwrap();
    {
        let m = Manager::create(&name).unwrap();
        let d = m.dict::<String, u64>().unwrap();
        d.insert("old".to_string(), 1).unwrap();
        q.put(&d).unwrap();
    }
    assert!(!std::path::Path::new(&shm_path(&name)).exists());
    let m2 = Manager::create(&name).unwrap();
    let d2 = m2.dict::<String, u64>().unwrap();
    let qc = q.clone();
    let p = Process::fork_with(move || -> Result<(), String> {
        match qc.get_timeout(Duration::from_secs(10)) {
            Ok(d) => {
                let _ = d.insert("stale".to_string(), 1);
                Err("an old handle opened the new manager's dict".into())
            }
            Err(Error::Decode { .. }) => Ok(()),
            Err(e) => Err(format!("{e:?}")),
        }
    })
    .unwrap();
    let st = p.join().unwrap();
    assert_eq!(
        d2.get("stale").unwrap(),
        None,
        "written through a stale handle"
    );
    assert!(st.success(), "{st:?}");
}
