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
    // EAGAIN (value changed), EINTR and ETIMEDOUT all mean "go and look again".
    wait_woken(word, expected, timeout);
}

/// Wakes up to `n` sleepers on `word` (`u32::MAX`: all of them).
#[cfg(not(loom))]
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    wake_count(word, n);
}

/// [`wait`], telling whether the sleep ended by a [`wake`] (the kernel dequeued this sleeper;
/// rarely, a spurious return counts too): `false` for a word that did not hold `expected`, a
/// signal or the timeout.
#[cfg(not(loom))]
pub(crate) fn wait_woken(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    use rustix::thread::futex;
    CALLS.fetch_add(1, Relaxed);
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()).is_ok()
}

/// [`wake`], returning how many sleepers the kernel woke.
#[cfg(not(loom))]
pub(crate) fn wake_count(word: &AtomicU32, n: u32) -> u32 {
    use rustix::thread::futex;
    CALLS.fetch_add(1, Relaxed);
    // The kernel reads the count as an `int`: u32::MAX would be -1, which wakes only one.
    futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32)).map_or(0, |k| k as u32)
}

// Under loom a futex is a model-wide wait queue keyed by the word's address, behind a mutex and a
// condition variable: the check-and-sleep is atomic with respect to wakers, exactly as the kernel
// makes it, and a wake reaches only the sleepers on its own word (up to `n` of them), so a lost
// wake-up, or a wake sent to the wrong word, shows as a deadlock in the model.
#[cfg(loom)]
struct Sleeper {
    word: usize,
    id: u64,
    woken: bool,
}

#[cfg(loom)]
#[derive(Default)]
struct Queue {
    sleepers: Vec<Sleeper>,
    next_id: u64,
}

#[cfg(loom)]
loom::lazy_static! {
    static ref PARK: (loom::sync::Mutex<Queue>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(Queue::default()), loom::sync::Condvar::new());
}

#[cfg(loom)]
fn key(word: &AtomicU32) -> usize {
    word as *const AtomicU32 as usize
}

#[cfg(loom)]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    wait_woken(word, expected, timeout);
}

#[cfg(loom)]
pub(crate) fn wait_woken(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) -> bool {
    CALLS.fetch_add(1, Relaxed);
    let mut q = PARK.0.lock().unwrap();
    if word.load(crate::loom::Ordering::SeqCst) != expected {
        return false;
    }
    let id = q.next_id;
    q.next_id += 1;
    q.sleepers.push(Sleeper {
        word: key(word),
        id,
        woken: false,
    });
    loop {
        q = PARK.1.wait(q).unwrap();
        if let Some(i) = q.sleepers.iter().position(|s| s.id == id && s.woken) {
            q.sleepers.swap_remove(i);
            return true;
        }
    }
}

#[cfg(loom)]
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    wake_count(word, n);
}

#[cfg(loom)]
pub(crate) fn wake_count(word: &AtomicU32, n: u32) -> u32 {
    CALLS.fetch_add(1, Relaxed);
    let mut q = PARK.0.lock().unwrap();
    let k = key(word);
    let mut left = n;
    for s in q.sleepers.iter_mut().filter(|s| s.word == k && !s.woken) {
        if left == 0 {
            break;
        }
        s.woken = true;
        left -= 1;
    }
    PARK.1.notify_all();
    n - left
}

/// Under loom: how many sleepers on `word` have not been woken yet (for the model of this model).
#[cfg(all(loom, test))]
pub(crate) fn model_sleepers(word: &AtomicU32) -> usize {
    let q = PARK.0.lock().unwrap();
    q.sleepers
        .iter()
        .filter(|s| s.word == key(word) && !s.woken)
        .count()
}
