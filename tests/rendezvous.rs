//! Rendezvous and spawn: Listener/Client between exec'd processes, the spawn start method and
//! handles, `wait()` on many objects, SharedMemory across processes.

mod common;

use common::gone;
use shmwire::{Client, ConnectionHandle, Error, Listener, Pipe, Process, SharedMemory, wait};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The roles this test binary plays when it is spawned (re-executed) by a test.
fn roles(role: &str, args: shmwire::spawn::Args) -> i32 {
    match role {
        // Connect to the listener named in `args` and echo until the end.
        "client" => {
            let name: String = args.get().unwrap();
            let conn = Client::connect_timeout(&name, Duration::from_secs(10)).unwrap();
            conn.send(&format!("hello from {}", std::process::id()))
                .unwrap();
            while let Ok(b) = conn.recv_bytes() {
                conn.send_bytes(&b).unwrap();
            }
            0
        }
        // Echo over the pipe end(s) handed over.
        "echo" => {
            let h: ConnectionHandle = args.get().unwrap();
            let conn = h.open().unwrap();
            while let Ok(b) = conn.recv_bytes() {
                conn.send_bytes(&b).unwrap();
            }
            0
        }
        "sum" => {
            let (a, b): (ConnectionHandle, ConnectionHandle) = args.get().unwrap();
            let (a, b) = (a.open().unwrap(), b.open().unwrap());
            let x: u64 = a.recv().unwrap();
            let y: u64 = b.recv().unwrap();
            a.send(&(x + y)).unwrap();
            0
        }
        "shm" => {
            let name: String = args.get().unwrap();
            let m = SharedMemory::open(&name).unwrap();
            let mut got = [0u8; 5];
            m.read(0, &mut got).unwrap();
            assert_eq!(&got, b"ping!");
            m.write(0, b"pong!").unwrap();
            0
        }
        // A handle that reached us as plain bytes (not inherited): opened through the maker.
        "from-bytes" => {
            let bytes: Vec<u8> = args.get().unwrap();
            let h: ConnectionHandle = postcard::from_bytes(&bytes).unwrap();
            let conn = h.open().unwrap();
            let x: u32 = conn.recv().unwrap();
            conn.send(&(x + 1)).unwrap();
            0
        }
        "code" => args.get::<i32>().unwrap(),
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
        exec_d_binaries_meet_by_name,
        many_clients_one_listener,
        bind_collision_and_reclaim_after_a_dead_listener,
        connect_and_accept_errors_and_timeouts,
        spawn_returns_the_roles_code,
        spawn_from_a_program_with_threads,
        handles_passed_to_a_spawned_child,
        two_handles_in_one_spawn,
        named_handle_opens_by_name,
        anonymous_handle_as_bytes_opens_through_the_maker,
        wait_each_kind_of_timeout,
        wait_over_64_connections_and_child_exits,
        wait_reports_a_killed_peer,
        wait_on_a_listener,
        listener_incoming_yields_connections,
        listener_refuses_unsafe_descriptors,
        client_refuses_a_listener_of_another_user,
        accept_timeout_is_bounded_by_silent_clients,
        connect_list_and_bind_are_bounded_when_the_backlog_is_full,
        accept_moves_on_when_a_client_leaves_before_the_answer,
        a_forked_child_holds_no_half_accepted_client,
        accept_keeps_clients_whose_introductions_came_together,
        accept_timeout_is_bounded_while_another_thread_accepts,
        accept_timeout_is_bounded_under_a_stream_of_clients,
        reclaiming_a_stale_name_has_one_winner,
        a_reclaimer_never_removes_a_listener_that_came_after_its_check,
        listener_survives_a_pipe_of_more_than_64_slots,
        listener_refuses_rings_above_its_maximum,
        wake_descriptors_of_a_client_cannot_block_the_listener,
        wait_on_a_listener_ignores_clients_that_hang_up,
        to_handle_refuses_an_end_holding_part_of_a_message,
        to_handle_refuses_an_end_with_messages_set_aside,
        shared_memory_between_exec_d_binaries,
        shared_memory_errors,
        spawned_child_dies_with_its_parent,
    ]);
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

fn exec_d_binaries_meet_by_name() {
    let name = unique("meet");
    let listener = Listener::bind(&name).unwrap();
    assert_eq!(listener.name(), name);
    let child = Process::spawn("client", &name).unwrap();
    let conn = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    let hello: String = conn.recv().unwrap();
    assert_eq!(hello, format!("hello from {}", child.pid()));
    for i in 0..100u32 {
        let msg = vec![i as u8; i as usize * 100];
        conn.send_bytes(&msg).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), msg);
    }
    drop(conn);
    assert!(child.join().unwrap().success());
}

