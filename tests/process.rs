//! Processes: what a forked child holds, how it leaves, zombies, and children of threads.
//!
//! The rule under test: a forked child holds exactly what its closure owns (its liveness tokens, a
//! listener's socket), releases it when it exits as a graceful drop would, never returns into the
//! caller's code, is reaped even when its `Process` was dropped, and lives as long as the parent
//! *process*, whichever thread forked it.

mod common;

use common::gone;
use shmwire::Connection;
use shmwire::hooks::{self, Point};
use shmwire::{
    ChildOutcome, Client, ConnectionHandle, Error, Listener, Lock, PROBE_INTERVAL, Pipe, Process,
    Queue,
};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::rc::Rc;
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
            // Not a pipe of ours: the grandchild would hold its token too.
            let (mut up_r, mut up_w) = std::os::unix::net::UnixStream::pair().unwrap();
            let g = Process::fork(move || {
                up_w.write_all(b"u").unwrap(); // it runs its closure: it gave up what it does not own
                let _ = r.recv::<()>();
            })
            .unwrap();
            up_r.read_exact(&mut [0u8]).unwrap();
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
        // Opens end 1 of the named pipe it is given, says "ready" on it and leaves it to a
        // thread-local whose destructor (run by `exit`, after the exit path released the end) waits
        // for SIGUSR1, then drops it.
        "late-drop" => {
            let name: String = args.get().unwrap();
            block_sigusr1();
            let conn = Pipe::open(&name, 1).unwrap();
            conn.send(&"ready".to_string()).unwrap();
            LATE.with(|l| *l.borrow_mut() = Some(LateDrop(Some(conn))));
            0
        }
        // Opens `end` of the named pipe `name`, says "here" on it and holds it until told.
        "hold-end" => {
            let (name, end): (String, usize) = args.get().unwrap();
            let conn = Pipe::open(&name, end).unwrap();
            conn.send(&"here".to_string()).unwrap();
            let _ = conn.recv::<()>();
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
        a_fork_while_another_thread_prints_never_hangs_the_child,
        a_slot_retaken_while_the_parent_drops_the_closure_keeps_its_role,
        an_end_moved_into_a_full_table_fails_the_fork,
        a_late_drop_after_the_exit_path_strips_no_other_holders_role,
        a_forked_childs_ends_close_after_its_output_is_flushed,
        a_role_closed_while_a_fork_copies_roles_stays_closed,
        a_reaped_holder_reads_as_dead_while_its_reaper_is_stopped,
        a_process_moved_into_a_child_never_signals_a_recycled_pid,
        cleanup_leaves_a_named_object_that_is_being_created,
        a_fork_while_another_thread_drops_a_segment_copies_none_of_its_tokens,
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

// ---- helpers for the review's findings ---------------------------------------------------------

/// Waits (at most 10 s) until our child `pid` is stopped (SIGSTOP at an armed hook point).
fn wait_stopped(pid: u32) {
    let t = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks, WUNTRACED reports a stop.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WUNTRACED | libc::WNOHANG) };
        if r == pid as i32 {
            assert!(libc::WIFSTOPPED(status), "child {pid} ended: {status:#x}");
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "child {pid} never reached its hook point"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Lets a stopped child go on.
fn resume(pid: u32) {
    // SAFETY: plain syscall on our unreaped child.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
}

/// The children of this (single-threaded until now) test process's main thread.
fn children_of_main() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

thread_local! {
    static LATE: RefCell<Option<LateDrop>> = const { RefCell::new(None) };
}

/// Holds an end until SIGUSR1 comes (10 s at most), then drops it.
struct LateDrop(Option<Connection>);

impl Drop for LateDrop {
    fn drop(&mut self) {
        // SAFETY: plain signal-set calls on a local set; SIGUSR1 is blocked (see `block_sigusr1`).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            let ts = libc::timespec {
                tv_sec: 10,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
        }
        drop(self.0.take());
    }
}

