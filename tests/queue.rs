//! Queue, JoinableQueue and SimpleQueue between real processes: exactly-once delivery under load,
//! producers and consumers stopped or killed mid-operation, every timeout form, names.

mod common;

use common::Rng;
use serde::{Deserialize, Serialize};
use shmwire::hooks::Point;
use shmwire::{Error, JoinableQueue, Pipe, Process, Queue, SimpleQueue, WaitStrategy};
use std::time::{Duration, Instant};

/// An order as the maker of a tagged queue knows it.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct OrderV2 {
    id: u64,
    item: String,
}

/// Another program's type for the same orders: another name, the same encoding.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct OrderView {
    id: u64,
    item: String,
}

/// A tick as raw data.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
}

/// Another program's type for the same ticks: another name, the same size and alignment.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct TickBits {
    seq: u64,
    bits: u64,
}

fn roles(role: &str, args: shmwire::spawn::Args) -> i32 {
    match role {
        // Open a queue by name and move 100 items from it to a second one.
        "relay" => {
            let (from, to): (String, String) = args.get().unwrap();
            let a = Queue::<u64>::open(&from).unwrap();
            let b = Queue::<u64>::open(&to).unwrap();
            for _ in 0..100 {
                b.put(a.get().unwrap() * 2).unwrap();
            }
            assert!(matches!(
                Queue::<String>::open(&from),
                Err(Error::Incompatible)
            ));
            0
        }
        // Open a named queue, take a large item and put it back changed.
        "echo-large" => {
            let name: String = args.get().unwrap();
            let q = Queue::<Vec<u8>>::open(&name).unwrap();
            let v = q.get().unwrap();
            q.put(v.iter().map(|b| b + 1).collect::<Vec<u8>>()).unwrap();
            0
        }
        // Open a grown unbounded queue by name, take its `n` items in order, and put back `n`.
        "drain" => {
            let (name, n): (String, u64) = args.get().unwrap();
            let q = Queue::<u64>::open(&name).unwrap();
            for i in 0..n {
                assert_eq!(q.get().unwrap(), i);
            }
            // Put enough to grow it again, for the parent to read.
            for i in 0..3 * n {
                q.put(i).unwrap();
            }
            0
        }
        // Open tagged queues made by the parent: by tag, whatever the type's name; by size and
        // alignment for raw (Pod) items.
        "tagged" => {
            let (orders, ticks): (String, String) = args.get().unwrap();
            // The default tag is the type's name: another type's name is refused, as is another tag.
            assert!(matches!(
                Queue::<OrderView>::open(&orders),
                Err(Error::Incompatible)
            ));
            assert!(matches!(
                Queue::<OrderView>::builder()
                    .name(&orders)
                    .type_tag("orders-v3")
                    .open(),
                Err(Error::Incompatible)
            ));
            let q = Queue::<OrderView>::builder()
                .name(&orders)
                .type_tag("orders-v2")
                .open()
                .unwrap();
            let o = q.get().unwrap();
            q.put(OrderView {
                id: o.id + 1,
                item: o.item + "!",
            })
            .unwrap();
            // Raw items: the same size and alignment go through, another size or alignment is
            // refused before anything is put or taken.
            let t = Queue::<TickBits>::builder()
                .name(&ticks)
                .type_tag("ticks")
                .open()
                .unwrap();
            refused_as_raw::<[u32; 2]>(&ticks); // another alignment
            refused_as_raw::<[u64; 3]>(&ticks); // another size
            assert_eq!(t.len(), 1, "nothing was put or taken by the refused calls");
            let got = t.get_pod().unwrap();
            assert_eq!(got.seq, 1);
            assert_eq!(f64::from_bits(got.bits), 2.5);
            t.put_pod(&TickBits {
                seq: got.seq + 1,
                bits: got.bits,
            })
            .unwrap();
            0
        }
        _ => 2,
    }
}

/// Opens the tagged queue of raw items `name` as `T` (whose size or alignment differ from its
/// maker's) and checks that every raw call is refused.
fn refused_as_raw<T: bytemuck::Pod>(name: &str) {
    let q = Queue::<T>::builder()
        .name(name)
        .type_tag("ticks")
        .open()
        .unwrap();
    let zero = <T as bytemuck::Zeroable>::zeroed();
    let d = Duration::from_secs(1);
    assert!(matches!(q.put_pod(&zero), Err(Error::Incompatible)));
    assert!(matches!(q.put_pod_nowait(&zero), Err(Error::Incompatible)));
    assert!(matches!(
        q.put_pod_timeout(&zero, d),
        Err(Error::Incompatible)
    ));
    assert!(matches!(q.get_pod(), Err(Error::Incompatible)));
    assert!(matches!(q.get_pod_nowait(), Err(Error::Incompatible)));
    assert!(matches!(q.get_pod_timeout(d), Err(Error::Incompatible)));
}

fn main() {
    shmwire::spawn::enter(roles);
    common::run(tests![
        four_producers_four_consumers_exactly_once,
        items_of_every_size_and_too_large,
        large_items_many_producers_and_consumers,
        spill_area_full_waits_then_goes_on,
        named_queue_allocates_its_spill_area_as_used,
        killed_mid_spilled_put_or_get_leaks_nothing,
        bounded_full_empty_and_every_timeout,
        unbounded_takes_many_without_blocking,
        unbounded_grows_under_many_producers_and_consumers,
        grower_killed_half_way_stalls_nobody,
        close_drains_then_eof_and_refuses_puts,
        producer_may_exit_without_draining,
        consumer_stopped_mid_get_does_not_hold_up_the_others,
        producer_killed_mid_put_loses_only_its_item,
        consumer_killed_mid_get_loses_only_its_item,
        busy_queue_makes_almost_no_futex_calls,
        joinable_queue_accounting,
        simple_queue,
        queues_by_name_between_exec_d_binaries,
        one_slot_queue_with_its_reader_stopped_times_out_then_goes_on,
        every_slot_being_read_at_once_times_out_then_goes_on,
        random_kills_lose_nothing_acknowledged,
        random_kills_lose_no_spilled_item,
        join_returns_after_a_producer_dies_mid_put,
        join_reports_a_consumer_that_died_holding_a_task,
        hostile_writes_never_crash_or_hang_the_honest_side,
        spill_changes_left_half_done_by_the_dead_are_finished,
        a_stopped_holder_of_the_spill_mutex_delays_no_deadline,
        qsize_counts_items_not_skipped_positions,
        a_scribbled_ring_directory_is_no_long_walk,
        a_producer_killed_before_moving_the_position_wedges_nothing,
        a_loop_of_get_nowait_repairs_a_dead_producer,
        put_nowait_of_spilled_items_is_not_full_under_contention,
        task_done_from_another_process_lets_join_return,
        an_idle_consumer_killed_is_no_peer_died,
        killed_at_every_point_of_a_spilled_put_or_get_leaks_nothing,
        try_get_len_and_iterators_end_at_eof,
        an_iterator_yields_a_broken_queue_s_error_once_then_ends,
        an_item_that_does_not_decode_is_taken_and_returned_in_the_error,
        every_blocking_call_of_the_queues_has_a_timeout_form,
        a_queue_waits_as_its_wait_strategy_says,
        type_tags_decide_who_may_open_a_named_queue,
    ]);
}

fn items() -> u64 {
    if common::long() { 1_000_000 } else { 50_000 }
}

/// What a consumer saw, per producer: count, sum and sum of squares of sequence numbers, and whether
/// each producer's items came in order.
type Tally = Vec<(u64, u64, u128, bool)>;

fn consume(q: &Queue<(u8, u64)>, producers: usize) -> Tally {
    let mut t: Tally = vec![(0, 0, 0, true); producers];
    let mut last = vec![None::<u64>; producers];
    while let Ok((p, seq)) = q.get() {
        let e = &mut t[p as usize];
        e.0 += 1;
        e.1 += seq;
        e.2 += u128::from(seq) * u128::from(seq);
        if last[p as usize].is_some_and(|l| l >= seq) {
            e.3 = false;
        }
        last[p as usize] = Some(seq);
    }
    t
}

fn four_producers_four_consumers_exactly_once() {
    let n = items();
    let q = Queue::<(u8, u64)>::new(1024).unwrap();
    let results = Queue::<Tally>::builder().item_size(1024).build().unwrap();
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let (q, results) = (q.clone(), results.clone());
        consumers.push(Process::fork(move || results.put(consume(&q, 4)).unwrap()).unwrap());
    }
    let mut producers = Vec::new();
    for p in 0..4u8 {
        let q = q.clone();
        producers.push(
            Process::fork(move || {
                for seq in 0..n {
                    q.put((p, seq)).unwrap();
                }
            })
            .unwrap(),
        );
    }
    for p in producers {
        assert!(p.join().unwrap().success());
    }
    q.close().unwrap();
    let mut total: Tally = vec![(0, 0, 0, true); 4];
    for _ in 0..4 {
        let t: Tally = results.get().unwrap();
        for (i, e) in t.into_iter().enumerate() {
            total[i].0 += e.0;
            total[i].1 += e.1;
            total[i].2 += e.2;
            total[i].3 &= e.3;
        }
    }
    for c in consumers {
        assert!(c.join().unwrap().success());
    }
    let sum: u64 = n * (n - 1) / 2;
    let squares: u128 = (0..u128::from(n)).map(|x| x * x).sum();
    for (p, e) in total.iter().enumerate() {
        assert_eq!(e.0, n, "producer {p}: count");
        assert_eq!(e.1, sum, "producer {p}: a duplicate or a loss");
        assert_eq!(e.2, squares, "producer {p}: a duplicate or a loss");
        assert!(e.3, "producer {p}: out of order for some consumer");
    }
}

