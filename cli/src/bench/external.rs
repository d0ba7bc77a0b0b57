//! Sides run by another program over a line protocol on its stdin and stdout: Python's
//! `multiprocessing` (`pymp_bench.py`, run by `python3`) and the iceoryx2 peer
//! (`benches/peers/iceoryx2`).
//!
//! The program sets its workload up once, prints `ready`, then for each line `block SECONDS` (or
//! `items N`) runs one block and prints `ok OPS SECS`; `quit` (or the end of its stdin) ends it and
//! its children. It times its own blocks, so the protocol costs nothing measured.

use super::measure::{Amount, Sample, Side};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The Python side's script.
const PY: &str = include_str!("pymp_bench.py");

/// A running external side.
pub struct External {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    what: String,
}

impl External {
    /// Starts `cmd` and waits for its `ready` line; `None` (with the reason on stderr) if it fails.
    pub fn start(mut cmd: Command, what: &str) -> Option<External> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| eprintln!("\n{what}: could not start: {e}"))
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = BufReader::new(child.stdout.take()?);
        let mut ext = External {
            child,
            stdin,
            stdout,
            what: what.to_owned(),
        };
        match ext.line() {
            Some(l) if l.trim() == "ready" => Some(ext),
            other => {
                eprintln!("\n{what}: did not start ({other:?}); skipped");
                None
            }
        }
    }

    fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.stdout.read_line(&mut l) {
            Ok(n) if n > 0 => Some(l),
            _ => None,
        }
    }
}

impl Side for External {
    fn run(&mut self, amount: Amount) -> Sample {
        let cmd = match amount {
            Amount::For(d) => format!("block {}\n", d.as_secs_f64()),
            Amount::Items(n) => format!("items {n}\n"),
        };
        let what = self.what.clone();
        self.stdin
            .write_all(cmd.as_bytes())
            .and_then(|_| self.stdin.flush())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let line = self.line().unwrap_or_else(|| panic!("{what}: no answer"));
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["ok", ops, secs] => Sample {
                ops: ops.parse().unwrap_or_else(|_| panic!("{what}: {line}")),
                secs: secs.parse().unwrap_or_else(|_| panic!("{what}: {line}")),
                ..Sample::default()
            },
            _ => panic!("{what}: unexpected answer {line:?}"),
        }
    }
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"quit\n");
        let _ = self.stdin.flush();
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Under a split pinning, tells the program (`SHMWIRE_BENCH_PIN=PARENT,CHILD`) to keep its two
/// processes on the two CPUs as the bench's own sides are.
fn pin_env(cmd: &mut Command) {
    if let Some(c) = super::measure::child_cpu() {
        cmd.env("SHMWIRE_BENCH_PIN", format!("0,{c}"));
    }
}

/// `python3`'s version if it is there and has `multiprocessing`.
pub fn python_version() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import multiprocessing, platform; print(platform.python_version())",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Python's side of a workload: `rtt` (Pipe `send_bytes`/`recv_bytes` round trip of 8 bytes),
/// `thr64` (64-byte `send_bytes` stream), `queue P C` (`multiprocessing.Queue` of ints).
pub fn python(workload: &[&str]) -> Option<External> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PY).args(workload);
    pin_env(&mut cmd);
    External::start(cmd, &format!("python3 {}", workload.join(" ")))
}

/// Python's cost to create and drop each primitive, µs: (name, µs), from `pymp_bench.py create`.
pub fn python_create(budget: Duration) -> Vec<(String, f64)> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .args(["create", &budget.as_secs_f64().to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, us) = l.split_once(' ')?;
            Some((name.to_owned(), us.trim().parse().ok()?))
        })
        .collect()
}

/// The iceoryx2 peer in its serving mode (`--serve`): busy-polling pub/sub round trips of a u64.
pub fn iceoryx2(bin: &str) -> Option<External> {
    let mut cmd = Command::new(bin);
    cmd.arg("--serve");
    pin_env(&mut cmd);
    External::start(cmd, "the iceoryx2 peer")
}