fn many_clients_one_listener() {
    let name = unique("many");
    let listener = Listener::bind(&name).unwrap();
    let mut kids: Vec<Process> = (0..4)
        .map(|_| Process::spawn("client", &name).unwrap())
        .collect();
    let conns: Vec<_> = (0..4)
        .map(|_| listener.accept_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    let mut pids: Vec<String> = conns.iter().map(|c| c.recv::<String>().unwrap()).collect();
    pids.sort();
    let mut want: Vec<String> = kids
        .iter()
        .map(|k| format!("hello from {}", k.pid()))
        .collect();
    want.sort();
    assert_eq!(pids, want);
    drop(conns);
    for k in &mut kids {
        assert!(k.join().unwrap().success());
    }
}

fn bind_collision_and_reclaim_after_a_dead_listener() {
    let name = unique("taken");
    let first = Listener::bind(&name).unwrap();
    match Listener::bind(&name) {
        Err(Error::Exists) => {}
        other => panic!("a live listener's name must not be taken over: {other:?}"),
    }
    drop(first);
    // A listener that dies without closing leaves its socket behind; the next bind reclaims it.
    let name2 = unique("dead");
    let n = name2.clone();
    let dying = Process::fork(move || {
        let _l = Listener::bind(&n).unwrap();
        // SAFETY: dies as SIGKILL would, without running destructors.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    dying.join().unwrap();
    // A client finds nobody there: the name's listener is gone.
    let r = Client::connect_timeout(&name2, Duration::from_secs(5));
    assert!(matches!(r, Err(Error::NotFound)), "{r:?}");
    let stale = shmwire::segment::list().unwrap();
    assert!(
        stale
            .iter()
            .any(|s| s.name.ends_with(&name2) && s.is_stale()),
        "{stale:?}"
    );
    let again = Listener::bind(&name2).unwrap();
    // And a stale one is what cleanup removes; a live one it keeps.
    let name3 = unique("dead2");
    let n3 = name3.clone();
    let dying = Process::fork(move || {
        let _l = Listener::bind(&n3).unwrap();
        // SAFETY: as above.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    dying.join().unwrap();
    let removed = shmwire::cleanup().unwrap();
    assert!(removed.iter().any(|r| r.ends_with(&name3)), "{removed:?}");
    assert!(!removed.iter().any(|r| r.ends_with(&name2)));
    drop(again);
}

fn connect_and_accept_errors_and_timeouts() {
    match Client::connect(&unique("nobody")) {
        Err(Error::NotFound) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(Listener::bind("bad/name"), Err(Error::Invalid(_))));
    let name = unique("slow");
    let listener = Listener::bind(&name).unwrap();
    let t = Instant::now();
    assert!(matches!(
        listener.accept_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    // A listener that never accepts: the client times out.
    let t = Instant::now();
    assert!(matches!(
        Client::connect_timeout(&name, Duration::from_millis(150)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(150));
}

fn spawn_returns_the_roles_code() {
    let p = Process::spawn("code", &7i32).unwrap();
    assert_eq!(p.join().unwrap().code(), Some(7));
    let p = Process::spawn("no-such-role", &()).unwrap();
    assert_eq!(p.join().unwrap().code(), Some(2));
}

fn spawn_from_a_program_with_threads() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lock = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (stop, lock) = (stop.clone(), lock.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    *lock.lock().unwrap() += 1; // a lock that is often held at the moment of a fork
                }
            })
        })
        .collect();
    let (a, b) = Pipe::new().unwrap();
    let h = b.to_handle().unwrap();
    let mut kids = Vec::new();
    for _ in 0..5 {
        kids.push(Process::spawn("code", &0i32).unwrap());
    }
    let echo = Process::spawn("echo", &h).unwrap();
    drop(b);
    a.send_bytes(b"threads are fine").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"threads are fine");
    drop(a);
    for k in &mut kids {
        assert!(k.join().unwrap().success());
    }
    assert!(echo.join().unwrap().success());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

fn handles_passed_to_a_spawned_child() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::spawn("echo", &b.to_handle().unwrap()).unwrap();
    drop(b); // the child holds its end now: dropping ours must not close it
    for size in [0usize, 1, 1000, 5 << 20] {
        let msg: Vec<u8> = (0..size).map(|i| i as u8).collect();
        a.send_bytes(&msg).unwrap();
        assert_eq!(a.recv_bytes().unwrap(), msg);
    }
    drop(a); // the child's recv loop ends with Eof
    assert!(
        child
            .join_timeout(Duration::from_secs(10))
            .unwrap()
            .success()
    );
}

fn two_handles_in_one_spawn() {
    let (a1, b1) = Pipe::new().unwrap();
    let (a2, b2) = Pipe::new().unwrap();
    let handles = (b1.to_handle().unwrap(), b2.to_handle().unwrap());
    let child = Process::spawn("sum", &handles).unwrap();
    drop((b1, b2));
    a1.send(&40u64).unwrap();
    a2.send(&2u64).unwrap();
    assert_eq!(a1.recv::<u64>().unwrap(), 42);
    assert!(child.join().unwrap().success());
    assert!(matches!(a2.recv::<u64>(), Err(Error::Eof)));
}

fn named_handle_opens_by_name() {
    let (a, b) = Pipe::builder()
        .name(&unique("named-handle"))
        .build()
        .unwrap();
    let h = b.to_handle().unwrap();
    // The handle is opaque; what it carries is the pipe's name.
    let bytes = postcard::to_allocvec(&h).unwrap();
    let name = unique("named-handle");
    assert!(bytes.windows(name.len()).any(|w| w == name.as_bytes()));
    let child = Process::spawn("echo", &h).unwrap();
    a.send_bytes(b"by name").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"by name");
    drop(b);
    drop(a);
    assert!(
        child
            .join_timeout(Duration::from_secs(10))
            .unwrap()
            .success()
    );
}

fn anonymous_handle_as_bytes_opens_through_the_maker() {
    let (a, b) = Pipe::new().unwrap();
    let bytes = postcard::to_allocvec(&b.to_handle().unwrap()).unwrap();
    // The child gets the handle as opaque bytes: nothing is inherited, it opens it through us (as
    // any process of this user would, through our /proc/PID/fd).
    let child = Process::spawn("from-bytes", &bytes).unwrap();
    a.send(&41u32).unwrap();
    assert_eq!(a.recv::<u32>().unwrap(), 42);
    assert!(child.join().unwrap().success());
    drop(b);
    assert!(matches!(a.recv::<u32>(), Err(Error::Eof)));
    // The maker itself cannot open what it exported, and once it drops the end the handle is dead:
    // another process that opens it then is told the maker no longer holds the pipe.
    let (c, d) = Pipe::new().unwrap();
    let h = d.to_handle().unwrap();
    assert!(matches!(h.open(), Err(Error::OpenedByMaker)));
    drop((c, d));
    let late = Process::fork(move || {
        let r = h.open();
        assert!(matches!(&r, Err(Error::NotFound)), "{r:?}");
    })
    .unwrap();
    assert!(late.join().unwrap().success());
}

fn wait_each_kind_of_timeout() {
    let (a, b) = Pipe::new().unwrap();
    let t = Instant::now();
    assert!(wait(&[&a], Duration::ZERO).unwrap().is_empty());
    assert!(t.elapsed() < Duration::from_millis(50));
    let t = Instant::now();
    assert!(
        wait(&[&a], Some(Duration::from_millis(120)))
            .unwrap()
            .is_empty()
    );
    assert!(t.elapsed() >= Duration::from_millis(120) && t.elapsed() < Duration::from_secs(2));
    let p = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(200));
        b.send(&1u8).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    })
    .unwrap();
    let t = Instant::now();
    assert_eq!(wait(&[&a, &p], None).unwrap(), vec![0]);
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(a.recv::<u8>().unwrap(), 1);
    // Then the process ends (and, holding the other end, closes it).
    let ready = wait(&[&p], None).unwrap();
    assert_eq!(ready, vec![0]);
    assert!(p.join().unwrap().success());
    assert_eq!(
        wait(&[&a], Duration::ZERO).unwrap(),
        vec![0],
        "a closed end is ready (recv says Eof)"
    );
    assert!(matches!(a.recv::<u8>(), Err(Error::Eof)));
}

