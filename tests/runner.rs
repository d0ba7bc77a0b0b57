//! The runner (`tests/common`) itself: a test that leaves a process, a segment, or that hangs fails,
//! naming what it left; a skip is reported as one; libtest's options mean what they mean there.
//!
//! Each test here runs this binary again with `RUNNER_SELFTEST=1`, which makes it a suite of
//! deliberately faulty tests (below), and checks the verdict and the words the runner gives.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

fn roles(role: &str, _args: shmwire::spawn::Args) -> i32 {
    match role {
        "sleep" => {
            std::thread::sleep(Duration::from_secs(60));
            0
        }
        _ => 2,
    }
}

fn main() {
    shmwire::spawn::enter(roles);
    if std::env::var_os("RUNNER_SELFTEST").is_some() {
        common::run(tests![
            passes,
            also_passes,
            leaves_a_forked_child,
            leaves_a_spawned_child,
            leaves_a_stopped_child,
            leaves_a_child_unreaped,
            drops_a_failed_child,
            drops_a_child_that_fails_later,
            leaves_a_process_outside_its_group,
            leaves_an_orphan,
            leaves_a_segment,
            fails_with_a_child_running,
            skips,
            hangs,
        ]);
    }
    common::run(tests![
        a_forked_child_left_running_fails_the_test_and_is_named,
        a_spawned_child_left_running_is_named_by_its_role,
        a_stopped_or_unreaped_child_fails_the_test,
        a_dropped_child_that_failed_fails_the_test,
        processes_outside_the_group_or_orphaned_are_found,
        a_failing_test_also_names_what_it_left,
        a_leftover_segment_fails_the_test_and_is_reported_deleted,
        a_hung_test_is_killed_by_the_watchdog,
        a_skip_is_reported_as_skipped_not_ok,
        options_are_read_as_libtest_reads_them,
        a_run_that_selects_nothing_or_a_bad_option_is_an_error,
    ]);
}

// ---- the faulty suite (RUNNER_SELFTEST=1) ----

fn passes() {}

fn also_passes() {}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn leaves_a_forked_child() {
    let p = shmwire::Process::fork(|| sleep_forever()).unwrap();
    println!("<child {}>", p.pid());
}

fn leaves_a_spawned_child() {
    let p = shmwire::Process::spawn("sleep", &()).unwrap();
    println!("<child {}>", p.pid());
}

fn leaves_a_stopped_child() {
    let p = shmwire::Process::fork(|| sleep_forever()).unwrap();
    p.signal(libc::SIGSTOP).unwrap();
    println!("<child {}>", p.pid());
    std::thread::sleep(Duration::from_millis(50));
}