fn items_of_every_size_and_too_large() {
    // Slots of 64 bytes: most items spill; sizes from 0 to 300,000 bytes, then one of 20 MiB.
    let q = Queue::<Vec<u8>>::builder().item_size(64).build().unwrap();
    let qc = q.clone();
    let sizes = |rng: &mut Rng| match rng.below(10) {
        0 => rng.below(300_000) as usize,
        1..=4 => rng.below(80) as usize,
        _ => rng.below(5000) as usize,
    };
    let p = Process::fork(move || {
        let mut rng = Rng(3);
        for _ in 0..2000 {
            let mut v = vec![0u8; sizes(&mut rng)];
            rng.fill(&mut v);
            qc.put(&v).unwrap();
        }
        qc.put(vec![7u8; 20 << 20]).unwrap();
    })
    .unwrap();
    let mut rng = Rng(3);
    for i in 0..2000 {
        let mut v = vec![0u8; sizes(&mut rng)];
        rng.fill(&mut v);
        assert_eq!(q.get().unwrap(), v, "item {i}");
    }
    assert_eq!(q.get().unwrap(), vec![7u8; 20 << 20]);
    assert!(p.join().unwrap().success());
    assert_eq!(q.__spill_in_use(), 0, "a spill block leaked");
    // Larger than the whole spill area: refused, and the queue goes on.
    let small = Queue::<Vec<u8>>::builder()
        .item_size(64)
        .spill_size(1 << 20)
        .build()
        .unwrap();
    assert!(matches!(
        small.put(vec![0u8; 2 << 20]),
        Err(Error::TooLarge)
    ));
    small.put(vec![1u8; 1000]).unwrap();
    assert_eq!(small.get_nowait().unwrap(), vec![1u8; 1000]);
    // No spill area at all: anything beyond a slot is TooLarge.
    let none = Queue::<Vec<u8>>::builder()
        .item_size(64)
        .spill_size(0)
        .build()
        .unwrap();
    assert!(matches!(none.put(vec![0u8; 100]), Err(Error::TooLarge)));
    none.put(vec![0u8; 10]).unwrap();
}

fn large_items_many_producers_and_consumers() {
    // 3 producers x 2 consumers of items that spill, in a spill area small enough to fill up, so
    // producers also wait for spill room; each item carries its producer, sequence and a checksum.
    let q = Queue::<(u8, u64, Vec<u8>)>::builder()
        .maxsize(64)
        .item_size(32)
        .spill_size(256 << 10)
        .build()
        .unwrap();
    let per = 1500u64;
    let mut kids = Vec::new();
    for p in 0..3u8 {
        let q = q.clone();
        kids.push(
            Process::fork(move || {
                let mut rng = Rng(u64::from(p) + 10);
                for seq in 0..per {
                    let len = 40 + rng.below(20_000) as usize;
                    let v = vec![(seq as u8) ^ p; len];
                    q.put(&(p, seq, v)).unwrap();
                }
            })
            .unwrap(),
        );
    }
    let results = Queue::<[(u64, u64); 3]>::new(0).unwrap();
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let q = q.clone();
        let tx = results.clone();
        consumers.push(
            Process::fork(move || {
                let mut seen = [(0u64, 0u64); 3];
                let mut last = [None::<u64>; 3];
                while let Ok((p, seq, v)) = q.get() {
                    assert!(v.iter().all(|&b| b == (seq as u8) ^ p), "a torn item");
                    let p = p as usize;
                    assert!(last[p].is_none_or(|l| l < seq), "out of order");
                    last[p] = Some(seq);
                    seen[p].0 += 1;
                    seen[p].1 += seq;
                }
                tx.put(seen).unwrap();
            })
            .unwrap(),
        );
    }
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    q.close().unwrap();
    let mut total = [(0u64, 0u64); 3];
    for _ in 0..2 {
        let seen = results.get().unwrap();
        for p in 0..3 {
            total[p].0 += seen[p].0;
            total[p].1 += seen[p].1;
        }
    }
    for c in consumers {
        assert!(c.join().unwrap().success());
    }
    for (p, t) in total.iter().enumerate() {
        assert_eq!(
            *t,
            (per, per * (per - 1) / 2),
            "producer {p}: a loss or a duplicate"
        );
    }
    assert_eq!(q.__spill_in_use(), 0, "a spill block leaked");
}

fn named_queue_allocates_its_spill_area_as_used() {
    use std::os::unix::fs::MetadataExt;
    let name = format!("qspill-{}", std::process::id());
    let q = Queue::<Vec<u8>>::builder().name(&name).build().unwrap();
    let file = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(&format!("u.{name}"))
        })
        .expect("the named queue's file")
        .path();
    let allocated = || std::fs::metadata(&file).unwrap().blocks() * 512;
    let at_first = allocated();
    assert!(at_first < 8 << 20, "{at_first} bytes allocated up front");
    let child = Process::spawn("echo-large", &name).unwrap();
    q.put(vec![5u8; 3 << 20]).unwrap();
    assert!(
        allocated() >= at_first + (3 << 20),
        "the spill block's pages"
    );
    assert!(child.join().unwrap().success());
    assert_eq!(q.get().unwrap(), vec![6u8; 3 << 20]);
    assert_eq!(q.__spill_in_use(), 0);
}

fn spill_area_full_waits_then_goes_on() {
    let q = Queue::<Vec<u8>>::builder()
        .item_size(64)
        .spill_size(64 << 10)
        .build()
        .unwrap();
    q.put(vec![1u8; 40_000]).unwrap();
    // The second large item does not fit beside the first: Full, Timeout, then room after a get.
    assert!(matches!(q.put_nowait(vec![2u8; 40_000]), Err(Error::Full)));
    let t = Instant::now();
    assert!(matches!(
        q.put_timeout(vec![2u8; 40_000], Duration::from_millis(150)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(150));
    // Small items still pass while the spill area is full.
    q.put(vec![3u8; 10]).unwrap();
    let qc = q.clone();
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(qc.get().unwrap(), vec![1u8; 40_000]);
    })
    .unwrap();
    q.put_timeout(vec![2u8; 40_000], Duration::from_secs(10))
        .unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(q.get().unwrap(), vec![3u8; 10]);
    assert_eq!(q.get().unwrap(), vec![2u8; 40_000]);
    assert_eq!(q.__spill_in_use(), 0);
}

fn killed_mid_spilled_put_or_get_leaks_nothing() {
    let q = Queue::<Vec<u8>>::builder()
        .item_size(64)
        .spill_size(1 << 20)
        .build()
        .unwrap();
    q.put(vec![1u8; 100_000]).unwrap();
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::PutClaimed, libc::SIGKILL, 0);
        let _ = qc.put(vec![9u8; 100_000]);
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    assert!(q.__spill_in_use() >= 200_000, "the dead producer's block");
    q.put(vec![2u8; 100_000]).unwrap();
    q.put(vec![3u8; 100_000]).unwrap();
    // A consumer dies while reading item 1 out of its spill block.
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::GetClaimed, libc::SIGKILL, 0);
        let _ = qc.get();
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    assert!(
        q.__spill_in_use() >= 400_000,
        "items 1 to 3 and the dead producer's"
    );
    let got: Vec<u8> = (0..2)
        .map(|_| q.get_timeout(Duration::from_secs(5)).unwrap()[0])
        .collect();
    assert_eq!(got, vec![2, 3]);
    // A blocked call repairs what the dead left; then every spill byte is free again.
    assert!(matches!(
        q.get_timeout(shmwire::PROBE_INTERVAL * 3),
        Err(Error::Timeout)
    ));
    assert_eq!(q.__spill_in_use(), 0, "a dead process's spill block leaked");
    for i in 0..30u8 {
        q.put_timeout(vec![i; 200_000], Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            q.get_timeout(Duration::from_secs(5)).unwrap(),
            vec![i; 200_000]
        );
    }
}

fn bounded_full_empty_and_every_timeout() {
    let q = Queue::<u32>::new(3).unwrap();
    assert_eq!(q.maxsize(), 3);
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    let t = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    for i in 0..3 {
        q.put_nowait(i).unwrap();
    }
    assert!(q.is_full());
    assert_eq!(q.qsize(), 3);
    assert!(matches!(q.put_nowait(9), Err(Error::Full)));
    let t = Instant::now();
    assert!(matches!(
        q.put_timeout(9, Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    // A blocked put completes once a consumer in another process makes room.
    let qc = q.clone();
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(qc.get().unwrap(), 0);
    })
    .unwrap();
    let t = Instant::now();
    q.put(3).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(p.join().unwrap().success());
    assert_eq!(
        (1..=3).map(|_| q.get_nowait().unwrap()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(q.is_empty());
    // get (forever) wakes when a producer puts.
    let qc = q.clone();
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(100));
        qc.put(42).unwrap();
    })
    .unwrap();
    assert_eq!(q.get().unwrap(), 42);
    assert!(p.join().unwrap().success());
}

