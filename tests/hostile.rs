//! A hostile peer: a process that maps our segments and writes garbage into them (headers,
//! positions, lengths, tags, slot words, claim ids, lock words, spill bitmaps, arena offsets) while
//! honest processes use them. The honest side gets results or errors (`Error::Corrupt`, a timeout),
//! never a crash, a panic, a read out of bounds, an unbounded loop or a call past its bound.
//!
//! Also: the segments' protections against a peer that resizes them (sealed memfds for every
//! unnamed object; the hazard that remains for named ones is stated in the README's threat model),
//! and permissions across users.

mod common;

use common::{Rng, within};
use shmwire::{
    Array, Barrier, BoundedSemaphore, Client, Condition, Error, Event, Listener, Lock, Manager,
    Pipe, Pool, Process, Queue, RLock, Semaphore, SharedMemory, Value,
};
use std::time::{Duration, Instant};

fn main() {
    shmwire::spawn::enter(|_, _| 2);
    common::run(tests![
        hostile_bytes_in_a_pipe_never_crash_or_hang_the_honest_side,
        hostile_bytes_in_a_queue_and_its_spill_area_never_crash_or_hang_the_honest_side,
        hostile_bytes_in_locks_conditions_barriers_and_values_never_crash_or_hang,
        hostile_bytes_in_a_pool_board_never_crash_or_hang_its_owner,
        a_dict_whose_entries_share_one_hash_grows_in_bounded_time,
        every_unnamed_object_is_a_sealed_memfd,
        a_shrunk_named_segment_faults_its_users_as_the_readme_says,
        segments_and_listener_sockets_are_0600,
        another_user_cannot_open_them_and_is_told_what_to_do,
        mode_0660_lets_the_group_in_and_only_then,
        modes_that_let_others_in_are_refused_when_built,
        every_named_kind_is_0600_by_default_0660_on_request_and_nothing_else,
        another_user_cannot_open_any_named_kind_and_is_told_what_to_do,
        mode_0660_lets_the_group_into_every_named_kind_and_only_then,
    ]);
}

/// Each honest call's own timeout.
const T: Duration = Duration::from_millis(50);
/// What a call may take past its timeout (a loaded 2-core machine; the bound is the timeout).
const SLACK: Duration = Duration::from_secs(2);
/// How long the hostile peer writes, and the honest processes work.
const FIRE: Duration = Duration::from_secs(2);

fn shm_path(name: &str) -> String {
    let prefix = std::env::var("SHMWIRE_PREFIX").unwrap_or_default();
    format!("/dev/shm/shmwire.{prefix}.u.{name}")
}

/// The descriptors of this process's anonymous segments (memfds named `shmwire`).
fn memfds() -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            link.to_str()?.starts_with("/memfd:shmwire").then_some(())?;
            e.file_name().to_str()?.parse().ok()
        })
        .collect();
    fds.sort();
    fds
}

/// One honest process's call, made again and again.
type Op = Box<dyn FnMut(&mut Rng)>;

/// Forks one honest process per op, each calling it in a loop for [`FIRE`] and a little more; a
/// call that takes longer than `T + SLACK` fails the process (as does a panic or a crash).
fn honest(ops: Vec<Op>) -> Vec<Process> {
    ops.into_iter()
        .enumerate()
        .map(|(k, mut op)| {
            Process::fork_with(move || -> Result<(), String> {
                let mut r = Rng(k as u64 * 7919 + 1);
                let start = Instant::now();
                let mut calls = 0u64;
                while start.elapsed() < FIRE + Duration::from_millis(500) {
                    let t = Instant::now();
                    op(&mut r);
                    calls += 1;
                    if t.elapsed() > T + SLACK {
                        return Err(format!(
                            "call {calls} of process {k} took {:?}",
                            t.elapsed()
                        ));
                    }
                }
                Ok(())
            })
            .unwrap()
        })
        .collect()
}

/// `n` ops made by `make(k)`.
fn ops(n: u64, make: impl Fn(u64) -> Op) -> Vec<Op> {
    (0..n).map(make).collect()
}

