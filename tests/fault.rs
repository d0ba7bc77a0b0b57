//! Failure: peers killed or stopped mid-call, hostile bytes in shared memory, process lifetimes.

mod common;

use common::{checksum, gone, within};
use shmwire::{Error, PROBE_INTERVAL, Pipe, Process};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

/// The documented bound for noticing a dead peer: two probe intervals. Tests allow 10x.
fn bound() -> Duration {
    PROBE_INTERVAL * 2 * 10
}

fn main() {
    common::run(tests![
        killed_peer_wakes_blocked_recv,
        killed_peer_wakes_blocked_send_on_full_ring,
        killed_peer_wakes_blocked_poll,
        messages_sent_before_death_are_delivered,
        killed_mid_stream_is_peer_died,
        stopped_peer_is_alive_and_delivers_after_sigcont,
        stopped_peer_with_full_ring_times_out,
        send_bytes_timeout_gives_up_on_a_stopped_reader,
        received_frames_larger_than_memory_are_too_large_not_an_abort,
        dead_readers_claim_is_taken_over,
        writer_killed_between_header_and_tail_loses_nothing,
        graceful_close_after_a_death_is_eof,
        corrupted_header_is_refused,
        hostile_frame_lengths_are_corrupt,
        hostile_counters_are_corrupt,
        hostile_streamed_totals_are_not_allocated_up_front,
        scribbled_ring_never_yields_an_invalid_string,
        named_objects_of_another_user_or_wider_mode_are_refused,
        sealed_pipe_memory_cannot_be_resized,
        cleanup_removes_only_dead_segments,
        segments_are_private_to_the_user,
        failed_allocation_is_an_error_and_leaves_nothing,
        child_dies_with_its_parent,
        panic_in_child_is_code_101_with_message,
        process_join_timeout_terminate_kill,
    ]);
}

fn sleeper(end: shmwire::Connection) -> Process {
    Process::fork(move || {
        let _keep = end;
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap()
}

/// Kills `p` after `after` from a helper thread and returns the instant of the kill.
fn kill_later(pid: u32, after: Duration) -> std::thread::JoinHandle<Instant> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        Instant::now()
    })
}

fn killed_peer_wakes_blocked_recv() {
    let (a, b) = Pipe::new().unwrap();
    let child = sleeper(b);
    let killer = kill_later(child.pid(), Duration::from_millis(200));
    let r = a.recv::<u32>();
    let noticed = Instant::now();
    let killed_at = killer.join().unwrap();
    assert!(matches!(r, Err(Error::PeerDied)), "{r:?}");
    assert!(
        noticed - killed_at <= bound(),
        "noticed after {:?}",
        noticed - killed_at
    );
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(child.exitcode(), Some(-9));
    // It stays an error, and sending says so too.
    assert!(matches!(a.recv::<u32>(), Err(Error::PeerDied)));
    assert!(matches!(a.send(&1u8), Err(Error::PeerDied)));
}

fn killed_peer_wakes_blocked_send_on_full_ring() {
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let child = sleeper(b);
    // Fill the ring until a send would block.
    while a
        .send_bytes_timeout(&[7u8; 512], Duration::from_millis(50))
        .is_ok()
    {}
    let killer = kill_later(child.pid(), Duration::from_millis(200));
    let r = a.send_bytes(&[7u8; 512]);
    let noticed = Instant::now();
    let killed_at = killer.join().unwrap();
    assert!(matches!(r, Err(Error::PeerDied)), "{r:?}");
    assert!(noticed - killed_at <= bound());
    child.join().unwrap();
}

fn killed_peer_wakes_blocked_poll() {
    let (a, b) = Pipe::new().unwrap();
    let child = sleeper(b);
    let killer = kill_later(child.pid(), Duration::from_millis(100));
    let r = a.poll(None);
    let noticed = Instant::now();
    assert!(matches!(r, Err(Error::PeerDied)), "{r:?}");
    assert!(noticed - killer.join().unwrap() <= bound());
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGKILL));
}