fn wait_over_64_connections_and_child_exits() {
    const N: usize = 64;
    const KIDS: usize = 8;
    let mut mine = Vec::new();
    let mut kids = Vec::new();
    for k in 0..KIDS {
        let mut theirs = Vec::new();
        for _ in 0..N / KIDS {
            let (a, b) = Pipe::new().unwrap();
            mine.push(a);
            theirs.push(b);
        }
        kids.push(
            Process::fork(move || {
                let mut rng = common::Rng(k as u64 + 1);
                for round in 0..3u32 {
                    for (i, c) in theirs.iter().enumerate() {
                        std::thread::sleep(Duration::from_micros(rng.below(3000)));
                        c.send(&(k as u32, i as u32, round)).unwrap();
                    }
                }
            })
            .unwrap(),
        );
    }
    let mut got = [0u32; N];
    let mut exited = [false; KIDS];
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while done < N + KIDS {
        assert!(Instant::now() < deadline, "wait() stopped making progress");
        let mut objs: Vec<&dyn shmwire::Waitable> = Vec::new();
        let mut index = Vec::new();
        for (i, c) in mine.iter().enumerate() {
            if got[i] < 3 {
                objs.push(c);
                index.push(i);
            }
        }
        for (k, p) in kids.iter().enumerate() {
            if !exited[k] {
                objs.push(p);
                index.push(N + k);
            }
        }
        for r in wait(&objs, Some(Duration::from_secs(5))).unwrap() {
            let which = index[r];
            if which < N {
                let (k, i, round): (u32, u32, u32) = mine[which].recv().unwrap();
                assert_eq!((k as usize) * (N / KIDS) + i as usize, which);
                assert_eq!(round, got[which]);
                got[which] += 1;
                if got[which] == 3 {
                    done += 1;
                }
            } else if !exited[which - N] {
                exited[which - N] = true;
                done += 1;
            }
        }
    }
    for p in &mut kids {
        assert!(p.join().unwrap().success());
    }
}

fn wait_reports_a_killed_peer() {
    let (a, b) = Pipe::new().unwrap();
    let (c, d) = Pipe::new().unwrap();
    let p = Process::fork(move || {
        let _keep = (b, d);
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let pid = p.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        // SAFETY: kills our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        Instant::now()
    });
    let ready = wait(&[&a, &c], None).unwrap();
    let noticed = Instant::now();
    let killed = killer.join().unwrap();
    assert!(!ready.is_empty());
    assert!(
        noticed - killed < shmwire::PROBE_INTERVAL * 20,
        "took {:?}",
        noticed - killed
    );
    assert!(matches!(a.recv::<u8>(), Err(Error::PeerDied)));
    assert!(matches!(c.recv::<u8>(), Err(Error::PeerDied)));
    p.join().unwrap();
}

fn wait_on_a_listener() {
    let name = unique("waited");
    let listener = Listener::bind(&name).unwrap();
    assert!(wait(&[&listener], Duration::ZERO).unwrap().is_empty());
    let child = Process::spawn("client", &name).unwrap();
    assert_eq!(
        wait(&[&listener], Some(Duration::from_secs(10))).unwrap(),
        vec![0]
    );
    let conn = listener.accept().unwrap();
    assert!(conn.recv::<String>().unwrap().starts_with("hello from"));
    drop(conn);
    assert!(child.join().unwrap().success());
}

fn shared_memory_between_exec_d_binaries() {
    let name = unique("block");
    let m = SharedMemory::create(&name, 1 << 20).unwrap();
    assert_eq!(m.len(), 1 << 20);
    assert!(m.to_vec().iter().all(|&b| b == 0));
    m.write(0, b"ping!").unwrap();
    let child = Process::spawn("shm", &name).unwrap();
    assert!(child.join().unwrap().success());
    assert_eq!(&m.to_vec()[..5], b"pong!");
    drop(m); // the last user removes the name
    assert!(matches!(SharedMemory::open(&name), Err(Error::NotFound)));
}

fn shared_memory_errors() {
    let name = unique("block2");
    let m = SharedMemory::create(&name, 100).unwrap();
    assert!(matches!(
        SharedMemory::create(&name, 100),
        Err(Error::Exists)
    ));
    assert!(matches!(
        SharedMemory::create(&unique("zero"), 0),
        Err(Error::Invalid(_))
    ));
    // A pipe is not a block, and a block is not a pipe.
    let (_p, _q) = Pipe::builder()
        .name(&unique("not-a-block"))
        .build()
        .unwrap();
    assert!(matches!(
        SharedMemory::open(&unique("not-a-block")),
        Err(Error::Incompatible)
    ));
    assert!(matches!(Pipe::open(&name, 0), Err(Error::Incompatible)));
    m.unlink().unwrap();
    assert!(matches!(SharedMemory::open(&name), Err(Error::NotFound)));
    assert_eq!(m.len(), 100); // still usable
}

fn spawned_child_dies_with_its_parent() {
    let (r, w) = Pipe::simplex().unwrap();
    let middle = Process::fork(move || {
        let p = Process::spawn("sleep", &()).unwrap();
        w.send(&p.pid()).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    })
    .unwrap();
    let grandchild: u32 = r.recv().unwrap();
    middle.kill().unwrap();
    middle.join().unwrap();
    let t = Instant::now();
    while !gone(grandchild) {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the spawned grandchild outlived its parent"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The socket path of the listener `name`.
fn socket_path(name: &str) -> String {
    format!(
        "/dev/shm/shmwire.{}.l.{name}",
        std::env::var("SHMWIRE_PREFIX").unwrap()
    )
}

/// A Unix stream socket connected to `path`; `Err(errno)` if the connection fails.
fn raw_connect(path: &str, nonblocking: bool) -> Result<OwnedFd, i32> {
    let flags =
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain syscalls with a zeroed, then filled, address.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, flags, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as _;
        for (d, s) in addr.sun_path.iter_mut().zip(path.bytes()) {
            *d = s as _;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) == 0 {
            Ok(fd)
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap())
        }
    }
}

