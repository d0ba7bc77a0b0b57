//! One round: the participants of one primitive are forked, loaded, killed and stopped at random;
//! then the round is ended, everything is reaped, cleaned up and checked.

use super::bodies::{self, COUNT_KEY, Sizes};
use super::ctx::{Ctx, Rng};
use super::ledger::{LOG_CAP, Ledger};
use super::procs;
use super::tally::{Counts, Tally};
use shmwire::{Barrier, Condition, Lock, Manager, Pipe, Process, Queue, RLock};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The primitives, by the names `--only` takes.
pub const PRIMS: &[&str] = &[
    "pipe",
    "queue",
    "queue-spill",
    "queue-grow",
    "lock",
    "rlock",
    "condition",
    "barrier",
    "dict",
    "list",
    "pool",
    "tcp-queue",
];

/// How long survivors have to show they got past a kill: 10 x the documented 2 x PROBE_INTERVAL
/// within which a death is acted on.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(2);
/// How long participants have to finish once the round ends (generous: they only drain).
const END_BOUND: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Role {
    Producer,
    Consumer,
    Peer,
    Driver,
    Server,
}

struct Part {
    role: Role,
    proc: Process,
    /// The slot whose process this participant talks to (a pipe's other end).
    partner: Option<usize>,
    killed: bool,
    ended: bool,
    status: Option<shmwire::ExitStatus>,
}

/// What the supervisor holds for the round (a handle keeps its object alive through the round).
#[allow(dead_code)]
enum World {
    Pipe,
    Queue(Queue<Vec<u8>>),
    Lock(Lock),
    RLock(RLock),
    Cond(Condition),
    Barrier(Barrier),
    Dict(Manager),
    List(Manager),
    Pool,
    Tcp(Queue<Vec<u8>>),
}

/// The knobs of a round.
pub struct Plan {
    pub len: Duration,
    /// Mean time between kills (`None`: no kills).
    pub kill_every: Option<Duration>,
    pub stop_every: Option<Duration>,
    /// Kills still wanted (`--kills`), if limited.
    pub kills_left: Option<u64>,
}

/// What the supervisor does after a kill: wait for these slots to make progress (each role among
/// them) or to end.
enum Expect {
    /// (slot, its ops at the kill).
    Progress(Vec<(usize, u64)>),
    Exit(Vec<usize>),
}

pub struct Round<'a> {
    prim: &'static str,
    l: Ledger,
    parts: Vec<Part>,
    world: World,
    rng: &'a mut Rng,
    pub c: Counts,
    pool_kills: u64,
}

fn spawn(
    l: &Ledger,
    prim: &'static str,
    slot: usize,
    rng: &mut Rng,
    f: impl FnOnce(Ctx),
) -> std::io::Result<Process> {
    let ctx = Ctx {
        l: l.share(),
        slot,
        prim,
        rng: Rng(rng.next() | 1),
    };
    let p = Process::fork(move || f(ctx)).map_err(std::io::Error::other)?;
    p.kill_on_drop(true);
    Ok(p)
}