fn messages_sent_before_death_are_delivered() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        for i in 0..100u32 {
            b.send(&i).unwrap();
        }
        // SAFETY: the child kills itself, as a crash would.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    for i in 0..100u32 {
        assert_eq!(a.recv::<u32>().unwrap(), i);
    }
    assert!(matches!(a.recv::<u32>(), Err(Error::PeerDied)));
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGKILL));
}

fn killed_mid_stream_is_peer_died() {
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let child = Process::fork(move || {
        // A message far larger than the ring: it blocks once the ring is full, and is killed there.
        b.send_bytes(&vec![1u8; 10 << 20]).unwrap();
    })
    .unwrap();
    // Part of the message has arrived (its first piece announces the whole size; the ring holds a
    // few KiB of it, so the sender is blocked in the middle), and is kept for the next call.
    let mut small = [0u8; 16];
    let r = a.recv_bytes_into_timeout(&mut small, Duration::from_secs(10));
    assert!(
        matches!(r, Err(Error::BufferTooShort { needed }) if needed == 10 << 20),
        "{r:?}"
    );
    child.kill().unwrap();
    // Killed, not finished: it was blocked mid-stream.
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGKILL));
    // The first pieces arrived, the rest never will: an error, not a hang and not a torn message.
    let r = a.recv_bytes();
    assert!(
        matches!(r, Err(Error::PeerDied)),
        "{:?}",
        r.map(|v| v.len())
    );
}

fn stopped_peer_is_alive_and_delivers_after_sigcont() {
    let (a, b) = Pipe::new().unwrap();
    let child = Process::fork(move || {
        let _go: () = b.recv().unwrap();
        for i in 0..1000u32 {
            b.send(&i).unwrap();
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    })
    .unwrap();
    a.send(&()).unwrap();
    std::thread::sleep(Duration::from_millis(12));
    child.signal(libc::SIGSTOP).unwrap();
    let mut got = Vec::new();
    // Drain what was sent before the stop, then time out (several probe intervals: alive, not dead).
    loop {
        match a.recv_timeout::<u32>(PROBE_INTERVAL * 4) {
            Ok(x) => got.push(x),
            Err(Error::Timeout) => break,
            Err(e) => panic!("a stopped peer must look alive, got {e:?}"),
        }
    }
    assert!(got.len() < 1000, "the child was not stopped in time");
    child.signal(libc::SIGCONT).unwrap();
    while let Ok(x) = a.recv::<u32>() {
        got.push(x);
    }
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert!(child.join().unwrap().success());
}

fn stopped_peer_with_full_ring_times_out() {
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let child = Process::fork(move || {
        let _go: () = b.recv().unwrap();
        let mut n = 0u64;
        while let Ok(m) = b.recv_bytes() {
            n += m.len() as u64;
        }
        assert_eq!(n, 512 * 40);
    })
    .unwrap();
    child.signal(libc::SIGSTOP).unwrap();
    a.send(&()).unwrap();
    let mut sent = 0;
    let r = loop {
        match a.send_bytes_timeout(&[1u8; 512], PROBE_INTERVAL * 3) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(r, Error::Timeout), "{r:?}");
    child.signal(libc::SIGCONT).unwrap();
    for _ in sent..40 {
        a.send_bytes(&[1u8; 512]).unwrap();
    }
    drop(a);
    assert!(child.join().unwrap().success());
}

fn dead_readers_claim_is_taken_over() {
    let (a, b) = Pipe::new().unwrap();
    let b_ref = &b;
    // The child blocks reading a copy of `b` (holding its read claim) and is killed there.
    let child = Process::fork(|| {
        let _ = b_ref.recv::<u8>();
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(
        b.recv_timeout::<u8>(Duration::ZERO),
        Err(Error::Busy)
    ));
    child.kill().unwrap();
    child.join().unwrap();
    a.send(&3u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 3);
}

fn writer_killed_between_header_and_tail_loses_nothing() {
    let (a, b) = Pipe::new().unwrap();
    let a_ref = &a;
    // A holder of the writing end publishes a frame and is killed before it stores the ring's tail.
    let die_mid_send =
        |msg: &'static [u8]| Process::fork(move || a_ref.__send_bytes_then_die_before_tail(msg));
    let child = die_mid_send(b"first").unwrap();
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGKILL));
    let next = || {
        b.recv_bytes_timeout(Duration::from_secs(5))
            .map(String::from_utf8)
    };
    // The reader took the frame before the next writer came: that writer must not write behind it.
    assert_eq!(next().unwrap().unwrap(), "first");
    a.send_bytes(b"second").unwrap();
    assert_eq!(next().unwrap().unwrap(), "second");
    // The frame is still unread when the next writer comes: that writer must not write over it.
    let child = die_mid_send(b"third").unwrap();
    assert_eq!(child.join().unwrap().signal(), Some(libc::SIGKILL));
    a.send_bytes(b"fourth").unwrap();
    assert_eq!(next().unwrap().unwrap(), "third");
    assert_eq!(next().unwrap().unwrap(), "fourth");
    assert!(!b.poll(Duration::ZERO).unwrap());
    // And the ring goes on.
    for i in 0..10_000u32 {
        a.send(&i).unwrap();
        assert_eq!(b.recv::<u32>().unwrap(), i);
    }
}