/// What a client says, with the descriptors it passes (the pipe's memfd and two eventfds).
fn send_hello(sock: &OwnedFd, fds: &[i32]) {
    let hello = *b"SHMWp\x01\0\0";
    // SAFETY: a msghdr over valid buffers with one SCM_RIGHTS message.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: hello.as_ptr() as *mut _,
            iov_len: hello.len(),
        };
        let payload = std::mem::size_of_val(fds) as u32;
        let mut cbuf = vec![0u8; libc::CMSG_SPACE(payload) as usize];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.len();
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(payload) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<i32>(), fds.len());
        assert_eq!(libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL), 8);
    }
}

/// Whether `sock` reaches its end with no answer (within 5 s).
fn answered_nothing(sock: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut b = [0u8; 2];
    // SAFETY: valid buffers.
    unsafe {
        libc::poll(&mut p, 1, 5000) == 1
            && libc::read(sock.as_raw_fd(), b.as_mut_ptr().cast(), 2) == 0
    }
}

/// The descriptors of shmwire memfds and of eventfds that `make` opens, by their `/proc` links.
fn new_fds<T>(make: impl FnOnce() -> T) -> (T, Vec<i32>, Vec<i32>) {
    let links = || -> Vec<(i32, String)> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse().ok()?;
                Some((fd, std::fs::read_link(e.path()).ok()?.display().to_string()))
            })
            .collect()
    };
    let before = links();
    let v = make();
    let mut fresh: Vec<(i32, String)> = links()
        .into_iter()
        .filter(|x| !before.contains(x))
        .collect();
    fresh.sort();
    let pick = |p: &str| -> Vec<i32> {
        fresh
            .iter()
            .filter(|(_, l)| l.starts_with(p))
            .map(|(fd, _)| *fd)
            .collect()
    };
    // The pipe's wake-up descriptors, whatever their kind (eventfds, pipes).
    let mut wake = pick("anon_inode:[eventfd]");
    wake.extend(pick("pipe:"));
    wake.sort();
    (v, pick("/memfd:shmwire"), wake)
}

fn listener_refuses_unsafe_descriptors() {
    let name = unique("picky");
    let listener = Listener::bind(&name).unwrap();
    let (_pipe, memfds, efds) = new_fds(|| Pipe::builder().capacity(4096).build().unwrap());
    let (memfd, e0, e1) = (memfds[0], efds[0], efds[1]);
    // SAFETY: plain syscalls; the descriptors are closed when the test process ends.
    let (unsealed, blocking, semaphore, sockets) = unsafe {
        // The same bytes in a memfd that anyone holding it could truncate under us.
        let copy = libc::memfd_create(c"copy".as_ptr(), libc::MFD_CLOEXEC);
        let mut src = std::fs::File::open(format!("/proc/self/fd/{memfd}")).unwrap();
        let mut dst = std::fs::File::from_raw_fd(libc::dup(copy));
        std::io::copy(&mut src, &mut dst).unwrap();
        let blocking = [
            libc::eventfd(0, libc::EFD_CLOEXEC),
            libc::eventfd(0, libc::EFD_CLOEXEC),
        ];
        // Semaphore mode: each read takes 1 from a huge count, so it would stay readable for ever.
        let semaphore = [0, 1].map(|_| {
            libc::eventfd(
                1 << 30,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE,
            )
        });
        let mut p = [0; 2];
        assert_eq!(
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                p.as_mut_ptr()
            ),
            0
        );
        (copy, blocking, semaphore, p)
    };
    let cases = [
        ("an unsealed memfd", [unsealed, e0, e1]),
        ("blocking eventfds", [memfd, blocking[0], blocking[1]]),
        ("semaphore eventfds", [memfd, semaphore[0], semaphore[1]]),
        (
            "sockets for wake-up descriptors",
            [memfd, sockets[0], sockets[1]],
        ),
        ("a memfd for a wake-up descriptor", [memfd, e0, memfd]),
    ];
    let path = socket_path(&name);
    for (what, fds) in cases {
        let sock = raw_connect(&path, false).unwrap();
        send_hello(&sock, &fds);
        let r = listener.accept_timeout(Duration::from_millis(300));
        assert!(
            matches!(r, Err(Error::Timeout)),
            "{what} was accepted: {r:?}"
        );
        assert!(answered_nothing(&sock), "{what}");
    }
    // An honest client is accepted after them.
    let child = Process::spawn("client", &name).unwrap();
    let conn = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        conn.recv::<String>().unwrap(),
        format!("hello from {}", child.pid())
    );
    drop(conn);
    assert!(child.join().unwrap().success());
}

fn client_refuses_a_listener_of_another_user() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        println!("(needs root to run a listener as another user: not run) ");
        return;
    }
    let name = unique("foreign");
    let n = name.clone();
    let listener = Process::fork(move || {
        // SAFETY: plain syscalls: become `nobody`.
        unsafe {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
        let l = Listener::bind(&n).unwrap();
        let _ = l.accept_timeout(Duration::from_secs(3));
    })
    .unwrap();
    let path = socket_path(&name);
    let t = Instant::now();
    while !std::path::Path::new(&path).exists() {
        assert!(t.elapsed() < Duration::from_secs(5), "no listener");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = Client::connect_timeout(&name, Duration::from_secs(2));
    assert!(
        matches!(&r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied),
        "{r:?}"
    );
    assert!(listener.join().unwrap().success());
}

fn accept_timeout_is_bounded_by_silent_clients() {
    let name = unique("silent");
    let listener = Listener::bind(&name).unwrap();
    let path = socket_path(&name);
    let silent: Vec<OwnedFd> = (0..3).map(|_| raw_connect(&path, false).unwrap()).collect();
    let t = Instant::now();
    let r = listener.accept_timeout(Duration::from_millis(10));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "took {:?}",
        t.elapsed()
    );
    // An honest client behind them is accepted at once.
    let child = Process::spawn("client", &name).unwrap();
    let t = Instant::now();
    let conn = listener.accept_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        conn.recv::<String>().unwrap(),
        format!("hello from {}", child.pid())
    );
    drop(conn);
    assert!(child.join().unwrap().success());
    drop(silent);
}