/// Forks a hostile peer that writes garbage into each of `paths` (files in /dev/shm, or
/// `/proc/PID/fd/N` for another process's memfd) for [`FIRE`].
fn hostile(paths: Vec<String>, seed: u64) -> Process {
    Process::fork(move || {
        let each = FIRE / paths.len() as u32;
        let mut writes = 0;
        for _ in 0..2 {
            for (i, p) in paths.iter().enumerate() {
                writes += common::scribble(p, 0, 64 << 10, each / 2, seed + i as u64);
            }
        }
        assert!(writes > 100, "only {writes} hostile writes");
    })
    .unwrap()
}

/// Joins the honest processes and the hostile one: every honest process returned in time.
fn join_all(kids: Vec<Process>, peer: Process) {
    assert!(peer.join().unwrap().success(), "the hostile peer failed");
    for k in kids {
        let st = k.join().unwrap();
        assert!(st.success(), "an honest process failed: {st:?}");
    }
}

fn hostile_bytes_in_a_pipe_never_crash_or_hang_the_honest_side() {
    let name = format!("hostile-p-{}", std::process::id());
    let (a, b) = Pipe::builder()
        .name(&name)
        .capacity(1 << 16)
        .build()
        .unwrap();
    let kids = honest(vec![
        Box::new(move |r: &mut Rng| {
            let size = [0, 10, 200, 5000, 40000, 100000][r.below(6) as usize];
            let _ = a.send_bytes_timeout(&vec![7u8; size], T);
        }),
        Box::new(move |_: &mut Rng| {
            let _ = b.recv_bytes_timeout(T);
            let _ = b.poll(T);
        }),
    ]);
    let peer = hostile(vec![shm_path(&name)], 21);
    join_all(kids, peer);
    // This process opens what is left and survives it.
    within(Duration::from_secs(20), || {
        if let Ok(c) = Pipe::open(&name, 1) {
            let _ = c.recv_bytes_timeout(T);
            let _ = c.send_bytes_timeout(b"after", T);
        }
    });
}

fn hostile_bytes_in_a_queue_and_its_spill_area_never_crash_or_hang_the_honest_side() {
    for maxsize in [16, 0] {
        // Bounded, and unbounded (it grows while the peer writes).
        let name = format!("hostile-q{maxsize}-{}", std::process::id());
        let q = Queue::<Vec<u8>>::builder()
            .name(&name)
            .maxsize(maxsize)
            .item_size(64)
            .spill_size(1 << 20)
            .build()
            .unwrap();
        let kids = honest(ops(3, |k| {
            let h = q.clone();
            Box::new(move |r: &mut Rng| {
                let size = [1, 40, 100, 3000, 70000][r.below(5) as usize];
                let _ = match (k + r.below(2)) % 3 {
                    0 => h.put_timeout(vec![k as u8; size], T),
                    1 => h.get_timeout(T).map(drop),
                    _ => h
                        .put_nowait(vec![1; 8])
                        .and_then(|_| h.get_nowait().map(drop)),
                };
                let _ = (h.qsize(), h.is_empty());
            })
        }));
        let peer = hostile(vec![shm_path(&name)], 31 + maxsize as u64);
        join_all(kids, peer);
        within(Duration::from_secs(20), || {
            for _ in 0..50 {
                let _ = q.get_timeout(T);
                let _ = q.put_timeout(vec![2; 500], T);
            }
            let _ = Queue::<Vec<u8>>::open(&name).map(|o| o.get_nowait());
        });
    }
}