fn graceful_close_after_a_death_is_eof() {
    let name = format!("reborn-{}", std::process::id());
    let (a, b) = Pipe::builder().name(&name).build().unwrap();
    // A first holder of end 1 opens it (then holds it alone) and dies.
    let n = name.clone();
    let first = Process::fork(move || {
        let end = Pipe::open(&n, 1).unwrap();
        end.send(&1u8).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    assert_eq!(a.recv::<u8>().unwrap(), 1);
    drop(b);
    first.kill().unwrap();
    first.join().unwrap();
    assert!(matches!(a.recv::<u8>(), Err(Error::PeerDied)));
    // A second holder opens it again, sends, and closes it gracefully: that is the end of the
    // stream, not a death.
    let n = name.clone();
    let second = Process::fork(move || {
        let end = Pipe::open(&n, 1).unwrap();
        end.send(&2u8).unwrap();
    })
    .unwrap();
    assert!(second.join().unwrap().success());
    assert_eq!(a.recv::<u8>().unwrap(), 2);
    let r = a.recv::<u8>();
    assert!(matches!(r, Err(Error::Eof)), "{r:?}");
    let r = a.send(&3u8);
    assert!(matches!(r, Err(Error::BrokenPipe)), "{r:?}");
}

/// This process's peak resident set, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn hostile_streamed_totals_are_not_allocated_up_front() {
    // A first piece announcing 512 MiB (or 1 TiB) followed by nothing of the kind: the reader must
    // not allocate (let alone zero) the announced size, must not jam on it, and goes on to the next
    // message.
    for total in [512u64 << 20, 1 << 40] {
        let (a, b) = Pipe::builder().capacity(8192).build().unwrap();
        let child = Process::fork(move || {
            let before = vm_hwm_kib();
            let r = b.recv_bytes_timeout(Duration::from_secs(10));
            assert_eq!(r.unwrap(), b"honest", "after a HEAD of {total}");
            let grew = vm_hwm_kib() - before;
            assert!(grew < 64 << 10, "the peak RSS grew by {grew} KiB");
        })
        .unwrap();
        let head = [total.to_le_bytes(), [0; 8]].concat();
        a.__inject_raw_frame(2, 16, &head).unwrap(); // TAG_HEAD
        a.send_bytes(b"honest").unwrap();
        assert!(child.join().unwrap().success(), "total {total}");
    }
}

fn scribbled_ring_never_yields_an_invalid_string() {
    // A peer scribbles on the payload bytes of the ring (alternating b'a' and 0xFF, never touching the
    // frame headers) while we receive Strings: each `recv` must give a valid String or an error, never
    // a String whose bytes changed after they were checked as UTF-8.
    let name = format!("scribbled-{}", std::process::id());
    let cap = 8192;
    let (a, b) = Pipe::builder().name(&name).capacity(cap).build().unwrap();
    // 2,038 characters encode in 2,040 bytes: frames of exactly 2 KiB, so the headers of ring 0 are
    // always at offsets 0, 2048, 4096 and 6144 of its buffer (page 2 of the file).
    let text = "a".repeat(2038);
    let ring_at = 2 * 4096;
    let path = shm_path(&name);
    let scribbler = Process::fork(move || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let len = ring_at + cap;
        // SAFETY: a shared mapping of the file, used through raw volatile writes only.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let mut v = b'a';
        loop {
            v = if v == b'a' { 0xFF } else { b'a' };
            for frame in 0..4 {
                for off in frame * 2048 + 10..(frame + 1) * 2048 {
                    // SAFETY: within the mapping.
                    unsafe { std::ptr::write_volatile((base as *mut u8).add(ring_at + off), v) };
                }
            }
        }
    })
    .unwrap();
    let (mut clean, mut refused) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        a.send(&text).unwrap();
        match b.recv::<String>() {
            Ok(s) => {
                assert!(
                    std::str::from_utf8(s.as_bytes()).is_ok(),
                    "recv returned a String that is not UTF-8 (after {clean} clean ones)"
                );
                assert_eq!(s.len(), 2038);
                clean += 1;
            }
            Err(Error::Corrupt) => refused += 1,
            Err(Error::Decode { .. }) => {
                refused += 1;
                b.recv_bytes().unwrap(); // a message that does not decode stays: take it
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    scribbler.kill().unwrap();
    scribbler.join().unwrap();
    assert!(clean > 0 && refused > 0, "clean {clean}, refused {refused}");
}

fn named_objects_of_another_user_or_wider_mode_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let name = format!("foreign-{}", std::process::id());
    let (_a, _b) = Pipe::builder().name(&name).build().unwrap();
    let path = shm_path(&name);
    let refused = |why: &str| {
        let r = Pipe::open(&name, 1);
        assert!(
            matches!(&r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied),
            "{why}: {r:?}"
        );
    };
    for mode in [0o644, 0o660, 0o606, 0o700] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        if mode & 0o007 == 0 {
            // Nothing for others (0660 is what `.mode(0o660)` makes): fine.
            Pipe::open(&name, 1).unwrap();
        } else {
            refused(&format!("mode {mode:o}"));
        }
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(path.clone()).unwrap();
        // SAFETY: a valid path; give the object to `nobody`, then take it back.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
        refused("owned by another user");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 0) }, 0);
    } else {
        println!("(the other-user case needs root: not run) ");
    }
    Pipe::open(&name, 1).unwrap();
}

