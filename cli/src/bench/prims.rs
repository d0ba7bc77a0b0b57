//! Queue and lock workloads: shmwire's `Queue` against the design CPython uses (an OS pipe whose
//! readers and writers each take a process-shared lock; here a pthread mutex, as fast as C makes it)
//! and against crossbeam-channel between two threads (the ceiling); `Lock`, `Semaphore` and `Event`
//! against the futex floor. Also compiled into `benches/queue.rs`.

use super::measure::{Lat, Thr};

/// How much work a queue run does: for about this long, or exactly this many items.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // `Items` is what the criterion benches use
pub enum Amount {
    For(Duration),
    Items(u64),
}
use shmwire::{Event, Lock, Process, Queue, Semaphore};
use std::time::{Duration, Instant};

/// Items moved by `producers` and `consumers` processes through a shmwire `Queue<u64>` for about
/// `budget`; items per second.
pub fn shm_queue(producers: usize, consumers: usize, amount: Amount) -> Thr {
    let (budget, quota) = match amount {
        Amount::For(d) => (d, u64::MAX),
        Amount::Items(n) => (Duration::ZERO, n / producers as u64),
    };
    let q = Queue::<u64>::new(4096).expect("queue");
    let done = Queue::<u64>::new(64).expect("queue");
    let mut kids = Vec::new();
    for _ in 0..consumers {
        let (q, done) = (q.clone(), done.clone());
        kids.push(
            Process::fork(move || {
                let mut n = 0u64;
                while q.get().is_ok() {
                    n += 1;
                }
                done.put(n).unwrap();
            })
            .expect("fork"),
        );
    }
    let stop = shmwire::Value::new(0u32).expect("value");
    let start = Instant::now();
    for _ in 0..producers {
        let (q, stop) = (q.clone(), stop.clone());
        kids.push(
            Process::fork(move || {
                let mut i = 0u64;
                while stop.load() == 0 && i < quota {
                    for _ in 0..256.min(quota - i) {
                        q.put(i).unwrap();
                        i += 1;
                    }
                }
            })
            .expect("fork"),
        );
    }
    if quota == u64::MAX {
        std::thread::sleep(budget);
        stop.store(1);
    }
    for k in kids.iter_mut().skip(consumers) {
        let _ = k.join();
    }
    q.close().expect("close");
    let total: u64 = (0..consumers).map(|_| done.get().unwrap_or(0)).sum();
    let secs = start.elapsed().as_secs_f64();
    for k in kids.iter_mut().take(consumers) {
        let _ = k.join();
    }
    Thr {
        msgs: total,
        msgs_per_s: total as f64 / secs,
        gb_per_s: total as f64 * 8.0 / secs / 1e9,
    }
}

/// A process-shared pthread mutex in an anonymous shared mapping.
struct PMutex(*mut libc::pthread_mutex_t);

// SAFETY: the mutex lives in shared memory for the whole run; it is used through its own API.
unsafe impl Send for PMutex {}

impl PMutex {
    fn new() -> PMutex {
        // SAFETY: a fresh shared anonymous mapping large enough for the mutex, initialised once with
        // process-shared attributes before any process uses it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut libc::pthread_mutex_t;
            assert!(p as *mut libc::c_void != libc::MAP_FAILED);
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutex_init(p, &attr);
            PMutex(p)
        }
    }

    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: an initialised process-shared mutex.
        unsafe { libc::pthread_mutex_lock(self.0) };
        let r = f();
        // SAFETY: as above; we hold it.
        unsafe { libc::pthread_mutex_unlock(self.0) };
        r
    }
}

fn read_exact(fd: i32, buf: &mut [u8]) -> bool {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: valid buffer range, open descriptor.
        let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        if n <= 0 {
            return false;
        }
        off += n as usize;
    }
    true
}

/// The same workload through CPython's design: one OS pipe; a writer takes the write lock and
/// writes `[len: u32][payload]`; a reader takes the read lock and reads the length, then the payload.
pub fn pipe_lock_queue(producers: usize, consumers: usize, amount: Amount) -> Thr {
    let (budget, quota) = match amount {
        Amount::For(d) => (d, u64::MAX),
        Amount::Items(n) => (Duration::ZERO, n / producers as u64),
    };
    let mut fds = [0; 2];
    // SAFETY: valid out-array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rfd, wfd) = (fds[0], fds[1]);
    let (rlock, wlock) = (PMutex::new(), PMutex::new());
    let done = Queue::<u64>::new(64).expect("queue");
    let mut kids = Vec::new();
    for _ in 0..consumers {
        let done = done.clone();
        let rl = PMutex(rlock.0);
        kids.push(
            Process::fork(move || {
                // SAFETY: the child does not write.
                unsafe { libc::close(wfd) };
                let mut n = 0u64;
                let mut len = [0u8; 4];
                let mut item = [0u8; 8];
                while rl.with(|| read_exact(rfd, &mut len) && read_exact(rfd, &mut item)) {
                    n += 1;
                }
                done.put(n).unwrap();
            })
            .expect("fork"),
        );
    }
    let stop = shmwire::Value::new(0u32).expect("value");
    let start = Instant::now();
    for _ in 0..producers {
        let stop = stop.clone();
        let wl = PMutex(wlock.0);
        kids.push(
            Process::fork(move || {
                let mut rec = [0u8; 12];
                rec[..4].copy_from_slice(&8u32.to_le_bytes());
                let mut i = 0u64;
                while stop.load() == 0 && i < quota {
                    for _ in 0..256.min(quota - i) {
                        rec[4..].copy_from_slice(&i.to_le_bytes());
                        // SAFETY: writes a valid 12-byte buffer to the pipe.
                        wl.with(|| unsafe { libc::write(wfd, rec.as_ptr().cast(), 12) });
                        i += 1;
                    }
                }
            })
            .expect("fork"),
        );
    }
    if quota == u64::MAX {
        std::thread::sleep(budget);
        stop.store(1);
    }
    for k in kids.iter_mut().skip(consumers) {
        let _ = k.join();
    }
    // SAFETY: the parent's write end: closing it ends the readers once drained.
    unsafe { libc::close(wfd) };
    let total: u64 = (0..consumers).map(|_| done.get().unwrap_or(0)).sum();
    let secs = start.elapsed().as_secs_f64();
    for k in kids.iter_mut().take(consumers) {
        let _ = k.join();
    }
    // SAFETY: our read end.
    unsafe { libc::close(rfd) };
    Thr {
        msgs: total,
        msgs_per_s: total as f64 / secs,
        gb_per_s: total as f64 * 8.0 / secs / 1e9,
    }
}

