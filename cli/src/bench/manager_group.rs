//! The `manager` group of `shmwire bench`: for `get`, `insert` and `modify`, shmwire's `SharedDict`
//! with 1 and 4 processes beside Python's `Manager().dict()`, a dict served over a Unix socket and an
//! in-process `Mutex<HashMap>` (the workloads are in `manager.rs`); and the memory a dict of a
//! million small entries takes.

use super::external::External;
use super::groups::{SideSpec, Sub};
use super::manager::{self, Op};
use super::measure::{Pin, Side};
use super::report::rate;
use super::{Kind, Mem, Row};
use std::fmt::Write;
use std::process::Command;
use std::time::Duration;

/// Python's side.
const PY: &str = include_str!("pymgr_bench.py");

fn python(op: Op, n: usize) -> Option<Box<dyn Side>> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PY).args([op.name(), &n.to_string()]);
    External::start(cmd, &format!("python3 Manager().dict() {} x{n}", op.name()))
        .map(|e| Box::new(e) as Box<dyn Side>)
}

fn spec(
    id: &'static str,
    name: String,
    make: impl Fn() -> Option<Box<dyn Side>> + 'static,
) -> SideSpec {
    SideSpec {
        id,
        name,
        make: Box::new(make),
    }
}

fn boxed(s: manager::DictSide) -> Option<Box<dyn Side>> {
    Some(Box::new(s))
}

/// The groups: one per operation, each with every side (Python's first, the threads' last: they
/// run while the others fork).
pub fn subs(python_there: bool) -> Vec<Sub> {
    let mut v = Vec::new();
    for op in [Op::Get, Op::Insert, Op::Modify] {
        let o = op.name();
        let mut sides = Vec::new();
        if python_there {
            sides.push(spec(
                "py",
                format!("Python Manager().dict() {o}, 1 process"),
                move || python(op, 1),
            ));
            sides.push(spec(
                "py4",
                format!("Python Manager().dict() {o}, 4 processes"),
                move || python(op, 4),
            ));
        }
        sides.push(spec(
            "shm",
            format!("shmwire SharedDict {o}, 1 process"),
            move || boxed(manager::shm(op, 1)),
        ));
        sides.push(spec(
            "uds",
            format!("dict over a Unix socket {o}, 1 process"),
            move || boxed(manager::uds(op, 1)),
        ));
        sides.push(spec(
            "shm4",
            format!("shmwire SharedDict {o}, 4 processes"),
            move || boxed(manager::shm(op, 4)),
        ));
        sides.push(spec(
            "uds4",
            format!("dict over a Unix socket {o}, 4 processes"),
            move || boxed(manager::uds(op, 4)),
        ));
        sides.push(spec(
            "mutex",
            format!("Mutex<HashMap> {o}, 1 thread (ceiling)"),
            move || boxed(manager::mutex(op, 1)),
        ));
        sides.push(spec(
            "mutex4",
            format!("Mutex<HashMap> {o}, 4 threads"),
            move || boxed(manager::mutex(op, 4)),
        ));
        v.push(Sub {
            group: "manager",
            size: op.code(),
            pin: Pin::Any,
            kind: Kind::Thr,
            budget: Duration::from_secs(4),
            sides,
        });
    }
    v
}

/// The memory row: bytes per entry of a `SharedDict<String, u64>` of a million entries (100,000 in a
/// quick run).
pub fn memory(quick: bool) -> Row {
    let n = if quick { 100_000 } else { 1_000_000 };
    let (used, mapped) = manager::bytes_per_entry(n);
    let mut row = Row::new(
        "manager",
        "mem",
        &format!("SharedDict<String, u64> of {n} entries (\"k{{i}}\" keys), per entry"),
        0,
    );
    row.mem = Some(Mem {
        mapped,
        resident: used,
    });
    row
}

/// The manager table.
pub fn tables(s: &mut String, rows: &[Row]) {
    let of = |r: &&Row| r.group == "manager";
    if !rows.iter().any(|r| of(&r)) {
        return;
    }
    let _ = writeln!(
        s,
        "\nManager: one dict of {} u64 keys, operations per second (all processes)",
        manager::KEYS
    );
    for r in rows.iter().filter(of) {
        if let Some(t) = r.thr {
            let vs = r
                .vs_python
                .map_or(String::new(), |x| format!("  {x:.0}x Python's"));
            let _ = writeln!(s, "  {:<56} {:>16}{vs}", r.name, rate(t.msgs_per_s, "op"));
        }
        if let Some(m) = r.mem {
            let _ = writeln!(
                s,
                "  {:<56} {:>8.1} B used, {:.1} B mapped",
                r.name, m.resident, m.mapped
            );
        }
    }
}