fn sealed_pipe_memory_cannot_be_resized() {
    let (a, b) = Pipe::new().unwrap();
    // A peer (a child holding end 1) tries to resize the pipe's memory, through its descriptor and
    // through a description of its own.
    let child = Process::fork(move || {
        let memfds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let link = std::fs::read_link(e.path()).ok()?;
                link.to_str()?.starts_with("/memfd:shmwire").then_some(())?;
                e.file_name().to_str()?.parse().ok()
            })
            .collect();
        assert_eq!(memfds.len(), 1, "the child holds one pipe");
        let fd = memfds[0];
        let own = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap();
        let own = std::os::fd::AsRawFd::as_raw_fd(&own);
        let eperm =
            |r: i32| r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        // SAFETY: plain syscalls on open descriptors and a valid buffer.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(fd, &mut st), 0);
            let size = st.st_size;
            let seals = libc::fcntl(fd, libc::F_GET_SEALS);
            let want = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            assert_eq!(seals & want, want, "seals {seals:#x}");
            for d in [fd, own] {
                assert!(eperm(libc::ftruncate(d, 0)), "shrunk");
                assert!(eperm(libc::ftruncate(d, size / 2)), "shrunk");
                assert!(eperm(libc::ftruncate(d, size * 2)), "grown");
                assert!(eperm(libc::fallocate(d, 0, size, 4096)), "grown");
                assert!(eperm(libc::fcntl(d, libc::F_ADD_SEALS, libc::F_SEAL_WRITE)));
            }
        }
        b.send(&"still fine").unwrap();
    })
    .unwrap();
    assert!(child.join().unwrap().success());
    assert_eq!(a.recv::<String>().unwrap(), "still fine");
}