impl<'a> Round<'a> {
    /// Makes the primitive (named `base`) and forks `n` participants (2 to 8).
    pub fn start(
        prim: &'static str,
        n: usize,
        base: &str,
        rng: &'a mut Rng,
    ) -> std::io::Result<Round<'a>> {
        let io = std::io::Error::other;
        let l = Ledger::new()?;
        let mut parts: Vec<Part> = Vec::new();
        let mut add = |role: Role, partner: Option<usize>, p: Process| {
            parts.push(Part {
                role,
                proc: p,
                partner,
                killed: false,
                ended: false,
                status: None,
            });
        };
        let split = |rng: &mut Rng, n: usize| rng.range(1, n as u64 - 1) as usize;
        let world = match prim {
            "pipe" => {
                for k in 0..(n / 2).max(1) {
                    let (r, w) = Pipe::builder()
                        .duplex(false)
                        .capacity(16 * 1024)
                        .name(&format!("{base}-{k}"))
                        .build()
                        .map_err(io)?;
                    let s = 2 * k;
                    add(
                        Role::Producer,
                        Some(s + 1),
                        spawn(&l, prim, s, rng, move |c| bodies::pipe_sender(c, w))?,
                    );
                    add(
                        Role::Consumer,
                        Some(s),
                        spawn(&l, prim, s + 1, rng, move |c| bodies::pipe_receiver(c, r))?,
                    );
                }
                World::Pipe
            }
            "queue" | "queue-spill" | "queue-grow" => {
                let grow = prim == "queue-grow";
                let q = Queue::<Vec<u8>>::builder()
                    .maxsize(if grow { 0 } else { 64 })
                    .name(base)
                    .build()
                    .map_err(io)?;
                let sizes = if prim == "queue-spill" {
                    Sizes::Spilled
                } else {
                    Sizes::Small
                };
                let np = split(rng, n);
                // The growing queue holds up to 200,000 items at once; the others move a log's worth.
                let cap = (if grow { 200_000 } else { LOG_CAP } / np) as u64;
                for s in 0..n {
                    let q = q.clone();
                    if s < np {
                        add(
                            Role::Producer,
                            None,
                            spawn(&l, prim, s, rng, move |c| {
                                bodies::producer(c, &q, sizes, cap)
                            })?,
                        );
                    } else {
                        add(
                            Role::Consumer,
                            None,
                            spawn(&l, prim, s, rng, move |c| bodies::consumer(c, &q, grow))?,
                        );
                    }
                }
                World::Queue(q)
            }
            "tcp-queue" => {
                let q = Queue::<Vec<u8>>::builder()
                    .maxsize(64)
                    .name(base)
                    .build()
                    .map_err(io)?;
                let np = split(rng, n);
                let cap = (LOG_CAP / np) as u64;
                for s in 0..n {
                    if s < np {
                        add(
                            Role::Producer,
                            None,
                            spawn(&l, prim, s, rng, move |c| {
                                if let Some(rq) = bodies::remote_queue(&c) {
                                    bodies::producer(c, &rq, Sizes::Mixed, cap)
                                }
                            })?,
                        );
                    } else {
                        add(
                            Role::Consumer,
                            None,
                            spawn(&l, prim, s, rng, move |c| {
                                if let Some(rq) = bodies::remote_queue(&c) {
                                    bodies::consumer(c, &rq, false)
                                }
                            })?,
                        );
                    }
                }
                let sq = q.clone();
                add(
                    Role::Server,
                    None,
                    spawn(&l, prim, n, rng, move |c| bodies::server(c, sq))?,
                );
                World::Tcp(q)
            }
            "lock" => {
                let lock = Lock::create(base).map_err(io)?;
                for s in 0..n {
                    let name = base.to_owned();
                    add(
                        Role::Peer,
                        None,
                        spawn(&l, prim, s, rng, move |c| match Lock::open(&name) {
                            Ok(lock) => bodies::lock_peer(c, lock),
                            Err(e) => c.wrong(format_args!("open: {e:?}")),
                        })?,
                    );
                }
                World::Lock(lock)
            }
            "rlock" => {
                let lock = RLock::create(base).map_err(io)?;
                for s in 0..n {
                    let lock = lock.clone();
                    add(
                        Role::Peer,
                        None,
                        spawn(&l, prim, s, rng, move |c| bodies::rlock_peer(c, lock))?,
                    );
                }
                World::RLock(lock)
            }
            "condition" => {
                let cond = Condition::create(base).map_err(io)?;
                let np = split(rng, n);
                for s in 0..n {
                    let cond = cond.clone();
                    if s < np {
                        add(
                            Role::Producer,
                            None,
                            spawn(&l, prim, s, rng, move |c| bodies::cond_producer(c, cond))?,
                        );
                    } else {
                        add(
                            Role::Consumer,
                            None,
                            spawn(&l, prim, s, rng, move |c| bodies::cond_consumer(c, cond))?,
                        );
                    }
                }
                World::Cond(cond)
            }
            "barrier" => {
                let b = Barrier::create(base, n as u32).map_err(io)?;
                for s in 0..n {
                    let name = base.to_owned();
                    add(
                        Role::Peer,
                        None,
                        spawn(&l, prim, s, rng, move |c| match Barrier::open(&name) {
                            Ok(b) => bodies::barrier_party(c, b),
                            Err(e) => c.wrong(format_args!("open: {e:?}")),
                        })?,
                    );
                }
                World::Barrier(b)
            }
            "dict" => {
                let m = Manager::create(base).map_err(io)?;
                m.named_dict::<u64, u64>("d")
                    .and_then(|d| d.insert(COUNT_KEY, 0))
                    .map_err(io)?;
                for s in 0..n {
                    let name = base.to_owned();
                    add(
                        Role::Peer,
                        None,
                        spawn(&l, prim, s, rng, move |c| bodies::dict_peer(c, name))?,
                    );
                }
                World::Dict(m)
            }
            "list" => {
                let m = Manager::create(base).map_err(io)?;
                m.named_list::<u64>("l").map_err(io)?;
                let np = split(rng, n);
                // One consumer may take every item: its log must hold them.
                let cap = (LOG_CAP / np) as u64;
                for s in 0..n {
                    let name = base.to_owned();
                    let role = if s < np {
                        Role::Producer
                    } else {
                        Role::Consumer
                    };
                    add(
                        role,
                        None,
                        spawn(&l, prim, s, rng, move |c| {
                            bodies::list_peer(c, name, s < np, cap)
                        })?,
                    );
                }
                World::List(m)
            }
            "pool" => {
                let workers = n.saturating_sub(1).max(1);
                add(
                    Role::Driver,
                    None,
                    spawn(&l, prim, 0, rng, move |c| bodies::pool_driver(c, workers))?,
                );
                World::Pool
            }
            other => return Err(std::io::Error::other(format!("unknown primitive {other}"))),
        };
        Ok(Round {
            prim,
            l,
            parts,
            world,
            rng,
            c: Counts::default(),
            pool_kills: 0,
        })
    }

    fn alive(&self, i: usize) -> bool {
        !self.parts[i].killed && !self.parts[i].ended
    }

    /// Polls for participants that ended on their own.
    fn reap(&mut self) {
        for p in &mut self.parts {
            if p.ended || p.killed {
                continue;
            }
            if let Ok(Some(s)) = p.proc.try_join() {
                p.ended = true;
                p.status = Some(s);
            }
        }
    }

    /// The pids the supervisor may kill: participants (not servers or drivers), or a pool's workers.
    fn victims(&mut self) -> Vec<(Option<usize>, i32)> {
        if matches!(self.world, World::Pool) {
            let driver = self.parts[0].proc.pid() as i32;
            // The zygote is the driver's child; the workers are the zygote's.
            return procs::children(driver)
                .into_iter()
                .flat_map(procs::children)
                .map(|w| (None, w))
                .collect();
        }
        let keep_one = self.prim != "pipe";
        let alive: Vec<usize> = (0..self.parts.len()).filter(|&i| self.alive(i)).collect();
        alive
            .iter()
            .copied()
            .filter(|&i| {
                matches!(
                    self.parts[i].role,
                    Role::Producer | Role::Consumer | Role::Peer
                )
            })
            // A barrier knows its parties from their first wait (its docs: a process that dies
            // before it first waits is not known as a party; the waiters' timeout covers that).
            .filter(|&i| {
                !matches!(self.world, World::Barrier(_))
                    || self.l.slot(i).acked.load(Ordering::Acquire) >= 1
            })
            // Keep at least one participant of each role (a pipe's pair may go).
            .filter(|&i| {
                !keep_one
                    || alive
                        .iter()
                        .filter(|&&j| self.parts[j].role == self.parts[i].role)
                        .count()
                        > 1
            })
            .map(|i| (Some(i), self.parts[i].proc.pid() as i32))
            .collect()
    }

    fn stop_gen(&self, i: usize) {
        self.l.slot(i).stop_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Runs the round for `plan.len` (longer while a recovery is being watched), injecting faults.
    /// `live` is called about every 50 ms with the ops done so far.
    pub fn drive(
        &mut self,
        plan: &mut Plan,
        kill_due: &mut Instant,
        live: &mut dyn FnMut(&Counts, u64),
    ) {
        let start = Instant::now();
        let end = start + plan.len;
        let mut next_stop = plan.stop_every.map(|d| start + self.jitter(d));
        let mut stopped: Vec<(usize, Instant)> = Vec::new();
        let mut watch: Option<(Expect, Instant)> = None;
        let mut last_live = start;
        let grow = self.prim == "queue-grow";
        loop {
            let now = Instant::now();
            self.reap();
            if grow && now >= start + plan.len * 2 / 5 {
                self.l.header().go.store(1, Ordering::Release);
            }
            if now >= end && watch.is_none() {
                break;
            }
            // A kill: everyone stopped goes on first (and no stop until the survivors recovered).
            let in_window = now >= start + plan.len / 20 && now < start + plan.len * 4 / 5;
            if let Some(every) = plan.kill_every
                && plan.kills_left != Some(0)
                && watch.is_none()
                && in_window
                && now >= *kill_due
            {
                *kill_due = now + self.jitter(every);
                let victims = self.victims();
                if !victims.is_empty() {
                    for (i, _) in stopped.drain(..) {
                        self.cont(i);
                    }
                    let (slot, pid) = victims[self.rng.below(victims.len() as u64) as usize];
                    // SAFETY: plain syscall; the pid is our own child (or the pool's worker), not
                    // yet reaped, so it cannot have been reused.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    self.c.kills += 1;
                    if let Some(k) = plan.kills_left.as_mut() {
                        *k -= 1;
                    }
                    match slot {
                        Some(i) => {
                            self.parts[i].killed = true;
                            let _ = self.parts[i].proc.join();
                        }
                        None => self.pool_kills += 1,
                    }
                    watch = self
                        .expectation(slot)
                        .map(|e| (e, Instant::now() + RECOVERY_BOUND));
                }
            }
            // Stops, and their ends.
            stopped.retain(|&(i, until)| {
                if now >= until {
                    self.cont(i);
                    false
                } else {
                    true
                }
            });
            if let (Some(every), Some(at)) = (plan.stop_every, next_stop)
                && now >= at
                && watch.is_none()
                && now < end
            {
                {
                    next_stop = Some(now + self.jitter(every));
                    let cands: Vec<usize> = (0..self.parts.len())
                        .filter(|&i| self.alive(i) && !stopped.iter().any(|s| s.0 == i))
                        .collect();
                    if !cands.is_empty() {
                        let i = cands[self.rng.below(cands.len() as u64) as usize];
                        self.stop_gen(i);
                        // SAFETY: plain syscall on our own unreaped child.
                        unsafe { libc::kill(self.parts[i].proc.pid() as i32, libc::SIGSTOP) };
                        self.c.stops += 1;
                        let d = Duration::from_millis(self.rng.range(5, 100));
                        stopped.push((i, now + d));
                    }
                }
            }
            if let Some((e, deadline)) = &watch {
                if self.recovered(e) {
                    self.c.recoveries += 1;
                    watch = None;
                } else if now >= *deadline {
                    self.c.hangs += 1;
                    eprintln!(
                        "stress: HANG {}: the survivors did not get past a kill within {RECOVERY_BOUND:?} ({}); {}",
                        self.prim,
                        match e {
                            Expect::Progress(..) => "no progress",
                            Expect::Exit(_) => "not ended",
                        },
                        self.state()
                    );
                    watch = None;
                }
            }
            if now.duration_since(last_live) >= Duration::from_millis(50) {
                last_live = now;
                live(&self.c, self.ops());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for (i, _) in stopped.drain(..) {
            self.cont(i);
        }
    }

    /// Whether every producer among `v` idles at its cap.
    fn capped(&self, v: &[(usize, u64)]) -> bool {
        let mut producers = v
            .iter()
            .filter(|&&(j, _)| self.parts[j].role == Role::Producer)
            .peekable();
        producers.peek().is_some()
            && producers.all(|&(j, _)| self.l.slot(j).capped.load(Ordering::Acquire) == 1)
    }

    /// Each participant's role, fate and counters (for a report).
    fn state(&self) -> String {
        let v: Vec<String> = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s = self.l.slot(i);
                format!(
                    "slot {i} {:?} pid {}{}: ops {} acked {} done {} capped {}",
                    p.role,
                    p.proc.pid(),
                    if p.killed {
                        " killed"
                    } else if p.ended {
                        " ended"
                    } else {
                        ""
                    },
                    s.ops.load(Ordering::Relaxed),
                    s.acked.load(Ordering::Relaxed),
                    s.done.load(Ordering::Relaxed),
                    s.capped.load(Ordering::Relaxed)
                )
            })
            .collect();
        v.join("; ")
    }

    fn jitter(&mut self, mean: Duration) -> Duration {
        mean.mul_f64(0.5 + self.rng.below(1001) as f64 / 1000.0)
    }

    fn cont(&self, i: usize) {
        // SAFETY: plain syscall on our own unreaped child.
        unsafe { libc::kill(self.parts[i].proc.pid() as i32, libc::SIGCONT) };
        self.stop_gen(i);
    }

    pub fn ops(&self) -> u64 {
        (0..self.parts.len())
            .map(|i| self.l.slot(i).ops.load(Ordering::Relaxed))
            .sum()
    }

    /// What must follow the kill of `slot` (`None`: a pool worker).
    fn expectation(&self, slot: Option<usize>) -> Option<Expect> {
        let alive: Vec<usize> = (0..self.parts.len()).filter(|&i| self.alive(i)).collect();
        let progress = |v: Vec<usize>| {
            Expect::Progress(
                v.iter()
                    .map(|&i| (i, self.l.slot(i).ops.load(Ordering::Acquire)))
                    .collect(),
            )
        };
        match (&self.world, slot) {
            (World::Pool, _) => Some(progress(vec![0])),
            (World::Pipe, Some(i)) => self.parts[i].partner.map(|p| Expect::Exit(vec![p])),
            (World::Barrier(_), _) => Some(Expect::Exit(alive)),
            _ => {
                let roles: Vec<Role> = alive.iter().map(|&i| self.parts[i].role).collect();
                let lone = (roles.contains(&Role::Producer) && !roles.contains(&Role::Consumer))
                    || (roles.contains(&Role::Consumer) && !roles.contains(&Role::Producer));
                // With one side gone for good, the other cannot progress: only its calls' bounds count.
                (!lone).then(|| {
                    progress(
                        alive
                            .into_iter()
                            .filter(|&i| self.parts[i].role != Role::Server)
                            .collect(),
                    )
                })
            }
        }
    }

    fn recovered(&self, e: &Expect) -> bool {
        match e {
            // Every role among the survivors did an operation since the kill; unless the producers
            // all idle at their cap (then consumers may rightly starve).
            Expect::Progress(v) if self.capped(v) => true,
            Expect::Progress(v) => v.iter().all(|&(i, _)| {
                let role = self.parts[i].role;
                let sum = |now: bool| -> u64 {
                    v.iter()
                        .filter(|&&(j, _)| self.parts[j].role == role)
                        .map(|&(j, then)| {
                            if now {
                                self.l.slot(j).ops.load(Ordering::Acquire)
                            } else {
                                then
                            }
                        })
                        .sum()
                };
                sum(true) > sum(false)
            }),
            Expect::Exit(v) => v
                .iter()
                .all(|&i| self.parts[i].ended || self.l.slot(i).done.load(Ordering::Acquire) == 1),
        }
    }

    /// Waits (until `deadline`) for the participants of these roles to end; one still running then
    /// is a hang, and is killed.
    fn wait_roles(&mut self, roles: &[Role], deadline: Instant) {
        for i in 0..self.parts.len() {
            let p = &mut self.parts[i];
            if p.killed || p.ended || !roles.contains(&p.role) {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match p.proc.join_timeout(left) {
                Ok(s) => {
                    p.ended = true;
                    p.status = Some(s);
                }
                Err(e) => {
                    self.c.hangs += 1;
                    let pid = p.proc.pid();
                    eprintln!(
                        "stress: HANG {}: slot {i} ({:?}, pid {pid}) had not ended {END_BOUND:?} after the round ({e}); \
                         ops {}, done {}",
                        self.prim,
                        p.role,
                        self.l.slot(i).ops.load(Ordering::Relaxed),
                        self.l.slot(i).done.load(Ordering::Relaxed)
                    );
                    let _ = p.proc.kill();
                    let _ = p.proc.join();
                    p.killed = true;
                }
            }
        }
    }

    /// Ends the round: the participants finish, the supervisor drains what is left, checks the
    /// ledger, drops its handles, runs `cleanup()` and checks /dev/shm and the process tree.
    pub fn finish(mut self, shm_before: &[String]) -> Counts {
        let h = self.l.header();
        h.stop.store(1, Ordering::Release);
        let deadline = Instant::now() + END_BOUND;
        let all = [
            Role::Producer,
            Role::Consumer,
            Role::Peer,
            Role::Driver,
            Role::Server,
        ];
        let mut drained: Vec<u64> = Vec::new();
        match &self.world {
            World::Queue(q) | World::Tcp(q) => {
                let q = q.clone();
                self.wait_roles(&[Role::Producer], deadline);
                if let Err(e) = q.close() {
                    self.wrong(format_args!("close: {e:?}"));
                }
                self.wait_roles(&[Role::Consumer], deadline);
                self.l.header().stop.store(2, Ordering::Release);
                self.wait_roles(&[Role::Server], deadline);
                loop {
                    match q.get_nowait() {
                        Ok(item) => match super::ctx::check_item(&item) {
                            Some(i) => drained.push(i),
                            None => self.wrong(format_args!("damaged item in the drain")),
                        },
                        Err(shmwire::Error::Eof | shmwire::Error::Empty) => break,
                        Err(e) => {
                            self.wrong(format_args!("drain: {e:?}"));
                            break;
                        }
                    }
                }
            }
            World::Barrier(b) => {
                b.abort();
                self.wait_roles(&all, deadline);
            }
            _ => self.wait_roles(&all, deadline),
        }
        for (i, p) in self.parts.iter().enumerate() {
            if let Some(s) = p.status.filter(|s| !s.success()) {
                self.c.wrong += 1;
                eprintln!(
                    "stress: WRONG {}: slot {i} ({:?}) exited with {s:?}",
                    self.prim, p.role
                );
            }
        }
        self.check(drained);
        // Everything the round made goes: the handles, the mapping, then what the dead left.
        let Round {
            l,
            parts,
            world,
            prim,
            mut c,
            ..
        } = self;
        drop(world);
        drop(parts);
        l.unmap();
        c.leaked += leaks(prim, shm_before);
        c.rounds = 1;
        c
    }

    fn wrong(&mut self, what: std::fmt::Arguments) {
        self.c.wrong += 1;
        eprintln!("stress: WRONG {}: {what}", self.prim);
    }

    fn slots(&self) -> impl Iterator<Item = (usize, &Part)> {
        self.parts.iter().enumerate()
    }

    /// The accounting of the round.
    fn check(&mut self, drained: Vec<u64>) {
        let n = self.parts.len();
        for i in 0..n {
            let s = self.l.slot(i);
            self.c.hangs += s.hangs.load(Ordering::Acquire);
            self.c.wrong += s.wrong.load(Ordering::Acquire);
            self.c.ops += s.ops.load(Ordering::Acquire);
        }
        let acked = |i: usize| self.l.slot(i).acked.load(Ordering::Acquire);
        let killed_roles: Vec<Role> = self
            .parts
            .iter()
            .filter(|p| p.killed)
            .map(|p| p.role)
            .collect();
        let killed_of = |r: Role| killed_roles.iter().filter(|&&k| k == r).count() as u64;
        let kills = self.slots().filter(|(_, p)| p.killed).count() as u64;
        match &self.world {
            World::Pipe => {
                for s in (0..n).step_by(2) {
                    let (a, r) = (acked(s), acked(s + 1));
                    let (pk, ck) = (self.parts[s].killed, self.parts[s + 1].killed);
                    if !ck && r < a {
                        self.c.lost += a - r;
                    }
                    if r > a + u64::from(pk) {
                        self.c.duplicated += r - a - u64::from(pk);
                    }
                }
            }
            World::Queue(_) | World::Tcp(_) | World::List(_) => {
                let producers = self
                    .slots()
                    .filter(|(_, p)| p.role == Role::Producer)
                    .map(|(i, p)| (i, (acked(i), p.killed)));
                let mut tally = Tally::new(producers);
                drained.into_iter().for_each(|i| tally.add(i));
                if let World::List(m) = &self.world {
                    match m.named_list::<u64>("l").and_then(|l| l.to_vec()) {
                        Ok(v) => v.into_iter().for_each(|i| tally.add(i)),
                        Err(e) => {
                            self.c.wrong += 1;
                            eprintln!("stress: WRONG list: to_vec: {e:?}");
                        }
                    }
                }
                for (i, p) in self.slots() {
                    if p.role == Role::Consumer {
                        self.l.for_each_entry(i, |id| tally.add(id));
                    }
                }
                let (f, lost, dup, wrong) = tally.finish(killed_of(Role::Consumer));
                self.c.in_flight += f;
                self.c.lost += lost;
                self.c.duplicated += dup;
                self.c.wrong += wrong;
            }
            World::Dict(m) => {
                let items = m.named_dict::<u64, u64>("d").and_then(|d| d.items());
                match items {
                    Ok(items) => {
                        let mut tally =
                            Tally::new(self.slots().map(|(i, p)| (i, (acked(i), p.killed))));
                        items
                            .iter()
                            .filter(|kv| kv.0 != COUNT_KEY)
                            .for_each(|kv| tally.add(kv.0));
                        let (_, lost, dup, wrong) = tally.finish(0);
                        self.c.lost += lost;
                        self.c.duplicated += dup;
                        self.c.wrong += wrong;
                        let count = items
                            .iter()
                            .find(|kv| kv.0 == COUNT_KEY)
                            .map_or(0, |kv| kv.1);
                        let want: u64 = (0..n)
                            .map(|i| self.l.slot(i).acked2.load(Ordering::Acquire))
                            .sum();
                        self.counted("dict count", count, want, 0, kills);
                    }
                    Err(e) => self.wrong(format_args!("dict items: {e:?}")),
                }
            }
            World::Lock(_) | World::RLock(_) => {
                let count = self.l.header().counter.load(Ordering::Acquire);
                let want: u64 = (0..n).map(acked).sum();
                self.counted("lock count", count, want, 0, kills);
            }
            World::Cond(_) => {
                let tokens = self.l.header().tokens.load(Ordering::Acquire);
                let (mut made, mut taken) = (0u64, 0u64);
                for (i, p) in self.slots() {
                    if p.role == Role::Producer {
                        made += acked(i)
                    } else {
                        taken += acked(i)
                    }
                }
                // tokens + taken = made, plus a token a killed producer added unacknowledged, minus
                // one a killed consumer took unacknowledged.
                let (kp, kc) = (killed_of(Role::Producer), killed_of(Role::Consumer));
                self.counted("tokens", tokens + taken, made, kc, kp);
            }
            World::Barrier(_) => {
                let passes: Vec<u64> = (0..n).map(acked).collect();
                let (lo, hi) = (
                    passes.iter().min().copied().unwrap_or(0),
                    passes.iter().max().copied().unwrap_or(0),
                );
                if hi - lo > 1 {
                    self.wrong(format_args!(
                        "parties passed the barrier unequally: {passes:?}"
                    ));
                }
            }
            World::Pool => {
                let s = self.l.slot(0);
                let submitted = s.acked.load(Ordering::Acquire);
                let mut got = self.l.entries(0);
                let recorded = got.len() as u64;
                got.sort_unstable();
                got.dedup();
                self.c.duplicated += recorded - got.len() as u64;
                let died = s.died_tasks.load(Ordering::Acquire);
                let timed_out = s.hangs.load(Ordering::Acquire);
                let f = died.min(self.pool_kills);
                self.c.in_flight += f;
                self.c.lost += died - f;
                let accounted = recorded + died + timed_out;
                if accounted < submitted && self.l.slot(0).wrong.load(Ordering::Acquire) == 0 {
                    self.c.lost += submitted - accounted;
                }
            }
        }
    }

    /// A count kept by updates: `got` must be `want` (acknowledged updates) up to `below` fewer (in
    /// flight at kill) or `above` more (applied, not yet acknowledged, when their process was killed).
    fn counted(&mut self, what: &str, got: u64, want: u64, below: u64, above: u64) {
        if got < want {
            let f = (want - got).min(below);
            self.c.in_flight += f;
            if want - got > below {
                self.c.lost += want - got - below;
                eprintln!(
                    "stress: LOST {}: {what} {got}, acknowledged {want}",
                    self.prim
                );
            }
        } else if got > want + above {
            self.c.duplicated += got - want - above;
            eprintln!(
                "stress: DUPLICATED {}: {what} {got}, acknowledged {want} (+{above} killed)",
                self.prim
            );
        }
    }
}

/// This run's names in /dev/shm.
pub fn shm_names() -> Vec<String> {
    shmwire::segment::list()
        .map(|v| v.into_iter().map(|s| s.name).collect())
        .unwrap_or_default()
}

/// After a round: `cleanup()` must leave /dev/shm as it was before, and no process may be left
/// below this one. Counts (and removes) what was left.
fn leaks(prim: &str, before: &[String]) -> u64 {
    let mut n = 0;
    if let Err(e) = shmwire::cleanup() {
        eprintln!("stress: WRONG {prim}: cleanup: {e:?}");
        n += 1;
    }
    for name in shm_names().into_iter().filter(|s| !before.contains(s)) {
        eprintln!("stress: LEAK {prim}: {name} left in /dev/shm after cleanup() (removed)");
        let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        n += 1;
    }
    // SAFETY: plain syscall.
    let me = unsafe { libc::getpid() };
    let t0 = Instant::now();
    let mut left = procs::descendants(me);
    // Children of killed participants die with them (PDEATHSIG): give them a moment.
    while !left.is_empty() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
        left = procs::descendants(me);
    }
    for pid in left {
        eprintln!(
            "stress: LEAK {prim}: process {} left behind (killed)",
            procs::describe(pid)
        );
        // SAFETY: plain syscall on our own descendant.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        n += 1;
    }
    n
}
