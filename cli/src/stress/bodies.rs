//! The participants' loops, one per primitive and role. Each records in the ledger what the library
//! acknowledged (after the call returned) and what it took (in its log), times every blocking call
//! ([`Ctx::call`]) and reports anything unexpected as wrong.

use super::ctx::{Ctx, T, check_item, make_item};
use super::ledger::{id, id_seq};
use shmwire::{
    Barrier, Condition, Connection, Error, Lock, Manager, Pool, Queue, RLock, Remote, RemoteQueue,
    Server,
};
use std::sync::atomic::Ordering;
use std::time::Duration;

pub const AUTHKEY: &[u8] = b"shmwire-stress";
/// The key under which the dict's `modify` updates count (item ids never reach it).
pub const COUNT_KEY: u64 = u64::MAX;
/// A barrier's timeout (no party is stopped nearly this long).
pub const BARRIER_T: Duration = Duration::from_secs(2);
/// A pool task's outcome: known within 2 x PROBE_INTERVAL of a worker's death.
pub const POOL_T: Duration = Duration::from_millis(200);

/// Item sizes: in the slot, or spilled (larger than the 240-byte slot).
#[derive(Clone, Copy)]
pub enum Sizes {
    Small,
    Spilled,
    Mixed,
}

impl Sizes {
    fn pick(self, c: &mut Ctx) -> usize {
        match self {
            Sizes::Small => c.rng.range(8, 200) as usize,
            Sizes::Spilled => c.rng.range(300, 4000) as usize,
            Sizes::Mixed => {
                if c.rng.below(4) == 0 {
                    c.rng.range(300, 4000) as usize
                } else {
                    c.rng.range(8, 200) as usize
                }
            }
        }
    }
}

/// What producers and consumers of a queue call: a local `Queue` or a served one.
pub trait Q {
    fn put_t(&self, item: &[u8]) -> shmwire::Result<()>;
    fn get_t(&self) -> shmwire::Result<Vec<u8>>;
}

impl Q for Queue<Vec<u8>> {
    fn put_t(&self, item: &[u8]) -> shmwire::Result<()> {
        self.put_timeout(item.to_vec(), T)
    }
    fn get_t(&self) -> shmwire::Result<Vec<u8>> {
        self.get_timeout(T)
    }
}

impl Q for RemoteQueue<Vec<u8>> {
    fn put_t(&self, item: &[u8]) -> shmwire::Result<()> {
        self.put_timeout(item.to_vec(), T)
    }
    fn get_t(&self) -> shmwire::Result<Vec<u8>> {
        self.get_timeout(T)
    }
}