fn shm_path(name: &str) -> String {
    format!(
        "/dev/shm/shmwire.{}.u.{name}",
        std::env::var("SHMWIRE_PREFIX").unwrap()
    )
}

fn poke(name: &str, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn corrupted_header_is_refused() {
    let cases: [(u64, &[u8], &str); 5] = [
        (0, b"NOTSHMWR", "magic"),
        (8, &99u32.to_le_bytes(), "layout version"),
        (12, &7u32.to_le_bytes(), "kind"),
        (16, &12345u64.to_le_bytes(), "size"),
        (
            40,
            &3u64.to_le_bytes(),
            "ring capacity (not a power of two)",
        ),
    ];
    for (i, (offset, bytes, what)) in cases.iter().enumerate() {
        let name = format!("corrupt-{i}");
        let (a, _b) = Pipe::builder().name(&name).build().unwrap();
        poke(&name, *offset, bytes);
        let n = name.clone();
        let what = what.to_string();
        let child = Process::fork(move || {
            let r = Pipe::open(&n, 1);
            match (i, r) {
                (0..=2, Err(Error::Incompatible)) => {}
                (3..=4, Err(Error::Corrupt)) => {}
                (_, r) => panic!("{what}: expected refusal, got {r:?}"),
            }
        })
        .unwrap();
        assert!(child.join().unwrap().success(), "case {i}");
        drop(a);
    }
}

fn hostile_frame_lengths_are_corrupt() {
    // (fillers first, tag, length field, payload, whether the ring is still usable after it): each
    // must be refused by the reader, never trusted. A frame whose length cannot be trusted leaves no
    // way to find the next one: the ring stays refused. A well-formed frame announcing an impossible
    // message is dropped, and the reader goes on with the next message.
    let cases: [(usize, u32, u32, Vec<u8>, bool); 5] = [
        (0, 1, 0xFFFF_FFF0, vec![0; 8], false), // length beyond the ring
        (0, 1, 1 << 20, vec![0; 8], false),     // beyond half the ring
        (0, 9, 8, vec![0; 8], false),           // unknown tag
        (0, 2, 16, [u64::MAX.to_le_bytes(), [0; 8]].concat(), true), // message of impossible size
        (511, 1, 4000, vec![], false),          // a frame running past the buffer's end
    ];
    for (fillers, tag, len, payload, moves_on) in cases {
        let (a, b) = Pipe::builder().capacity(8192).build().unwrap();
        let child = Process::fork(move || {
            for _ in 0..fillers {
                assert_eq!(b.recv_bytes().unwrap().len(), 8);
            }
            let r = b.recv_bytes();
            assert!(
                matches!(r, Err(Error::Corrupt)),
                "tag {tag} len {len}: {r:?}"
            );
            if moves_on {
                assert_eq!(b.recv_bytes().unwrap(), b"next");
            } else {
                // It stays refused, and nothing panicked.
                assert!(matches!(b.recv_bytes(), Err(Error::Corrupt)));
            }
        })
        .unwrap();
        for _ in 0..fillers {
            a.send_bytes(&[0; 8]).unwrap();
        }
        // Let the reader drain the fillers so the injected frame has room.
        while a.__inject_raw_frame(tag, len, &payload).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        if moves_on {
            a.send_bytes(b"next").unwrap();
        }
        assert!(child.join().unwrap().success(), "tag {tag} len {len}");
    }
}

fn hostile_counters_are_corrupt() {
    // The ring's counters live at the start of the kind area (page 1): ring 0's tail, then, a
    // 128-byte line later, its head.
    let name = "hostile-counters";
    let (a, b) = Pipe::builder().name(name).capacity(8192).build().unwrap();
    a.send(&1u8).unwrap();
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    let (tail_at, head_at) = (4096u64, 4096u64 + 128);
    poke(name, head_at, &3u64.to_le_bytes()); // misaligned head
    let b_ref = &b;
    let child = Process::fork(|| {
        assert!(matches!(b_ref.recv::<u8>(), Err(Error::Corrupt)));
        assert!(matches!(b_ref.poll(Duration::ZERO), Err(Error::Corrupt)));
    })
    .unwrap();
    assert!(child.join().unwrap().success());
    poke(name, head_at, &0u64.to_le_bytes());
    poke(name, tail_at, &(1u64 << 40).to_le_bytes()); // tail far ahead of head
    assert!(matches!(a.send(&1u8), Err(Error::Corrupt)));
    poke(name, tail_at, &3u64.to_le_bytes()); // misaligned tail
    assert!(matches!(a.send(&1u8), Err(Error::Corrupt)));
}

fn cleanup_removes_only_dead_segments() {
    let dead = Process::fork(|| {
        let (_a, _b) = Pipe::builder().name("will-die").build().unwrap();
        // SAFETY: dies without closing anything, as SIGKILL would.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })
    .unwrap();
    assert_eq!(dead.join().unwrap().signal(), Some(libc::SIGKILL));
    let (_live, _other) = Pipe::builder().name("stays").build().unwrap();
    assert!(std::path::Path::new(&shm_path("will-die")).exists());
    let listed = shmwire::segment::list().unwrap();
    let stale: Vec<_> = listed
        .iter()
        .filter(|s| s.is_stale())
        .map(|s| s.name.clone())
        .collect();
    assert!(stale.iter().any(|n| n.ends_with("will-die")), "{listed:?}");
    let removed = shmwire::cleanup().unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].ends_with("will-die"));
    assert!(!std::path::Path::new(&shm_path("will-die")).exists());
    assert!(std::path::Path::new(&shm_path("stays")).exists());
}

fn segments_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let (_a, _b) = Pipe::builder().name("perm").build().unwrap();
    let mode = std::fs::metadata(shm_path("perm"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Anonymous pipes leave nothing in /dev/shm at all.
    let before = std::fs::read_dir("/dev/shm").unwrap().count();
    let (_c, _d) = Pipe::new().unwrap();
    assert_eq!(std::fs::read_dir("/dev/shm").unwrap().count(), before);
}

fn failed_allocation_is_an_error_and_leaves_nothing() {
    use std::os::unix::fs::MetadataExt;
    // The whole segment is allocated when it is made, not as its pages are first touched.
    let (a, b) = Pipe::builder()
        .name("reserved")
        .capacity(4 << 20)
        .build()
        .unwrap();
    let meta = std::fs::metadata(shm_path("reserved")).unwrap();
    assert!(
        meta.blocks() * 512 >= meta.size(),
        "{} of {} bytes reserved",
        meta.blocks() * 512,
        meta.size()
    );
    drop((a, b));
    // A /dev/shm too small for the segment (a tmpfs of 1 MiB, mounted over it in a mount namespace
    // of the child's own): an error at creation, never a SIGBUS later, and no half-made segment left.
    let child = Process::fork_with(|| {
        if !private_small_dev_shm() {
            return 77; // no mount namespace here (not root, no user namespaces)
        }
        let r = Pipe::builder().name("too-big").capacity(4 << 20).build();
        assert!(
            matches!(&r, Err(Error::Io(e)) if e.raw_os_error() == Some(libc::ENOSPC)),
            "{r:?}"
        );
        assert_eq!(std::fs::read_dir("/dev/shm").unwrap().count(), 0);
        // What fits is made.
        let (_a, _b) = Pipe::builder()
            .name("fits")
            .capacity(64 << 10)
            .build()
            .unwrap();
        0
    })
    .unwrap();
    match child.join().unwrap().code() {
        Some(0) => {}
        Some(77) => println!("[no mount namespace: the small tmpfs case did not run] "),
        c => panic!("small tmpfs: {c:?}"),
    }
    // A file size limit makes the segment's allocation fail too.
    let child = Process::fork(|| {
        // SAFETY: plain syscalls in the child: ignore SIGXFSZ and cap file sizes at 1 MiB.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
        }
        let r = Pipe::builder().name("too-big").capacity(4 << 20).build();
        assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
        assert!(!std::path::Path::new(&shm_path("too-big")).exists());
    })
    .unwrap();
    assert!(child.join().unwrap().success());
}

/// In a forked child: enters a mount namespace of its own (as root, else through a user namespace)
/// and mounts a 1 MiB tmpfs on `/dev/shm`. False if this system allows neither.
fn private_small_dev_shm() -> bool {
    use std::ffi::CString;
    // SAFETY: plain syscalls in a single-threaded forked child, on C strings that outlive them.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            let (uid, gid) = (libc::getuid(), libc::getgid());
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return false;
            }
            let _ = std::fs::write("/proc/self/setgroups", "deny");
            if std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")).is_err()
                || std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")).is_err()
            {
                return false;
            }
        }
        let none = CString::new("none").unwrap();
        let root = CString::new("/").unwrap();
        let shm = CString::new("/dev/shm").unwrap();
        let tmpfs = CString::new("tmpfs").unwrap();
        let opts = CString::new("size=1m,mode=1777").unwrap();
        libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) == 0
            && libc::mount(
                tmpfs.as_ptr(),
                shm.as_ptr(),
                tmpfs.as_ptr(),
                0,
                opts.as_ptr().cast(),
            ) == 0
    }
}

