//! A small test harness for multi-process tests (`harness = false` targets).
//!
//! libtest runs tests on threads, and forking a threaded process is hazardous; so each test here runs
//! in a process of its own, forked from a single-threaded runner, in its own process group, under a
//! watchdog. A test fails when:
//!
//! * it panics, or hangs past its limit (`SHMWIRE_TEST_TIMEOUT` seconds, 60 by default);
//! * a process it started is still there when it returns (running, stopped, or exited and never
//!   reaped): each is named (pid, state, parent, role or command line), then killed. A test reaps
//!   every child it starts (`join`), so a child that hangs or fails cannot pass unseen;
//! * it leaves a segment or socket carrying this run's `SHMWIRE_PREFIX` in `/dev/shm`: the runner
//!   deletes it (so the next test starts clean) and says what it deleted.
//!
//! A test that cannot run here calls [`skip`]; it is reported as skipped, never as "ok".
//!
//! Usage: `cargo test --test NAME [-- [FILTER...] [--skip PAT] [--exact] [--list] [-q]
//! [--test-threads N] [--nocapture] [--ignored | --include-ignored]]`, as libtest reads them. Tests
//! run one at a time whatever `--test-threads` says (each forks real peers; the machine's cores are
//! theirs). A run that selects no test is an error, as is an option the runner does not know.
//!
//! Children started with `Process::spawn` run this same binary with their role in the environment:
//! `main` calls `shmwire::spawn::enter` before [`run`], so they never see these arguments.

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

/// The payload of [`skip`].
struct Skipped(String);

/// Ends the running test as skipped, saying why (e.g. "set SHMWIRE_LONG=1"). Unwinds (so the test's
/// handles are dropped) without calling the panic hook. Call it before starting any process.
pub fn skip(why: &str) -> ! {
    std::panic::resume_unwind(Box::new(Skipped(why.to_owned())))
}

/// What the command line asks for.
#[derive(Default, Debug)]
struct Options {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    list: bool,
    quiet: bool,
    /// `--ignored`: only the ignored tests (this runner has none).
    ignored_only: bool,
}

const USAGE: &str = "options: [FILTER...] [--skip PATTERN] [--exact] [--list] [-q|--quiet] \
[--test-threads N] [--nocapture] [--show-output] [--ignored] [--include-ignored] [--format pretty|terse]
[--color auto|always|never]";

/// Parses libtest's options. Every argument that does not start with `-` is a filter; an option that
/// takes a value takes it (`--skip foo`, `--skip=foo`), so its value is never a filter.
fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) => Ok(v),
                None => Err(format!("{name} needs a value")),
            }
        };
        match flag {
            "--list" => o.list = true,
            "--exact" => o.exact = true,
            "-q" | "--quiet" => o.quiet = true,
            // Output is never captured: each test's goes straight through.
            "--nocapture" | "--show-output" => {}
            "--include-ignored" => {}
            // Colour is for terminals; this runner prints plain text either way.
            "--color" => {
                value("--color")?;
            }
            "--ignored" => o.ignored_only = true,
            "--skip" => o.skips.push(value("--skip")?),
            "--test-threads" => {
                let v = value("--test-threads")?;
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => {} // tests run one at a time whatever the number
                    _ => return Err(format!("--test-threads wants a positive number, not {v:?}")),
                }
            }
            "--format" => match value("--format")?.as_str() {
                "pretty" => o.quiet = false,
                "terse" => o.quiet = true,
                v => {
                    return Err(format!(
                        "--format {v:?}: this runner knows pretty and terse"
                    ));
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            f if f.starts_with('-') => {
                return Err(format!("unknown option {a:?}"));
            }
            _ => o.filters.push(a.clone()),
        }
    }
    Ok(o)
}

impl Options {
    fn matches(&self, pattern: &str, name: &str) -> bool {
        if self.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    }

    fn selects(&self, name: &str) -> bool {
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(|f| self.matches(f, name)))
            && !self.skips.iter().any(|s| self.matches(s, name))
    }
}

