//! futex wait/wake on an `AtomicU32` in shared memory: the only place in the crate that asks the OS to
//! put a thread to sleep or to wake one.
//!
//! The futexes are *shared* (never `FUTEX_PRIVATE_FLAG`): the word lives in a mapping that several
//! processes see, and the kernel keys a shared futex by the page, not by the address space.
//! Every call is counted ([`crate::stats::futex_calls`]) so tests can check that a busy stream makes no
//! system calls.

use crate::loom::AtomicU32;
use std::sync::atomic::AtomicU64 as StdAtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

static CALLS: StdAtomicU64 = StdAtomicU64::new(0);

/// Number of futex system calls (waits and wakes) this process has made through shmwire.
pub(crate) fn calls() -> u64 {
    CALLS.load(Relaxed)
}

/// Sleeps while `*word == expected`, for at most `timeout` (forever if `None`). Returns when woken, when
/// the word did not hold `expected`, on a signal or on timeout: callers re-check their condition.
#[cfg(not(loom))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    use rustix::thread::futex;
    CALLS.fetch_add(1, Relaxed);
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    // EAGAIN (value changed), EINTR and ETIMEDOUT all mean "go and look again".
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// Wakes up to `n` sleepers on `word` (`u32::MAX`: all of them).
#[cfg(not(loom))]
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    use rustix::thread::futex;
    CALLS.fetch_add(1, Relaxed);
    // The kernel reads the count as an `int`: u32::MAX would be -1, which wakes only one.
    let _ = futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32));
}

// Under loom a futex is a (model-wide) mutex and condition variable: the check-and-sleep is atomic with
// respect to wakers, exactly as the kernel makes it, so a lost wake-up shows as a deadlock in the model.
#[cfg(loom)]
loom::lazy_static! {
    static ref PARK: (loom::sync::Mutex<()>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(()), loom::sync::Condvar::new());
}

#[cfg(loom)]
pub(crate) fn wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
    CALLS.fetch_add(1, Relaxed);
    let guard = PARK.0.lock().unwrap();
    if word.load(crate::loom::Ordering::SeqCst) == expected {
        drop(PARK.1.wait(guard).unwrap());
    }
}

#[cfg(loom)]
pub(crate) fn wake(_word: &AtomicU32, _n: u32) {
    CALLS.fetch_add(1, Relaxed);
    let _guard = PARK.0.lock().unwrap();
    PARK.1.notify_all();
}
