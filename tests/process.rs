//! Processes: what a forked child holds, how it leaves, zombies, and children of threads.
//!
//! The rule under test: a forked child holds exactly what its closure owns (its liveness tokens, a
//! listener's socket), releases it when it exits as a graceful drop would, never returns into the
//! caller's code, is reaped even when its `Process` was dropped, and lives as long as the parent
//! *process*, whichever thread forked it.

mod common;

use common::gone;
use shmwire::{
    ChildOutcome, Client, ConnectionHandle, Error, Listener, Lock, PROBE_INTERVAL, Pipe, Process,
    Queue,
};
use std::collections::BTreeSet;
use std::io::Read;
use std::time::{Duration, Instant};

/// The documented bound for noticing a dead peer: two probe intervals. Tests allow 10x.
fn bound() -> Duration {
    PROBE_INTERVAL * 2 * 10
}

/// The roles this test binary plays when it is spawned.
fn roles(role: &str, args: shmwire::spawn::Args) -> i32 {
    match role {
        "echo" => {
            let h: ConnectionHandle = args.get().unwrap();
            let conn = h.open().unwrap();
            while let Ok(b) = conn.recv_bytes() {
                conn.send_bytes(&b).unwrap();
            }
            0
        }
        // Forks a child that owns nothing, then opens the handle it was given and reports the
        // grandchild's pid; exits when told.
        "fork-then-open" => {
            let h: ConnectionHandle = args.get().unwrap();
            let (r, w) = Pipe::simplex().unwrap();
            let g = Process::fork(move || {
                let _ = r.recv::<()>();
            })
            .unwrap();
            let conn = h.open().unwrap();
            conn.send(&g.pid()).unwrap();
            let _ = conn.recv::<()>();
            drop(w);
            g.join().unwrap().code().unwrap_or(-1)
        }
        "sleep" => {
            std::thread::sleep(Duration::from_secs(60));
            0
        }
        _ => 2,
    }
}

fn main() {
    shmwire::spawn::enter(roles);
    common::run(tests![
        named_segment_goes_when_a_forked_child_is_its_last_user,
        a_spawned_childs_death_is_seen_while_a_forked_sibling_lives,
        repeated_to_handle_reuses_one_export,
        a_forked_child_holds_only_the_tokens_its_closure_owns,
        a_spawned_childs_forked_child_does_not_hold_its_inherited_handles,
        forks_while_other_threads_make_handles,
        a_forked_child_does_not_hold_a_listener_it_does_not_own,
        a_listener_moved_into_a_forked_child_keeps_its_name,
        the_childs_exit_never_returns_into_the_caller,
        a_process_dropped_while_running_is_reaped_later,
        a_child_forked_from_a_thread_outlives_the_thread,
        a_child_of_a_thread_dies_with_the_parent_process,
    ]);
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// Where the named object `name` lives in `/dev/shm`.
fn shm_path(name: &str) -> std::path::PathBuf {
    let prefix = std::env::var("SHMWIRE_PREFIX").unwrap();
    format!("/dev/shm/shmwire.{prefix}.u.{name}").into()
}

/// Where the listener `name`'s socket lives.
fn socket_path(name: &str) -> std::path::PathBuf {
    let prefix = std::env::var("SHMWIRE_PREFIX").unwrap();
    format!("/dev/shm/shmwire.{prefix}.l.{name}").into()
}

/// The liveness tokens process `pid` holds: the OFD locks of its open file descriptions, as
/// `device:inode@offset` (one offset per participant slot, so each token once however many
/// descriptors share its description).
fn tokens_of(pid: u32) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = std::fs::read_to_string(e.unwrap().path()) else {
            continue; // closed meanwhile
        };
        for line in info.lines().filter(|l| l.contains("OFDLCK")) {
            // A participant holds a slot token (offsets from 2^44) and a claim token (from 2^45):
            // the slot tokens say which participants a process is.
            let f: Vec<&str> = line.split_whitespace().collect();
            if f[7].parse::<u64>().is_ok_and(|o| o < 1 << 45) {
                out.insert(format!("{}@{}", f[6], f[7]));
            }
        }
    }
    out
}

/// How many listening Unix sockets process `pid` holds.
fn listening_sockets(pid: u32) -> usize {
    const ACCEPTCON: u32 = 0x10000; // the "Flags" of a listening socket in /proc/net/unix
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
    let listening: BTreeSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let inode = f.get(6)?;
            (flags & ACCEPTCON != 0).then(|| format!("socket:[{inode}]"))
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| listening.contains(l.to_string_lossy().as_ref()))
        .count()
}