fn unbounded_takes_many_without_blocking() {
    // A consumer forked before the queue grows reads from rings appended after its fork.
    let n: u64 = if common::long() { 5_000_000 } else { 1_500_000 };
    let q = Queue::<u64>::new(0).unwrap();
    assert_eq!(q.maxsize(), 0);
    let (go_r, go_w) = Pipe::simplex().unwrap();
    let qc = q.clone();
    let p = Process::fork(move || {
        go_r.recv::<()>().unwrap();
        for i in 0..n {
            assert_eq!(qc.get().unwrap(), i);
        }
        assert!(matches!(qc.get_nowait(), Err(Error::Empty)));
    })
    .unwrap();
    // More than one ring's worth (1,048,576) with nobody taking: no put waits.
    for i in 0..n {
        q.put_nowait(i).unwrap();
    }
    assert_eq!(q.qsize(), n as usize);
    assert!(!q.is_full());
    assert!(q.__rings() >= 11, "{} rings", q.__rings());
    go_w.send(&()).unwrap();
    assert!(p.join().unwrap().success());
    assert!(q.is_empty());
    // And it goes on after growing: put and get through the newest ring.
    q.put(7).unwrap();
    assert_eq!(q.get().unwrap(), 7);
}

fn unbounded_grows_under_many_producers_and_consumers() {
    // Producers outrun the consumers in bursts, so rings are appended while items are taken from
    // older ones: each item arrives exactly once and each producer's items in order.
    let q = Queue::<(u8, u64)>::new(0).unwrap();
    let per = if common::long() { 400_000 } else { 120_000 };
    let results = Queue::<Tally>::builder().item_size(1024).build().unwrap();
    // The consumers start once the queue has grown twice, so rings are appended both before and
    // while they take.
    let go = shmwire::Event::new().unwrap();
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let (q, results, go) = (q.clone(), results.clone(), go.clone());
        consumers.push(
            Process::fork(move || {
                go.wait().unwrap();
                results.put(consume(&q, 3)).unwrap()
            })
            .unwrap(),
        );
    }
    let mut producers = Vec::new();
    for p in 0..3u8 {
        let q = q.clone();
        producers.push(
            Process::fork(move || {
                for seq in 0..per {
                    q.put_nowait((p, seq)).unwrap();
                }
            })
            .unwrap(),
        );
    }
    let t = Instant::now();
    while q.__rings() < 3 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(q.__rings() >= 3, "the queue never grew");
    go.set().unwrap();
    for p in producers {
        assert!(p.join().unwrap().success());
    }
    q.close().unwrap();
    let mut total: Tally = vec![(0, 0, 0, true); 3];
    for _ in 0..2 {
        let t = results.get().unwrap();
        for (a, b) in total.iter_mut().zip(t) {
            a.0 += b.0;
            a.1 += b.1;
            a.2 += b.2;
            a.3 &= b.3;
        }
    }
    for c in consumers {
        assert!(c.join().unwrap().success());
    }
    let sum: u64 = (0..per).sum();
    let squares: u128 = (0..per).map(|x| u128::from(x) * u128::from(x)).sum();
    for (p, e) in total.iter().enumerate() {
        assert_eq!(
            (e.0, e.1, e.2),
            (per, sum, squares),
            "producer {p}: a loss or a duplicate"
        );
        assert!(e.3, "producer {p}: out of order");
    }
}

fn grower_killed_half_way_stalls_nobody() {
    let q = Queue::<u64>::new(0).unwrap();
    for i in 0..10u64 {
        q.put(i).unwrap();
    }
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::GrowAppended, libc::SIGKILL, 0);
        for i in 0..2000u64 {
            let _ = qc.put(i + 1000);
        }
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(q.__rings(), 2);
    // The grower filled the first ring (1,024 slots: our 10 and its 1,014) and died between
    // appending the second and sealing the first. New items go to the new ring; the old one, never
    // sealed by its grower, is sealed by the consumer that finds it empty, and every item comes out
    // in order.
    for i in 10..20u64 {
        q.put(i).unwrap();
    }
    let got: Vec<u64> = (0..1034)
        .map(|_| q.get_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    let want: Vec<u64> = (0..10).chain(1000..2014).chain(10..20).collect();
    assert_eq!(got, want);
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    q.close().unwrap();
    assert!(matches!(q.get(), Err(Error::Eof)));
}

fn close_drains_then_eof_and_refuses_puts() {
    let q = Queue::<u32>::new(0).unwrap();
    for i in 0..5 {
        q.put(i).unwrap();
    }
    let qc = q.clone();
    let p = Process::fork(move || qc.close().unwrap()).unwrap();
    assert!(p.join().unwrap().success());
    assert!(q.is_closed());
    assert!(matches!(q.put(9), Err(Error::Closed)));
    assert!(matches!(q.put_nowait(9), Err(Error::Closed)));
    let mut got = vec![];
    while let Ok(v) = q.get() {
        got.push(v);
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert!(matches!(q.get(), Err(Error::Eof)));
    assert!(matches!(q.get_nowait(), Err(Error::Eof)));
    assert!(matches!(
        q.get_timeout(Duration::from_millis(10)),
        Err(Error::Eof)
    ));
}

fn producer_may_exit_without_draining() {
    let q = Queue::<u32>::new(0).unwrap();
    let qc = q.clone();
    let p = Process::fork(move || {
        for i in 0..1000 {
            qc.put(i).unwrap();
        }
    })
    .unwrap();
    // Joining first never deadlocks (no feeder thread, no pipe buffer to fill).
    assert!(p.join_timeout(Duration::from_secs(10)).unwrap().success());
    for i in 0..1000 {
        assert_eq!(q.get().unwrap(), i);
    }
}

fn consumer_stopped_mid_get_does_not_hold_up_the_others() {
    let n = 20_000u64;
    let q = Queue::<u64>::new(256).unwrap();
    let res = Queue::<Vec<u64>>::builder()
        .item_size(1 << 20)
        .maxsize(8)
        .build()
        .unwrap();
    let (stop_r, stop_w) = Pipe::simplex().unwrap();
    // The stalled consumer claims one item and stops itself while holding its slot.
    let qs = q.clone();
    let w = &res;
    let stalled = Process::fork(move || {
        stop_w.send(&()).unwrap();
        shmwire::hooks::__arm(Point::GetClaimed, libc::SIGSTOP, 0);
        let v = qs.get().unwrap();
        w.put(vec![v]).unwrap();
    })
    .unwrap();
    q.put(0).unwrap();
    stop_r.recv::<()>().unwrap();
    // Wait until it is stopped.
    let pid = stalled.pid();
    let t = Instant::now();
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .contains(") T ")
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the consumer did not stop"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut others = Vec::new();
    for _ in 0..3 {
        let q = q.clone();
        others.push(
            Process::fork(move || {
                let mut mine = Vec::new();
                while let Ok(v) = q.get() {
                    mine.push(v);
                }
                w.put(&mine).unwrap();
            })
            .unwrap(),
        );
    }
    for i in 1..n {
        q.put_timeout(i, Duration::from_secs(10))
            .expect("the producer must not be held up by the stopped consumer");
    }
    q.close().unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(res.get().unwrap());
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (1..n).collect::<Vec<_>>(),
        "the other three deliver every item but the claimed one"
    );
    stalled.signal(libc::SIGCONT).unwrap();
    assert_eq!(res.get().unwrap(), vec![0]);
    assert!(stalled.join().unwrap().success());
    for o in others {
        assert!(o.join().unwrap().success());
    }
}

fn producer_killed_mid_put_loses_only_its_item() {
    let q = Queue::<u64>::new(256).unwrap();
    q.put(1).unwrap();
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::PutClaimed, libc::SIGKILL, 0);
        let _ = qc.put(999);
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    for i in 2..=100u64 {
        q.put(i).unwrap();
    }
    // The dead producer's slot sits between 1 and 2; after its death is noticed it is skipped.
    let t = Instant::now();
    let got: Vec<u64> = (0..100)
        .map(|_| q.get_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    assert!(
        t.elapsed() < shmwire::PROBE_INTERVAL * 20,
        "took {:?}",
        t.elapsed()
    );
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
}

fn consumer_killed_mid_get_loses_only_its_item() {
    let q = Queue::<u64>::new(4).unwrap();
    for i in 0..4 {
        q.put(i).unwrap();
    }
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::GetClaimed, libc::SIGKILL, 0);
        let _ = qc.get();
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    // Item 0 died with its consumer; the others come through, and the queue goes on: puts wrap
    // around (past the dead consumer's slot, which a blocked put frees once the death is noticed).
    let t = Instant::now();
    let got: Vec<u64> = (0..3)
        .map(|_| q.get_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    for i in 4..20u64 {
        q.put_timeout(i, Duration::from_secs(5)).unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), i);
    }
    assert!(t.elapsed() < shmwire::PROBE_INTERVAL * 20);
}

