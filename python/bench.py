"""shmwire beside multiprocessing, in the same run: Pipe round trip, Queue 1 producer / 1 consumer,
Manager dict operations, Lock acquire/release, send_bytes of 1 MiB. Prints each side and the ratio
against the issue's target. `python3 python/bench.py [--quick]`.

Each row runs both libraries with the same code (only the module differs), children forked by
multiprocessing, alternating sides over `--runs` rounds and keeping each side's best round.
"""
import multiprocessing as mp
import os
import sys
import time

# The installed module, not the source folder beside this script (which lacks the built extension).
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]
import shmwire  # noqa: E402

QUICK = "--quick" in sys.argv
RUNS = 1 if QUICK else 3
SCALE = 0.2 if QUICK else 1.0


def n(x):
    return max(10, int(x * SCALE))


# ---- workers (children) ----------------------------------------------------------------------------


def echo(conn, other):
    other.close()
    while True:
        try:
            conn.send(conn.recv())
        except EOFError:
            return


def producer(q, count):
    for i in range(count):
        q.put(i)


def bytes_sink(conn, other, count):
    other.close()
    for _ in range(count):
        conn.recv_bytes()
    conn.send("done")


# ---- measurements (seconds per operation, or bytes per second) -----------------------------------


def pipe_round_trip(lib, count):
    a, b = lib.Pipe()
    p = mp.Process(target=echo, args=(b, a))
    p.start()
    b.close()
    for _ in range(100):
        a.send(1)
        a.recv()
    t = time.perf_counter()
    for i in range(count):
        a.send(i)
        a.recv()
    dt = time.perf_counter() - t
    a.close()
    p.join()
    return dt / count


def queue_items_per_second(lib, count):
    q = lib.Queue()
    p = mp.Process(target=producer, args=(q, count))
    t = time.perf_counter()
    p.start()
    for _ in range(count):
        q.get()
    dt = time.perf_counter() - t
    p.join()
    return count / dt


def manager_dict_op(lib, count):
    with lib.Manager() as m:
        d = m.dict({"count": 0})
        t = time.perf_counter()
        for i in range(count):
            d["count"] = i
            d["count"]
        dt = time.perf_counter() - t
    return dt / (2 * count)


def lock_op(lib, count):
    lock = lib.Lock()
    t = time.perf_counter()
    for _ in range(count):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t) / count


def send_bytes_throughput(lib, count):
    a, b = lib.Pipe()
    p = mp.Process(target=bytes_sink, args=(b, a, count))
    p.start()
    b.close()
    msg = os.urandom(1 << 20)
    t = time.perf_counter()
    for _ in range(count):
        a.send_bytes(msg)
    a.recv()
    dt = time.perf_counter() - t
    a.close()
    p.join()
    return count * len(msg) / dt


ROWS = [
    # name, function, count, unit, higher_is_better, target ratio
    ("Pipe send/recv round trip", pipe_round_trip, n(20000), "us", False, 20),
    ("Queue 1p/1c small objects", queue_items_per_second, n(100000), "items/s", True, 5),
    ("Manager dict get/set", manager_dict_op, n(5000), "us", False, 50),
    ("Lock acquire+release", lock_op, n(100000), "us", False, None),
    ("send_bytes 1 MiB", send_bytes_throughput, n(500), "MiB/s", True, 3),
]


def fmt(v, unit):
    if unit == "us":
        return "%.2f us" % (v * 1e6)
    if unit == "MiB/s":
        return "%.0f MiB/s" % (v / (1 << 20))
    return "%.3f M/s" % (v / 1e6)


def main():
    mp.set_start_method("fork")
    print("%-28s %16s %16s %8s %8s" % ("", "multiprocessing", "shmwire", "ratio", "target"))
    for name, fn, count, unit, higher, target in ROWS:
        best = {}
        for _ in range(RUNS):
            for lib in (mp, shmwire):
                v = fn(lib, count)
                key = lib.__name__
                if key not in best or (v > best[key] if higher else v < best[key]):
                    best[key] = v
        m, s = best["multiprocessing"], best["shmwire"]
        ratio = s / m if higher else m / s
        verdict = "" if target is None else ("%dx %s" % (target, "ok" if ratio >= target else "MISSED"))
        print("%-28s %16s %16s %7.1fx %8s" % (name, fmt(m, unit), fmt(s, unit), ratio, verdict),
              flush=True)


if __name__ == "__main__":
    main()