fn connect_list_and_bind_are_bounded_when_the_backlog_is_full() {
    let name = unique("full");
    let _listener = Listener::bind(&name).unwrap();
    let path = socket_path(&name);
    // Fill its backlog with connections nobody accepts.
    let mut queued = Vec::new();
    loop {
        match raw_connect(&path, true) {
            Ok(s) => queued.push(s),
            Err(libc::EAGAIN) => break,
            Err(e) => panic!("errno {e}"),
        }
        assert!(queued.len() < 100_000);
    }
    let n = name.clone();
    // In a child, so that a hang fails the test rather than eating its time limit.
    let child = Process::fork(move || {
        let t = Instant::now();
        let r = Client::connect_timeout(&n, Duration::from_millis(200));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
        let listed = shmwire::segment::list().unwrap();
        assert!(
            listed.iter().any(|s| s.name.ends_with(&n) && !s.is_stale()),
            "{listed:?}"
        );
        let again = Listener::bind(&n);
        assert!(matches!(&again, Err(Error::Exists)), "{again:?}");
    })
    .unwrap();
    match child.join_timeout(Duration::from_secs(10)) {
        Ok(status) => assert!(status.success()),
        Err(e) => {
            child.kill().unwrap();
            panic!("connect, list or bind hung on a full backlog: {e:?}");
        }
    }
    drop(queued);
}

fn accept_moves_on_when_a_client_leaves_before_the_answer() {
    let name = unique("leaver");
    let listener = Listener::bind(&name).unwrap();
    let (_pipe, memfds, efds) = new_fds(|| Pipe::new().unwrap());
    // A client says hello with sound descriptors, and is gone before the listener answers.
    let sock = raw_connect(&socket_path(&name), false).unwrap();
    send_hello(&sock, &[memfds[0], efds[0], efds[1]]);
    drop(sock);
    let child = Process::spawn("client", &name).unwrap();
    let conn = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        conn.recv::<String>().unwrap(),
        format!("hello from {}", child.pid())
    );
    drop(conn);
    assert!(child.join().unwrap().success());
}

/// Whether `sock` sees its peer hang up (the end of the stream, with nothing to read) within `limit`.
fn hung_up_within(sock: &OwnedFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut b = [0u8; 8];
    // SAFETY: valid buffers.
    unsafe {
        libc::poll(&mut p, 1, limit.as_millis() as i32) == 1
            && libc::read(sock.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) == 0
    }
}

/// Whether the listener answered `sock`'s introduction ("OK") within 5 s.
fn answered_ok(sock: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut b = [0u8; 2];
    // SAFETY: valid buffers.
    unsafe {
        libc::poll(&mut p, 1, 5000) == 1
            && libc::read(sock.as_raw_fd(), b.as_mut_ptr().cast(), 2) == 2
            && &b == b"OK"
    }
}

/// Joins `p` within `limit`, or kills it and fails with `what`.
fn join_or_fail(p: &Process, limit: Duration, what: &str) {
    match p.join_timeout(limit) {
        Ok(status) => assert!(status.success(), "{what}: {status:?}"),
        Err(e) => {
            p.kill().unwrap();
            let _ = p.join();
            panic!("{what}: still running after {limit:?} ({e:?})");
        }
    }
}

fn a_forked_child_holds_no_half_accepted_client() {
    let name = unique("halfway");
    let listener = Listener::bind(&name).unwrap();
    // A client that connects and says nothing yet: accepted, and kept for the next call.
    let slow = raw_connect(&socket_path(&name), false).unwrap();
    let r = listener.accept_timeout(Duration::from_millis(100));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    // A worker forked meanwhile, which has nothing to do with the listener.
    let (stop_r, stop_w) = Pipe::simplex().unwrap();
    let worker = Process::fork(move || {
        let _ = stop_r.recv_timeout::<()>(Duration::from_secs(20));
    })
    .unwrap();
    drop(listener);
    let ended = hung_up_within(&slow, Duration::from_secs(2));
    stop_w.send(&()).unwrap();
    assert!(worker.join().unwrap().success());
    assert!(
        ended,
        "the listener is gone but the waiting client's connection stays open: the worker holds it"
    );
}

fn accept_keeps_clients_whose_introductions_came_together() {
    let name = unique("together");
    let listener = Listener::bind(&name).unwrap();
    let path = socket_path(&name);
    let (_pipes, memfds, wake) = new_fds(|| (Pipe::new().unwrap(), Pipe::new().unwrap()));
    let socks: Vec<OwnedFd> = (0..2).map(|_| raw_connect(&path, false).unwrap()).collect();
    // Both accepted, neither introduced yet.
    let r = listener.accept_timeout(Duration::from_millis(100));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    // Both introductions arrive before the next call.
    for (i, s) in socks.iter().enumerate() {
        send_hello(s, &[memfds[i], wake[2 * i], wake[2 * i + 1]]);
    }
    let first = listener.accept_timeout(Duration::from_secs(5));
    assert!(first.is_ok(), "{first:?}");
    let second = listener.accept_timeout(Duration::from_secs(2));
    assert!(
        second.is_ok(),
        "the second client, introduced with the first, was dropped: {second:?}"
    );
    for (i, s) in socks.iter().enumerate() {
        assert!(answered_ok(s), "client {i} got no answer");
    }
}