fn child_dies_with_its_parent() {
    let (r, w) = Pipe::simplex().unwrap();
    let middle = Process::fork(move || {
        let grandchild = Process::fork(|| {
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .unwrap();
        w.send(&grandchild.pid()).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let grandchild: u32 = r.recv().unwrap();
    assert!(!gone(grandchild));
    middle.kill().unwrap();
    middle.join().unwrap();
    within(Duration::from_secs(2), || {
        while !gone(grandchild) {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

fn panic_in_child_is_code_101_with_message() {
    let mut fds = [0; 2];
    // SAFETY: valid out-array for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rfd, wfd) = (fds[0], fds[1]);
    let child = Process::fork(move || {
        // SAFETY: redirect this child's stderr into the pipe.
        unsafe { libc::dup2(wfd, 2) };
        panic!("the child gives up: {}", 42);
    })
    .unwrap();
    // SAFETY: we own the write end copy in the parent.
    unsafe { libc::close(wfd) };
    let status = child.join().unwrap();
    assert_eq!(status.code(), Some(101));
    assert!(!status.success());
    let mut text = String::new();
    // SAFETY: we own the read end.
    unsafe { std::fs::File::from_raw_fd(rfd) }
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("the child gives up: 42"), "{text}");
    // An Err returned is code 1.
    let child = Process::fork_with(|| -> Result<(), String> { Err("nope".into()) }).unwrap();
    assert_eq!(child.join().unwrap().code(), Some(1));
    let _ = checksum(&[]);
}

fn process_join_timeout_terminate_kill() {
    let p = Process::fork(|| std::thread::sleep(Duration::from_secs(30))).unwrap();
    assert!(p.pid() > 0);
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    let t = Instant::now();
    assert!(matches!(
        p.join_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    p.terminate().unwrap();
    let s = p.join_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(s.signal(), Some(libc::SIGTERM));
    assert_eq!(s.exitcode(), -15);
    assert!(!p.is_alive());
    // Signalling a reaped child is a no-op, never a stray kill: a process that now has its pid
    // (made with clone3's set_tid, which needs root) is left alone.
    match fork_with_pid(p.pid() as i32) {
        Some(impostor) => {
            p.kill().unwrap();
            p.terminate().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let mut status = 0;
            // SAFETY: `impostor` is our unreaped child; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(impostor, &mut status, libc::WNOHANG) };
            assert_eq!(r, 0, "the process that reused the pid was signalled");
            // SAFETY: as above.
            unsafe {
                libc::kill(impostor, libc::SIGKILL);
                libc::waitpid(impostor, &mut status, 0);
            }
        }
        None => {
            println!("[no clone3 set_tid here: the reused-pid check did not run] ");
            p.kill().unwrap();
        }
    }
    let q = Process::fork(|| std::thread::sleep(Duration::from_secs(30))).unwrap();
    q.kill().unwrap();
    assert_eq!(q.join().unwrap().exitcode(), -9);
    let quick = Process::fork_with(|| 3).unwrap();
    assert_eq!(
        quick.join_timeout(Duration::from_secs(5)).unwrap().code(),
        Some(3)
    );
}

/// Forks a child that sleeps until killed, with pid `pid` (clone3's `set_tid`); `None` if this system
/// does not allow it (not root, an older kernel, or the pid is taken).
fn fork_with_pid(pid: i32) -> Option<i32> {
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
    let tid = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: a fork (no CLONE_VM) of this single-threaded test process; `args` and `tid` outlive
    // the call. The child only makes plain syscalls and never returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: plain syscalls in the child.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            loop {
                libc::pause();
            }
        }
    }
    (r > 0).then(|| {
        assert_eq!(r as i32, pid);
        pid
    })
}

/// Whether process `pid` is stopped (state `T`).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('T'))
    })
}

fn send_bytes_timeout_gives_up_on_a_stopped_reader() {
    let (a, b) = Pipe::builder().capacity(4096).build().unwrap();
    let child = Process::fork(move || {
        // SAFETY: plain syscall: stop until the parent continues us.
        unsafe { libc::raise(libc::SIGSTOP) };
        // The message given up part way is never delivered: the next one is.
        let m = b.recv_bytes().unwrap();
        assert!(m == b"after", "got a message of {} bytes", m.len());
    })
    .unwrap();
    let t = Instant::now();
    while !stopped(child.pid()) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the child did not stop"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Far larger than the ring: its first pieces fit, the rest waits for a reader that is alive but
    // stopped. If the call overruns its deadline, the child is continued after 5 s.
    let pid = child.pid();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    });
    let t = Instant::now();
    let r = a.send_bytes_timeout(&vec![5u8; 100 << 10], Duration::from_millis(300));
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?} after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "send_bytes_timeout(300 ms) took {took:?}"
    );
    child.signal(libc::SIGCONT).unwrap();
    a.send_bytes(b"after").unwrap();
    assert!(child.join().unwrap().success());
    waker.join().unwrap();
}