fn hostile_bytes_in_locks_conditions_barriers_and_values_never_crash_or_hang() {
    let id = std::process::id();
    let names: Vec<String> = ["l", "c", "b", "v"]
        .iter()
        .map(|k| format!("hostile-{k}-{id}"))
        .collect();
    let lock = Lock::create(&names[0]).unwrap();
    let cond = Condition::create(&names[1]).unwrap();
    let barrier = Barrier::create(&names[2], 2).unwrap();
    let value = Value::create(&names[3], 0u64).unwrap();
    let kids = honest(ops(2, |k| {
        let (l, c, b, v) = (lock.clone(), cond.clone(), barrier.clone(), value.clone());
        Box::new(move |r: &mut Rng| match r.below(5) {
            0 => {
                if let Ok(g) = l.acquire_timeout(T) {
                    drop(g);
                }
            }
            1 => {
                if let Ok(g) = c.acquire_timeout(T) {
                    let _ = c.wait_timeout(g, T);
                }
            }
            2 => {
                let _ = c.notify_all();
            }
            3 => {
                if b.wait_timeout(T).is_err() {
                    let _ = b.reset();
                }
            }
            _ => {
                let _ = v.set_timeout(k, T);
                let _ = v.get_timeout(T);
            }
        })
    }));
    let peer = hostile(names.iter().map(|n| shm_path(n)).collect(), 41);
    join_all(kids, peer);
    within(Duration::from_secs(20), || {
        let _ = lock.acquire_timeout(T).map(drop);
        let _ = cond
            .acquire_timeout(T)
            .map(|g| cond.wait_timeout(g, T).map(drop));
        let _ = barrier.wait_timeout(T);
        let _ = value.get_timeout(T);
        let _ = Lock::open(&names[0]).map(|l| l.acquire_timeout(T).map(drop));
        let _ = Value::<u64>::open(&names[3]).map(|v| v.get_timeout(T));
    });
}

fn twice(x: u64) -> u64 {
    x * 2
}

fn hostile_bytes_in_a_pool_board_never_crash_or_hang_its_owner() {
    // A panic in any process forked from here (the pool's workers) leaves its message in a file:
    // a worker that panics on the garbage is a failure even if the pool replaces it.
    let marker = std::env::temp_dir().join(format!("shmwire-hostile-panic-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let m = marker.clone();
    let prev = std::sync::Arc::new(std::panic::take_hook());
    let prev2 = prev.clone();
    std::panic::set_hook(Box::new(move |info| {
        let _ = std::fs::write(&m, format!("pid {}: {info}", std::process::id()));
        prev2(info)
    }));
    let before = memfds();
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(twice, 21).unwrap(), 42);
    let board: Vec<String> = memfds()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .map(|fd| format!("/proc/{}/fd/{fd}", std::process::id()))
        .collect();
    assert!(!board.is_empty(), "the pool's segments are memfds");
    let peer = hostile(board, 51);
    // The owner is the honest side here: its calls return, with results or errors.
    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed() < FIRE + Duration::from_millis(500) {
        let t = Instant::now();
        let _ = pool
            .apply_async(twice, calls)
            .and_then(|r| r.get_timeout(T * 4));
        calls += 1;
        assert!(
            t.elapsed() < T * 4 + SLACK,
            "call {calls} took {:?}",
            t.elapsed()
        );
    }
    assert!(peer.join().unwrap().success());
    within(Duration::from_secs(30), || {
        pool.terminate();
        let _ = pool.join();
    });
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| prev(info)));
    let panicked = std::fs::read_to_string(&marker);
    let _ = std::fs::remove_file(&marker);
    assert!(
        panicked.is_err(),
        "a process of the pool panicked: {}",
        panicked.unwrap_or_default()
    );
    println!("  ({calls} calls of the pool's owner while a peer wrote garbage)");
}