fn accept_timeout_is_bounded_while_another_thread_accepts() {
    let name = unique("two-threads");
    let n = name.clone();
    // In a child (it starts a thread), so that a hang fails the test instead of eating its limit.
    let child = Process::fork(move || {
        let listener = std::sync::Arc::new(Listener::bind(&n).unwrap());
        let l = listener.clone();
        let blocked = std::thread::spawn(move || l.accept().map(|_| ()));
        std::thread::sleep(Duration::from_millis(100)); // that thread waits in accept
        let t = Instant::now();
        let r = listener.accept_timeout(Duration::from_millis(100));
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
        // A child forked now, whose closure borrows the listener: its calls return (with an error:
        // the socket is not its own) rather than hang.
        let borrowed = &*listener;
        let grandchild = Process::fork(|| {
            let _ = borrowed.accept_timeout(Duration::from_millis(100));
        })
        .unwrap();
        join_or_fail(
            &grandchild,
            Duration::from_secs(3),
            "a child borrowing the listener",
        );
        // A client for the waiting thread, so that it ends and the listener is dropped.
        let conn = Client::connect_timeout(&n, Duration::from_secs(5)).unwrap();
        drop(conn);
        blocked.join().unwrap().unwrap();
    })
    .unwrap();
    join_or_fail(
        &child,
        Duration::from_secs(10),
        "accept_timeout while another thread is in accept",
    );
}