fn block_sigusr1() {
    // SAFETY: as above; blocks SIGUSR1 in this (single-threaded) process so it waits for sigtimedwait.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

// ---- finding 1: stdout's lock held by another thread at the fork ---------------------------------

fn a_fork_while_another_thread_prints_never_hangs_the_child() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Our output goes nowhere (the runner prints the verdict): a thread prints without pause.
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    // SAFETY: plain syscall; fd 1 is this test process's stdout.
    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 1) };
    let stop = Arc::new(AtomicBool::new(false));
    let printer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                println!("the printer thread holds stdout's lock");
            }
        })
    };
    let fork_some = || -> Vec<Process> {
        (0..20)
            .map(|_| Process::fork(|| println!("the child prints")).unwrap())
            .collect()
    };
    let mut children = fork_some();
    children.extend(std::thread::scope(|s| s.spawn(fork_some).join().unwrap()));
    stop.store(true, Ordering::Relaxed);
    printer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut hung = 0;
    for c in &children {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.join_timeout(left) {
            Ok(st) => assert!(st.success(), "a child ended with {st}"),
            Err(Error::Timeout) => {
                hung += 1;
                c.kill().unwrap();
                c.join().unwrap();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        hung,
        0,
        "{hung} of {} children forked while another thread printed never exited",
        children.len()
    );
}

// ---- finding 2: the parent's finish writes into a slot it does not hold -------------------------

/// Runs `then` when dropped in process `parent` (the parent's copy of a forked closure).
struct OnParentDrop {
    parent: u32,
    then: Option<Box<dyn FnOnce()>>,
}

impl Drop for OnParentDrop {
    fn drop(&mut self) {
        if std::process::id() == self.parent {
            if let Some(f) = self.then.take() {
                f();
            }
        }
    }
}

fn a_slot_retaken_while_the_parent_drops_the_closure_keeps_its_role() {
    let name = unique("retaken");
    let (p0, p1) = Pipe::builder().name(&name).build().unwrap();
    let p1 = Rc::new(p1);
    let holder: Rc<RefCell<Option<Process>>> = Rc::default();
    // While the parent drops its copy of the closure: the child is killed, and a new process opens
    // end 0 (taking whatever slot is free) and says so.
    let then = {
        let (p1, holder, name) = (p1.clone(), holder.clone(), name.clone());
        move || {
            let kids = children_of_main();
            assert_eq!(kids.len(), 1, "{kids:?}");
            // SAFETY: plain syscalls on our unreaped child; WNOWAIT leaves it for `join`.
            unsafe {
                libc::kill(kids[0] as i32, libc::SIGKILL);
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    kids[0],
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                );
            }
            let h = Process::spawn("hold-end", &(name, 0usize)).unwrap();
            assert_eq!(p1.recv::<String>().unwrap(), "here");
            *holder.borrow_mut() = Some(h);
        }
    };
    let slow = OnParentDrop {
        parent: std::process::id(),
        then: Some(Box::new(then)),
    };
    let child = Process::fork(move || {
        let _s = slow;
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let holder = holder.borrow_mut().take().unwrap();
    drop(p0); // the new holder keeps end 0 open
    let got = p1.recv_timeout::<String>(Duration::from_millis(500));
    assert!(
        matches!(got, Err(Error::Timeout)),
        "end 0 is held by a live process, yet its peer got {got:?}"
    );
    p1.send(&()).unwrap();
    assert!(holder.join().unwrap().success());
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGKILL));
    assert!(matches!(
        p1.recv_timeout::<String>(bound()),
        Err(Error::Eof)
    ));
}

// ---- finding 12: an end moved into a child that has no slot --------------------------------------