fn leaves_a_child_unreaped() {
    let p = shmwire::Process::fork_with(|| 3).unwrap();
    println!("<child {}>", p.pid());
    // Exited with code 3, which nobody looks at.
    while !common::gone(p.pid()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::mem::forget(p);
}

fn drops_a_failed_child() {
    let p = shmwire::Process::fork_with(|| 3).unwrap();
    while !common::gone(p.pid()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(p); // reaped by the drop, its code never looked at
}

fn drops_a_child_that_fails_later() {
    let p = shmwire::Process::fork(|| {
        std::thread::sleep(Duration::from_millis(100));
        panic!("the child's assertion");
    })
    .unwrap();
    drop(p); // still running: reaped later, its status never looked at
    std::thread::sleep(Duration::from_millis(400));
}

fn leaves_a_process_outside_its_group() {
    let p = shmwire::Process::fork(|| {
        // SAFETY: plain syscall: a session (and process group) of its own.
        unsafe { libc::setsid() };
        sleep_forever()
    })
    .unwrap();
    println!("<child {}>", p.pid());
}

fn leaves_an_orphan() {
    let (r, w) = shmwire::Pipe::simplex().unwrap();
    let p = shmwire::Process::fork(move || {
        // A grandchild that does not die with its parent.
        // SAFETY: the grandchild only sleeps.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            sleep_forever();
        }
        w.send(&pid).unwrap();
    })
    .unwrap();
    let grandchild: i32 = r.recv().unwrap();
    assert!(p.join().unwrap().success());
    println!("<child {grandchild}>");
}

fn leaves_a_segment() {
    let (a, b) = shmwire::Pipe::builder().name("left").build().unwrap();
    std::mem::forget((a, b));
}

fn fails_with_a_child_running() {
    let p = shmwire::Process::fork(|| sleep_forever()).unwrap();
    println!("<child {}>", p.pid());
    panic!("an assertion failed before the join");
}

fn skips() {
    common::skip("set SOMETHING=1");
}

fn hangs() {
    let p = shmwire::Process::fork(|| sleep_forever()).unwrap();
    println!("<child {}>", p.pid());
    let _ = p.join();
}

// ---- the checks ----

fn inner(args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
    let prefix = format!("{}in", std::env::var("SHMWIRE_PREFIX").unwrap());
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(args)
        .env("RUNNER_SELFTEST", "1")
        .env("SHMWIRE_PREFIX", &prefix);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// The pids the faulty tests printed.
fn children(text: &str) -> Vec<u32> {
    text.split("<child ")
        .skip(1)
        .filter_map(|s| s.split('>').next()?.parse().ok())
        .collect()
}

/// Runs faulty test `name` alone; asserts it failed, naming each child it printed (now gone), and
/// that `words` appear; returns the output.
fn fails(name: &str, words: &[&str]) -> String {
    let (out, text) = inner(&["--exact", name], &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("test {name} ... ")), "{text}");
    assert!(text.contains("FAILED"), "{text}");
    assert!(text.contains("1 failed"), "{text}");
    let kids = children(&text);
    assert!(!kids.is_empty(), "{text}");
    for pid in kids {
        assert!(
            text.contains(&format!("pid {pid} (")),
            "pid {pid} not named: {text}"
        );
        assert!(common::gone(pid), "pid {pid} still there: {text}");
    }
    for w in words {
        assert!(text.contains(w), "no {w:?} in: {text}");
    }
    text
}

fn a_forked_child_left_running_fails_the_test_and_is_named() {
    fails(
        "leaves_a_forked_child",
        &["still there when the test returned (killed)", "child of"],
    );
}

fn a_spawned_child_left_running_is_named_by_its_role() {
    fails("leaves_a_spawned_child", &["spawned role \"sleep\""]);
}

fn a_stopped_or_unreaped_child_fails_the_test() {
    fails("leaves_a_stopped_child", &["stopped"]);
    fails("leaves_a_child_unreaped", &["exited, not reaped"]);
}

/// A child that failed while nobody joined it (its `Process` dropped, before or after it ended)
/// fails its test.
fn a_dropped_child_that_failed_fails_the_test() {
    for (name, words) in [
        (
            "drops_a_failed_child",
            "exited with code 3, and was dropped unjoined",
        ),
        (
            "drops_a_child_that_fails_later",
            "exited with code 101, and was dropped unjoined",
        ),
    ] {
        let (out, text) = inner(&["--exact", name], &[]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(&format!("test {name} ... FAILED")), "{text}");
        assert!(text.contains(words), "{text}");
    }
}

fn processes_outside_the_group_or_orphaned_are_found() {
    fails("leaves_a_process_outside_its_group", &["still there"]);
    fails("leaves_an_orphan", &["still there"]);
}

fn a_failing_test_also_names_what_it_left() {
    let text = fails("fails_with_a_child_running", &["before the join"]);
    assert!(
        text.contains("panicked; 1 process(es) still there"),
        "{text}"
    );
}

fn a_leftover_segment_fails_the_test_and_is_reported_deleted() {
    let (out, text) = inner(&["--exact", "leaves_a_segment"], &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("left in /dev/shm (deleted by the runner)"),
        "{text}"
    );
    let prefix = format!("shmwire.{}in.", std::env::var("SHMWIRE_PREFIX").unwrap());
    assert!(text.contains(&prefix), "{text}");
    let still: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(still.is_empty(), "{still:?}");
}

fn a_hung_test_is_killed_by_the_watchdog() {
    let (out, text) = inner(&["--exact", "hangs"], &[("SHMWIRE_TEST_TIMEOUT", "1")]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("hung: killed by the watchdog"), "{text}");
    for pid in children(&text) {
        assert!(text.contains(&format!("pid {pid} (")), "{text}");
        assert!(common::gone(pid), "{text}");
    }
}

fn a_skip_is_reported_as_skipped_not_ok() {
    let (out, text) = inner(&["--exact", "skips"], &[]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("test skips ... skipped (set SOMETHING=1)"),
        "{text}"
    );
    assert!(text.contains("0 passed; 1 skipped"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// The names of the tests a run reported, in order.
fn ran(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| Some(l.strip_prefix("test ")?.split_once(" ... ")?.0))
        .map(str::to_owned)
        .collect()
}

fn options_are_read_as_libtest_reads_them() {
    let run = |args: &[&str]| {
        let (out, text) = inner(args, &[]);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
        ran(&text)
    };
    let both = ["passes", "also_passes"];
    // A value of an option is never a filter.
    assert_eq!(run(&["--test-threads", "1", "passes"]), both);
    assert_eq!(run(&["--test-threads=2", "--exact", "passes"]), ["passes"]);
    assert_eq!(run(&["passes", "--skip", "also"]), ["passes"]);
    assert_eq!(run(&["passes", "--skip=also"]), ["passes"]);
    // --exact applies to skips too.
    assert_eq!(
        run(&["passes", "also_passes", "--exact", "--skip", "also"]),
        both
    );
    assert_eq!(
        run(&["--exact", "passes", "also_passes", "--nocapture"]),
        both
    );
    assert_eq!(run(&["--include-ignored", "passes", "--show-output"]), both);
    // --ignored: nothing here is ignored.
    let (out, text) = inner(&["--ignored"], &[]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("running 0 tests"), "{text}");
    // Quiet: a dot per test.
    let (out, text) = inner(&["-q", "passes"], &[]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("\n..\n") && text.contains("2 passed"),
        "{text}"
    );
    let (_, text) = inner(&["--format", "terse", "passes"], &[]);
    assert!(text.contains("\n..\n"), "{text}");
    // --list: the selected tests, as libtest lists them.
    let (out, text) = inner(&["--list", "passes"], &[]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text, "passes: test\nalso_passes: test\n");
}

fn a_run_that_selects_nothing_or_a_bad_option_is_an_error() {
    for args in [
        &["no_such_test"][..],
        &["--exact", "pass"],
        &["passes", "--skip", "pass"],
        &["--frobnicate"],
        &["--test-threads", "many"],
        &["--test-threads"],
        &["--skip"],
        &["--format", "json"],
    ] {
        let (out, text) = inner(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains("error: "), "{args:?}: {text}");
        assert!(!text.contains("test result"), "{args:?}: {text}");
    }
    let (_, text) = inner(&["--frobnicate"], &[]);
    assert!(text.contains("unknown option \"--frobnicate\""), "{text}");
    let (_, text) = inner(&["no_such_test"], &[]);
    assert!(text.contains("no test selected"), "{text}");
}