fn busy_queue_makes_almost_no_futex_calls() {
    let n = if common::long() {
        1_000_000
    } else {
        200_000u64
    };
    let q = Queue::<u64>::new(4096).unwrap();
    let reports = Queue::<(u64, u64)>::new(0).unwrap();
    let w = &reports;
    let mut kids = Vec::new();
    for c in 0..2u64 {
        let q = q.clone();
        kids.push(
            Process::fork(move || {
                let before = shmwire::stats::futex_calls();
                let mut count = 0u64;
                while q.get().is_ok() {
                    count += 1;
                }
                w.put((count, shmwire::stats::futex_calls() - before))
                    .unwrap();
                let _ = c;
            })
            .unwrap(),
        );
    }
    for _ in 0..2u64 {
        let q = q.clone();
        kids.push(
            Process::fork(move || {
                let before = shmwire::stats::futex_calls();
                for i in 0..n / 2 {
                    q.put(i).unwrap();
                }
                w.put((0u64, shmwire::stats::futex_calls() - before))
                    .unwrap();
            })
            .unwrap(),
        );
    }
    // Close once both producers are done (their reports come first).
    let mut got: Vec<(u64, u64)> = vec![];
    while got.iter().filter(|r| r.0 == 0).count() < 2 {
        got.push(reports.get().unwrap());
    }
    q.close().unwrap();
    while got.len() < 4 {
        got.push(reports.get().unwrap());
    }
    for k in kids {
        assert!(k.join().unwrap().success());
    }
    let delivered: u64 = got.iter().map(|r| r.0).sum();
    let calls: u64 = got.iter().map(|r| r.1).sum();
    println!("[{n} items, 2x2: {calls} futex calls] ");
    assert_eq!(delivered, n);
    // The close at the end wakes sleepers on purpose; allow for it.
    assert!(calls <= n / 100, "{calls} futex calls for {n} items");
}