fn an_end_moved_into_a_full_table_fails_the_fork() {
    let name = unique("full-moved");
    let (f0, f1) = Pipe::builder().name(&name).capacity(4096).build().unwrap();
    // 64 participants, all this process: no slot for a child.
    let more: Vec<_> = (0..63).map(|_| Pipe::open(&name, 0).unwrap()).collect();
    match Process::fork_with(move || f1.send(&"from the child".to_string()).is_ok() as i32) {
        Err(Error::TooManyProcesses { .. }) => {}
        Ok(child) => {
            let peer = f0.recv_timeout::<String>(Duration::from_secs(2));
            panic!(
                "a fork moving end 1 into a child without a slot succeeded; the peer got {peer:?}, \
                 the child's send worked: {:?}",
                child.join().unwrap().code()
            );
        }
        Err(e) => panic!("{e:?}"),
    }
    // The end went with the closure, which the failed fork dropped.
    let got = f0.recv_timeout::<String>(bound());
    assert!(matches!(got, Err(Error::Eof)), "{got:?}");
    drop(more);
}

// ---- finding 13: the exit path marks what it left; it flushes before it releases ------------------

fn a_late_drop_after_the_exit_path_strips_no_other_holders_role() {
    let name = unique("late");
    let (a, b) = Pipe::builder().name(&name).build().unwrap();
    let first = Process::spawn("late-drop", &name).unwrap();
    assert_eq!(a.recv::<String>().unwrap(), "ready");
    drop(b); // end 1 is now the child's alone
    // The child's role returned: its exit path releases end 1 (its thread-local holds a copy).
    let got = a.recv_timeout::<String>(bound());
    assert!(matches!(got, Err(Error::Eof)), "{got:?}");
    // A new process takes the slot the child left, and end 1.
    let holder = Process::spawn("hold-end", &(name.clone(), 1usize)).unwrap();
    let t = Instant::now();
    loop {
        // Until the holder has opened it, end 1 is closed (Eof at once).
        match a.recv_timeout::<String>(Duration::from_millis(10)) {
            Ok(s) => break assert_eq!(s, "here"),
            Err(Error::Eof) | Err(Error::Timeout) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("waiting for the new holder: {e:?}"),
        }
    }
    // Now the child's thread-local destructor drops its copy of the end.
    first.signal(libc::SIGUSR1).unwrap();
    assert!(first.join().unwrap().success());
    let got = a.recv_timeout::<String>(Duration::from_millis(500));
    assert!(
        matches!(got, Err(Error::Timeout)),
        "end 1 is held by a live process, yet its peer got {got:?} after another process's late drop"
    );
    a.send(&()).unwrap();
    assert!(holder.join().unwrap().success());
}

fn a_forked_childs_ends_close_after_its_output_is_flushed() {
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on descriptors this test owns. The pipe is filled to the brim, so the
    // child's final flush blocks until we read.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK);
        let chunk = [b'.'; 4096];
        while libc::write(fds[1], chunk.as_ptr().cast(), chunk.len()) > 0 {}
        libc::fcntl(fds[1], libc::F_SETFL, 0);
    }
    let (r, w) = (fds[0], fds[1]);
    let (mine, theirs) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        // SAFETY: plain syscall: the child's stdout becomes the full pipe.
        unsafe { libc::dup2(w, 1) };
        print!("the child's last words"); // buffered: flushed on the way out
        std::mem::forget(theirs); // released by the exit path, not by a drop
    })
    .unwrap();
    // SAFETY: our copy of the write end; the child has its own.
    unsafe { libc::close(w) };
    let got = mine.recv_timeout::<()>(Duration::from_millis(500));
    // SAFETY: the read end is ours alone from here.
    let mut out = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(r) };
    let mut all = Vec::new();
    out.read_to_end(&mut all).unwrap();
    assert!(
        matches!(got, Err(Error::Timeout)),
        "the child's end closed ({got:?}) while its output was still unflushed"
    );
    assert!(all.ends_with(b"the child's last words"));
    assert!(matches!(mine.recv_timeout::<()>(bound()), Err(Error::Eof)));
    assert!(child.join().unwrap().success());
}

// ---- finding 14: copying the parent's roles never reopens one it closed -------------------------