fn accept_timeout_is_bounded_under_a_stream_of_clients() {
    let name = unique("stream");
    let listener = Listener::bind(&name).unwrap();
    // Two children keep the listener's backlog full: each connects without a pause, keeps its last
    // 500 connections open (silent clients the listener keeps waiting for) and closes older ones.
    let floods: Vec<Process> = (0..2)
        .map(|_| {
            let path = socket_path(&name);
            Process::fork(move || {
                let mut open = std::collections::VecDeque::new();
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(5) {
                    match raw_connect(&path, true) {
                        Ok(s) => {
                            open.push_back(s);
                            if open.len() > 500 {
                                open.pop_front();
                            }
                        }
                        Err(_) => std::thread::yield_now(),
                    }
                }
            })
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let r = listener.accept_timeout(Duration::from_millis(50));
    let took = t.elapsed();
    for f in &floods {
        f.kill().unwrap();
        let _ = f.join();
    }
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(
        took < Duration::from_millis(500),
        "accept_timeout(50 ms) took {took:?}"
    );
}

fn reclaiming_a_stale_name_has_one_winner() {
    let name = unique("contested");
    let path = socket_path(&name);
    let rounds = if common::long() { 2000 } else { 200 };
    for round in 0..rounds {
        // A stale socket: bound, then closed without removing its name, as a listener that died
        // leaves it.
        {
            let _ = std::fs::remove_file(&path);
            let s = std::os::unix::net::UnixListener::bind(&path).unwrap();
            drop(s);
        }
        let barrier = shmwire::Barrier::new(4).unwrap();
        let done = shmwire::Barrier::new(3).unwrap();
        let (b, d, n) = (&barrier, &done, &name);
        // Two processes reclaim the name at once; a third cleans up stale names meanwhile. A winner
        // keeps its listener until both have their outcome (else the other could bind the name
        // after it, rightly).
        let binders: Vec<Process> = (0..2)
            .map(|_| {
                Process::fork_with(move || -> i32 {
                    b.wait().unwrap();
                    let (l, code) = match Listener::bind(n) {
                        Ok(l) => {
                            let code = match l.accept_timeout(Duration::from_secs(3)) {
                                Ok(_) => 0,
                                Err(_) => 4,
                            };
                            (Some(l), code)
                        }
                        Err(Error::Exists) => (None, 2),
                        Err(e) => {
                            println!("bind: {e:?}");
                            (None, 3)
                        }
                    };
                    d.wait_timeout(Duration::from_secs(10)).unwrap();
                    drop(l);
                    code
                })
                .unwrap()
            })
            .collect();
        let cleaner = Process::fork(move || {
            b.wait().unwrap();
            shmwire::cleanup().unwrap();
        })
        .unwrap();
        barrier.wait().unwrap();
        // Reach whichever won.
        let t = Instant::now();
        let conn = loop {
            match Client::connect_timeout(&name, Duration::from_secs(3)) {
                Ok(c) => break Some(c),
                Err(Error::Io(_) | Error::NotFound) if t.elapsed() < Duration::from_secs(3) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(_) => break None,
            }
        };
        done.wait_timeout(Duration::from_secs(10)).unwrap();
        let mut codes: Vec<i32> = binders
            .iter()
            .map(|p| p.join().unwrap().code().unwrap_or(-1))
            .collect();
        codes.sort();
        assert!(cleaner.join().unwrap().success());
        assert_eq!(
            codes,
            [0, 2],
            "round {round}: each binder's outcome (0: won and reached, 2: name taken, 3: other \
             error, 4: won but nobody reached it); a client connected: {}",
            conn.is_some()
        );
        drop(conn);
    }
}

/// A binder finds the name's socket stale; a cleanup removes that socket before the binder takes
/// the reclaim lock, so under the lock the binder finds no file at all; a new listener links itself
/// at the free name (no lock needed for a free name) just then. The binder must not remove that
/// live listener's file (two winners: both binds `Ok`, one of them unreachable).
fn a_reclaimer_never_removes_a_listener_that_came_after_its_check() {
    use shmwire::hooks::{__arm, __paused, __resume, Point};
    let name = unique("reclaim-race");
    let path = socket_path(&name);
    {
        let _ = std::fs::remove_file(&path);
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // stale: nobody listens
    }
    __arm(Point::ReclaimFound, 0, 0);
    let n = name.clone();
    let first = std::thread::spawn(move || Listener::bind(&n));
    let paused_at = |p: Point, within: Duration| {
        let t = Instant::now();
        while !__paused(p) && !first.is_finished() && t.elapsed() < within {
            std::thread::sleep(Duration::from_millis(1));
        }
        __paused(p)
    };
    assert!(
        paused_at(Point::ReclaimFound, Duration::from_secs(10)),
        "the binder found the stale socket"
    );
    // The cleanup removes the stale socket (under the reclaim lock, rightly).
    let removed = shmwire::cleanup().unwrap();
    assert!(removed.iter().any(|r| r.ends_with(&name)), "{removed:?}");
    __arm(Point::ReclaimChecked, 0, 0);
    __resume(Point::ReclaimFound);
    // The binder now holds the lock and finds no file; a new listener takes the free name.
    let at_check = paused_at(Point::ReclaimChecked, Duration::from_secs(2));
    let second = Listener::bind(&name);
    if at_check {
        __resume(Point::ReclaimChecked);
    }
    let first = first.join().unwrap();
    shmwire::hooks::__disarm_all();
    let winners = [first.is_ok(), second.is_ok()];
    assert_eq!(
        winners.iter().filter(|w| **w).count(),
        1,
        "one winner (first: {first:?}, second: {second:?})"
    );
    // The winner is reachable at the name.
    let l = first.or(second).unwrap();
    let n = name.clone();
    let p = Process::fork(move || {
        Client::connect_timeout(&n, Duration::from_secs(5))
            .unwrap()
            .send(&1u8)
            .unwrap();
    })
    .unwrap();
    let c = l.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(c.recv_timeout::<u8>(Duration::from_secs(10)).unwrap(), 1);
    assert!(p.join().unwrap().success());
}

/// A sealed memfd laid out as a pipe segment (4 KiB rings) whose header says `n_slots` slots.
fn pipe_memory_with_slots(n_slots: u32) -> OwnedFd {
    let kind_offset = (256 + n_slots as usize * 16).div_ceil(4096) * 4096;
    let size = kind_offset + 4096 + 2 * 4096;
    let mut hdr = Vec::new();
    hdr.extend_from_slice(b"SHMWIRE\0"); // magic
    hdr.extend_from_slice(&1u32.to_ne_bytes()); // layout version
    hdr.extend_from_slice(&1u32.to_ne_bytes()); // kind: pipe
    hdr.extend_from_slice(&(size as u64).to_ne_bytes());
    hdr.extend_from_slice(&0u64.to_ne_bytes()); // fingerprint
    hdr.extend_from_slice(&std::process::id().to_ne_bytes());
    hdr.extend_from_slice(&n_slots.to_ne_bytes());
    let mut params = [0u64; 8];
    params[0] = 4096; // ring capacity
    params[1] = 1; // duplex
    for p in params {
        hdr.extend_from_slice(&p.to_ne_bytes());
    }
    hdr.extend_from_slice(&(kind_offset as u64).to_ne_bytes());
    hdr.extend_from_slice(&0x5245_4459u32.to_ne_bytes()); // ready
    // SAFETY: plain syscalls on a new memfd of ours.
    unsafe {
        let fd = libc::memfd_create(
            c"hostile".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        );
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        assert_eq!(libc::ftruncate(fd.as_raw_fd(), size as i64), 0);
        assert_eq!(
            libc::pwrite(fd.as_raw_fd(), hdr.as_ptr().cast(), hdr.len(), 0),
            hdr.len() as isize
        );
        assert_eq!(
            libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW
            ),
            0
        );
        fd
    }
}

fn listener_survives_a_pipe_of_more_than_64_slots() {
    let name = unique("slots");
    let listener = Listener::bind(&name).unwrap();
    let (_pipe, _, wake) = new_fds(|| Pipe::new().unwrap());
    let path = socket_path(&name);
    let client = Process::fork(move || {
        let memfd = pipe_memory_with_slots(256);
        // Hold the tokens of slots 0 to 63, as 64 live participants would: a process that joins
        // now gets slot 64 or above, which roles (64-bit masks) cannot name.
        for i in 0..64i64 {
            // SAFETY: an OFD lock on one byte of our own memfd, with a zeroed, then filled, flock.
            unsafe {
                let mut fl: libc::flock = std::mem::zeroed();
                fl.l_type = libc::F_WRLCK as _;
                fl.l_whence = libc::SEEK_SET as _;
                fl.l_start = (1 << 44) + i;
                fl.l_len = 1;
                assert_eq!(libc::fcntl(memfd.as_raw_fd(), libc::F_OFD_SETLK, &fl), 0);
            }
        }
        let sock = raw_connect(&path, false).unwrap();
        send_hello(&sock, &[memfd.as_raw_fd(), wake[0], wake[1]]);
        assert!(answered_nothing(&sock));
    })
    .unwrap();
    let r = listener.accept_timeout(Duration::from_secs(2));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(client.join().unwrap().success());
    // The listener lives on: an honest client is accepted.
    let child = Process::spawn("client", &name).unwrap();
    let conn = listener.accept_timeout(Duration::from_secs(10)).unwrap();
    assert!(conn.recv::<String>().unwrap().starts_with("hello from"));
    drop(conn);
    assert!(child.join().unwrap().success());
}

fn listener_refuses_rings_above_its_maximum() {
    let name = unique("big-rings");
    let listener = Listener::bind(&name).unwrap();
    // The documented maximum is 64 MiB a ring (so no frame from a client exceeds 32 MiB).
    for (cap, accepted) in [(128usize << 20, false), (64 << 20, true)] {
        let (_pipe, memfds, wake) = new_fds(|| Pipe::builder().capacity(cap).build().unwrap());
        let sock = raw_connect(&socket_path(&name), false).unwrap();
        send_hello(&sock, &[memfds[0], wake[0], wake[1]]);
        let r = listener.accept_timeout(Duration::from_millis(500));
        if accepted {
            assert_eq!(r.unwrap().capacity(), cap);
            assert!(answered_ok(&sock));
        } else {
            assert!(
                matches!(r, Err(Error::Timeout)),
                "rings of {cap} bytes were accepted: {r:?}"
            );
            assert!(answered_nothing(&sock));
        }
    }
}

/// Sets a trap on a wake-up descriptor we share with the listener: empty (`full` false) or full,
/// then in blocking mode, so that a read (empty) or a write (full) through a shared description
/// would block. Returns the flags it had.
fn trap(fd: i32, full: bool) -> i32 {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    let eventfd = link.to_string_lossy().contains("eventfd");
    let mut buf = [0u8; 4096];
    // SAFETY: plain syscalls on a descriptor of ours, with valid buffers.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        while libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        if full && eventfd {
            let max = 0xffff_ffff_ffff_fffeu64.to_ne_bytes();
            assert_eq!(libc::write(fd, max.as_ptr().cast(), 8), 8);
        } else if full {
            while libc::write(fd, buf.as_ptr().cast(), buf.len()) > 0 {}
        }
        libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        fl
    }
}

