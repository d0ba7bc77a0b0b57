//! The Python module's group (`python-module`): the same Python code against `multiprocessing`
//! and against `shmwire` (the module built from `python/` and installed with pip), paired in the
//! same run: a Pipe round trip, Queue items/s from one producer, a Manager dict's set + get. It
//! runs when `python3 -c "import shmwire"` works (else one line says how to install it).

use super::Kind;
use super::external::External;
use super::groups::{SideSpec, Sub};
use super::measure::{Amount, Pin, Sample, Side};
use std::process::Command;
use std::time::Duration;

/// The script both sides run.
const PY: &str = include_str!("pymod_bench.py");

/// Ratios of the group: (name, group, size, numerator, denominator, target), as in `ratios.rs`.
#[rustfmt::skip]
pub const RATIOS: &[(&str, &str, usize, &str, &str, &str)] = &[
    ("Python module: Pipe send/recv round trip, multiprocessing / shmwire", "python-module", 1, "mp", "shm", ">= 20"),
    ("Python module: Queue 1P/1C items/s, shmwire / multiprocessing", "python-module-queue", 2, "shm", "mp", ">= 5"),
    ("Python module: Manager dict set+get ops/s, shmwire / multiprocessing", "python-module-dict", 3, "shm", "mp", ">= 50"),
];

/// Whether the installed `python3` imports the module `shmwire`.
pub fn installed() -> bool {
    Command::new("python3")
        .args(["-c", "import shmwire"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python side; once it has ended, the names its killed children held (a killed process drops
/// nothing) are cleaned up, so the bench leaves `/dev/shm` as it found it.
struct PySide(Option<External>);

impl Side for PySide {
    fn run(&mut self, amount: Amount) -> Sample {
        match &mut self.0 {
            Some(e) => e.run(amount),
            None => Sample::default(),
        }
    }
}

impl Drop for PySide {
    fn drop(&mut self) {
        drop(self.0.take());
        let _ = shmwire::cleanup();
    }
}

fn side(workload: &'static str, lib: &'static str) -> Option<Box<dyn Side>> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PY).args([workload, lib]);
    External::start(cmd, &format!("python3 {lib} {workload}"))
        .map(|e| Box::new(PySide(Some(e))) as Box<dyn Side>)
}

fn specs(workload: &'static str, what: &str) -> Vec<SideSpec> {
    vec![
        SideSpec {
            id: "shm",
            name: format!("shmwire (Python module) {what}"),
            make: Box::new(move || side(workload, "shmwire")),
        },
        SideSpec {
            id: "mp",
            name: format!("multiprocessing {what}"),
            make: Box::new(move || side(workload, "multiprocessing")),
        },
    ]
}

/// The group's subs.
pub fn subs() -> Vec<Sub> {
    let s = Duration::from_secs_f64;
    vec![
        Sub {
            group: "python-module",
            size: 1,
            pin: Pin::Any,
            kind: Kind::Lat,
            budget: s(3.0),
            sides: specs("rtt", "Pipe send + recv round trip"),
        },
        Sub {
            group: "python-module-queue",
            size: 2,
            pin: Pin::Any,
            kind: Kind::Thr,
            budget: s(3.0),
            sides: specs("queue", "Queue items from one producer"),
        },
        Sub {
            group: "python-module-dict",
            size: 3,
            pin: Pin::Any,
            kind: Kind::Thr,
            budget: s(3.0),
            sides: specs("dict", "Manager dict set + get"),
        },
    ]
}