/// This process's address space (VmSize), in bytes.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        << 10
}

fn received_frames_larger_than_memory_are_too_large_not_an_abort() {
    // One frame of 12 MiB (a 32 MiB ring carries frames up to 16 MiB), received by a process that
    // cannot allocate that much: an error, the message kept, never an abort.
    let size = 12 << 20;
    let (reader, writer) = Pipe::builder()
        .duplex(false)
        .capacity(32 << 20)
        .build()
        .unwrap();
    let (ready_r, ready_w) = Pipe::simplex().unwrap();
    let child = Process::fork(move || {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls with a valid struct.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut lim), 0);
            let tight = libc::rlimit {
                rlim_cur: vm_size() + (4 << 20),
                rlim_max: lim.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &tight), 0);
        }
        ready_w.send(&()).unwrap();
        assert!(reader.poll(Duration::from_secs(10)).unwrap());
        let r = reader.recv_bytes();
        assert!(
            matches!(r, Err(Error::TooLarge)),
            "recv_bytes: {:?}",
            r.map(|v| v.len())
        );
        let r = reader.recv::<u8>();
        assert!(matches!(r, Err(Error::TooLarge)), "recv: {r:?}");
        // SAFETY: as above (back to the limit we had).
        unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &lim), 0) };
        let m = reader.recv_bytes().unwrap();
        assert_eq!((m.len(), checksum(&m)), (size, checksum(&vec![3u8; size])));
    })
    .unwrap();
    ready_r.recv::<()>().unwrap();
    writer.send_bytes(&vec![3u8; size]).unwrap();
    let status = child.join().unwrap();
    assert!(status.success(), "{status:?}");
}