/// Whether `pid` is a child of ours that has ended and not been reaped.
fn unreaped(pid: u32) -> bool {
    // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child as it is.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
            && info.si_pid() == pid as i32
    }
}

// ---- item: a named segment whose last user is a forked child ----------------------------------

fn named_segment_goes_when_a_forked_child_is_its_last_user() {
    // Owned by the closure: a queue and an end of a named pipe; borrowed: a lock.
    let (qn, pn, ln) = (unique("last-q"), unique("last-p"), unique("last-l"));
    let q: Queue<u32> = Queue::builder().name(&qn).build().unwrap();
    let (p0, p1) = Pipe::builder().name(&pn).build().unwrap();
    let lock = Lock::create(&ln).unwrap();
    let (go_r, go_w) = Pipe::simplex().unwrap();
    let qc = q.clone();
    let lock_ref = &lock;
    let child = Process::fork(move || {
        go_r.recv::<()>().unwrap();
        qc.put(7).unwrap();
        assert!(matches!(p1.recv::<u32>(), Err(Error::Eof)));
        drop(lock_ref.acquire().unwrap());
    })
    .unwrap();
    drop((q, p0, lock));
    assert!(shm_path(&qn).exists(), "the child still uses the queue");
    go_w.send(&()).unwrap();
    assert!(child.join().unwrap().success());
    for n in [&qn, &pn, &ln] {
        assert!(
            !shm_path(n).exists(),
            "{n} was left in /dev/shm after its last user (a forked child) exited"
        );
    }
}

// ---- item: tokens a forked child must not hold -----------------------------------------------

fn a_spawned_childs_death_is_seen_while_a_forked_sibling_lives() {
    let (a, b) = Pipe::new().unwrap();
    let h = b.to_handle().unwrap();
    // A sibling forked while the export waits for its spawn: it must not keep the export's token.
    let (stop_r, stop_w) = Pipe::simplex().unwrap();
    let sibling = Process::fork(move || {
        let _ = stop_r.recv::<()>();
    })
    .unwrap();
    let echo = Process::spawn("echo", &h).unwrap();
    drop(b);
    a.send_bytes(b"ping").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"ping");
    echo.kill().unwrap();
    echo.join().unwrap();
    let t = Instant::now();
    let got = a.recv_bytes_timeout(bound());
    assert!(
        matches!(got, Err(Error::PeerDied) | Err(Error::Eof)),
        "the killed spawned child's end still looks held (by the forked sibling): {got:?} after {:?}",
        t.elapsed()
    );
    stop_w.send(&()).unwrap();
    assert!(sibling.join().unwrap().success());
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn repeated_to_handle_reuses_one_export() {
    let (a, b) = Pipe::new().unwrap();
    let fds = open_fds();
    let mut last = None;
    for i in 0..200 {
        let h = b
            .to_handle()
            .unwrap_or_else(|e| panic!("to_handle call {i} failed: {e:?}"));
        if let Some(prev) = &last {
            assert_eq!(&h, prev, "a second export of the same end");
        }
        last = Some(h);
    }
    assert!(
        open_fds() <= fds + 4,
        "200 to_handle calls hold {} descriptors",
        open_fds() - fds
    );
    let last = last.unwrap();
    let echo = Process::spawn("echo", &last).unwrap();
    // The spawn took the export: the next call prepares a new one (withdrawn when `b` goes).
    assert_ne!(b.to_handle().unwrap(), last);
    drop(b);
    a.send_bytes(b"one export").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"one export");
    drop(a);
    assert!(echo.join().unwrap().success());
}

fn a_forked_child_holds_only_the_tokens_its_closure_owns() {
    // What the children must not hold: a named pipe whose table is full (64 participants, all
    // this process), an anonymous lock, a named queue, a pending export.
    let full = unique("full");
    let (_f0, _f1) = Pipe::builder().name(&full).capacity(4096).build().unwrap();
    let _more: Vec<_> = (0..63).map(|_| Pipe::open(&full, 0).unwrap()).collect();
    let lock = Lock::new().unwrap();
    let _q: Queue<u32> = Queue::builder().name(&unique("not-mine")).build().unwrap();
    let (_e0, e1) = Pipe::new().unwrap();
    let _h = e1.to_handle().unwrap();
    // Child A owns one end of a pipe; child B one end and a clone of the lock.
    for with_lock in [false, true] {
        let (mine, theirs) = Pipe::new().unwrap();
        let l = with_lock.then(|| lock.clone());
        let child = Process::fork(move || {
            let _l = l;
            theirs.send(&()).unwrap();
            let _ = theirs.recv::<()>();
        })
        .unwrap();
        mine.recv::<()>().unwrap();
        let held = tokens_of(child.pid());
        let want = if with_lock { 2 } else { 1 };
        assert_eq!(
            held.len(),
            want,
            "a child owning {want} object(s) holds these tokens: {held:?}"
        );
        drop(mine);
        assert!(child.join().unwrap().success());
    }
}

