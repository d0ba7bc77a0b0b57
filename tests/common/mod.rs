//! A small test harness for multi-process tests (`harness = false` targets).
//!
//! libtest runs tests on threads, and forking a threaded process is hazardous; so each test here runs
//! in a process of its own, forked from a single-threaded runner, in its own process group, under a
//! watchdog. When a test ends (or hangs past its limit) the whole group is killed, so nothing it
//! started survives it, and every segment carrying this run's `SHMWIRE_PREFIX` is removed and
//! reported: a test that leaks a segment fails.
//!
//! Usage: `cargo test --test NAME [-- FILTER...] [--exact] [--list]`.

#![allow(dead_code)]

use std::io::Write;
use std::time::{Duration, Instant};

/// One test: a name and a function that panics on failure.
pub struct Test {
    pub name: &'static str,
    pub f: fn(),
}

#[macro_export]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$($crate::common::Test { name: stringify!($name), f: $name }),*]
    };
}

/// Seconds a test may run before the watchdog kills its process group.
fn limit() -> Duration {
    let secs = std::env::var("SHMWIRE_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Whether the long (`SHMWIRE_LONG=1`) sizes are asked for.
pub fn long() -> bool {
    std::env::var("SHMWIRE_LONG").is_ok_and(|v| v == "1")
}

fn shm_leftovers(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the selected tests and exits with their verdict.
pub fn run(tests: &[Test]) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for t in tests {
            println!("{}: test", t.name);
        }
        std::process::exit(0);
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|t| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        t.name == f.as_str()
                    } else {
                        t.name.contains(f.as_str())
                    }
                })
        })
        .collect();
    if std::env::var("SHMWIRE_PREFIX").is_err() {
        // SAFETY: single-threaded at this point (no test has run yet).
        unsafe { std::env::set_var("SHMWIRE_PREFIX", format!("t{}", std::process::id())) };
    }
    let prefix = format!("shmwire.{}.", std::env::var("SHMWIRE_PREFIX").unwrap());
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for t in &selected {
        print!("test {} ... ", t.name);
        let _ = std::io::stdout().flush();
        let start = Instant::now();
        let verdict = run_one(t);
        let leftovers = shm_leftovers(&prefix);
        for name in &leftovers {
            let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        }
        let verdict = match verdict {
            Ok(()) if !leftovers.is_empty() => {
                Err(format!("left segments in /dev/shm: {leftovers:?}"))
            }
            v => v,
        };
        match verdict {
            Ok(()) => println!("ok ({:.2?})", start.elapsed()),
            Err(why) => {
                println!("FAILED ({:.2?}): {why}", start.elapsed());
                failed.push(t.name);
            }
        }
    }
    if failed.is_empty() {
        println!("\ntest result: ok. {} passed\n", selected.len());
        std::process::exit(0);
    }
    println!(
        "\nfailures: {failed:?}\ntest result: FAILED. {} passed; {} failed\n",
        selected.len() - failed.len(),
        failed.len()
    );
    std::process::exit(1);
}

fn run_one(t: &Test) -> Result<(), String> {
    // SAFETY: the runner is single-threaded; the child only runs the test and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        // SAFETY: plain syscalls in the child.
        unsafe { libc::setpgid(0, 0) };
        let ok = std::panic::catch_unwind(t.f).is_ok();
        let _ = std::io::stdout().flush();
        // SAFETY: leave without unwinding into the runner's stack.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // SAFETY: also from the parent, so the group exists before we may signal it.
    unsafe { libc::setpgid(pid, pid) };
    let start = Instant::now();
    let mut status = 0;
    let verdict = loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else if libc::WIFEXITED(status) {
                Err(format!("exit code {}", libc::WEXITSTATUS(status)))
            } else {
                Err(format!("killed by signal {}", libc::WTERMSIG(status)))
            };
        }
        if start.elapsed() > limit() {
            // SAFETY: kills the test's process group, then reaps the test process.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            break Err(format!("hung: killed by the watchdog after {:?}", limit()));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // Whatever the test started and left running goes with it.
    // SAFETY: plain syscall on the test's own process group.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    // Let the kernel finish tearing the group down (their tokens and mappings) before checking.
    let until = Instant::now() + Duration::from_secs(5);
    while group_alive(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    verdict
}

fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Asserts that `f` returns within `limit`, and returns its value and how long it took.
pub fn within<T>(limit: Duration, f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let v = f();
    let took = start.elapsed();
    assert!(took <= limit, "took {took:?}, more than {limit:?}");
    (v, took)
}

/// A reproducible pseudo-random stream (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// FNV-1a of `bytes`.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether process `pid` has gone (no such process, or a zombie).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
