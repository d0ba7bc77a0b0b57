//! How a task's function crosses into a worker.
//!
//! A task is a plain `fn(T) -> R`. It travels as two numbers: the offset of the function from a
//! known function of this crate ([`anchor`]), and the offset of the *shim* `shim::<T, R>`, the
//! generic function that decodes a `T` from the task's bytes, calls the function under
//! `catch_unwind`, and encodes its `R`. Both are code of the program's own executable: a worker
//! adds each offset to *its* address of `anchor` and gets the very same functions, whether it is
//! a forked copy of the parent (same addresses) or a re-executed one (`spawn`: the executable is
//! loaded elsewhere, position-independent, but every function keeps its distance from `anchor`).
//! The shim has one non-generic signature, [`Shim`], so the worker calls it without knowing `T`
//! or `R`; the pairing of the shim with its function's type is made by the compiler in the parent
//! (`shim::<T, R>` and `fn(T) -> R` come from one call), never by the worker.
//!
//! What makes that sound, and what is refused:
//! * For a spawned worker, the parent refuses (with [`Error::Invalid`]) a function that is not in
//!   the main executable's code (a function of a library loaded at run time: a new process would
//!   not have it at that distance, or at all).
//! * A spawned worker runs `/proc/self/exe` of the parent (the same file, even if it was replaced
//!   on disk since), and checks its own executable's device, inode, size and modification time
//!   against the parent's ([`BuildId`]); any difference is [`Error::Incompatible`] for every task,
//!   and the worker runs none.
//! * Every worker checks, once per function, that both addresses lie in executable mappings (of
//!   the main executable, for a spawned worker) before it calls anything; a task whose function
//!   fails the check is [`Error::Incompatible`] (a forked worker may lack a library the parent
//!   loaded after the pool started).

use crate::codec;
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Mutex;

/// Calls the function at `func` on the argument encoded in `arg`; writes the encoded result (or a
/// message) into `out` and returns a status (`transport::S_*`).
///
/// # Safety
/// `func` must be the address of the function this shim was instantiated for.
pub(crate) type Shim = unsafe fn(usize, &[u8], &mut Vec<u8>) -> u32;

/// The known function every offset is measured from.
#[inline(never)]
pub(crate) fn anchor() -> u32 {
    // A body of its own, so that no other function is merged with it.
    std::hint::black_box(0x5348_4d57)
}

fn anchor_addr() -> usize {
    anchor as fn() -> u32 as usize
}

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a payload that is not a string".to_owned()
    }
}

fn run<R: Serialize>(call: impl FnOnce() -> R, out: &mut Vec<u8>) -> u32 {
    use super::transport::{S_ENCODE, S_OK, S_PANICKED};
    out.clear();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        // Into `out`'s own allocation (one per worker, not one per task).
        Ok(r) => match postcard::to_extend(&r, std::mem::take(out)) {
            Ok(b) => {
                *out = b;
                S_OK
            }
            Err(e) => {
                out.clear();
                out.extend_from_slice(e.to_string().as_bytes());
                S_ENCODE
            }
        },
        Err(p) => {
            out.extend_from_slice(panic_message(&*p).as_bytes());
            // Dropping the payload runs the task's code (its destructor): under its own guard.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(p)));
            S_PANICKED
        }
    }
}

fn decode<T: DeserializeOwned>(arg: &[u8], out: &mut Vec<u8>) -> Option<T> {
    match codec::decode::<T>(arg) {
        Ok(t) => Some(t),
        Err(e) => {
            out.clear();
            out.extend_from_slice(e.to_string().as_bytes());
            None
        }
    }
}

/// The shim of `fn(T) -> R`.
///
/// # Safety
/// `func` is the address of a `fn(T) -> R`.
unsafe fn shim<T: DeserializeOwned, R: Serialize>(
    func: usize,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> u32 {
    // SAFETY: the caller's contract: `func` is a `fn(T) -> R` (fn pointers are address-sized).
    let f: fn(T) -> R = unsafe { std::mem::transmute::<usize, fn(T) -> R>(func) };
    match decode::<T>(arg, out) {
        Some(t) => run(|| f(t), out),
        None => super::transport::S_DECODE,
    }
}

/// The shim of `fn(A, B) -> R` (starmap), whose argument is the pair.
///
/// # Safety
/// `func` is the address of a `fn(A, B) -> R`.
unsafe fn shim2<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    func: usize,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> u32 {
    // SAFETY: the caller's contract, as in `shim`.
    let f: fn(A, B) -> R = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(func) };
    match decode::<(A, B)>(arg, out) {
        Some((a, b)) => run(|| f(a, b), out),
        None => super::transport::S_DECODE,
    }
}