/// A peer writes one hash into every entry of a large dict; the next insert that grows the table
/// moves every entry to the same bucket run. That must be bounded (linear in the table), not a
/// probe of the whole run per entry.
fn a_dict_whose_entries_share_one_hash_grows_in_bounded_time() {
    let n: u32 = if common::long() { 1 << 20 } else { 1 << 18 };
    let m = Manager::new().unwrap();
    let d = m.dict::<u32, u8>().unwrap();
    d.update((0..n).map(|i| (i, 1u8))).unwrap();
    let hostile = d.clone();
    let p = Process::fork(move || {
        assert_eq!(hostile.__same_hash_everywhere(42).unwrap(), n as u64);
    })
    .unwrap();
    assert!(p.join().unwrap().success());
    // Insert new keys until one of them grows the table: the table holds at most 4(n + 1)
    // buckets and grows past 3/4 full, so within 3n + 3 entries. Each call returns (an entry, or
    // Corrupt) within a bound linear in the table; 10 s is orders of magnitude above it.
    let mut outcome = None;
    for i in n..4 * n {
        let (r, took) = within(Duration::from_secs(60), || d.insert(i, 2));
        assert!(
            took < Duration::from_secs(10),
            "insert {i} took {took:?}: a rehash of entries sharing one hash is quadratic"
        );
        match r {
            Ok(_) => {}
            Err(Error::Corrupt) => {
                outcome = Some("Corrupt");
                break;
            }
            Err(e) => panic!("insert {i}: {e}"),
        }
    }
    let outcome = outcome.unwrap_or("grown");
    println!("  ({n} entries with one hash: the growth gave {outcome})");
}

/// Every object made without a name lives in a memfd sealed against shrinking (and against
/// growing, but for those that grow: an unbounded queue, a manager's arena), with the seals
/// themselves sealed: a peer holding it cannot make the others fault by truncating it. (A named
/// one can be truncated: see the next test and the README's threat model.)
fn every_unnamed_object_is_a_sealed_memfd() {
    let before = memfds();
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut growable = Vec::new();
    let mut made = |what: &str, grows: bool, obj: Box<dyn std::any::Any>| {
        keep.push(obj);
        for fd in memfds() {
            if !before.contains(&fd) && !growable.iter().any(|(f, _, _)| *f == fd) {
                growable.push((fd, grows, what.to_owned()));
            }
        }
    };
    made("pipe", false, Box::new(Pipe::new().unwrap()));
    made("queue", false, Box::new(Queue::<u32>::new(4).unwrap()));
    made(
        "unbounded queue",
        true,
        Box::new(Queue::<u32>::new(0).unwrap()),
    );
    made("lock", false, Box::new(Lock::new().unwrap()));
    made("condition", false, Box::new(Condition::new().unwrap()));
    made("barrier", false, Box::new(Barrier::new(2).unwrap()));
    made("value", false, Box::new(Value::new(1u64).unwrap()));
    made("manager", true, Box::new(Manager::new().unwrap()));
    let pool = Pool::new(1).unwrap();
    made("pool", false, Box::new(()));
    let objects = growable;
    assert!(objects.len() >= 10, "{objects:?}");
    let eperm =
        |r: i32| r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    for (fd, grows, what) in &objects {
        // SAFETY: plain syscalls on a descriptor this process holds.
        unsafe {
            let seals = libc::fcntl(*fd, libc::F_GET_SEALS);
            let mut want = libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
            if !grows {
                want |= libc::F_SEAL_GROW;
            }
            assert_eq!(seals & want, want, "{what}: seals {seals:#x}");
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(*fd, &mut st), 0);
            assert!(
                eperm(libc::ftruncate(*fd, st.st_size / 2)),
                "{what}: shrunk"
            );
            assert!(eperm(libc::ftruncate(*fd, 0)), "{what}: shrunk");
        }
    }
    println!("  ({} memfds checked)", objects.len());
    pool.terminate();
    pool.join().unwrap();
}

