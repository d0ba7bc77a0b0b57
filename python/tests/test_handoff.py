"""An object pickled for a spawned child is kept for it until the child has opened its copy (or
ended): the parent may let go of it right after `p.start()`, as a multiprocessing program does."""
import gc
import multiprocessing
import threading
import time

import pytest

import shmwire


def _makers():
    m = shmwire.Manager()
    return {
        "Queue": lambda: shmwire.Queue(),
        "JoinableQueue": lambda: shmwire.JoinableQueue(),
        "SimpleQueue": lambda: shmwire.SimpleQueue(),
        "Lock": lambda: shmwire.Lock(),
        "RLock": lambda: shmwire.RLock(),
        "Semaphore": lambda: shmwire.Semaphore(2),
        "BoundedSemaphore": lambda: shmwire.BoundedSemaphore(2),
        "Event": lambda: shmwire.Event(),
        "Condition": lambda: shmwire.Condition(),
        "Barrier": lambda: shmwire.Barrier(1),
        "Value": lambda: shmwire.Value("i", 7),
        "Value(lock=False)": lambda: shmwire.Value("i", 7, lock=False),
        "Condition(Lock())": lambda: shmwire.Condition(shmwire.Lock()),
        "Barrier(action=...)": lambda: shmwire.Barrier(1, action=_nothing),
        "Namespace": lambda: _namespace(m),
        "Array": lambda: shmwire.Array("i", [1, 2, 3]),
        "Manager": lambda: shmwire.Manager(),
        "dict": lambda: m.dict(a=1),
        "list": lambda: m.list([1, 2]),
    }, m


def _nothing():
    pass


def _namespace(m):
    ns = m.Namespace()
    ns.x = 7
    return ns


def _use(kind, obj):
    """Something the object can do alone; the child's exit status says whether it worked."""
    if kind in ("Queue", "JoinableQueue", "SimpleQueue"):
        obj.put(5)
        assert obj.get() == 5
    elif kind in ("Lock", "RLock", "Semaphore", "BoundedSemaphore"):
        assert obj.acquire(timeout=5)
        obj.release()
    elif kind == "Event":
        obj.set()
        assert obj.is_set()
    elif kind.startswith("Condition"):
        with obj:
            obj.notify_all()
    elif kind.startswith("Barrier"):
        assert obj.wait(5) == 0
    elif kind.startswith("Value"):
        assert obj.value == 7
    elif kind == "Array":
        assert obj[:] == [1, 2, 3]
    elif kind == "Namespace":
        assert obj.x == 7
    elif kind == "Manager":
        obj.dict()["x"] = 1
    elif kind == "dict":
        assert obj["a"] == 1
    elif kind == "list":
        assert list(obj) == [1, 2]


def _child(kind, obj):
    _use(kind, obj)


@pytest.mark.parametrize("kind", sorted(_makers()[0]))
def test_object_let_go_right_after_start_reaches_a_spawned_child(kind):
    makers, m = _makers()
    ctx = multiprocessing.get_context("spawn")
    # The only reference to the object is the Process's args, dropped at once.
    p = ctx.Process(target=_child, args=(kind, makers[kind]()))
    p.start()
    p._args = ()
    p._kwargs = {}
    gc.collect()
    p.join(60)
    assert p.exitcode == 0, "the child could not open or use its %s (exit %r)" % (kind, p.exitcode)
    del m


def _sleep_then_exit(_q):
    time.sleep(0.2)


def test_a_reservation_ends_with_its_child():
    # What was kept for a child is let go once the child has it (or has ended): the name goes once
    # the parent lets go of its own copy too.
    import os

    ctx = multiprocessing.get_context("spawn")
    q = shmwire.Queue()
    def present():
        return [n for n in os.listdir("/dev/shm") if n.endswith("." + q_name)]

    q_name = q._raw.name
    assert present()
    p = ctx.Process(target=_sleep_then_exit, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    del q, p
    gc.collect()
    deadline = time.monotonic() + 10
    while present() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not present(), "the reservation outlived the child"


def _fail_to_unpickle():
    raise RuntimeError("this argument cannot be unpickled")


class _Unpicklable:
    def __reduce__(self):
        return (_fail_to_unpickle, ())


def test_a_reservation_ends_with_a_child_that_died_before_opening():
    # The child fails on an argument that comes before the queue: it never opens the queue, and its
    # death (its end of the pipe closed by the kernel) ends the reservation.
    import os

    ctx = multiprocessing.get_context("spawn")
    q = shmwire.Queue()
    q_name = q._raw.name

    def present():
        return [n for n in os.listdir("/dev/shm") if n.endswith("." + q_name)]

    p = ctx.Process(target=_sleep_then_exit, args=(_Unpicklable(), q))
    p.start()
    p.join(60)
    assert p.exitcode != 0
    del q, p
    gc.collect()
    deadline = time.monotonic() + 10
    while present() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not present(), "the reservation outlived a child that never opened the queue"


def _send_hi(c):
    c.send("hi")


def test_a_fork_while_a_reservation_is_pending_leaves_the_child_free(monkeypatch):
    # The reservation is the last reference to a pipe end when the process forks, and the handoff
    # thread has not looked at it yet (held here in its wait, as a thread starved of CPU or of the
    # GIL is). The child of fork must neither drop it inside the fork hook, where the library's
    # locks are still held (it hung there), nor wait for its parent's reservation when it closes
    # its copy (it waited 30 s).
    import os
    from shmwire import _handoff

    gate = threading.Event()
    real_wait = _handoff._wait

    def held_wait(fds, timeout):
        gate.wait(30)
        return real_wait(fds, timeout)

    monkeypatch.setattr(_handoff, "_wait", held_wait)
    ctx = multiprocessing.get_context("spawn")
    a1, b1 = shmwire.Pipe()
    a2, b2 = shmwire.Pipe()
    try:
        p1 = ctx.Process(target=_send_hi, args=(b1,))
        p1.start()  # the thread starts, looks, and is held
        time.sleep(0.2)
        p2 = ctx.Process(target=_send_hi, args=(b2,))
        p2.start()  # kept for p2, not yet looked at
        p2._args = ()
        b2_kept = b2
        del b2
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                t = time.monotonic()
                b2_kept.close()
                code = 0 if time.monotonic() - t < 5 else 2
            finally:
                shmwire.release_at_exit()
                os._exit(code)
        del b2_kept
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child of fork hung in its fork hook")
        assert os.waitstatus_to_exitcode(status) == 0, "close() in the child of fork waited"
    finally:
        gate.set()
    for a, p in ((a1, p1), (a2, p2)):
        assert a.poll(30) and a.recv() == "hi"
        p.join(30)
        assert p.exitcode == 0


def _all_set(events):
    for e in events:
        e.set()


def test_hundreds_of_objects_go_to_one_child_through_one_descriptor():
    # One pipe per child, not per object: 300 events in one forkserver child's arguments (whose
    # descriptors multiprocessing sends at most 256 of at a time) reach it.
    ctx = multiprocessing.get_context("forkserver")
    events = [shmwire.Event() for _ in range(300)]
    p = ctx.Process(target=_all_set, args=(events,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert all(e.is_set() for e in events)