/// In the parent's copy of a forked closure: what a send on `conn` gives when it is dropped.
struct SendOnParentDrop {
    parent: u32,
    conn: Rc<Connection>,
    got: Rc<Cell<Option<String>>>,
}

impl Drop for SendOnParentDrop {
    fn drop(&mut self) {
        if std::process::id() == self.parent {
            let r = self.conn.send_timeout(&0u8, Duration::ZERO);
            self.got.set(Some(format!("{r:?}")));
        }
    }
}

fn a_role_closed_while_a_fork_copies_roles_stays_closed() {
    let (a, b) = Pipe::new().unwrap();
    // The fork stops (this thread only) after it has read end 0's mask, and end 0 closes meanwhile.
    hooks::__arm(Point::CopyingRoles, 0, 0);
    let closer = std::thread::spawn(move || {
        let t = Instant::now();
        while !hooks::__paused(Point::CopyingRoles) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the fork never paused"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        a.close();
        hooks::__resume(Point::CopyingRoles);
        a
    });
    let got: Rc<Cell<Option<String>>> = Rc::default();
    let probe = SendOnParentDrop {
        parent: std::process::id(),
        conn: Rc::new(b),
        got: got.clone(),
    };
    let child = Process::fork(move || drop(probe)).unwrap();
    drop(closer.join().unwrap());
    assert!(child.join().unwrap().success());
    let got = got.take().unwrap();
    assert!(
        got.contains("BrokenPipe"),
        "end 0 was closed before the fork gave it to the child, yet a send to it gave {got}"
    );
}

// ---- finding 15: a reaped holder's death is recorded before its role reads as closed -------------

fn a_reaped_holder_reads_as_dead_while_its_reaper_is_stopped() {
    let name = unique("reaped");
    let (a0, a1) = Pipe::builder().name(&name).build().unwrap();
    let (ready_r, ready_w) = Pipe::simplex().unwrap();
    let holder = Process::fork(move || {
        let _end = a1;
        ready_w.send(&()).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    ready_r.recv::<()>().unwrap();
    // The reaper: opening the pipe takes the dead holder's slot, reaping it; it stops right after it
    // has taken the holder's bit out of end 1's mask.
    let (go_r, go_w) = Pipe::simplex().unwrap();
    let n = name.clone();
    let reaper = Process::fork(move || {
        go_r.recv::<()>().unwrap();
        hooks::__arm(Point::RoleReaped, libc::SIGSTOP, 0);
        let _c = Pipe::open(&n, 0).unwrap();
    })
    .unwrap();
    holder.kill().unwrap();
    holder.join().unwrap();
    go_w.send(&()).unwrap();
    wait_stopped(reaper.pid());
    let got = a0.recv_timeout::<()>(bound());
    resume(reaper.pid());
    assert!(reaper.join().unwrap().success());
    assert!(
        matches!(got, Err(Error::PeerDied)),
        "end 1's only holder was killed, and its peer got {got:?}"
    );
}

// ---- finding 20: a Process copied into a child signals by pidfd ----------------------------------

/// Whether this process may choose a new child's pid (`clone3` with `set_tid`).
fn may_choose_pids() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_CHECKPOINT_RESTORE: u64 = 40;
    cap & (1 << CAP_SYS_ADMIN | 1 << CAP_CHECKPOINT_RESTORE) != 0
}

/// Starts a process with pid `pid` (free) that waits for a signal; returns its pid.
fn decoy_with_pid(pid: u32) -> i32 {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let want = pid as libc::pid_t;
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &want as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork; the child only calls pause and _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        loop {
            // SAFETY: plain syscall in the new process, which only waits to be killed.
            unsafe { libc::pause() };
        }
    }
    assert!(
        r == pid as libc::c_long,
        "clone3 for pid {pid}: {r} ({})",
        std::io::Error::last_os_error()
    );
    r as i32
}

