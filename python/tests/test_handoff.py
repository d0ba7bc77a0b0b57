"""An object pickled for a spawned child is kept for it until the child has opened its copy (or
ended): the parent may let go of it right after `p.start()`, as a multiprocessing program does."""
import gc
import multiprocessing
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
        "Array": lambda: shmwire.Array("i", [1, 2, 3]),
        "Manager": lambda: shmwire.Manager(),
        "dict": lambda: m.dict(a=1),
        "list": lambda: m.list([1, 2]),
    }, m


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
    elif kind == "Condition":
        with obj:
            obj.notify_all()
    elif kind == "Barrier":
        assert obj.wait(5) == 0
    elif kind == "Value":
        assert obj.value == 7
    elif kind == "Array":
        assert obj[:] == [1, 2, 3]
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
