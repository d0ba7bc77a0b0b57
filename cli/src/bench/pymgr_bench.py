# Python's Manager().dict() side of `shmwire bench`'s manager group (run as `python3 -c SCRIPT OP N`).
#
# OP is `get` (d[k]), `insert` (d[k] = v, a key already there) or `modify` (d[k] += 1: two round
# trips to the manager's server, not atomic, as Python programs write it); N worker processes share
# one dict of 1000 int keys, each going over the keys as the Rust sides do.
#
# Protocol (see cli/src/bench/external.rs): the dict and the workers are set up once, then `ready`;
# each `block SECS` or `items N` line runs one block and answers `ok OPS SECS`; `quit` or the end of
# stdin ends it (the workers are daemonic, the manager is shut down).
import multiprocessing as mp
import sys
import time

ctx = mp.get_context("fork")
now = time.perf_counter
KEYS = 1000
BASE = 1_000_000


def _work(d, op, k, ctl, stop, counts):
    total = 0
    while True:
        quota = ctl.recv()
        if quota is None:
            return
        i = 0
        while i < quota and not stop.value:
            for _ in range(min(64, quota - i)):
                key = ((total + i) * 7919 + k * 131) % KEYS
                if op == "get":
                    if d[key] is None:
                        raise SystemExit(f"key {key} missing")
                elif op == "insert":
                    d[key] = BASE + (total + i) % BASE
                else:
                    d[key] += 1
                i += 1
        total += i
        counts[k] = total
        ctl.send(total)


class Dict:
    def __init__(self, op, n):
        self.m = ctx.Manager()
        self.d = self.m.dict({k: BASE + k for k in range(KEYS)})
        self.stop = ctx.RawValue("i", 0)
        self.counts = ctx.RawArray("q", n)
        self.ctl, self.kids = [], []
        for k in range(n):
            a, b = ctx.Pipe()
            self.ctl.append(a)
            args = (self.d, op, k, b, self.stop, self.counts)
            p = ctx.Process(target=_work, args=args, daemon=True)
            p.start()
            self.kids.append(p)

    def block(self, secs=None, items=None):
        base = sum(self.counts)
        self.stop.value = 0
        quota = 1 << 62 if items is None else -(-items // len(self.ctl))
        t0 = now()
        for c in self.ctl:
            c.send(quota)
        if secs is not None:
            time.sleep(secs)
            self.stop.value = 1
        for c in self.ctl:
            c.recv()
        return sum(self.counts) - base, now() - t0

    def close(self):
        for c in self.ctl:
            c.send(None)
        for p in self.kids:
            p.join(5)
        self.m.shutdown()


def main():
    op, n = sys.argv[1], int(sys.argv[2])
    if op not in ("get", "insert", "modify"):
        raise SystemExit(f"unknown operation {op}")
    w = Dict(op, n)
    print("ready", flush=True)
    for line in sys.stdin:
        f = line.split()
        if not f or f[0] == "quit":
            break
        if f[0] == "block":
            k, dt = w.block(secs=float(f[1]))
        else:
            k, dt = w.block(items=int(f[1]))
        print(f"ok {k} {dt:.9f}", flush=True)
    w.close()


main()
