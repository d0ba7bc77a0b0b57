"""Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier between processes."""
import threading
import time

import pytest

import shmwire


def _count_under_lock(lock, v, n):
    for _ in range(n):
        with lock:
            x = v.value
            time.sleep(0)
            v.value = x + 1


def _set_later(ev, delay):
    time.sleep(delay)
    ev.set()


def _notify_later(cond, flag, delay):
    time.sleep(delay)
    with cond:
        flag.value = 1
        cond.notify_all()


def _barrier_party(b, out):
    out.put(b.wait(timeout=20))


def _hold_forever(lock, ev):
    lock.acquire()
    ev.set()
    time.sleep(60)


def test_lock_excludes_across_processes(ctx):
    lock = shmwire.Lock()
    v = shmwire.Value("i", 0)
    ps = [ctx.Process(target=_count_under_lock, args=(lock, v, 200)) for _ in range(3)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    assert v.value == 600


def test_lock_acquire_release_and_timeouts():
    lock = shmwire.Lock()
    assert lock.acquire()
    assert lock.acquire(False) is False
    t = time.monotonic()
    assert lock.acquire(True, 0.3) is False
    assert time.monotonic() - t >= 0.25
    assert lock.acquire(timeout=0) is False
    lock.release()
    with pytest.raises(ValueError):
        lock.release()
    with lock:
        assert lock.acquire(False) is False
    assert lock.acquire(False)
    lock.release()


def test_a_dead_holder_does_not_freeze_the_lock(ctx):
    lock, ev = shmwire.Lock(), shmwire.Event()
    p = ctx.Process(target=_hold_forever, args=(lock, ev))
    p.start()
    assert ev.wait(20)
    assert lock.acquire(timeout=0.2) is False  # held by a live process
    p.kill()
    p.join(10)
    assert lock.acquire(timeout=5)  # taken over from the dead holder
    lock.release()


def test_rlock_is_recursive():
    r = shmwire.RLock()
    assert r.acquire()
    assert r.acquire()
    r.release()
    r.release()
    with pytest.raises((AssertionError, RuntimeError)):
        r.release()
    with r:
        with r:
            pass


def test_semaphore_and_bounded_semaphore():
    s = shmwire.Semaphore(2)
    assert s.get_value() == 2
    assert s.acquire() and s.acquire()
    assert s.acquire(False) is False
    assert s.acquire(timeout=0.1) is False
    s.release()
    s.release()
    s.release()  # a plain semaphore may go past its start
    assert s.get_value() == 3
    b = shmwire.BoundedSemaphore(1)
    assert b.acquire()
    b.release()
    with pytest.raises(ValueError):
        b.release()


def test_event_across_processes(ctx):
    ev = shmwire.Event()
    assert not ev.is_set()
    assert ev.wait(0.1) is False
    p = ctx.Process(target=_set_later, args=(ev, 0.3))
    p.start()
    assert ev.wait(20) is True
    assert ev.is_set()
    p.join(10)
    ev.clear()
    assert not ev.is_set()


def test_condition_notify_across_processes(ctx):
    cond = shmwire.Condition()
    flag = shmwire.Value("i", 0)
    p = ctx.Process(target=_notify_later, args=(cond, flag, 0.3))
    with cond:
        p.start()
        assert cond.wait_for(lambda: flag.value == 1, timeout=20)
    p.join(10)
    with cond:
        assert cond.wait(0.1) is False
    with pytest.raises(RuntimeError):
        cond.notify()


def test_barrier_across_processes(ctx):
    b = shmwire.Barrier(3)
    out = shmwire.Queue()
    ps = [ctx.Process(target=_barrier_party, args=(b, out)) for _ in range(2)]
    for p in ps:
        p.start()
    mine = b.wait(timeout=20)
    idx = sorted([mine, out.get(timeout=20), out.get(timeout=20)])
    assert idx == [0, 1, 2]
    for p in ps:
        p.join(10)


def test_barrier_timeout_breaks_it():
    b = shmwire.Barrier(2)
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(0.2)
    assert b.broken
    b.reset()
    assert not b.broken
