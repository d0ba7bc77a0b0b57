# Python's multiprocessing.connection over TCP loopback, the transport group's Python side (run as
# `python3 -c SCRIPT WORKLOAD ...`): `rtt SIZE` (send_bytes/recv_bytes round trips, the echo
# checked) and `thr SIZE` (a stream of send_bytes to a child that counts them). Listener and
# Client as a user writes them (no authkey), the child forked once.
#
# Protocol (see cli/src/bench/external.rs): `ready`, then `block SECS` / `items N` lines answered
# `ok OPS SECS`; `quit` or the end of stdin ends it.
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Client, Listener

ctx = mp.get_context("fork")
now = time.perf_counter
PIN = [int(c) for c in os.environ.get("SHMWIRE_BENCH_PIN", "").split(",") if c]


def pin(which):
    if PIN:
        os.sched_setaffinity(0, {PIN[which]})


def _peer(address, mode):
    pin(1)
    c = Client(address)
    n = 0
    while True:
        m = c.recv_bytes()
        if mode == "rtt":
            if m[:1] == b"\xff":
                return
            c.send_bytes(m)
        else:
            if m[:1] == b"\x00":
                n += 1
            elif m[:1] == b"\x01":
                c.send_bytes(n.to_bytes(8, "little"))
                n = 0
            else:
                return


class Tcp:
    def __init__(self, mode, size):
        pin(0)
        self.mode, self.size = mode, size
        l = Listener(("127.0.0.1", 0))
        self.p = ctx.Process(target=_peer, args=(l.address, mode), daemon=True)
        self.p.start()
        self.c = l.accept()
        l.close()
        self.i = 0

    def trip(self):
        self.i += 1
        m = b"\x00" + self.i.to_bytes(7, "little") + bytes(self.size - 8)
        self.c.send_bytes(m)
        if self.c.recv_bytes()[:8] != m[:8]:
            raise SystemExit("tcp rtt: the echo is not what was sent")

    def block(self, secs=None, items=None):
        if self.mode == "rtt":
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
        msg = bytes(self.size)
        sent, t0 = 0, now()
        limit = items if items is not None else 1 << 62
        while sent < limit:
            for _ in range(min(64, limit - sent)):
                self.c.send_bytes(msg)
            sent += min(64, limit - sent)
            if secs is not None and now() - t0 >= secs:
                break
        self.c.send_bytes(b"\x01" + bytes(self.size - 1))
        got = int.from_bytes(self.c.recv_bytes(), "little")
        dt = now() - t0
        if got != sent:
            raise SystemExit(f"tcp thr: the sink received {got} of {sent}")
        return got, dt

    def close(self):
        self.c.send_bytes(b"\xff" + bytes(self.size - 1))
        self.p.join(5)


def main():
    w = Tcp(sys.argv[1], int(sys.argv[2]))
    print("ready", flush=True)
    for line in sys.stdin:
        f = line.split()
        if not f or f[0] == "quit":
            break
        if f[0] == "block":
            n, dt = w.block(secs=float(f[1]))
        else:
            n, dt = w.block(items=int(f[1]))
        print("ok", n, dt, flush=True)
    w.close()


main()