fn shm_entries(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs the selected tests and exits with their verdict.
pub fn run(tests: &[Test]) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = parse(&args).unwrap_or_else(|e| {
        eprintln!("error: {e}\n{USAGE}");
        std::process::exit(2);
    });
    let selected: Vec<&Test> = tests.iter().filter(|t| opts.selects(t.name)).collect();
    if opts.list {
        for t in &selected {
            println!("{}: test", t.name);
        }
        std::process::exit(0);
    }
    if opts.ignored_only {
        println!(
            "\nrunning 0 tests (no test here is ignored; SHMWIRE_LONG=1 runs the long sizes)\n"
        );
        std::process::exit(0);
    }
    if selected.is_empty() {
        let names: Vec<&str> = tests.iter().map(|t| t.name).collect();
        eprintln!(
            "error: no test selected (filters {:?}, skips {:?}{}); this suite has: {}",
            opts.filters,
            opts.skips,
            if opts.exact { ", exact" } else { "" },
            names.join(", ")
        );
        std::process::exit(2);
    }
    if std::env::var("SHMWIRE_PREFIX").is_err() {
        // SAFETY: single-threaded at this point (no test has run yet).
        unsafe { std::env::set_var("SHMWIRE_PREFIX", format!("t{}", std::process::id())) };
    }
    let prefix = format!("shmwire.{}.", std::env::var("SHMWIRE_PREFIX").unwrap());
    let before = shm_entries(&prefix);
    if !before.is_empty() {
        println!("note: already in /dev/shm before this run (left alone, not ours): {before:?}");
    }
    // Orphans of a test (a child whose parent died) come to the runner, so nothing escapes the check
    // below by leaving the test's process group.
    // SAFETY: plain syscall on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let report = Report::new();
    let n = selected.len();
    println!("\nrunning {n} test{}", if n == 1 { "" } else { "s" });
    let (mut failed, mut skipped) = (Vec::new(), 0);
    for t in &selected {
        if !opts.quiet {
            print!("test {} ... ", t.name);
        }
        let _ = std::io::stdout().flush();
        let start = Instant::now();
        let mut verdict = run_one(t, &report);
        let left: Vec<String> = shm_entries(&prefix)
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        for name in &left {
            let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        }
        if !left.is_empty() {
            let why = format!("left in /dev/shm (deleted by the runner): {left:?}");
            verdict = match verdict {
                Verdict::Failed(w) => Verdict::Failed(format!("{w}; {why}")),
                _ => Verdict::Failed(why),
            };
        }
        let took = start.elapsed();
        match (&verdict, opts.quiet) {
            (Verdict::Ok, false) => println!("ok ({took:.2?})"),
            (Verdict::Skipped(why), false) => println!("skipped ({why})"),
            (Verdict::Failed(why), false) => println!("FAILED ({took:.2?}): {why}"),
            (Verdict::Ok, true) => print!("."),
            (Verdict::Skipped(_), true) => print!("s"),
            (Verdict::Failed(why), true) => println!("\ntest {} ... FAILED: {why}", t.name),
        }
        match verdict {
            Verdict::Ok => {}
            Verdict::Skipped(_) => skipped += 1,
            Verdict::Failed(_) => failed.push(t.name),
        }
    }
    let passed = selected.len() - failed.len() - skipped;
    if failed.is_empty() {
        println!("\ntest result: ok. {passed} passed; {skipped} skipped\n");
        std::process::exit(0);
    }
    println!(
        "\nfailures: {failed:?}\ntest result: FAILED. {passed} passed; {} failed; {skipped} skipped\n",
        failed.len()
    );
    std::process::exit(1);
}

enum Verdict {
    Ok,
    Skipped(String),
    Failed(String),
}

/// A page shared with the test process, where it leaves the words of its verdict (why it skipped,
/// what it left running). Only the test process writes it, once, just before `_exit`.
struct Report(*mut u8);

const REPORT_LEN: usize = 1 << 16;

impl Report {
    fn new() -> Report {
        // SAFETY: a fresh anonymous shared mapping; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REPORT_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of the report page");
        Report(p.cast())
    }