fn joinable_queue_accounting() {
    let q = JoinableQueue::<u32>::new(0).unwrap();
    assert!(matches!(q.task_done(), Err(Error::CalledTooOften)));
    for i in 0..100 {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished(), 100);
    assert!(matches!(
        q.join_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    let worker = q.clone();
    let p = Process::fork(move || {
        for _ in 0..100 {
            worker.get().unwrap();
            std::thread::sleep(Duration::from_micros(200));
            worker.task_done().unwrap();
        }
    })
    .unwrap();
    q.join_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(q.unfinished(), 0);
    assert!(p.join().unwrap().success());
    assert!(
        matches!(q.task_done(), Err(Error::CalledTooOften)),
        "task_done called too often"
    );
}

fn simple_queue() {
    let q = SimpleQueue::<String>::new().unwrap();
    assert!(q.is_empty());
    let qc = q.clone();
    let p = Process::fork(move || {
        for s in ["a", "b"] {
            qc.put(s.to_string()).unwrap();
        }
        qc.close().unwrap();
    })
    .unwrap();
    assert_eq!(q.get().unwrap(), "a");
    assert_eq!(q.get().unwrap(), "b");
    assert!(matches!(q.get(), Err(Error::Eof)));
    assert!(p.join().unwrap().success());
}

fn queues_by_name_between_exec_d_binaries() {
    let (from, to) = (
        format!("qa-{}", std::process::id()),
        format!("qb-{}", std::process::id()),
    );
    let a = Queue::<u64>::builder().name(&from).build().unwrap();
    let b = Queue::<u64>::builder().name(&to).build().unwrap();
    let child = Process::spawn("relay", &(from.clone(), to.clone())).unwrap();
    for i in 0..100u64 {
        a.put(i).unwrap();
    }
    for i in 0..100u64 {
        assert_eq!(b.get_timeout(Duration::from_secs(10)).unwrap(), i * 2);
    }
    assert!(child.join().unwrap().success());
    // An unbounded queue grown here, drained by an exec'd binary, grown again there.
    let name = format!("qc-{}", std::process::id());
    let c = Queue::<u64>::builder()
        .name(&name)
        .item_size(8)
        .spill_size(0)
        .build()
        .unwrap();
    let n = 5000u64;
    for i in 0..n {
        c.put_nowait(i).unwrap();
    }
    assert!(c.__rings() >= 3, "{} rings", c.__rings());
    let child = Process::spawn("drain", &(name.clone(), n)).unwrap();
    assert!(child.join().unwrap().success());
    assert!(c.__rings() >= 4, "{} rings", c.__rings());
    for i in 0..3 * n {
        assert_eq!(c.get_nowait().unwrap(), i);
    }
    assert!(matches!(c.get_nowait(), Err(Error::Empty)));
    assert!(matches!(
        Queue::<u64>::open("no-such-queue"),
        Err(Error::NotFound)
    ));
}

/// Waits until process `pid` is stopped (state `T` in /proc).
fn wait_until_stopped(pid: u32) {
    let t = Instant::now();
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .contains(") T ")
    {
        assert!(t.elapsed() < Duration::from_secs(10), "{pid} did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn one_slot_queue_with_its_reader_stopped_times_out_then_goes_on() {
    let q = Queue::<u64>::new(1).unwrap();
    q.put(7).unwrap();
    let qc = q.clone();
    let reader = Process::fork(move || {
        shmwire::hooks::__arm(Point::GetClaimed, libc::SIGSTOP, 0);
        assert_eq!(qc.get().unwrap(), 7);
        assert_eq!(qc.get_timeout(Duration::from_secs(10)).unwrap(), 8);
    })
    .unwrap();
    wait_until_stopped(reader.pid());
    // The one slot is being read: a put waits for room, and honours its deadline.
    let (r, took) = common::within(Duration::from_secs(3), || {
        q.put_timeout(8, Duration::from_millis(300))
    });
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(took >= Duration::from_millis(300));
    assert!(matches!(q.put_nowait(8), Err(Error::Full)));
    assert_eq!(
        q.qsize(),
        0,
        "the item being read is no longer in the queue"
    );
    // Once the reader goes on and frees the slot, the put goes through and the reader gets it.
    reader.signal(libc::SIGCONT).unwrap();
    q.put_timeout(8, Duration::from_secs(10)).unwrap();
    assert!(reader.join().unwrap().success());
    assert!(q.is_empty());
}

fn every_slot_being_read_at_once_times_out_then_goes_on() {
    // maxsize = the number of consumers, each stopped while it reads a large (spilled) item.
    let q = Queue::<Vec<u8>>::builder()
        .maxsize(3)
        .item_size(64)
        .build()
        .unwrap();
    for i in 0..3u8 {
        q.put(vec![i; 1000]).unwrap();
    }
    let readers: Vec<Process> = (0..3)
        .map(|_| {
            let qc = q.clone();
            Process::fork(move || {
                shmwire::hooks::__arm(Point::GetClaimed, libc::SIGSTOP, 0);
                let v = qc.get().unwrap();
                assert_eq!(v.len(), 1000);
                let w = qc.get_timeout(Duration::from_secs(10)).unwrap();
                assert_eq!(w.len(), 1000);
            })
            .unwrap()
        })
        .collect();
    for r in &readers {
        wait_until_stopped(r.pid());
    }
    let (r, _) = common::within(Duration::from_secs(3), || {
        q.put_timeout(vec![9; 1000], Duration::from_millis(300))
    });
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    for r in &readers {
        r.signal(libc::SIGCONT).unwrap();
    }
    for i in 0..3u8 {
        q.put_timeout(vec![10 + i; 1000], Duration::from_secs(10))
            .unwrap();
    }
    for r in readers {
        assert!(r.join().unwrap().success());
    }
    assert!(q.is_empty());
    assert_eq!(q.__spill_in_use(), 0);
}

/// Counters shared by the processes of `random_kills` (an anonymous shared mapping made before the
/// forks, independent of the library under test).
struct Ledger {
    base: *mut std::sync::atomic::AtomicU64,
    incarnations: usize,
    per: u64,
}

// SAFETY: the mapping is shared memory made of atomics; the pointer stays valid for the test.
unsafe impl Send for Ledger {}
unsafe impl Sync for Ledger {}

const L_STOP: usize = 0;
const L_ERRORS: usize = 1;
const L_DUPLICATES: usize = 2;
const L_TORN: usize = 3;
const L_ACKS: usize = 8;

impl Ledger {
    fn new(incarnations: usize, per: u64) -> Ledger {
        let words = L_ACKS + incarnations + incarnations * (per as usize).div_ceil(64);
        // SAFETY: a fresh anonymous shared mapping, zero-filled, of `words` u64s.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Ledger {
            base: p.cast(),
            incarnations,
            per,
        }
    }

    fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: every index used is below `words` (see `new`); atomics in shared memory.
        unsafe { &*self.base.add(i) }
    }

    fn ack(&self, inc: usize) -> &std::sync::atomic::AtomicU64 {
        self.word(L_ACKS + inc)
    }

    /// Marks item `seq` of incarnation `inc` received; whether it was already.
    fn receive(&self, inc: usize, seq: u64) -> bool {
        let bit = L_ACKS + self.incarnations + inc * (self.per as usize).div_ceil(64);
        let w = self.word(bit + (seq / 64) as usize);
        w.fetch_or(1 << (seq % 64), std::sync::atomic::Ordering::SeqCst) & (1 << (seq % 64)) != 0
    }

    fn received(&self, inc: usize, seq: u64) -> bool {
        let bit = L_ACKS + self.incarnations + inc * (self.per as usize).div_ceil(64);
        self.word(bit + (seq / 64) as usize)
            .load(std::sync::atomic::Ordering::SeqCst)
            & (1 << (seq % 64))
            != 0
    }
}

/// The payload of item `seq` of incarnation `inc`: `len` bytes that say who they are.
fn payload(inc: usize, seq: u64, len: usize) -> Vec<u8> {
    let mut r = common::Rng((inc as u64) << 40 ^ seq ^ 0x9e37_79b9_7f4a_7c15);
    let mut v = vec![0u8; len];
    r.fill(&mut v);
    v
}

/// Issue 8, item 8: three producers and two consumers on `maxsize(16)`, a random one SIGKILLed and
/// replaced every 2-32 ms; every item whose `put` returned Ok arrives exactly once, but for at most
/// one in flight per killed consumer, and no honest call sees `Corrupt`.
fn random_kills(len: usize, kills: usize) {
    use std::sync::atomic::Ordering::SeqCst;
    let per = 50_000u64;
    let incarnations = kills + 8;
    let ledger = Ledger::new(incarnations, per);
    let l = &ledger;
    let q = Queue::<(u32, u64, Vec<u8>)>::builder()
        .maxsize(16)
        .build()
        .unwrap();
    let producer = |inc: usize| {
        let q = q.clone();
        Process::fork(move || {
            for seq in 0..per {
                if l.word(L_STOP).load(SeqCst) != 0 {
                    break;
                }
                match q.put_timeout(
                    (inc as u32, seq, payload(inc, seq, len)),
                    Duration::from_millis(200),
                ) {
                    Ok(()) => l.ack(inc).store(seq + 1, SeqCst),
                    Err(Error::Timeout) => break, // this incarnation ends: later seqs never acked
                    Err(e) => {
                        eprintln!("producer {inc}: {e:?}");
                        l.word(L_ERRORS).fetch_add(1, SeqCst);
                        break;
                    }
                }
            }
            while l.word(L_STOP).load(SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap()
    };
    let consumer = || {
        let q = q.clone();
        Process::fork(move || {
            loop {
                match q.get_timeout(Duration::from_millis(200)) {
                    Ok((inc, seq, bytes)) => {
                        // Recorded first, so that a kill right after `get` leaves as little as possible
                        // in flight; checked after.
                        let inc = inc as usize;
                        if inc >= l.incarnations || seq >= per {
                            l.word(L_TORN).fetch_add(1, SeqCst);
                        } else if l.receive(inc, seq) {
                            l.word(L_DUPLICATES).fetch_add(1, SeqCst);
                        } else if bytes != payload(inc, seq, len) {
                            l.word(L_TORN).fetch_add(1, SeqCst);
                        }
                    }
                    Err(Error::Timeout) => {}
                    Err(Error::Eof) => break,
                    Err(e) => {
                        eprintln!("consumer: {e:?}");
                        l.word(L_ERRORS).fetch_add(1, SeqCst);
                        break;
                    }
                }
            }
        })
        .unwrap()
    };
    let mut next_inc = 0usize;
    let mut producers: Vec<(usize, Process)> = (0..3)
        .map(|_| {
            next_inc += 1;
            (next_inc - 1, producer(next_inc - 1))
        })
        .collect();
    let mut consumers: Vec<Process> = (0..2).map(|_| consumer()).collect();
    let mut rng = common::Rng(0x5eed ^ len as u64);
    let (mut producer_kills, mut consumer_kills) = (0usize, 0usize);
    while producer_kills + consumer_kills < kills {
        std::thread::sleep(Duration::from_millis(2 + rng.below(31)));
        if rng.below(4) == 0 {
            let i = rng.below(2) as usize;
            consumers[i].kill().unwrap();
            consumers[i].join().unwrap();
            consumers[i] = consumer();
            consumer_kills += 1;
        } else {
            let i = rng.below(3) as usize;
            producers[i].1.kill().unwrap();
            producers[i].1.join().unwrap();
            producers[i] = (next_inc, producer(next_inc));
            next_inc += 1;
            producer_kills += 1;
        }
    }
    ledger.word(L_STOP).store(1, SeqCst);
    for (_, p) in producers {
        assert!(p.join().unwrap().success());
    }
    q.close().unwrap();
    for c in consumers {
        assert!(c.join().unwrap().success());
    }
    let mut lost = 0u64;
    for inc in 0..next_inc {
        let acked = ledger.ack(inc).load(SeqCst);
        lost += (0..acked).filter(|&s| !ledger.received(inc, s)).count() as u64;
    }
    let (errors, dups, torn) = (
        ledger.word(L_ERRORS).load(SeqCst),
        ledger.word(L_DUPLICATES).load(SeqCst),
        ledger.word(L_TORN).load(SeqCst),
    );
    eprint!(
        "[{len} B items: {producer_kills} producers and {consumer_kills} consumers killed; lost {lost}, duplicated {dups}, torn {torn}, errors {errors}] "
    );
    assert_eq!((errors, dups, torn), (0, 0, 0));
    assert!(
        lost <= consumer_kills as u64,
        "{lost} acknowledged items lost, more than the {consumer_kills} killed consumers could hold"
    );
}

fn random_kills_lose_nothing_acknowledged() {
    random_kills(16, if common::long() { 1000 } else { 200 });
}

fn random_kills_lose_no_spilled_item() {
    random_kills(4000, if common::long() { 1000 } else { 150 });
}

fn join_returns_after_a_producer_dies_mid_put() {
    for point in [Point::PutClaimed, Point::PutFilled] {
        let q = JoinableQueue::<u32>::new(0).unwrap();
        for i in 0..10 {
            q.put(i).unwrap();
        }
        let qc = q.clone();
        let dying = Process::fork(move || {
            shmwire::hooks::__arm(point, libc::SIGKILL, 0);
            let _ = qc.put(99);
        })
        .unwrap();
        assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
        q.put(10).unwrap();
        let worker = q.clone();
        let p = Process::fork(move || {
            while let Ok(v) = worker.get() {
                assert_ne!(v, 99, "the dead producer's item was never published");
                worker.task_done().unwrap();
            }
        })
        .unwrap();
        let (r, _) = common::within(Duration::from_secs(5), || {
            q.join_timeout(Duration::from_secs(4))
        });
        r.unwrap_or_else(|e| panic!("{point:?}: join {e:?}"));
        assert_eq!(q.unfinished(), 0);
        q.close().unwrap();
        assert!(p.join().unwrap().success());
    }
}

fn join_reports_a_consumer_that_died_holding_a_task() {
    let q = JoinableQueue::<u32>::new(0).unwrap();
    for i in 0..3 {
        q.put(i).unwrap();
    }
    let qc = q.clone();
    let dying = Process::fork(move || {
        qc.get().unwrap();
        qc.task_done().unwrap();
        qc.get().unwrap(); // taken, never marked done
        // SAFETY: plain syscall on ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(q.get().unwrap(), 2);
    q.task_done().unwrap();
    let (r, _) = common::within(Duration::from_secs(5), || {
        q.join_timeout(Duration::from_secs(4))
    });
    assert!(matches!(r, Err(Error::PeerDied)), "{r:?}");
    // Reported once: the abandoned task is then forgotten.
    q.join_timeout(Duration::from_secs(1)).unwrap();
}

/// The path in /dev/shm of the object named `name`.
fn shm_path(name: &str) -> String {
    let prefix = std::env::var("SHMWIRE_PREFIX").unwrap_or_default();
    format!("/dev/shm/shmwire.{prefix}.u.{name}")
}

/// Claims nothing backed before: hostile bytes in a queue's slot words, lengths, positions, spill
/// headers and bitmap, and lock words, written while honest processes put and get. The honest side
/// gets errors (or garbage it can decode), never a crash, a panic or a call past its deadline.
fn hostile_writes_never_crash_or_hang_the_honest_side() {
    let name = "hostile-q";
    let q = Queue::<Vec<u8>>::builder()
        .name(name)
        .maxsize(8)
        .item_size(64)
        .spill_size(1 << 20)
        .build()
        .unwrap();
    let timeout = Duration::from_millis(50);
    let slack = Duration::from_secs(2);
    let honest: Vec<Process> = (0..3)
        .map(|k| {
            let q = q.clone();
            Process::fork_with(move || -> Result<(), String> {
                let mut r = common::Rng(k + 1);
                let t = Instant::now();
                let mut worst = Duration::ZERO;
                while t.elapsed() < Duration::from_secs(2) {
                    let len = [8usize, 60, 300, 5000][r.below(4) as usize];
                    let s = Instant::now();
                    let _ = if r.below(2) == 0 {
                        q.put_timeout(vec![k as u8; len], timeout).map(|_| ())
                    } else {
                        q.get_timeout(timeout).map(|_| ())
                    };
                    let _ = q.qsize();
                    worst = worst.max(s.elapsed());
                }
                if worst > timeout + slack {
                    return Err(format!("a call took {worst:?}"));
                }
                Ok(())
            })
            .unwrap()
        })
        .collect();
    // Everything after the header page: the control block, the slots, the spill area.
    let writes = common::scribble(&shm_path(name), 4096, 32 << 10, Duration::from_secs(2), 7);
    for p in honest {
        let st = p.join().unwrap();
        assert!(st.success(), "an honest process failed: {st:?}");
    }
    eprint!("[{writes} hostile writes] ");
}

fn spill_queue() -> Queue<Vec<u8>> {
    Queue::<Vec<u8>>::builder()
        .item_size(64)
        .spill_size(1 << 20)
        .build()
        .unwrap()
}

/// The spill allocator's redo record: a producer killed half way through marking its block in the
/// bitmap, and a consumer killed half way through clearing one; the next holder of the mutex
/// finishes each change, and a repair gives the dead producer's block back.
fn spill_changes_left_half_done_by_the_dead_are_finished() {
    let q = spill_queue();
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::SpillMidChange, libc::SIGKILL, 0);
        let _ = qc.put(vec![1u8; 100_000]);
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    q.put(vec![2u8; 100_000]).unwrap();
    q.put(vec![3u8; 100_000]).unwrap();
    assert_eq!(
        q.get_timeout(Duration::from_secs(5)).unwrap(),
        vec![2u8; 100_000]
    );
    // A consumer dies while giving its block back (after reading item 3).
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::SpillMidChange, libc::SIGKILL, 0);
        let _ = qc.get();
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    // A blocked call repairs: nothing of either dead process's stays allocated.
    assert!(matches!(
        q.get_timeout(shmwire::PROBE_INTERVAL * 3),
        Err(Error::Timeout)
    ));
    assert_eq!(q.__spill_in_use(), 0, "a half-done change leaked units");
    // And the area still works: it fills and empties.
    for i in 0..8u8 {
        q.put(vec![i; 100_000]).unwrap();
    }
    for i in 0..8u8 {
        assert_eq!(
            q.get_timeout(Duration::from_secs(5)).unwrap(),
            vec![i; 100_000]
        );
    }
    assert_eq!(q.__spill_in_use(), 0);
}

/// A process stopped while it holds the spill allocator's mutex holds up no call past its deadline:
/// a consumer still takes (and releases) spilled items, a blocked get still probes, and a spilled put
/// times out; all goes on after SIGCONT.
fn a_stopped_holder_of_the_spill_mutex_delays_no_deadline() {
    let q = spill_queue();
    for i in 0..3u8 {
        q.put(vec![i; 50_000]).unwrap();
    }
    let qc = q.clone();
    let stopped = Process::fork(move || {
        shmwire::hooks::__arm(Point::SpillMidChange, libc::SIGSTOP, 0);
        qc.put(vec![9u8; 50_000]).unwrap();
    })
    .unwrap();
    wait_until_stopped(stopped.pid());
    let slack = Duration::from_secs(2);
    for i in 0..3u8 {
        let (v, _) = common::within(slack, || q.get_timeout(Duration::from_millis(500)));
        assert_eq!(v.unwrap(), vec![i; 50_000]);
    }
    let (r, _) = common::within(Duration::from_millis(300) + slack, || {
        q.get_timeout(Duration::from_millis(300))
    });
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    let (r, _) = common::within(Duration::from_millis(300) + slack, || {
        q.put_timeout(vec![7u8; 50_000], Duration::from_millis(300))
    });
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    stopped.signal(libc::SIGCONT).unwrap();
    assert!(stopped.join().unwrap().success());
    assert_eq!(
        q.get_timeout(Duration::from_secs(5)).unwrap(),
        vec![9u8; 50_000]
    );
    assert_eq!(q.__spill_in_use(), 0);
}

/// `qsize` counts items, not positions: a position the producers skipped (its slot still being read)
/// and the item being read are not in it.
fn qsize_counts_items_not_skipped_positions() {
    let q = Queue::<u64>::new(4).unwrap();
    for i in 0..4 {
        q.put(i).unwrap();
    }
    let qc = q.clone();
    let reader = Process::fork(move || {
        shmwire::hooks::__arm(Point::GetClaimed, libc::SIGSTOP, 0);
        assert_eq!(qc.get().unwrap(), 0);
    })
    .unwrap();
    wait_until_stopped(reader.pid());
    assert_eq!(q.get().unwrap(), 1);
    // Slot 0 is still being read: the next put skips its position and goes into slot 1.
    q.put(4).unwrap();
    assert_eq!(q.qsize(), 3, "items 2, 3 and 4");
    assert!(!q.is_full());
    reader.signal(libc::SIGCONT).unwrap();
    assert!(reader.join().unwrap().success());
    let rest: Vec<u64> = (0..3).map(|_| q.get_nowait().unwrap()).collect();
    assert_eq!(rest, vec![2, 3, 4]);
    assert_eq!(q.qsize(), 0);
    assert!(q.is_empty());
}

/// A scribbled ring directory (which rings are in use) is `Corrupt` for the calls that need it and
/// never a walk of four billion rings.
fn a_scribbled_ring_directory_is_no_long_walk() {
    use std::os::unix::fs::FileExt;
    let name = "hostile-dir";
    // An unbounded queue: a bounded one has one ring and reads no directory at all.
    let q = Queue::<u64>::builder().name(name).build().unwrap();
    q.put(1).unwrap();
    // The queue's control block starts at the kind area (8192: after the header page and the
    // participant table); its ring directory {closed, head, last} is its fifth 128-byte line.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .unwrap();
    let last_at = 8192 + 4 * 128 + 8;
    f.write_at(&u32::MAX.to_ne_bytes(), last_at).unwrap();
    let (n, _) = common::within(Duration::from_secs(1), || q.qsize());
    assert_eq!(n, 0);
    let (r, _) = common::within(Duration::from_secs(2), || {
        q.get_timeout(Duration::from_millis(300))
    });
    assert!(matches!(r, Err(Error::Corrupt)), "{r:?}");
    f.write_at(&0u32.to_ne_bytes(), last_at).unwrap();
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get().unwrap(), 1);
}

/// A producer killed between claiming its slot and moving the producers' position past it: after
/// the repair lets the consumers pass its slot, the next producer moves the position on for it
/// (it once got `Corrupt` for ever).
fn a_producer_killed_before_moving_the_position_wedges_nothing() {
    let q = Queue::<u64>::new(4).unwrap();
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::PutClaimedUnmoved, libc::SIGKILL, 0);
        let _ = qc.put(1);
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    // A blocked get repairs the dead producer's slot and passes it.
    assert!(matches!(
        q.get_timeout(shmwire::PROBE_INTERVAL * 3),
        Err(Error::Timeout)
    ));
    for i in 2..12u64 {
        q.put_timeout(i, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("put {i}: {e:?}"));
        assert_eq!(q.get_timeout(Duration::from_secs(2)).unwrap(), i);
    }
}

/// Calls that may not wait still probe now and then: a loop of `get_nowait` gets past a dead
/// producer's slot.
fn a_loop_of_get_nowait_repairs_a_dead_producer() {
    let q = Queue::<u64>::new(8).unwrap();
    let qc = q.clone();
    let dying = Process::fork(move || {
        shmwire::hooks::__arm(Point::PutClaimed, libc::SIGKILL, 0);
        let _ = qc.put(1);
    })
    .unwrap();
    assert_eq!(dying.join().unwrap().signal(), Some(libc::SIGKILL));
    q.put(2).unwrap();
    let t = Instant::now();
    loop {
        match q.get_nowait() {
            Ok(v) => break assert_eq!(v, 2),
            Err(Error::Empty) => {
                assert!(t.elapsed() < shmwire::PROBE_INTERVAL * 20, "never repaired");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// `put_nowait` of a spilled item says `Full` only when the spill area has no room, not because
/// another process holds the allocator's mutex for a moment.
fn put_nowait_of_spilled_items_is_not_full_under_contention() {
    let q = Queue::<Vec<u8>>::builder()
        .maxsize(4096)
        .item_size(64)
        .build()
        .unwrap();
    let workers: Vec<Process> = (0..2)
        .map(|_| {
            let q = q.clone();
            Process::fork_with(move || -> Result<(), String> {
                let mut full = 0;
                for _ in 0..5_000 {
                    match q.put_nowait(vec![1u8; 1000]) {
                        Ok(()) => {}
                        Err(Error::Full) => full += 1,
                        Err(e) => return Err(format!("{e:?}")),
                    }
                    let _ = q.get_nowait();
                }
                if full > 0 {
                    return Err(format!("{full} puts said Full with room to spare"));
                }
                Ok(())
            })
            .unwrap()
        })
        .collect();
    for w in workers {
        let st = w.join().unwrap();
        assert!(st.success(), "{st:?}");
    }
}

/// `task_done` called by another process than the one that took the item (the consumers forward
/// results, the parent marks them done) while consumers keep trying to take more: `join` returns.
fn task_done_from_another_process_lets_join_return() {
    let n = 2000u64;
    let q = JoinableQueue::<u64>::new(0).unwrap();
    let results = Queue::<u64>::new(0).unwrap();
    let workers: Vec<Process> = (0..3)
        .map(|_| {
            let (q, r) = (q.clone(), results.clone());
            Process::fork(move || {
                while let Ok(v) = q.get() {
                    r.put(v).unwrap();
                }
            })
            .unwrap()
        })
        .collect();
    for i in 0..n {
        q.put(i).unwrap();
    }
    for _ in 0..n {
        results.get_timeout(Duration::from_secs(10)).unwrap();
        q.task_done().unwrap();
    }
    let (r, _) = common::within(Duration::from_secs(6), || {
        q.join_timeout(Duration::from_secs(5))
    });
    r.unwrap();
    q.close().unwrap();
    for w in workers {
        assert!(w.join().unwrap().success());
    }
}

/// A consumer killed while it only waited for items (it held none) is no reason for `PeerDied`.
fn an_idle_consumer_killed_is_no_peer_died() {
    for _ in 0..10 {
        let q = JoinableQueue::<u64>::new(0).unwrap();
        let qc = q.clone();
        let idle = Process::fork(move || {
            loop {
                let _ = qc.get_nowait();
            }
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        idle.kill().unwrap();
        idle.join().unwrap();
        q.join_timeout(Duration::from_secs(2)).unwrap();
    }
}

/// A producer or consumer of spilled items killed at each point of its path (after allocating its
/// block, after claiming its slot, after filling it; after claiming an item, after reading it): the
/// others' items all come through, and once a blocked call has repaired, no spill byte is held.
fn killed_at_every_point_of_a_spilled_put_or_get_leaks_nothing() {
    let puts = [Point::SpillAllocated, Point::PutClaimed, Point::PutFilled];
    let gets = [Point::GetClaimed, Point::GetRead];
    for (point, producer) in puts
        .iter()
        .map(|p| (*p, true))
        .chain(gets.iter().map(|p| (*p, false)))
    {
        let q = spill_queue();
        q.put(vec![1u8; 50_000]).unwrap();
        let qc = q.clone();
        let dying = Process::fork(move || {
            shmwire::hooks::__arm(point, libc::SIGKILL, 0);
            if producer {
                let _ = qc.put(vec![9u8; 50_000]);
            } else {
                let _ = qc.get();
            }
        })
        .unwrap();
        assert_eq!(
            dying.join().unwrap().signal(),
            Some(libc::SIGKILL),
            "{point:?}"
        );
        q.put(vec![2u8; 50_000]).unwrap();
        let mut got = Vec::new();
        while let Ok(v) = q.get_timeout(shmwire::PROBE_INTERVAL * 3) {
            got.push(v[0]);
        }
        let want: &[u8] = if producer { &[1, 2] } else { &[2] };
        assert_eq!(got, want, "{point:?}");
        assert_eq!(q.__spill_in_use(), 0, "{point:?}: a spill block leaked");
    }
}

/// `try_get` and `len` beside Python's names; `for x in q.iter()` (and `for x in &q`) takes items as
/// they come, in other processes too, and ends once the queue is closed and drained; the same on
/// `SimpleQueue` and `JoinableQueue`.
fn try_get_len_and_iterators_end_at_eof() {
    let q = Queue::<u64>::new(0).unwrap();
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    assert_eq!(q.len(), 0);
    let qc = q.clone();
    let p = Process::fork(move || {
        for i in 0..100u64 {
            qc.put(i).unwrap();
        }
        qc.close().unwrap();
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(q.len(), 100);
    assert_eq!(q.len(), q.qsize());
    assert_eq!(q.try_get().unwrap(), 0);
    let mut got = Vec::new();
    for x in q.iter() {
        got.push(x.unwrap());
    }
    assert_eq!(got, (1..100).collect::<Vec<_>>());
    assert!(matches!(q.try_get(), Err(Error::Eof)));
    assert!(q.iter().next().is_none());

    // Consumers in other processes loop over the queue while the producer puts, until it closes.
    let q = Queue::<u64>::new(16).unwrap();
    let sums = Queue::<(u64, u64)>::new(0).unwrap();
    let consumers: Vec<Process> = (0..2)
        .map(|_| {
            let (q, sums) = (q.clone(), sums.clone());
            Process::fork(move || {
                let (mut n, mut sum) = (0, 0);
                for x in &q {
                    n += 1;
                    sum += x.unwrap();
                }
                sums.put((n, sum)).unwrap();
            })
            .unwrap()
        })
        .collect();
    for i in 0..1000u64 {
        q.put(i).unwrap();
    }
    q.close().unwrap();
    let (a, b) = (sums.get().unwrap(), sums.get().unwrap());
    assert_eq!((a.0 + b.0, a.1 + b.1), (1000, 999 * 1000 / 2));
    for c in consumers {
        assert!(c.join().unwrap().success());
    }

    // SimpleQueue: try_get, iter and `for .. in &q`.
    let q = SimpleQueue::<String>::new().unwrap();
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    let qc = q.clone();
    let p = Process::fork(move || {
        for s in ["a", "b", "c"] {
            qc.put(s.to_string()).unwrap();
        }
        qc.close().unwrap();
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(q.try_get().unwrap(), "a");
    let rest: Vec<String> = q.iter().map(Result::unwrap).collect();
    assert_eq!(rest, ["b", "c"]);
    assert!((&q).into_iter().next().is_none());

    // JoinableQueue: the Queue's iterator, through Deref, and `for .. in &q`.
    let q = JoinableQueue::<u32>::new(0).unwrap();
    let qc = q.clone();
    let worker = Process::fork(move || {
        for job in &qc {
            job.unwrap();
            qc.task_done().unwrap();
        }
    })
    .unwrap();
    for i in 0..50 {
        q.put(i).unwrap();
    }
    q.join_timeout(Duration::from_secs(10)).unwrap();
    q.close().unwrap();
    assert!(worker.join().unwrap().success());
    assert!(q.iter().next().is_none());
}

/// An error other than the end (here `Corrupt`, from a scribbled ring directory) is yielded once,
/// then the iterator ends, even once the queue could be read again.
fn an_iterator_yields_a_broken_queue_s_error_once_then_ends() {
    use std::os::unix::fs::FileExt;
    let name = "hostile-iter";
    // Unbounded: its ring directory is read (a bounded queue has one ring and reads none).
    let q = Queue::<u64>::builder().name(name).build().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    let mut it = q.iter();
    assert_eq!(it.next().unwrap().unwrap(), 1);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .unwrap();
    // The ring directory's `last` (see a_scribbled_ring_directory_is_no_long_walk).
    let last_at = 8192 + 4 * 128 + 8;
    f.write_at(&u32::MAX.to_ne_bytes(), last_at).unwrap();
    let (r, _) = common::within(Duration::from_secs(2), || it.next());
    assert!(matches!(r, Some(Err(Error::Corrupt))), "{r:?}");
    f.write_at(&0u32.to_ne_bytes(), last_at).unwrap();
    assert!(it.next().is_none(), "the iterator ended after its error");
    assert_eq!(q.get().unwrap(), 2, "the queue itself still works");
    // In another process too.
    let qc = q.clone();
    let p = Process::fork(move || {
        qc.put(3).unwrap();
        qc.close().unwrap();
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(q.iter().map(Result::unwrap).collect::<Vec<_>>(), [3]);
}

/// An item that does not decode as the consumer's type is `Error::Decode`, taken from the queue with
/// its bytes in the error: exactly one consumer gets it, the others go on, nothing is lost (an item
/// put raw, a raw item of the wrong size, a spilled item, an iterator, a JoinableQueue's count).
fn an_item_that_does_not_decode_is_taken_and_returned_in_the_error() {
    let q = Queue::<u32>::new(0).unwrap();
    let reports = Queue::<(u64, u64, Vec<Vec<u8>>)>::new(0).unwrap();
    let consumers: Vec<Process> = (0..3)
        .map(|_| {
            let (q, reports) = (q.clone(), reports.clone());
            Process::fork(move || {
                let (mut n, mut sum, mut bad) = (0u64, 0u64, Vec::new());
                loop {
                    match q.get() {
                        Ok(v) => {
                            n += 1;
                            sum += u64::from(v);
                        }
                        Err(Error::Decode { bytes, reason }) => {
                            assert!(!reason.is_empty());
                            bad.push(bytes);
                        }
                        Err(Error::Eof) => break,
                        Err(e) => panic!("{e:?}"),
                    }
                }
                reports.put((n, sum, bad)).unwrap();
            })
            .unwrap()
        })
        .collect();
    let qc = q.clone();
    let producer = Process::fork(move || {
        for i in 0..3000u32 {
            if i == 1500 {
                // Four bytes of 0xff: no postcard u32 (its varint never ends).
                qc.put_pod(&u32::MAX).unwrap();
            }
            qc.put(i).unwrap();
        }
        qc.close().unwrap();
    })
    .unwrap();
    assert!(producer.join().unwrap().success());
    let (mut n, mut sum, mut bad) = (0, 0, Vec::new());
    for _ in 0..3 {
        let r = reports.get().unwrap();
        n += r.0;
        sum += r.1;
        bad.extend(r.2);
    }
    for c in consumers {
        assert!(c.join().unwrap().success());
    }
    assert_eq!(
        (n, sum),
        (3000, 2999 * 3000 / 2),
        "every good item came through once"
    );
    assert_eq!(
        bad,
        vec![vec![0xffu8; 4]],
        "the bad item, once, with its bytes"
    );

    // A raw item of the wrong size: taken, returned, and the next one comes.
    let q = Queue::<u64>::new(4).unwrap();
    q.put(5u64).unwrap(); // postcard: one byte
    q.put_pod(&6).unwrap();
    match q.get_pod() {
        Err(Error::Decode { bytes, .. }) => assert_eq!(bytes, [5]),
        r => panic!("{r:?}"),
    }
    assert_eq!(q.get_pod().unwrap(), 6);
    assert!(q.is_empty());

    // A spilled item that does not decode: its bytes come back whole, its spill block is freed.
    let name = format!("qd-{}", std::process::id());
    let wide = Queue::<Vec<u8>>::builder()
        .name(&name)
        .type_tag("bytes")
        .item_size(16)
        .spill_size(1 << 20)
        .build()
        .unwrap();
    let narrow = Queue::<u8>::builder()
        .name(&name)
        .type_tag("bytes")
        .open()
        .unwrap();
    let big = vec![3u8; 1000];
    let w = wide.clone();
    let p = Process::fork(move || {
        w.put(&big).unwrap();
        w.put(vec![7u8]).unwrap();
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    match narrow.get() {
        Err(Error::Decode { bytes, .. }) => {
            assert_eq!(bytes.len(), 1002);
            assert_eq!(
                postcard::from_bytes::<Vec<u8>>(&bytes).unwrap(),
                vec![3u8; 1000]
            );
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        wide.__spill_in_use(),
        0,
        "the bad item's spill block was freed"
    );
    assert_eq!(wide.get().unwrap(), [7]);

    // The iterator yields the bad item and goes on: the queue is not broken.
    let q = Queue::<u32>::new(0).unwrap();
    q.put_pod(&u32::MAX).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    q.close().unwrap();
    let got: Vec<Result<u32, Error>> = q.iter().collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(matches!(&got[0], Err(Error::Decode { bytes, .. }) if bytes == &[0xff; 4]));
    assert!(matches!(&got[1..], [Ok(1), Ok(2)]), "{got:?}");

    // A JoinableQueue counts the bad item as taken: the consumer marks it done like any other.
    let q = JoinableQueue::<u32>::new(0).unwrap();
    q.put_pod(&u32::MAX).unwrap();
    q.put(1).unwrap();
    let qc = q.clone();
    let worker = Process::fork(move || {
        assert!(matches!(qc.get(), Err(Error::Decode { .. })));
        qc.task_done().unwrap();
        assert_eq!(qc.get().unwrap(), 1);
        qc.task_done().unwrap();
    })
    .unwrap();
    q.join_timeout(Duration::from_secs(10)).unwrap();
    assert!(worker.join().unwrap().success());
}

/// The timeout forms of the blocking calls the queues lacked: `put_pod_timeout`,
/// `get_pod_timeout`, `get_pod_nowait`, `SimpleQueue::get_timeout` and `put_timeout` (a put there
/// waits while the spill area is full). Running out of time is `Err(Timeout)` with nothing put or
/// taken; a call whose time has not run out completes when another process makes room or puts.
fn every_blocking_call_of_the_queues_has_a_timeout_form() {
    let d = Duration::from_millis(100);
    let q = Queue::<u64>::new(2).unwrap();
    assert!(matches!(q.get_pod_nowait(), Err(Error::Empty)));
    let t = Instant::now();
    assert!(matches!(q.get_pod_timeout(d), Err(Error::Timeout)));
    assert!(t.elapsed() >= d);
    q.put_pod(&1).unwrap();
    q.put_pod(&2).unwrap();
    let t = Instant::now();
    assert!(matches!(q.put_pod_timeout(&3, d), Err(Error::Timeout)));
    assert!(t.elapsed() >= d);
    assert_eq!(q.len(), 2, "nothing was put");
    let qc = q.clone();
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(qc.get_pod().unwrap(), 1);
    })
    .unwrap();
    q.put_pod_timeout(&3, Duration::from_secs(10)).unwrap();
    assert!(p.join().unwrap().success());
    assert_eq!(q.get_pod_timeout(d).unwrap(), 2);
    assert_eq!(q.get_pod_nowait().unwrap(), 3);

    let s = SimpleQueue::<u64>::new().unwrap();
    let t = Instant::now();
    assert!(matches!(s.get_timeout(d), Err(Error::Timeout)));
    assert!(t.elapsed() >= d);
    let sc = s.clone();
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(100));
        sc.put_timeout(42, Duration::from_secs(1)).unwrap();
    })
    .unwrap();
    assert_eq!(s.get_timeout(Duration::from_secs(10)).unwrap(), 42);
    assert!(p.join().unwrap().success());

    // A SimpleQueue's put waits while its spill area (64 MiB) holds what it cannot take more of.
    let s = SimpleQueue::<Vec<u8>>::new().unwrap();
    s.put(vec![1u8; 40 << 20]).unwrap();
    let sc = s.clone();
    let p = Process::fork(move || {
        let t = Instant::now();
        assert!(matches!(
            sc.put_timeout(vec![2u8; 40 << 20], Duration::from_millis(100)),
            Err(Error::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(100));
        sc.put_timeout(vec![3u8; 40 << 20], Duration::from_secs(10))
            .unwrap();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.get().unwrap()[0], 1);
    assert_eq!(s.get_timeout(Duration::from_secs(10)).unwrap()[0], 3);
    assert!(p.join().unwrap().success());
    assert!(matches!(s.try_get(), Err(Error::Empty)));
}

/// A queue's handles wait as its builder's `wait_strategy` says, for gets, puts and joins, in
/// forked children and in opened handles: a strategy that spins longer than the wait makes no
/// futex call at all (the default would sleep after 50 µs), and still gives up at its deadline.
fn a_queue_waits_as_its_wait_strategy_says() {
    let spin = WaitStrategy::SpinThenSleep(Duration::from_secs(30));
    let d = Duration::from_millis(300);
    let name = format!("qw-{}", std::process::id());
    let q = Queue::<u64>::builder()
        .name(&name)
        .maxsize(1)
        .wait_strategy(spin)
        .build()
        .unwrap();
    assert_eq!(q.wait_strategy(), spin);
    assert_eq!(
        Queue::<u64>::open(&name).unwrap().wait_strategy(),
        WaitStrategy::Adaptive
    );
    let qc = q.clone();
    let child = Process::fork_with(move || -> Result<(), String> {
        let _ = qc.try_get(); // takes this process's participant slot
        let before = shmwire::stats::futex_calls();
        let t = Instant::now();
        if !matches!(qc.get_timeout(d), Err(Error::Timeout)) {
            return Err("get_timeout: no timeout".into());
        }
        let took = t.elapsed();
        if took < d || took > d * 10 {
            return Err(format!("get_timeout({d:?}) took {took:?}"));
        }
        // The parent puts 7 a little later: taken while spinning.
        if qc.get().map_err(|e| e.to_string())? != 7 {
            return Err("not 7".into());
        }
        qc.put(8).map_err(|e| e.to_string())?;
        // Full now: a put spins until its deadline.
        let t = Instant::now();
        if !matches!(qc.put_timeout(9, d), Err(Error::Timeout)) || t.elapsed() > d * 10 {
            return Err(format!("put_timeout: {:?}", t.elapsed()));
        }
        let calls = shmwire::stats::futex_calls() - before;
        if calls != 0 {
            return Err(format!("{calls} futex calls while spinning"));
        }
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    q.put(7).unwrap();
    let st = child.join().unwrap();
    assert!(st.success(), "{st:?}");
    assert_eq!(q.get().unwrap(), 8);

    // An opened handle takes the opener's strategy; a JoinableQueue's join uses it too.
    let child = Process::fork_with(move || -> Result<(), String> {
        let q = Queue::<u64>::builder()
            .name(&name)
            .wait_strategy(spin)
            .open()
            .map_err(|e| e.to_string())?;
        let j = JoinableQueue::from_queue(q);
        j.put(1).map_err(|e| e.to_string())?;
        let _ = j.try_get();
        j.task_done().map_err(|e| e.to_string())?;
        j.put(2).map_err(|e| e.to_string())?;
        let before = shmwire::stats::futex_calls();
        let t = Instant::now();
        if !matches!(j.join_timeout(d), Err(Error::Timeout)) || t.elapsed() > d * 10 {
            return Err(format!("join_timeout: {:?}", t.elapsed()));
        }
        if !matches!(j.get_timeout(d), Ok(2)) {
            return Err("get_timeout".into());
        }
        if !matches!(j.get_timeout(d), Err(Error::Timeout)) || t.elapsed() > d * 20 {
            return Err(format!("get_timeout: {:?}", t.elapsed()));
        }
        let calls = shmwire::stats::futex_calls() - before;
        if calls != 0 {
            return Err(format!("{calls} futex calls while spinning"));
        }
        Ok(())
    })
    .unwrap();
    let st = child.join().unwrap();
    assert!(st.success(), "{st:?}");
}

/// A named queue is opened by its type tag (the type's name unless set), whatever the opener's type
/// is called, and raw items by their size and alignment: an opener in an exec'd binary with another
/// type of the same encoding takes and puts items; another tag, or the default tag of another type,
/// is `Incompatible`; raw items of another size or alignment are refused before anything moves.
fn type_tags_decide_who_may_open_a_named_queue() {
    let orders = format!("qo-{}", std::process::id());
    let ticks = format!("qt-{}", std::process::id());
    let o = Queue::<OrderV2>::builder()
        .name(&orders)
        .type_tag("orders-v2")
        .build()
        .unwrap();
    let t = Queue::<Tick>::builder()
        .name(&ticks)
        .type_tag("ticks")
        .build()
        .unwrap();
    o.put(OrderV2 {
        id: 1,
        item: "tea".into(),
    })
    .unwrap();
    t.put_pod(&Tick { seq: 1, price: 2.5 }).unwrap();
    let child = Process::spawn("tagged", &(orders.clone(), ticks.clone())).unwrap();
    // The child takes our item and puts back its own.
    assert!(child.join().unwrap().success());
    assert_eq!(
        o.get_timeout(Duration::from_secs(10)).unwrap(),
        OrderV2 {
            id: 2,
            item: "tea!".into()
        }
    );
    assert_eq!(
        t.get_pod_timeout(Duration::from_secs(10)).unwrap(),
        Tick { seq: 2, price: 2.5 }
    );
    // The default tag is the type's name (within one build).
    let u = Queue::<u64>::builder()
        .name(&format!("qu-{}", std::process::id()))
        .build()
        .unwrap();
    let _same = Queue::<u64>::open(&format!("qu-{}", std::process::id())).unwrap();
    assert!(matches!(
        Queue::<u64>::builder()
            .name(&format!("qu-{}", std::process::id()))
            .type_tag("u64s")
            .open(),
        Err(Error::Incompatible)
    ));
    // Opening needs a name; a tag must say something.
    assert!(matches!(
        Queue::<u64>::builder().open(),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        Queue::<u64>::builder().type_tag("").build(),
        Err(Error::Invalid(_))
    ));
    drop(u);
}