/// crossbeam-channel (bounded, 4096) between threads of one process: the ceiling.
pub fn crossbeam(producers: usize, consumers: usize, amount: Amount) -> Thr {
    let (budget, quota) = match amount {
        Amount::For(d) => (d, u64::MAX),
        Amount::Items(n) => (Duration::ZERO, n / producers as u64),
    };
    let (tx, rx) = crossbeam_channel::bounded::<u64>(4096);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = Instant::now();
    let cons: Vec<_> = (0..consumers)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || rx.iter().count() as u64)
        })
        .collect();
    let prods: Vec<_> = (0..producers)
        .map(|_| {
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < quota {
                    for _ in 0..256.min(quota - i) {
                        tx.send(i).unwrap();
                        i += 1;
                    }
                }
            })
        })
        .collect();
    drop((tx, rx));
    if quota == u64::MAX {
        std::thread::sleep(budget);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    for p in prods {
        p.join().unwrap();
    }
    let total: u64 = cons.into_iter().map(|c| c.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    Thr {
        msgs: total,
        msgs_per_s: total as f64 / secs,
        gb_per_s: total as f64 * 8.0 / secs / 1e9,
    }
}

fn lat(iters: u64, total: Duration) -> Lat {
    let ns = total.as_nanos() as f64 / iters as f64;
    Lat {
        iters,
        mean_ns: ns,
        p50_ns: ns,
        p99_ns: f64::NAN,
        p999_ns: f64::NAN,
    }
}

/// Uncontended `acquire` + release of a shmwire `Lock`, in one process.
pub fn lock_uncontended(budget: Duration) -> Lat {
    let lock = Lock::new().expect("lock");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..10_000 {
            drop(lock.acquire().unwrap());
        }
        n += 10_000;
    }
    lat(n, start.elapsed())
}

/// Two processes hammering one `Lock` (a tiny critical section each): time per acquisition.
pub fn lock_contended(budget: Duration) -> Lat {
    let lock = Lock::new().expect("lock");
    let count = shmwire::Value::new(0u64).expect("value");
    let stop = shmwire::Value::new(0u32).expect("value");
    let (l, c, s) = (lock.clone(), count.clone(), stop.clone());
    let child = Process::fork(move || {
        while s.load() == 0 {
            let _g = l.acquire().unwrap();
            c.fetch_add(1);
        }
    })
    .expect("fork");
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..1000 {
            let _g = lock.acquire().unwrap();
            count.fetch_add(1);
        }
    }
    stop.store(1);
    let elapsed = start.elapsed();
    let _ = child.join();
    lat(count.load(), elapsed)
}

/// Round trip of a wake-up through two semaphores (or two events) between two processes.
pub fn wake_pingpong(events: bool, budget: Duration) -> Lat {
    let (a, b) = (
        Semaphore::new(0).expect("sem"),
        Semaphore::new(0).expect("sem"),
    );
    let (e1, e2) = (Event::new().expect("event"), Event::new().expect("event"));
    let stop = shmwire::Value::new(0u32).expect("value");
    let (a2, b2, f1, f2, s) = (a.clone(), b.clone(), e1.clone(), e2.clone(), stop.clone());
    let child = Process::fork(move || {
        loop {
            if events {
                f1.wait().unwrap();
                f1.clear().unwrap();
                if s.load() != 0 {
                    break;
                }
                f2.set().unwrap();
            } else {
                a2.acquire().unwrap();
                if s.load() != 0 {
                    break;
                }
                b2.release().unwrap();
            }
        }
    })
    .expect("fork");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..100 {
            if events {
                e1.set().unwrap();
                e2.wait().unwrap();
                e2.clear().unwrap();
            } else {
                a.release().unwrap();
                b.acquire().unwrap();
            }
        }
        n += 100;
    }
    let elapsed = start.elapsed();
    stop.store(1);
    if events {
        e1.set().unwrap();
    } else {
        a.release().unwrap();
    }
    let _ = child.join();
    lat(n, elapsed)
}