fn a_spawned_childs_forked_child_does_not_hold_its_inherited_handles() {
    let (a, b) = Pipe::new().unwrap();
    let s = Process::spawn("fork-then-open", &b.to_handle().unwrap()).unwrap();
    drop(b);
    let grandchild: u32 = a.recv().unwrap();
    let held = tokens_of(grandchild);
    assert_eq!(
        held.len(),
        1,
        "the grandchild owns one pipe end, and holds these tokens: {held:?}"
    );
    a.send(&()).unwrap();
    assert!(s.join().unwrap().success());
}

/// Forks (from the main thread and from another) while other threads make and drop objects, pipes
/// and listeners: no child holds a token or socket it was not given, and nothing deadlocks.
fn forks_while_other_threads_make_handles() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let makers: Vec<_> = (0..2)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let l = Lock::new().unwrap();
                    let named = Lock::create(&unique(&format!("churn{i}-{n}"))).unwrap();
                    let p = Pipe::builder().capacity(4096).build().unwrap();
                    let export = p.1.to_handle().unwrap();
                    let lis = Listener::bind(&unique(&format!("churn{i}-{n}"))).unwrap();
                    drop((l, named, p, export, lis));
                    n += 1;
                }
            })
        })
        .collect();
    let check = |from: &str| {
        for _ in 0..40 {
            let (mine, theirs) = Pipe::new().unwrap();
            let child = Process::fork(move || {
                theirs.send(&()).unwrap();
                let _ = theirs.recv::<()>();
            })
            .unwrap();
            mine.recv::<()>().unwrap();
            let (held, listening) = (tokens_of(child.pid()), listening_sockets(child.pid()));
            drop(mine);
            assert!(child.join().unwrap().success());
            assert_eq!(held.len(), 1, "forked from {from}: {held:?}");
            assert_eq!(
                listening, 0,
                "forked from {from}: a listener it was not given"
            );
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| check("a thread"));
        check("main");
    });
    stop.store(true, Ordering::Relaxed);
    for m in makers {
        m.join().unwrap();
    }
}

fn a_forked_child_does_not_hold_a_listener_it_does_not_own() {
    let name = unique("lis");
    let listener = Listener::bind(&name).unwrap();
    let (stop_r, stop_w) = Pipe::simplex().unwrap();
    let borrowed = &listener;
    let sibling = Process::fork(move || {
        // A listener the closure only borrows is the parent's: here it fails, and never hangs.
        let got = borrowed.accept_timeout(Duration::from_secs(5));
        assert!(matches!(got, Err(Error::Io(_))), "{got:?}");
        let _ = stop_r.recv::<()>();
    })
    .unwrap();
    // A client waiting in the backlog: when the listener goes, it must learn so at once.
    let mut waiting = std::os::unix::net::UnixStream::connect(socket_path(&name)).unwrap();
    drop(listener);
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let got = waiting.read(&mut [0u8; 8]);
    assert!(
        matches!(&got, Ok(0))
            || got
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a client of a closed listener waited {:?} and got {got:?}: a forked sibling holds the socket",
        t.elapsed()
    );
    stop_w.send(&()).unwrap();
    assert!(sibling.join().unwrap().success());
}

fn a_listener_moved_into_a_forked_child_keeps_its_name() {
    let name = unique("moved-lis");
    let listener = Listener::bind(&name).unwrap();
    let child = Process::fork(move || {
        let c = listener.accept_timeout(Duration::from_secs(10)).unwrap();
        c.send(&"from the child's listener").unwrap();
        let _ = c.recv::<()>();
    })
    .unwrap();
    let c = Client::connect_timeout(&name, Duration::from_secs(10))
        .expect("the listener moved into the child lost its name in the parent");
    assert_eq!(c.recv::<String>().unwrap(), "from the child's listener");
    drop(c);
    assert!(child.join().unwrap().success());
    assert!(
        !socket_path(&name).exists(),
        "the child's drop removes the name"
    );
}