/// Puts items until the round ends (or `cap` are acknowledged).
pub fn producer(mut c: Ctx, q: &impl Q, sizes: Sizes, cap: u64) {
    let mut seq = 0u64;
    while !c.stopping() {
        if seq >= cap {
            c.s().capped.store(1, Ordering::Release);
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let item = make_item(id(c.slot, seq), sizes.pick(&mut c));
        match c.call("put", T, || q.put_t(&item)) {
            Ok(()) => {
                seq += 1;
                c.s().acked.store(seq, Ordering::Release);
                c.op();
            }
            Err(Error::Timeout | Error::Full) => {}
            Err(e) => return c.wrong(format_args!("put: {e:?}")),
        }
    }
    c.s().done.store(1, Ordering::Release);
}

/// `SHMWIRE_STRESS_SABOTAGE`: `drop` (a consumer forgets every 100th item it took) or `hang` (a
/// consumer's 50th get takes 3 s). Only for the tests that show the checks fail when they should.
fn sabotage() -> String {
    std::env::var("SHMWIRE_STRESS_SABOTAGE").unwrap_or_default()
}

/// Gets items until the queue is closed and drained (`Eof`). With `wait_go`, first waits until the
/// supervisor says go (the queue grows meanwhile).
pub fn consumer(c: Ctx, q: &impl Q, wait_go: bool) {
    while wait_go && c.l.header().go.load(Ordering::Acquire) == 0 && !c.stopping() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let sabotage = sabotage();
    let mut n = 0u64;
    loop {
        n += 1;
        let got = c.call("get", T, || {
            if sabotage == "hang" && n == 50 {
                std::thread::sleep(Duration::from_secs(3));
            }
            q.get_t()
        });
        match got {
            Ok(item) => match check_item(&item) {
                Some(_) if sabotage == "drop" && n.is_multiple_of(100) => {}
                Some(i) => {
                    if !c.l.record(c.slot, i) {
                        return c.wrong(format_args!("log full"));
                    }
                    c.op();
                }
                None => c.wrong(format_args!("damaged item of {} bytes", item.len())),
            },
            Err(Error::Timeout | Error::Empty) => {}
            Err(Error::Eof) => break,
            Err(e) => return c.wrong(format_args!("get: {e:?}")),
        }
    }
    c.s().done.store(1, Ordering::Release);
}

/// A served queue's client: connects once the server listens.
pub fn remote_queue(c: &Ctx) -> Option<RemoteQueue<Vec<u8>>> {
    let t0 = std::time::Instant::now();
    let port = loop {
        let p = c.l.header().port.load(Ordering::Acquire);
        if p != 0 {
            break p;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            c.wrong(format_args!("the server never listened"));
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let addr = format!("tcp://127.0.0.1:{port}");
    match Remote::connect(&addr, AUTHKEY).and_then(|r| r.queue::<Vec<u8>>("q")) {
        Ok(q) => Some(q),
        Err(e) => {
            c.wrong(format_args!("connect {addr}: {e:?}"));
            None
        }
    }
}

/// Serves `q` on a kernel-chosen TCP port until the supervisor says stop (2).
pub fn server(c: Ctx, q: Queue<Vec<u8>>) {
    let run = || -> shmwire::Result<()> {
        let srv = Server::bind("tcp://127.0.0.1:0", AUTHKEY)?;
        srv.serve_queue("q", q)?;
        let addr = srv.address();
        let port: u32 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let t = srv.start()?;
        c.l.header().port.store(port, Ordering::Release);
        while c.l.header().stop.load(Ordering::Acquire) < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        t.stop()
    };
    if let Err(e) = run() {
        c.wrong(format_args!("server: {e:?}"));
    }
    c.s().done.store(1, Ordering::Release);
}

/// Sends numbered messages until the round ends, then closes its end.
pub fn pipe_sender(mut c: Ctx, w: Connection) {
    let mut seq = 0u64;
    while !c.stopping() {
        let len = if c.rng.below(50) == 0 {
            c.rng.range(5000, 12000)
        } else {
            c.rng.range(8, 300)
        } as usize;
        let msg = make_item(id(c.slot, seq), len);
        match c.call("send", T, || w.send_bytes_timeout(&msg, T)) {
            Ok(()) => {
                seq += 1;
                c.s().acked.store(seq, Ordering::Release);
                c.op();
            }
            Err(Error::Timeout) => {}
            Err(Error::PeerDied | Error::BrokenPipe) => {
                c.saw_death();
                break;
            }
            Err(e) => return c.wrong(format_args!("send: {e:?}")),
        }
    }
    drop(w);
    c.s().done.store(1, Ordering::Release);
}

/// Receives until `Eof` (or its sender died), checking order; `acked` counts what arrived.
pub fn pipe_receiver(c: Ctx, r: Connection) {
    let mut next = 0u64;
    loop {
        match c.call("recv", T, || r.recv_bytes_timeout(T)) {
            Ok(m) => match check_item(&m) {
                Some(i) if id_seq(i) == next => {
                    next += 1;
                    c.s().acked.store(next, Ordering::Release);
                    c.op();
                }
                Some(i) => {
                    return c.wrong(format_args!("message {} where {next} was due", id_seq(i)));
                }
                None => return c.wrong(format_args!("damaged message of {} bytes", m.len())),
            },
            Err(Error::Timeout) => {}
            Err(Error::Eof) => break,
            Err(Error::PeerDied | Error::BrokenPipe) => {
                c.saw_death();
                break;
            }
            Err(e) => return c.wrong(format_args!("recv: {e:?}")),
        }
    }
    c.s().done.store(1, Ordering::Release);
}

/// Inside a lock: claims the owner word, increments the count with a load and a store (exact only
/// under mutual exclusion), and gives the word back.
fn critical(c: &mut Ctx, owner_died: bool) {
    let h = c.l.header();
    let me = c.slot as u64 + 1;
    let prev = h.owner.swap(me, Ordering::AcqRel);
    if prev != 0 && !owner_died {
        h.violations.fetch_add(1, Ordering::Relaxed);
        c.wrong(format_args!("slot {} was inside the lock too", prev - 1));
    }
    let n = h.counter.load(Ordering::Relaxed);
    for _ in 0..c.rng.below(200) {
        std::hint::spin_loop();
    }
    h.counter.store(n + 1, Ordering::Relaxed);
    if h.owner.swap(0, Ordering::AcqRel) != me {
        h.violations.fetch_add(1, Ordering::Relaxed);
        c.wrong(format_args!("another process entered the lock meanwhile"));
    }
}

pub fn lock_peer(mut c: Ctx, lock: Lock) {
    while !c.stopping() {
        match c.call("acquire", T, || lock.acquire_timeout(T)) {
            Ok(g) => {
                let died = c.recover(&g);
                critical(&mut c, died);
                drop(g);
                c.s().acked.fetch_add(1, Ordering::Release);
                c.op();
            }
            Err(Error::Timeout) => {}
            Err(e) => return c.wrong(format_args!("acquire: {e:?}")),
        }
    }
    c.s().done.store(1, Ordering::Release);
}

pub fn rlock_peer(mut c: Ctx, lock: RLock) {
    while !c.stopping() {
        match c.call("acquire", T, || lock.acquire_timeout(T)) {
            Ok(g) => {
                let died = g.owner_died();
                if died {
                    c.saw_death();
                    g.mark_consistent();
                }
                // Re-entered: never waits.
                let inner = match lock.try_acquire() {
                    Ok(Some(g2)) => g2,
                    other => return c.wrong(format_args!("re-entry: {other:?}")),
                };
                critical(&mut c, died);
                drop(inner);
                drop(g);
                c.s().acked.fetch_add(1, Ordering::Release);
                c.op();
            }
            Err(Error::Timeout) => {}
            Err(e) => return c.wrong(format_args!("acquire: {e:?}")),
        }
    }
    c.s().done.store(1, Ordering::Release);
}

/// Adds a token under the condition's lock and notifies (at most 1,000 waiting tokens).
pub fn cond_producer(c: Ctx, cond: Condition) {
    let h = c.l.header();
    while !c.stopping() {
        match c.call("acquire", T, || cond.acquire_timeout(T)) {
            Ok(g) => {
                c.recover(&g);
                let n = h.tokens.load(Ordering::Relaxed);
                if n >= 1000 {
                    drop(g);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                h.tokens.store(n + 1, Ordering::Relaxed);
                if let Err(e) = cond.notify() {
                    return c.wrong(format_args!("notify: {e:?}"));
                }
                drop(g);
                c.s().acked.fetch_add(1, Ordering::Release);
                c.op();
            }
            Err(Error::Timeout) => {}
            Err(e) => return c.wrong(format_args!("acquire: {e:?}")),
        }
    }
    c.s().done.store(1, Ordering::Release);
}

/// Waits for a token under the condition and takes it.
pub fn cond_consumer(c: Ctx, cond: Condition) {
    let h = c.l.header();
    while !c.stopping() {
        let g = match c.call("acquire", T, || cond.acquire_timeout(T)) {
            Ok(g) => g,
            Err(Error::Timeout) => continue,
            Err(e) => return c.wrong(format_args!("acquire: {e:?}")),
        };
        c.recover(&g);
        // wait_while_timeout: up to T waiting, then up to T again taking the lock back.
        let waited = c.call("wait_while", T * 2, || {
            cond.wait_while_timeout(
                g,
                || h.tokens.load(Ordering::Relaxed) == 0 && !c.stopping(),
                T,
            )
        });
        match waited {
            Ok(g) => {
                c.recover(&g);
                let n = h.tokens.load(Ordering::Relaxed);
                if n > 0 {
                    h.tokens.store(n - 1, Ordering::Relaxed);
                    drop(g);
                    c.s().acked.fetch_add(1, Ordering::Release);
                    c.op();
                }
            }
            Err(Error::Timeout) => {}
            Err(e) => return c.wrong(format_args!("wait_while: {e:?}")),
        }
    }
    c.s().done.store(1, Ordering::Release);
}

/// Waits at the barrier until it breaks (a party died, or the supervisor aborted it at the end).
pub fn barrier_party(c: Ctx, b: Barrier) {
    loop {
        match c.call("wait", BARRIER_T, || b.wait_timeout(BARRIER_T)) {
            Ok(_) => {
                c.s().acked.fetch_add(1, Ordering::Release);
                c.op();
            }
            Err(Error::BrokenBarrier) => {
                if !c.stopping() {
                    c.saw_death();
                }
                break;
            }
            Err(Error::Timeout) => {
                c.s().hangs.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "stress: HANG barrier slot {}: wait_timeout ran out ({BARRIER_T:?}): a party \
                     neither arrived nor was seen dead",
                    c.slot
                );
                break;
            }
            Err(e) => return c.wrong(format_args!("wait: {e:?}")),
        }
    }
    c.s().done.store(1, Ordering::Release);
}

/// Inserts its own keys and increments the shared count with `modify`, in a manager opened by name.
pub fn dict_peer(c: Ctx, name: String) {
    let d = match Manager::open(&name).and_then(|m| m.with_timeout(T).named_dict::<u64, u64>("d")) {
        Ok(d) => d,
        Err(e) => return c.wrong(format_args!("open: {e:?}")),
    };
    let (mut seq, mut k) = (0u64, 0u64);
    while !c.stopping() {
        k += 1;
        if k.is_multiple_of(4) {
            match c.call("modify", T, || d.modify(&COUNT_KEY, |v| *v += 1)) {
                Ok(()) => {
                    c.s().acked2.fetch_add(1, Ordering::Release);
                    c.op();
                }
                Err(Error::Timeout) => {}
                Err(e) => return c.wrong(format_args!("modify: {e:?}")),
            }
            continue;
        }
        match c.call("insert", T, || d.insert(id(c.slot, seq), seq)) {
            Ok(None) => {
                seq += 1;
                c.s().acked.store(seq, Ordering::Release);
                c.op();
            }
            Ok(Some(v)) => return c.wrong(format_args!("insert of a new key replaced {v}")),
            Err(Error::Timeout) => {}
            Err(e) => return c.wrong(format_args!("insert: {e:?}")),
        }
    }
    c.s().done.store(1, Ordering::Release);
}

/// Pushes ids (`producer`) or pops them (consumer) on a manager's list opened by name.
pub fn list_peer(c: Ctx, name: String, producer: bool, cap: u64) {
    let l = match Manager::open(&name).and_then(|m| m.with_timeout(T).named_list::<u64>("l")) {
        Ok(l) => l,
        Err(e) => return c.wrong(format_args!("open: {e:?}")),
    };
    let mut seq = 0u64;
    while !c.stopping() {
        if producer {
            if seq >= cap {
                c.s().capped.store(1, Ordering::Release);
            }
            if seq >= cap || l.len().is_ok_and(|n| n > 5000) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            match c.call("push", T, || l.push(id(c.slot, seq))) {
                Ok(()) => {
                    seq += 1;
                    c.s().acked.store(seq, Ordering::Release);
                    c.op();
                }
                Err(Error::Timeout) => {}
                Err(e) => return c.wrong(format_args!("push: {e:?}")),
            }
        } else {
            match c.call("pop", T, || l.pop()) {
                Ok(i) => {
                    if !c.l.record(c.slot, i) {
                        return c.wrong(format_args!("log full"));
                    }
                    c.op();
                }
                Err(Error::OutOfRange { .. } | Error::Empty | Error::Timeout) => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => return c.wrong(format_args!("pop: {e:?}")),
            }
        }
    }
    c.s().done.store(1, Ordering::Release);
}

fn double(x: u64) -> u64 {
    x.wrapping_mul(2)
}

/// Owns a pool of `workers` (the supervisor kills them) and runs batches of tasks through it.
pub fn pool_driver(c: Ctx, workers: usize) {
    let pool = match Pool::new(workers) {
        Ok(p) => p,
        Err(e) => return c.wrong(format_args!("Pool::new: {e:?}")),
    };
    let mut seq = 0u64;
    'outer: while !c.stopping() {
        let mut batch = Vec::new();
        for _ in 0..8 {
            let i = id(c.slot, seq);
            match pool.apply_async(double, i) {
                Ok(r) => batch.push((i, r)),
                Err(e) => {
                    c.wrong(format_args!("apply_async: {e:?}"));
                    break 'outer;
                }
            }
            seq += 1;
            c.s().acked.store(seq, Ordering::Release);
        }
        for (i, r) in batch {
            match c.call("get", POOL_T, || r.get_timeout(POOL_T * 10)) {
                Ok(v) if v == double(i) => {
                    c.l.record(c.slot, i);
                    c.op();
                }
                Ok(v) => c.wrong(format_args!("task {i}: {v}")),
                Err(Error::WorkerDied) => {
                    c.s().died_tasks.fetch_add(1, Ordering::Relaxed);
                    c.saw_death();
                }
                Err(Error::Timeout) => {
                    c.s().hangs.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "stress: HANG pool: task {i} had no outcome after {:?}",
                        POOL_T * 10
                    );
                }
                Err(e) => c.wrong(format_args!("task {i}: {e:?}")),
            }
        }
    }
    drop(pool);
    c.s().done.store(1, Ordering::Release);
}