/// A function as it travels: offsets of its shim and of itself from [`anchor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FnRef {
    pub(crate) shim: u64,
    pub(crate) func: u64,
}

fn offset(addr: usize) -> u64 {
    (addr as u64).wrapping_sub(anchor_addr() as u64)
}

impl FnRef {
    pub(crate) fn of<T: DeserializeOwned, R: Serialize>(f: fn(T) -> R) -> FnRef {
        FnRef {
            shim: offset(shim::<T, R> as Shim as usize),
            func: offset(f as usize),
        }
    }

    pub(crate) fn of2<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
        f: fn(A, B) -> R,
    ) -> FnRef {
        FnRef {
            shim: offset(shim2::<A, B, R> as Shim as usize),
            func: offset(f as usize),
        }
    }

    /// The addresses in this process.
    pub(crate) fn addrs(self) -> (usize, usize) {
        let a = anchor_addr() as u64;
        (
            a.wrapping_add(self.shim) as usize,
            a.wrapping_add(self.func) as usize,
        )
    }
}

/// Code ranges of this process: `(start, end, in the main executable)`.
fn code_ranges() -> Result<Vec<(usize, usize, bool)>> {
    let exe = std::fs::metadata("/proc/self/exe")?;
    use std::os::unix::fs::MetadataExt;
    let (dev, ino) = (exe.dev(), exe.ino());
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(_off), Some(devs), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if !perms.contains('x') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        let main = inode.parse::<u64>().ok() == Some(ino)
            && devs.split_once(':').is_some_and(|(ma, mi)| {
                let (ma, mi) = (
                    u32::from_str_radix(ma, 16).unwrap_or(u32::MAX),
                    u32::from_str_radix(mi, 16).unwrap_or(u32::MAX),
                );
                libc::makedev(ma, mi) == dev
            });
        out.push((a, b, main));
    }
    Ok(out)
}

/// Functions already checked in this process.
static CHECKED: Mutex<Vec<(FnRef, bool)>> = Mutex::new(Vec::new());

/// Whether both addresses of `f` lie in executable code (of the main executable, with
/// `main_only`), checked once per function per process.
pub(crate) fn callable(f: FnRef, main_only: bool) -> bool {
    let mut done = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&(_, ok)) = done.iter().find(|(g, _)| *g == f) {
        return ok;
    }
    let (s, g) = f.addrs();
    let ok = code_ranges().is_ok_and(|r| {
        let inside = |a: usize| {
            r.iter()
                .any(|&(lo, hi, m)| lo <= a && a < hi && (m || !main_only))
        };
        inside(s) && inside(g)
    });
    if done.len() < 4096 {
        done.push((f, ok));
    }
    ok
}

/// In the parent of a spawn pool: refuses a function that a re-executed worker could not find.
pub(crate) fn check_for_spawn(f: FnRef) -> Result<()> {
    if callable(f, true) {
        return Ok(());
    }
    Err(Error::invalid(
        "the task function is not in the main executable's code (a library loaded at run time?): \
         a spawned worker could not find it; use StartMethod::Fork, or a function of the program",
    ))
}

/// Calls `f` (checked with [`callable`] by the caller) on `arg`.
///
/// # Safety
/// `f` must have been made by [`FnRef::of`] (or `of2`) in a process running this same build, and
/// checked callable here.
pub(crate) unsafe fn call(f: FnRef, arg: &[u8], out: &mut Vec<u8>) -> u32 {
    let (s, g) = f.addrs();
    // SAFETY: `s` is the address of a `Shim` (the caller's contract: same build, offsets made from
    // `shim::<T, R> as Shim`), and `g` the function that shim was made for.
    unsafe {
        let shim: Shim = std::mem::transmute::<usize, Shim>(s);
        shim(g, arg, out)
    }
}

/// Which build of the program runs: the executable's device, inode, size and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct BuildId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl BuildId {
    /// This process's.
    pub(crate) fn current() -> Result<BuildId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self/exe")?;
        Ok(BuildId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// The initializer's shim: `fn(A)`.
pub(crate) fn init_ref<A: DeserializeOwned>(f: fn(A)) -> FnRef {
    FnRef::of::<A, ()>(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u64 {
        u64::from(x) * 2
    }

    #[test]
    fn a_function_crosses_as_offsets() {
        let f = FnRef::of(double as fn(u32) -> u64);
        assert!(callable(f, true));
        let mut out = Vec::new();
        let arg = codec::encode(&21u32).unwrap();
        // SAFETY: made by `FnRef::of` here, checked callable.
        let st = unsafe { call(f, &arg, &mut out) };
        assert_eq!(st, super::super::transport::S_OK);
        assert_eq!(codec::decode::<u64>(&out).unwrap(), 42);
    }
}