// ---- item: nothing after the fork returns into the caller -------------------------------------

/// An outcome whose conversion to an exit code panics.
struct Boom;
impl ChildOutcome for Boom {
    fn exit_code(self) -> i32 {
        panic!("boom in exit_code");
    }
}

/// An error whose `Debug` panics.
struct BadDebug;
impl std::fmt::Debug for BadDebug {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("boom in Debug");
    }
}

/// Makes this process's stderr a pipe nobody reads (writes fail with EPIPE).
fn break_stderr() {
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on descriptors this function owns; SIGPIPE is ignored by Rust programs.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        libc::dup2(fds[1], 2);
        libc::close(fds[1]);
    }
}

/// Forks `f` and returns how it ended; a child that unwinds back here exits with 77.
fn run_child<R: ChildOutcome>(f: impl FnOnce() -> R) -> shmwire::ExitStatus {
    let me = std::process::id();
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Process::fork_with(f)));
    if std::process::id() != me {
        // SAFETY: we are a child that came back into the caller's code: leave at once.
        unsafe { libc::_exit(77) };
    }
    got.unwrap().unwrap().join().unwrap()
}

fn the_childs_exit_never_returns_into_the_caller() {
    let epipe = run_child(|| -> Result<(), &str> {
        break_stderr();
        Err("printing this fails")
    });
    assert_eq!(epipe.code(), Some(1), "an Err with stderr broken: {epipe}");
    let boom = run_child(|| Boom);
    assert_eq!(boom.code(), Some(101), "a panicking exit_code: {boom}");
    let bad = run_child(|| -> Result<(), BadDebug> { Err(BadDebug) });
    assert_eq!(bad.code(), Some(101), "a panicking Debug: {bad}");
}

// ---- item: zombies ----------------------------------------------------------------------------

fn a_process_dropped_while_running_is_reaped_later() {
    for reaper in ["next fork", "cleanup"] {
        let (go_r, go_w) = Pipe::simplex().unwrap();
        let p = Process::fork(move || {
            let _ = go_r.recv::<()>();
        })
        .unwrap();
        let pid = p.pid();
        drop(p); // still running
        go_w.send(&()).unwrap();
        let t = Instant::now();
        while !gone(pid) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the child did not end"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        match reaper {
            "next fork" => assert!(Process::fork(|| ()).unwrap().join().unwrap().success()),
            _ => drop(shmwire::cleanup().unwrap()),
        }
        assert!(
            !unreaped(pid),
            "a dropped Process's child is a zombie after the {reaper}"
        );
    }
}

// ---- item: a child lives as long as the parent process ------------------------------------------

fn a_child_forked_from_a_thread_outlives_the_thread() {
    let (mine, theirs) = Pipe::new().unwrap();
    let forked = std::thread::spawn(move || {
        Process::fork(move || {
            let _ = theirs.recv::<()>();
            theirs.send(&"alive").unwrap();
        })
        .unwrap()
    })
    .join()
    .unwrap();
    let spawned = std::thread::spawn(|| Process::spawn("sleep", &()).unwrap())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the death signal is sent as the thread exits
    mine.send(&()).unwrap();
    let got = mine.recv_timeout::<String>(bound());
    assert!(
        matches!(&got, Ok(s) if s == "alive"),
        "the child forked from a thread died with the thread: {got:?}, {:?}",
        forked.try_join()
    );
    assert!(forked.join().unwrap().success());
    assert!(
        spawned.is_alive(),
        "the child spawned from a thread died with the thread: {:?}",
        spawned.try_join()
    );
    spawned.kill().unwrap();
    spawned.join().unwrap();
}

fn a_child_of_a_thread_dies_with_the_parent_process() {
    let (r, w) = Pipe::simplex().unwrap();
    let middle = Process::fork(move || {
        let kids = std::thread::spawn(|| {
            let f = Process::fork(|| std::thread::sleep(Duration::from_secs(60))).unwrap();
            let s = Process::spawn("sleep", &()).unwrap();
            (f, s)
        })
        .join()
        .unwrap();
        w.send(&(kids.0.pid(), kids.1.pid())).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let (forked, spawned): (u32, u32) = r.recv().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !gone(forked) && !gone(spawned),
        "the children died with the thread"
    );
    middle.kill().unwrap();
    middle.join().unwrap();
    let t = Instant::now();
    while !(gone(forked) && gone(spawned)) {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a child of a thread outlived its parent process"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
