//! Counting every system call a piece of code makes, with ptrace: no tool to install, no seccomp.
//!
//! [`run`] forks a child (`Process::fork`) that runs a closure under `PTRACE_TRACEME`; every process it forks is traced
//! too. Each traced process counts, by system call number, the calls it makes between its
//! [`mark`]`(BEGIN)` and [`mark`]`(END)` (the marks themselves are a `write` to fd -1 with a magic
//! length: it fails at once and is not counted).

use std::collections::BTreeMap;

pub const BEGIN: u64 = 0x5348_4d57_0000_0b01;
pub const END: u64 = 0x5348_4d57_0000_0e0d;

/// Marks the start or end of the counted stretch in this (traced) process.
pub fn mark(what: u64) {
    // SAFETY: a write to an invalid descriptor fails with EBADF before the buffer is read.
    unsafe {
        libc::syscall(
            libc::SYS_write,
            -1 as libc::c_long,
            std::ptr::null::<u8>(),
            what,
        )
    };
}

/// System calls counted, by number.
pub struct Counts(pub BTreeMap<u64, u64>);

impl Counts {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn describe(&self) -> String {
        let v: Vec<String> = self
            .0
            .iter()
            .map(|(nr, n)| format!("{} x{n}", name(*nr)))
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

fn name(nr: u64) -> String {
    let nr = nr as libc::c_long;
    let known = [
        (libc::SYS_futex, "futex"),
        (libc::SYS_membarrier, "membarrier"),
        (libc::SYS_write, "write"),
        (libc::SYS_read, "read"),
        (libc::SYS_fcntl, "fcntl"),
        (libc::SYS_clock_gettime, "clock_gettime"),
        (libc::SYS_sched_yield, "sched_yield"),
        (libc::SYS_nanosleep, "nanosleep"),
        (libc::SYS_clock_nanosleep, "clock_nanosleep"),
        (libc::SYS_ppoll, "ppoll"),
        (libc::SYS_getppid, "getppid"),
        (libc::SYS_sched_getaffinity, "sched_getaffinity"),
        (libc::SYS_getcpu, "getcpu"),
    ];
    known
        .iter()
        .find(|k| k.0 == nr)
        .map_or_else(|| format!("syscall {nr}"), |k| k.1.to_owned())
}

const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const INFO_ENTRY: u8 = 1;

/// Runs `f` in a traced child (and its descendants), waits for all of them, and returns what they
/// counted. Panics if the child fails.
pub fn run(f: impl FnOnce()) -> Counts {
    let child = shmwire::Process::fork(move || {
        // SAFETY: plain syscalls: be traced by the parent, and stop until it is ready.
        unsafe {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                libc::_exit(90);
            }
            libc::raise(libc::SIGSTOP);
        }
        f()
    })
    .unwrap();
    // Reaped by the loop below (the handle's own reaping then finds nothing).
    let root = child.pid() as i32;
    let mut counts = BTreeMap::new();
    // Per traced process: counting or not.
    let mut counting: BTreeMap<i32, bool> = BTreeMap::new();
    let mut root_status = None;
    let mut first = true;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; waits for any traced process (all are ours).
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if pid < 0 {
            break; // no child left
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            counting.remove(&pid);
            if pid == root {
                root_status = Some(status);
            }
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let sig = libc::WSTOPSIG(status);
        let mut inject = 0;
        if first && pid == root {
            first = false;
            let opts = libc::PTRACE_O_TRACESYSGOOD
                | libc::PTRACE_O_TRACEFORK
                | libc::PTRACE_O_TRACECLONE
                | libc::PTRACE_O_TRACEVFORK
                | libc::PTRACE_O_EXITKILL;
            // SAFETY: `root` is our stopped tracee.
            let r = unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, root, 0, opts) };
            assert_eq!(
                r,
                0,
                "PTRACE_SETOPTIONS: {}",
                std::io::Error::last_os_error()
            );
        } else if sig == libc::SIGTRAP | 0x80 {
            let mut info = [0u64; 16];
            // SAFETY: the kernel writes at most `size_of_val(&info)` bytes into `info`.
            let r = unsafe {
                libc::ptrace(
                    PTRACE_GET_SYSCALL_INFO,
                    pid,
                    std::mem::size_of_val(&info),
                    info.as_mut_ptr(),
                )
            };
            assert!(
                r > 0,
                "PTRACE_GET_SYSCALL_INFO: {}",
                std::io::Error::last_os_error()
            );
            // struct ptrace_syscall_info: op (u8), pad, arch (u32), ip, sp, then nr and args.
            let op = info[0] as u8;
            let (nr, args) = (info[3], &info[4..10]);
            if op == INFO_ENTRY {
                let on = counting.entry(pid).or_insert(false);
                let is_mark = nr == libc::SYS_write as u64 && args[0] as u32 == u32::MAX;
                if is_mark && args[2] == BEGIN {
                    *on = true;
                } else if is_mark && args[2] == END {
                    *on = false;
                } else if *on {
                    *counts.entry(nr).or_insert(0) += 1;
                }
            }
        } else if status >> 16 != 0 || sig == libc::SIGSTOP {
            // A fork/clone event, or a new tracee's first stop: nothing to deliver.
        } else {
            inject = sig;
        }
        // SAFETY: `pid` is our stopped tracee; resume it to its next system call.
        unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, inject) };
    }
    let status = root_status.expect("the traced child's status");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the traced child failed: status {status:#x}"
    );
    Counts(counts)
}