    fn write(&self, text: &str) {
        let n = text.len().min(REPORT_LEN - 4);
        // SAFETY: the mapping is REPORT_LEN bytes; the runner reads it only after this process exits.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), self.0.add(4), n);
            std::ptr::copy_nonoverlapping((n as u32).to_ne_bytes().as_ptr(), self.0, 4);
        }
    }

    fn take(&self) -> String {
        let mut len = [0u8; 4];
        // SAFETY: as in `write`; the writer has exited (reaped), so nothing writes concurrently.
        unsafe {
            std::ptr::copy_nonoverlapping(self.0, len.as_mut_ptr(), 4);
            let n = (u32::from_ne_bytes(len) as usize).min(REPORT_LEN - 4);
            let bytes = std::slice::from_raw_parts(self.0.add(4), n).to_vec();
            std::ptr::write_bytes(self.0, 0, 4);
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

/// Exit codes of the test process.
const EXIT_OK: i32 = 0;
const EXIT_PANICKED: i32 = 1;
const EXIT_LEFT: i32 = 3;
const EXIT_SKIPPED: i32 = 77;

fn run_one(t: &Test, report: &Report) -> Verdict {
    // SAFETY: the runner is single-threaded; the child only runs the test and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Verdict::Failed("fork failed".into());
    }
    if pid == 0 {
        // SAFETY: plain syscall in the child.
        unsafe { libc::setpgid(0, 0) };
        let outcome = std::panic::catch_unwind(t.f);
        // Children that failed while nobody joined them (their `Process` was dropped) fail the test.
        let unseen = shmwire::hooks::__unseen_child_failures();
        let left = left_running();
        let (mut code, mut said) = match &outcome {
            Ok(()) => (EXIT_OK, String::new()),
            Err(p) => match p.downcast_ref::<Skipped>() {
                Some(Skipped(why)) => (EXIT_SKIPPED, why.clone()),
                None => (EXIT_PANICKED, "panicked".to_owned()),
            },
        };
        if !unseen.is_empty() {
            if code != EXIT_OK {
                said.push_str("; ");
            }
            said.push_str(&unseen.join("; "));
            if code == EXIT_OK {
                code = EXIT_PANICKED;
            }
        }
        if !left.is_empty() {
            let names: Vec<String> = left.iter().map(|p| p.describe()).collect();
            if code != EXIT_OK {
                said.push_str("; ");
            }
            said.push_str(&format!(
                "{} process(es) still there when the test returned (killed): {}",
                left.len(),
                names.join("; ")
            ));
            for p in &left {
                // SAFETY: plain syscall; the pid was listed as ours a moment ago and is unreaped.
                unsafe { libc::kill(p.pid, libc::SIGKILL) };
            }
            code = EXIT_LEFT;
        }
        report.write(&said);
        let _ = std::io::stdout().flush();
        // SAFETY: leave without unwinding into the runner's stack.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: also from the parent, so the group exists before we may signal it.
    unsafe { libc::setpgid(pid, pid) };
    let start = Instant::now();
    let mut status = 0;
    let verdict = loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            let said = report.take();
            break if libc::WIFEXITED(status) {
                match libc::WEXITSTATUS(status) {
                    EXIT_OK => Verdict::Ok,
                    EXIT_SKIPPED => Verdict::Skipped(said),
                    // Its message is above; what else went wrong is in `said`.
                    EXIT_PANICKED => Verdict::Failed(said),
                    EXIT_LEFT => Verdict::Failed(said),
                    c => Verdict::Failed(format!("exit code {c}")),
                }
            } else {
                Verdict::Failed(format!("killed by signal {}", libc::WTERMSIG(status)))
            };
        }
        if start.elapsed() > limit() {
            let left: Vec<String> = descendants(std::process::id() as i32)
                .iter()
                .map(|p| p.describe())
                .collect();
            // SAFETY: kills the test's process group, then reaps the test process.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            break Verdict::Failed(format!(
                "hung: killed by the watchdog after {:?}; its processes: {}",
                limit(),
                left.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // The test process has been reaped: whatever is left was reported by it (or by the watchdog);
    // kill it, and reap what comes to us as the subreaper, before the next test.
    let stray = reap_strays(pid);
    match verdict {
        Verdict::Ok if !stray.is_empty() => Verdict::Failed(format!(
            "processes started by the test outlived it (killed): {}",
            stray.join("; ")
        )),
        v => v,
    }
}

/// Kills the test's process group and any other descendant of the runner, and reaps them. Returns
/// the live ones found (a process the test's own check could not see, such as one forked after it).
fn reap_strays(pgid: i32) -> Vec<String> {
    let me = std::process::id() as i32;
    let live: Vec<String> = descendants(me)
        .iter()
        .filter(|p| p.state != 'Z')
        .map(|p| p.describe())
        .collect();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: plain syscalls: the test's group, then each remaining descendant (ours, unreaped).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        for p in descendants(me) {
            // SAFETY: as above.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: reaps any child of ours that has ended (orphans re-parented to us included).
        while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
        // SAFETY: signal 0 only checks whether the group still has members.
        let group_gone = unsafe { libc::kill(-pgid, 0) } != 0;
        if (group_gone && descendants(me).is_empty()) || Instant::now() > until {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    live
}

/// A process as `/proc` shows it.
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    state: char,
}

impl Proc {
    fn read(pid: i32) -> Option<Proc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let mut f = stat.rsplit_once(')')?.1.split_whitespace();
        let state = f.next()?.chars().next()?;
        let ppid = f.next()?.parse().ok()?;
        let pgrp = f.next()?.parse().ok()?;
        Some(Proc {
            pid,
            ppid,
            pgrp,
            state,
        })
    }

    /// pid, state, parent, and what it runs: the spawn role in its environment, else its command line.
    fn describe(&self) -> String {
        let state = match self.state {
            'R' => "running",
            'S' | 'D' | 'I' => "sleeping",
            'T' | 't' => "stopped",
            'Z' => "exited, not reaped",
            _ => "?",
        };
        let wchan = std::fs::read_to_string(format!("/proc/{}/wchan", self.pid))
            .ok()
            .filter(|w| !w.is_empty() && w != "0")
            .map(|w| format!(" in {w}"))
            .unwrap_or_default();
        let role = std::fs::read(format!("/proc/{}/environ", self.pid))
            .ok()
            .and_then(|env| {
                env.split(|&b| b == 0)
                    .find_map(|v| v.strip_prefix(b"SHMWIRE_SPAWN_ROLE=").map(<[u8]>::to_vec))
            })
            .map(|r| format!("spawned role {:?}, ", String::from_utf8_lossy(&r)))
            .unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|c| {
                c.split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        format!(
            "pid {} ({state}{wchan}; child of {}; {role}{})",
            self.pid,
            self.ppid,
            if cmd.is_empty() {
                "no command line"
            } else {
                &cmd
            }
        )
    }
}

fn all_procs() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter_map(Proc::read)
                .collect()
        })
        .unwrap_or_default()
}

