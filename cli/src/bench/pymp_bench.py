# Python's multiprocessing side of `shmwire bench` (run as `python3 -c SCRIPT WORKLOAD ...`).
#
# Workloads: `rtt` (Pipe send_bytes/recv_bytes round trip of 8 bytes, the echo checked), `thr64`
# (a stream of 64-byte send_bytes to a child that counts them), `queue P C` (multiprocessing.Queue
# of ints, P producer and C consumer processes), and `create SECS` (the cost to create and drop each
# primitive, printed as `NAME MICROSECONDS` lines), `pool MODE N` (multiprocessing.Pool of N
# processes: `map1` = map(sq, range(2000), chunksize=1), `apply` = 2000 apply_async then get,
# `map` = map(sq, range(1000000)) with its default chunks, `rtt` = one apply at a time).
#
# Protocol (see cli/src/bench/external.rs): the workload is set up once (children forked once), then
# `ready`; each `block SECS` or `items N` line runs one block and answers `ok OPS SECS`; `quit` or
# the end of stdin ends it and its children (daemonic, so they end with it in any case).
import multiprocessing as mp
import os
import sys
import time

ctx = mp.get_context("fork")
now = time.perf_counter
# SHMWIRE_BENCH_PIN=PARENT,CHILD: the parent and its one child on these CPUs (rtt and thr64).
PIN = [int(c) for c in os.environ.get("SHMWIRE_BENCH_PIN", "").split(",") if c]


def pin(which):
    if PIN:
        os.sched_setaffinity(0, {PIN[which]})


def _echo(c):
    pin(1)
    while True:
        m = c.recv_bytes()
        if not m:
            return
        c.send_bytes(m)


class Rtt:
    def __init__(self):
        self.a, b = ctx.Pipe()
        self.p = ctx.Process(target=_echo, args=(b,), daemon=True)
        self.p.start()
        b.close()
        self.i = 0

    def trip(self):
        self.i += 1
        m = self.i.to_bytes(8, "little")
        self.a.send_bytes(m)
        if self.a.recv_bytes() != m:
            raise SystemExit("rtt: the echo is not what was sent")

    def block(self, secs=None, items=None):
        if items is not None:
            t0 = now()
            for _ in range(items):
                self.trip()
            return items, now() - t0
        w = now()
        while now() - w < secs / 10:
            self.trip()
        n, t0 = 0, now()
        while now() - t0 < secs:
            for _ in range(16):
                self.trip()
            n += 16
        return n, now() - t0

    def close(self):
        self.a.send_bytes(b"")
        self.p.join(5)


def _sink(c):
    pin(1)
    n = 0
    while True:
        m = c.recv_bytes()
        if m[0] == 0:
            n += 1
        elif m[0] == 1:
            c.send(n)
            n = 0
        else:
            return


class Thr64:
    def __init__(self):
        self.a, b = ctx.Pipe()
        self.p = ctx.Process(target=_sink, args=(b,), daemon=True)
        self.p.start()
        b.close()

    def block(self, secs=None, items=None):
        msg = bytes(64)
        sent, t0 = 0, now()
        limit = items if items is not None else 1 << 62
        while sent < limit:
            for _ in range(min(64, limit - sent)):
                self.a.send_bytes(msg)
            sent += min(64, limit - sent)
            if secs is not None and now() - t0 >= secs:
                break
        self.a.send_bytes(b"\x01" + bytes(63))
        got = self.a.recv()
        dt = now() - t0
        if got != sent:
            raise SystemExit(f"thr64: the sink received {got} of {sent}")
        return got, dt

    def close(self):
        self.a.send_bytes(b"\xff" + bytes(63))
        self.p.join(5)


END = -1


def _produce(q, ctl, stop, produced, k):
    total = 0
    while True:
        quota = ctl.recv()
        if quota is None:
            return
        i = 0
        while i < quota and not stop.value:
            for _ in range(min(64, quota - i)):
                q.put(i)
                i += 1
        total += i
        produced[k] = total
        q.put(END)


def _consume(q, counts, ends, k):
    n = 0
    while True:
        v = q.get()
        if v is None:
            return
        if v == END:
            ends[k] += 1
        else:
            n += 1
            counts[k] = n