/// What the README's threat model states: a named segment is a file in /dev/shm that any process of
/// the user may truncate (POSIX shared memory cannot be sealed), and a process using it then faults
/// with SIGBUS when it touches a page past the new end. This test shows exactly that, and that the
/// same peer cannot do it to an unnamed object.
fn a_shrunk_named_segment_faults_its_users_as_the_readme_says() {
    let name = format!("shrunk-{}", std::process::id());
    let q = Queue::<Vec<u8>>::builder()
        .name(&name)
        .maxsize(64)
        .build()
        .unwrap();
    let user = Process::fork(move || {
        let q = Queue::<Vec<u8>>::open(&name).unwrap();
        q.put(vec![1u8; 10]).unwrap();
        std::thread::sleep(Duration::from_millis(300)); // the peer truncates the file meanwhile
        for _ in 0..64 {
            let _ = q.put_timeout(vec![2u8; 10], T);
        }
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let path = shm_path(&format!("shrunk-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let st = user.join().unwrap();
    assert_eq!(
        st.signal(),
        Some(libc::SIGBUS),
        "the user of a truncated segment: {st:?}"
    );
    // This process maps it too: it must not touch it again (its drop would fault as well).
    std::mem::forget(q);
    std::fs::remove_file(&path).unwrap();
}

// ---- permissions -------------------------------------------------------------------------------

fn mode_of(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs `f` in a child that dropped to uid and gid 65534 (`nobody`) with supplementary `groups`
/// (tests run as root, whom the kernel lets open anything; `nobody` it does not).
fn as_nobody(groups: Vec<u32>, f: impl FnOnce() -> Result<(), String>) -> Process {
    Process::fork_with(move || -> Result<(), String> {
        // SAFETY: plain syscalls in a single-threaded child, on a valid array.
        unsafe {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                return Err(format!(
                    "dropping to nobody: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        f()
    })
    .unwrap()
}

fn root_only() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        common::skip("needs root, to drop to another user");
    }
}

/// An error that says permission is denied, and says what to do (`hint`).
fn denied<T: std::fmt::Debug>(what: &str, r: shmwire::Result<T>, hint: &str) -> Result<(), String> {
    match &r {
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            if e.to_string().contains(hint) {
                Ok(())
            } else {
                Err(format!(
                    "{what}: the error does not say what to do ({hint:?}): {e}"
                ))
            }
        }
        _ => Err(format!("{what}: {r:?}, not a permission error")),
    }
}

/// Named objects of each family, and a listener; their paths in /dev/shm. The manager is made and
/// held by a child: a process that maps an arena finds it again by its file (a forked child too,
/// whatever user it became), so this process must not map it for the children to open it anew.
struct Named {
    paths: Vec<String>,
    names: Vec<String>,
    _keep: Vec<Box<dyn std::any::Any>>,
    holder: Option<Process>,
}

impl Drop for Named {
    fn drop(&mut self) {
        if let Some(h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.join();
            // Killed, it left its name: a stale one, as `cleanup()` would remove.
            let _ = std::fs::remove_file(&self.paths[3]);
        }
    }
}

fn named(tag: &str, mode: Option<u32>) -> Named {
    let id = std::process::id();
    let names: Vec<String> = ["p", "q", "l", "m", "s"]
        .iter()
        .map(|k| format!("perm-{tag}-{k}-{id}"))
        .collect();
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let (mut pb, mut qb, mut lb, mut mb) = (
        Pipe::builder().name(&names[0]),
        Queue::<u32>::builder().name(&names[1]).maxsize(4),
        Lock::builder().name(&names[2]),
        Manager::builder().name(&names[3]),
    );
    if let Some(m) = mode {
        (pb, qb, lb, mb) = (pb.mode(m), qb.mode(m), lb.mode(m), mb.mode(m));
    }
    keep.push(Box::new(pb.build().unwrap()));
    keep.push(Box::new(qb.build().unwrap()));
    keep.push(Box::new(lb.build().unwrap()));
    keep.push(Box::new(Listener::bind(&names[4]).unwrap()));
    let mut paths: Vec<String> = names[..4].iter().map(|n| shm_path(n)).collect();
    paths.push(shm_path(&names[4]).replacen(".u.", ".l.", 1));
    let holder = Process::fork(move || {
        let _m = mb.build().unwrap();
        std::thread::sleep(Duration::from_secs(600));
    })
    .unwrap();
    let t = Instant::now();
    while !std::path::Path::new(&paths[3]).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the manager was not made"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    Named {
        paths,
        names,
        _keep: keep,
        holder: Some(holder),
    }
}

fn segments_and_listener_sockets_are_0600() {
    let n = named("mode", None);
    for p in &n.paths {
        assert_eq!(mode_of(p), 0o600, "{p}");
    }
}

fn another_user_cannot_open_them_and_is_told_what_to_do() {
    root_only();
    let n = named("other", None);
    let names = n.names.clone();
    // Even in the objects' group: 0600 lets nobody else in.
    let child = as_nobody(vec![0], move || {
        let share = ".mode(0o660)";
        denied("pipe", Pipe::open(&names[0], 1), share)?;
        denied("queue", Queue::<u32>::open(&names[1]), share)?;
        denied("lock", Lock::open(&names[2]), share)?;
        denied("manager", Manager::open(&names[3]), share)?;
        denied(
            "listener",
            Client::connect(&names[4]),
            "the listener's user",
        )?;
        Ok(())
    });
    let st = child.join().unwrap();
    assert!(st.success(), "{st:?}");
}

fn mode_0660_lets_the_group_in_and_only_then() {
    root_only();
    let n = named("group", Some(0o660));
    for p in &n.paths[..4] {
        assert_eq!(mode_of(p), 0o660, "{p}");
    }
    // SAFETY: plain syscall.
    let gid = unsafe { libc::getegid() };
    // A user in the objects' group opens each and uses it.
    let names = n.names.clone();
    let member = as_nobody(vec![gid], move || {
        let e = |what: &str, e: Error| format!("{what}: {e}");
        let c = Pipe::open(&names[0], 1).map_err(|x| e("pipe", x))?;
        c.send(&7u32).map_err(|x| e("pipe send", x))?;
        let q = Queue::<u32>::open(&names[1]).map_err(|x| e("queue", x))?;
        q.put(8).map_err(|x| e("queue put", x))?;
        let l = Lock::open(&names[2]).map_err(|x| e("lock", x))?;
        drop(
            l.acquire_timeout(T * 20)
                .map_err(|x| e("lock acquire", x))?,
        );
        let m = Manager::open(&names[3]).map_err(|x| e("manager", x))?;
        m.dict::<u32, u32>()
            .and_then(|d| d.insert(1, 2))
            .map_err(|x| e("manager dict", x))?;
        Ok(())
    });
    let st = member.join().unwrap();
    assert!(st.success(), "a member of the group: {st:?}");
    // A user outside the group does not get in, and is told why.
    let names = n.names.clone();
    let outsider = as_nobody(vec![], move || {
        let share = "a group both users are in";
        denied("pipe", Pipe::open(&names[0], 1), share)?;
        denied("queue", Queue::<u32>::open(&names[1]), share)?;
        denied("lock", Lock::open(&names[2]), share)?;
        denied("manager", Manager::open(&names[3]), share)
    });
    let st = outsider.join().unwrap();
    assert!(st.success(), "a user outside the group: {st:?}");
    // What the member sent arrived.
    let q = Queue::<u32>::open(&n.names[1]).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 8);
}

fn modes_that_let_others_in_are_refused_when_built() {
    let name = format!("perm-bad-{}", std::process::id());
    for mode in [0o666, 0o644, 0o606, 0o700, 0o400, 0o2660] {
        let r = Pipe::builder().name(&name).mode(mode).build();
        assert!(matches!(r, Err(Error::Invalid(_))), "mode {mode:o}: {r:?}");
        let r = Queue::<u8>::builder().name(&name).mode(mode).build();
        assert!(matches!(r, Err(Error::Invalid(_))), "mode {mode:o}: {r:?}");
        assert!(!std::path::Path::new(&shm_path(&name)).exists());
    }
    // 0o600 and 0o660 are fine.
    for mode in [0o600, 0o660] {
        let (_a, _b) = Pipe::builder().name(&name).mode(mode).build().unwrap();
        assert_eq!(mode_of(&shm_path(&name)), mode);
    }
}

// ---- permissions of every other named kind (one table) -----------------------------------------

/// A named kind whose builder takes `.mode`: how to make one under a name (held while the value
/// lives), the files it makes, and what a process of another user does with it (opens and uses
/// it; a listener's client connects and sends `7u32`, which the maker accepts).
struct NamedKind {
    what: &'static str,
    make: fn(&str, Option<u32>) -> shmwire::Result<Held>,
    files: fn(&str) -> Vec<String>,
    use_it: fn(&str) -> shmwire::Result<()>,
}

fn with_mode<B>(b: B, mode: Option<u32>, set: fn(B, u32) -> B) -> B {
    match mode {
        Some(m) => set(b, m),
        None => b,
    }
}

/// A named object made by a test, kept alive while this lives.
type Held = Box<dyn std::any::Any>;

fn held<T: 'static>(r: shmwire::Result<T>) -> shmwire::Result<Held> {
    r.map(|v| Box::new(v) as Box<dyn std::any::Any>)
}

/// The path of the `unix:` listener named `name`.
fn unix_path(name: &str) -> String {
    format!("/tmp/shmwire-test-{name}.sock")
}

fn named_kinds() -> Vec<NamedKind> {
    let shm = |n: &str| vec![shm_path(n)];
    vec![
        NamedKind {
            what: "rlock",
            make: |n, m| held(with_mode(RLock::builder().name(n), m, |b, m| b.mode(m)).build()),
            files: shm,
            use_it: |n| RLock::open(n)?.acquire_timeout(T * 20).map(drop),
        },
        NamedKind {
            what: "semaphore",
            make: |n, m| {
                held(with_mode(Semaphore::builder(1).name(n), m, |b, m| b.mode(m)).build())
            },
            files: shm,
            use_it: |n| Semaphore::open(n)?.acquire_timeout(T * 20),
        },
        NamedKind {
            what: "bounded semaphore",
            make: |n, m| {
                held(with_mode(BoundedSemaphore::builder(1).name(n), m, |b, m| b.mode(m)).build())
            },
            files: shm,
            use_it: |n| BoundedSemaphore::open(n)?.acquire_timeout(T * 20),
        },
        NamedKind {
            what: "event",
            make: |n, m| held(with_mode(Event::builder().name(n), m, |b, m| b.mode(m)).build()),
            files: shm,
            use_it: |n| Event::open(n)?.set(),
        },
        NamedKind {
            what: "condition",
            make: |n, m| held(with_mode(Condition::builder().name(n), m, |b, m| b.mode(m)).build()),
            files: |n| vec![shm_path(n), shm_path(&format!("{n}.lock"))],
            use_it: |n| Condition::open(n)?.acquire_timeout(T * 20).map(drop),
        },
        NamedKind {
            what: "barrier",
            make: |n, m| held(with_mode(Barrier::builder(1).name(n), m, |b, m| b.mode(m)).build()),
            files: shm,
            use_it: |n| Barrier::open(n)?.wait_timeout(T * 20).map(drop),
        },
        NamedKind {
            what: "value",
            make: |n, m| held(with_mode(Value::builder(1u32).name(n), m, |b, m| b.mode(m)).build()),
            files: shm,
            use_it: |n| Value::<u32>::open(n)?.set(2),
        },
        NamedKind {
            what: "array",
            make: |n, m| {
                held(with_mode(Array::builder(&[1u32, 2]).name(n), m, |b, m| b.mode(m)).build())
            },
            files: shm,
            use_it: |n| Array::<u32>::open(n)?.set(1, 3),
        },
        NamedKind {
            what: "shared memory",
            make: |n, m| held(with_mode(SharedMemory::builder(n, 64), m, |b, m| b.mode(m)).build()),
            files: shm,
            use_it: |n| SharedMemory::open(n)?.write(0, b"x"),
        },
        NamedKind {
            what: "listener",
            make: |n, m| held(with_mode(Listener::builder(n), m, |b, m| b.mode(m)).build()),
            files: |n| vec![shm_path(n).replacen(".u.", ".l.", 1)],
            use_it: |n| Client::connect_timeout(n, T * 100)?.send(&7u32),
        },
        NamedKind {
            what: "unix listener",
            make: |n, m| {
                let a = format!("unix:{}", unix_path(n));
                held(with_mode(Listener::builder(&a), m, |b, m| b.mode(m)).build())
            },
            files: |n| vec![unix_path(n)],
            use_it: |n| {
                let a = format!("unix:{}", unix_path(n));
                Client::connect_timeout(&a, T * 100)?.send(&7u32)
            },
        },
    ]
}

fn kind_name(tag: &str, what: &str) -> String {
    format!(
        "perm-{tag}-{}-{}",
        what.replace(' ', "_"),
        std::process::id()
    )
}

/// One of each named kind, made with `mode`.
fn make_all(tag: &str, mode: Option<u32>) -> Vec<(String, Held)> {
    named_kinds()
        .iter()
        .map(|k| {
            let n = kind_name(tag, k.what);
            let made = (k.make)(&n, mode).unwrap_or_else(|e| panic!("{}: {e}", k.what));
            (n, made)
        })
        .collect()
}

/// Accepts, on each listener made by `make_all`, the client that sends `7u32`.
fn accept_each(made: &[(String, Held)]) {
    for (n, m) in made {
        if let Some(l) = m.downcast_ref::<Listener>() {
            let c = l
                .accept_timeout(Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(
                c.recv_timeout::<u32>(Duration::from_secs(20)).unwrap(),
                7,
                "{n}"
            );
        }
    }
}

fn every_named_kind_is_0600_by_default_0660_on_request_and_nothing_else() {
    // No umask to lean on: what a file gets is what shmwire gives it.
    // SAFETY: plain syscall (this test's own process).
    unsafe { libc::umask(0) };
    for k in named_kinds() {
        let n = kind_name("modes", k.what);
        for (mode, want) in [(None, 0o600), (Some(0o600), 0o600), (Some(0o660), 0o660)] {
            let made = (k.make)(&n, mode).unwrap_or_else(|e| panic!("{}: {e}", k.what));
            for f in (k.files)(&n) {
                assert_eq!(mode_of(&f), want, "{} made with {mode:?}: {f}", k.what);
            }
            drop(made);
        }
        for bad in [0o666, 0o644, 0o606, 0o700, 0o400, 0o2660] {
            let r = (k.make)(&n, Some(bad)).map(drop);
            assert!(
                matches!(r, Err(Error::Invalid(_))),
                "{} with mode {bad:o}: {r:?}",
                k.what
            );
            for f in (k.files)(&n) {
                assert!(!std::path::Path::new(&f).exists(), "{}: {f} left", k.what);
            }
        }
    }
}

fn another_user_cannot_open_any_named_kind_and_is_told_what_to_do() {
    root_only();
    let made = make_all("other", None);
    let names: Vec<String> = made.iter().map(|(n, _)| n.clone()).collect();
    // Even in the objects' group: 0600 lets nobody else in.
    let child = as_nobody(vec![0], move || {
        for (k, n) in named_kinds().iter().zip(&names) {
            denied(k.what, (k.use_it)(n), ".mode(0o660)")?;
        }
        Ok(())
    });
    let st = child.join().unwrap();
    assert!(st.success(), "{st:?}");
}

fn mode_0660_lets_the_group_into_every_named_kind_and_only_then() {
    root_only();
    let made = make_all("group", Some(0o660));
    // SAFETY: plain syscall.
    let gid = unsafe { libc::getegid() };
    let names: Vec<String> = made.iter().map(|(n, _)| n.clone()).collect();
    // A user in the objects' group opens each and uses it (its listeners' clients are accepted).
    let ns = names.clone();
    let member = as_nobody(vec![gid], move || {
        for (k, n) in named_kinds().iter().zip(&ns) {
            (k.use_it)(n).map_err(|e| format!("{}: {e}", k.what))?;
        }
        Ok(())
    });
    accept_each(&made);
    let st = member.join().unwrap();
    assert!(st.success(), "a member of the group: {st:?}");
    // A user outside the group does not get in, and is told why.
    let outsider = as_nobody(vec![], move || {
        for (k, n) in named_kinds().iter().zip(&names) {
            denied(k.what, (k.use_it)(n), "a group both users are in")?;
        }
        Ok(())
    });
    let st = outsider.join().unwrap();
    assert!(st.success(), "a user outside the group: {st:?}");
}