/// Every process below `root` in the process tree.
fn descendants(root: i32) -> Vec<Proc> {
    let procs = all_procs();
    let mut found = vec![root];
    let mut out = Vec::new();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for p in procs.iter().filter(|p| p.ppid == parent) {
            if !found.contains(&p.pid) {
                found.push(p.pid);
                out.push(Proc { ..*p });
            }
        }
        i += 1;
    }
    out
}

/// What the test process leaves behind, seen from the test process when the test returns: every
/// process of its group or below it in the tree, except zombies that are not its to reap (an orphan
/// that died and went to the runner). Its own children are listed at once (running, or exited and
/// not reaped: their status was never checked); a process further down that still runs gets up to
/// two seconds to finish dying (its parent's death kills it, asynchronously).
fn left_running() -> Vec<Proc> {
    let me = std::process::id() as i32;
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let mut left = descendants(me);
        for p in all_procs() {
            if p.pgrp == me && p.pid != me && !left.iter().any(|q| q.pid == p.pid) {
                left.push(p);
            }
        }
        let live: Vec<i32> = left
            .iter()
            .filter(|p| p.state != 'Z')
            .map(|p| p.pid)
            .collect();
        left.retain(|p| p.state != 'Z' || p.ppid == me || live.contains(&p.ppid));
        let dying = left.iter().any(|p| p.ppid != me && p.state != 'Z');
        if left.iter().any(|p| p.ppid == me) || !dying || Instant::now() > until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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

/// Writes hostile words into `path` from `from` on, for `how_long`: mostly over words in use (non-zero)
/// among the first `hot` bytes, where the control words, positions, slot words and lengths are, and
/// sometimes anywhere: zeros, all ones, small numbers, lap-like and owner-like values, random bits.
pub fn scribble(path: &str, from: u64, hot: u64, how_long: Duration, seed: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let hot = hot.min(len - from) as usize;
    let mut r = Rng(seed);
    let mut view = vec![0u8; hot];
    let t = Instant::now();
    let mut writes = 0;
    while t.elapsed() < how_long {
        f.read_exact_at(&mut view, from).unwrap();
        let live: Vec<usize> = (0..hot / 8)
            .filter(|&i| view[i * 8..i * 8 + 8] != [0; 8])
            .collect();
        for _ in 0..16 {
            let at = if !live.is_empty() && r.below(4) != 0 {
                from + live[r.below(live.len() as u64) as usize] as u64 * 8
            } else {
                from + r.below((len - from) / 8) * 8
            };
            let v: u64 = match r.below(6) {
                0 => 0,
                1 => u64::MAX,
                2 => r.below(64),
                3 => r.below(8) << 32 | r.below(4) << 30 | r.below(1 << 12),
                4 => 1 << r.below(64),
                _ => r.next(),
            };
            f.write_at(&v.to_ne_bytes(), at).unwrap();
            writes += 1;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    writes
}