class Queue:
    def __init__(self, p, c):
        self.q = ctx.Queue()
        self.stop = ctx.RawValue("i", 0)
        self.produced = ctx.RawArray("q", p)
        self.counts = ctx.RawArray("q", c)
        self.ends = ctx.RawArray("q", c)
        self.ctl, self.kids, self.blocks = [], [], 0
        for k in range(c):
            args = (self.q, self.counts, self.ends, k)
            self.kids.append(ctx.Process(target=_consume, args=args, daemon=True))
        for k in range(p):
            r, w = ctx.Pipe(duplex=False)
            self.ctl.append(w)
            args = (self.q, r, self.stop, self.produced, k)
            self.kids.append(ctx.Process(target=_produce, args=args, daemon=True))
        for x in self.kids:
            x.start()

    def block(self, secs=None, items=None):
        base = sum(self.counts)
        self.stop.value = 0
        self.blocks += 1
        quota = 1 << 62 if items is None else -(-items // len(self.ctl))
        t0 = now()
        for w in self.ctl:
            w.send(quota)
        if secs is not None:
            time.sleep(secs)
            self.stop.value = 1
        want = self.blocks * len(self.ctl)
        give_up = now() + 30
        while sum(self.ends) < want or sum(self.counts) != sum(self.produced):
            if now() > give_up:
                raise SystemExit(f"queue: {sum(self.produced)} put, {sum(self.counts)} received")
            time.sleep(0.0001)
        return sum(self.counts) - base, now() - t0

    def close(self):
        for w in self.ctl:
            w.send(None)
        for _ in range(len(self.counts)):
            self.q.put(None)
        for x in self.kids:
            x.join(5)


def sq(x):
    return x * x


class PoolW:
    def __init__(self, mode, n):
        self.pool = ctx.Pool(n)
        self.mode = mode
        self.pool.map(sq, range(100))
        self.i = 0

    def once(self):
        if self.mode == "map1":
            r = self.pool.map(sq, range(2000), chunksize=1)
            assert r[7] == 49
            return 2000
        if self.mode == "apply":
            rs = [self.pool.apply_async(sq, (i,)) for i in range(2000)]
            for i, r in enumerate(rs):
                assert r.get() == i * i
            return 2000
        if self.mode == "map":
            r = self.pool.map(sq, range(1000000))
            assert len(r) == 1000000
            return 1000000
        if self.mode == "rtt":
            self.i += 1
            assert self.pool.apply(sq, (self.i,)) == self.i * self.i
            return 1
        raise SystemExit(f"unknown pool mode {self.mode}")

    def block(self, secs=None, items=None):
        n, t0 = 0, now()
        while (items is not None and n < items) or (items is None and (n == 0 or now() - t0 < secs)):
            n += self.once()
        return n, now() - t0

    def close(self):
        self.pool.terminate()
        self.pool.join()


def create(secs):
    kinds = [
        ("Pipe", lambda: ctx.Pipe()),
        ("Queue", lambda: ctx.Queue()),
        ("Lock", ctx.Lock),
        ("RLock", ctx.RLock),
        ("Semaphore", lambda: ctx.Semaphore(1)),
        ("Event", ctx.Event),
        ("Condition", ctx.Condition),
        ("Barrier", lambda: ctx.Barrier(2)),
        ("Value", lambda: ctx.Value("q", 0)),
    ]
    for name, make in kinds:
        n, t0 = 0, now()
        while now() - t0 < secs:
            for _ in range(16):
                x = make()
                if name == "Pipe":
                    x[0].close()
                    x[1].close()
                elif name == "Queue":
                    x.close()
                    x.join_thread()
                del x
            n += 16
        print(name, f"{(now() - t0) / n * 1e6:.3f}", flush=True)


def main():
    args = sys.argv[1:]
    if args[0] == "create":
        create(float(args[1]))
        return
    if args[0] == "rtt":
        w = Rtt()
    elif args[0] == "thr64":
        w = Thr64()
    elif args[0] == "queue":
        w = Queue(int(args[1]), int(args[2]))
    elif args[0] == "pool":
        w = PoolW(args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown workload {args}")
    pin(0)
    print("ready", flush=True)
    for line in sys.stdin:
        f = line.split()
        if not f or f[0] == "quit":
            break
        if f[0] == "block":
            n, dt = w.block(secs=float(f[1]))
        else:
            n, dt = w.block(items=int(f[1]))
        print(f"ok {n} {dt:.9f}", flush=True)
    w.close()


main()