fn a_process_moved_into_a_child_never_signals_a_recycled_pid() {
    if !may_choose_pids() {
        common::skip("recycling a pid on purpose needs CAP_CHECKPOINT_RESTORE (clone3 set_tid)");
    }
    let sibling = Process::fork(|| std::thread::sleep(Duration::from_secs(60))).unwrap();
    let pid = sibling.pid();
    let (go_r, go_w) = Pipe::simplex().unwrap();
    let (said_r, said_w) = Pipe::simplex().unwrap();
    let child = Process::fork(move || {
        go_r.recv::<()>().unwrap();
        said_w.send(&format!("{:?}", sibling.kill())).unwrap();
    })
    .unwrap();
    // The sibling ends and is reaped by us (its parent); its pid goes to another process.
    // SAFETY: plain syscalls on our child.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
        libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
    }
    let decoy = decoy_with_pid(pid);
    go_w.send(&()).unwrap();
    let said: String = said_r.recv().unwrap();
    assert!(child.join().unwrap().success());
    let mut status = 0;
    // SAFETY: plain syscalls on our child `decoy`.
    let alive = unsafe { libc::waitpid(decoy, &mut status, libc::WNOHANG) } == 0;
    // SAFETY: as above.
    unsafe {
        libc::kill(decoy, libc::SIGKILL);
        libc::waitpid(decoy, &mut status, 0);
    }
    assert!(
        alive,
        "the child's copy of a Process killed pid {pid}, which another process had taken ({said})"
    );
}

// ---- finding 21: cleanup never takes a name from a creator still making it -----------------------

fn cleanup_leaves_a_named_object_that_is_being_created() {
    let name = unique("creating");
    let (made_r, made_w) = Pipe::simplex().unwrap();
    let (done_r, done_w) = Pipe::simplex().unwrap();
    let n = name.clone();
    let creator = Process::fork(move || {
        hooks::__arm(Point::NamedCreating, libc::SIGSTOP, 0);
        let _lock = Lock::create(&n).unwrap();
        made_w.send(&()).unwrap();
        let _ = done_r.recv::<()>();
    })
    .unwrap();
    wait_stopped(creator.pid());
    let removed = shmwire::cleanup().unwrap();
    resume(creator.pid());
    made_r.recv::<()>().unwrap();
    let opened = Lock::open(&name);
    done_w.send(&()).unwrap();
    assert!(creator.join().unwrap().success());
    assert!(
        !removed.iter().any(|r| r.ends_with(&name)),
        "cleanup removed {name} while its creator was making it: {removed:?}"
    );
    assert!(opened.is_ok(), "{opened:?}");
}

// ---- a segment dropped by another thread at the moment of a fork ---------------------------------

fn a_fork_while_another_thread_drops_a_segment_copies_none_of_its_tokens() {
    use std::sync::mpsc;
    let lock = Lock::new().unwrap();
    // The dropping thread stops (this thread only) inside the segment's drop, holding its token.
    hooks::__arm(Point::SegmentDropping, 0, 0);
    let dropper = std::thread::spawn(move || drop(lock));
    let (read, told) = mpsc::channel::<()>();
    let resumer = std::thread::spawn(move || {
        let t = Instant::now();
        while !hooks::__paused(Point::SegmentDropping) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the drop never paused"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Until the fork below has been checked, or long enough for a fork that waits for the drop.
        let _ = told.recv_timeout(Duration::from_millis(500));
        hooks::__resume(Point::SegmentDropping);
    });
    while !hooks::__paused(Point::SegmentDropping) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mine, theirs) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        theirs.send(&()).unwrap();
        let _ = theirs.recv::<()>();
    })
    .unwrap();
    mine.recv::<()>().unwrap();
    let held = tokens_of(child.pid());
    let _ = read.send(());
    resumer.join().unwrap();
    dropper.join().unwrap();
    drop(mine);
    assert!(child.join().unwrap().success());
    assert_eq!(
        held.len(),
        1,
        "a child owning one pipe end holds these tokens (one of a lock another thread was dropping): \
         {held:?}"
    );
}
