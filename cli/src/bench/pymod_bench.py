# The Python module's group: the same Python code against `multiprocessing` and against `shmwire`
# (the module built from python/ and installed with pip), run as `python3 -c SCRIPT WORKLOAD LIB`:
# `rtt` (a Pipe's send/recv round trip of a small object with a forked echo child), `queue` (Queue
# items/s from one forked producer to this process) and `dict` (a Manager dict's set then get, one
# process). LIB is `multiprocessing` or `shmwire`: only the module differs.
#
# Protocol (see cli/src/bench/external.rs): `ready`, then `block SECS` / `items N` lines answered
# `ok OPS SECS`; `quit` or the end of stdin ends it.
import importlib
import multiprocessing as mp
import os
import sys
import time

ctx = mp.get_context("fork")
now = time.perf_counter
workload, libname = sys.argv[1], sys.argv[2]
lib = importlib.import_module(libname)


def _echo(conn):
    while True:
        try:
            conn.send(conn.recv())
        except EOFError:
            return


def _produce(q):
    i = 0
    while True:
        q.put(i)
        i += 1


class Rtt:
    def __init__(self):
        self.c, theirs = lib.Pipe()
        self.p = ctx.Process(target=_echo, args=(theirs,), daemon=True)
        self.p.start()
        theirs.close()
        self.i = 0

    def op(self):
        self.i += 1
        self.c.send(self.i)
        if self.c.recv() != self.i:
            raise SystemExit("rtt: the echo is not what was sent")

    def close(self):
        # The forked child holds a copy of this end too (fork copies every descriptor), so it
        # would never see EOF: it is killed, as the queue's producer is.
        self.c.close()
        self.p.kill()
        self.p.join(5)


class Items:
    def __init__(self):
        self.q = lib.Queue(1000)
        self.p = ctx.Process(target=_produce, args=(self.q,), daemon=True)
        self.p.start()
        self.q.get()

    def op(self):
        self.q.get()

    def close(self):
        self.p.kill()
        self.p.join(5)


class Dict:
    def __init__(self):
        self.m = lib.Manager()
        self.d = self.m.dict()
        self.i = 0

    def op(self):
        self.i += 1
        k = self.i & 1023
        self.d[k] = self.i
        if self.d[k] != self.i:
            raise SystemExit("dict: a get did not see the set")

    def close(self):
        if hasattr(self.m, "shutdown"):
            self.m.shutdown()


def main():
    w = {"rtt": Rtt, "queue": Items, "dict": Dict}[workload]()
    print("ready", flush=True)
    code = 0
    try:
        for line in sys.stdin:
            f = line.split()
            if not f or f[0] == "quit":
                break
            op = w.op
            if f[0] == "items":
                n = int(f[1])
                t = now()
                for _ in range(n):
                    op()
                print("ok %d %.9f" % (n, now() - t), flush=True)
            else:
                secs = float(f[1])
                n, t = 0, now()
                end = t + secs
                while True:
                    for _ in range(64):
                        op()
                    n += 64
                    if now() >= end:
                        break
                print("ok %d %.9f" % (n, now() - t), flush=True)
    except BaseException:
        # The bench reads no more lines from a side that failed: say why, and exit non-zero.
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        w.close()
        if hasattr(lib, "release_at_exit"):
            lib.release_at_exit()  # shmwire's names go with this process, as its drops would
        sys.stdout.flush()
        sys.stderr.flush()
        # os._exit: no interpreter teardown (multiprocessing's atexit would join the children).
        os._exit(code)


main()