fn wake_descriptors_of_a_client_cannot_block_the_listener() {
    let name = unique("trap");
    let ((a, b), memfds, wake) = new_fds(|| Pipe::new().unwrap());
    let (to_l_r, to_l_w) = Pipe::simplex().unwrap();
    let (from_l_r, from_l_w) = Pipe::simplex().unwrap();
    let n = name.clone();
    let listener = Process::fork(move || {
        let l = Listener::bind(&n).unwrap();
        from_l_w.send(&()).unwrap(); // bound
        let conn = l.accept_timeout(Duration::from_secs(10)).unwrap();
        from_l_w.send(&()).unwrap(); // accepted
        to_l_r.recv::<()>().unwrap(); // the trap is set
        let t = Instant::now();
        assert!(
            wait(&[&conn], Duration::from_millis(300))
                .unwrap()
                .is_empty()
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        // The client polls for what we send: each send signals its wake-up descriptor.
        for i in 0..100u32 {
            conn.send(&i).unwrap();
        }
        from_l_w.send(&()).unwrap(); // done
        to_l_r.recv::<()>().unwrap(); // keep the end until the client has read
    })
    .unwrap();
    from_l_r.recv::<()>().unwrap();
    let sock = raw_connect(&socket_path(&name), false).unwrap();
    send_hello(&sock, &[memfds[0], wake[0], wake[1]]);
    from_l_r.recv::<()>().unwrap();
    drop(a); // the listener holds end 0 now
    // We read ring 0 (signalled through wake[0]) and poll it; the listener reads ring 1.
    assert!(!b.prepare_poll().unwrap());
    let flags = [trap(wake[1], false), trap(wake[0], true)];
    to_l_w.send(&()).unwrap();
    let done = from_l_r.recv_timeout::<()>(Duration::from_secs(10));
    // Our own description of them is ours again (we write them too: dropping `b` wakes sleepers).
    for (fd, fl) in [wake[1], wake[0]].into_iter().zip(flags) {
        // SAFETY: plain syscall on a descriptor of ours.
        unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
    }
    if let Err(e) = done {
        listener.kill().unwrap();
        let _ = listener.join();
        panic!("the listener blocked on a wake-up descriptor its client controls ({e:?})");
    }
    for i in 0..100u32 {
        assert_eq!(b.recv::<u32>().unwrap(), i);
    }
    to_l_w.send(&()).unwrap();
    assert!(listener.join().unwrap().success());
}

fn wait_on_a_listener_ignores_clients_that_hang_up() {
    let name = unique("hang-up");
    let listener = Listener::bind(&name).unwrap();
    // A client that connects and hangs up (as `shmwire ls` probing the name does).
    drop(raw_connect(&socket_path(&name), false).unwrap());
    let ready = wait(&[&listener], Duration::from_millis(300)).unwrap();
    assert!(ready.is_empty(), "ready with nobody to accept");
    let listed = shmwire::segment::list().unwrap();
    assert!(
        listed
            .iter()
            .any(|s| s.name.ends_with(&name) && !s.is_stale())
    );
    let ready = wait(&[&listener], Duration::from_millis(300)).unwrap();
    assert!(
        ready.is_empty(),
        "ready with nobody to accept, after a probe"
    );
    // An honest client: ready, and the connection is there at once.
    let child = Process::spawn("client", &name).unwrap();
    assert_eq!(
        wait(&[&listener], Some(Duration::from_secs(10))).unwrap(),
        vec![0]
    );
    let conn = listener.accept_timeout(Duration::ZERO).unwrap();
    assert!(conn.recv::<String>().unwrap().starts_with("hello from"));
    drop(conn);
    assert!(child.join().unwrap().success());
}

fn to_handle_refuses_an_end_holding_part_of_a_message() {
    let (a, b) = Pipe::new().unwrap();
    // The first piece of a 3000-byte message (HEAD: its total, then 8 bytes), and no more yet.
    let head = [3000u64.to_le_bytes(), [1; 8]].concat();
    a.__inject_raw_frame(2, 16, &head).unwrap();
    let r = b.recv_bytes_timeout(Duration::from_millis(50));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    // What arrived is kept in this process: handing the end over now would lose it.
    let h = b.to_handle();
    assert!(matches!(h, Err(Error::Misuse)), "{h:?}");
    a.__inject_raw_frame(3, 2992, &[1; 2992]).unwrap(); // the rest (CONT)
    assert_eq!(b.recv_bytes().unwrap(), vec![1u8; 3000]);
    // Nothing kept: the end goes to a spawned child, which echoes.
    let child = Process::spawn("echo", &b.to_handle().unwrap()).unwrap();
    drop(b);
    a.send_bytes(b"whole").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"whole");
    drop(a);
    assert!(child.join().unwrap().success());
}

fn to_handle_refuses_an_end_with_messages_set_aside() {
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let child = Process::fork(move || {
        std::thread::sleep(Duration::from_millis(300)); // the parent is blocked sending to us
        // Our large message fills the other ring too: while it waits for room, this end takes the
        // parent's messages into a private backlog, so that both sides move on.
        a.send_bytes(&vec![7u8; 64 << 10]).unwrap();
        let h = a.to_handle();
        assert!(matches!(h, Err(Error::Misuse)), "{h:?}");
        for i in 0..40u8 {
            assert_eq!(a.recv_bytes().unwrap(), [i; 512]);
        }
        a.to_handle().unwrap();
    })
    .unwrap();
    for i in 0..40u8 {
        b.send_bytes(&[i; 512]).unwrap();
    }
    assert_eq!(b.recv_bytes().unwrap(), vec![7u8; 64 << 10]);
    assert!(child.join().unwrap().success());
}

fn listener_incoming_yields_connections() {
    let name = unique("incoming");
    let listener = Listener::bind(&name).unwrap();
    let clients: Vec<Process> = (0..3u32)
        .map(|k| {
            let n = name.clone();
            Process::fork(move || {
                let c = Client::connect_timeout(&n, Duration::from_secs(10)).unwrap();
                c.send(&k).unwrap();
                assert_eq!(c.recv::<u32>().unwrap(), k + 100);
            })
            .unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    for conn in listener.incoming().take(3) {
        let conn = conn.unwrap();
        let k: u32 = conn.recv().unwrap();
        conn.send(&(k + 100)).unwrap();
        seen.push(k);
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2]);
    for c in clients {
        assert!(c.join().unwrap().success());
    }
}
