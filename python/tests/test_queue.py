"""Queue, JoinableQueue and SimpleQueue, after CPython's test_multiprocessing expectations."""
import os
import queue
import signal
import threading
import time

import pytest

import shmwire


def _producer(q, n):
    for i in range(n):
        q.put(("item", i))
    q.put(None)


def _consumer(q, out):
    while True:
        x = q.get()
        if x is None:
            break
        out.put(x)


def _joinable_worker(q):
    while True:
        x = q.get()
        q.task_done()
        if x is None:
            break


def _interrupt_parent_later(delay):
    time.sleep(delay)
    os.kill(os.getppid(), signal.SIGINT)


def test_put_get_across_processes(ctx):
    q, out = shmwire.Queue(), shmwire.Queue()
    p = ctx.Process(target=_producer, args=(q, 500))
    c = ctx.Process(target=_consumer, args=(q, out))
    p.start()
    c.start()
    got = [out.get(timeout=20) for _ in range(500)]
    p.join(10)
    c.join(10)
    assert got == [("item", i) for i in range(500)]
    assert p.exitcode == 0 and c.exitcode == 0


def test_full_and_empty_with_timeouts():
    q = shmwire.Queue(maxsize=2)
    q.put(1)
    q.put(2, True, None)
    assert q.full()
    assert q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, False)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    t = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, True, 0.3)
    assert time.monotonic() - t >= 0.25
    assert q.get() == 1
    assert q.get_nowait() == 2
    assert q.empty()
    with pytest.raises(queue.Empty):
        q.get(False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    t = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(True, 0.3)
    assert time.monotonic() - t >= 0.25
    with pytest.raises(queue.Empty):
        q.get(timeout=0)


def test_close_is_this_process_only(ctx):
    q = shmwire.Queue()
    p = ctx.Process(target=_producer, args=(q, 3))
    p.start()
    assert q.get(timeout=20) == ("item", 0)
    p.join(10)
    q2 = shmwire.Queue(_raw=q._raw)  # another holder in this process
    q.close()
    with pytest.raises(ValueError):
        q.put(1)
    with pytest.raises(ValueError):
        q.get()
    assert q2.get(timeout=5) == ("item", 1)  # the queue itself goes on


def test_items_larger_than_a_slot():
    q = shmwire.Queue()
    big = os.urandom(3 << 20)
    q.put(big)
    q.put("small")
    assert q.get() == big
    assert q.get() == "small"


def test_joinable_queue_task_done_and_join(ctx):
    q = shmwire.JoinableQueue()
    for i in range(20):
        q.put(i)
    q.put(None)
    p = ctx.Process(target=_joinable_worker, args=(q,))
    p.start()
    q.join()
    p.join(10)
    assert p.exitcode == 0
    with pytest.raises(ValueError):
        q.task_done()


def test_simple_queue(ctx):
    q, out = shmwire.SimpleQueue(), shmwire.SimpleQueue()
    assert q.empty()
    p = ctx.Process(target=_consumer, args=(q, out))
    p.start()
    q.put([1, 2])
    q.put(None)
    assert out.get() == [1, 2]
    p.join(10)
    assert p.exitcode == 0
    q.close()
    with pytest.raises(OSError):
        q.get()


def test_keyboard_interrupt_in_a_blocked_get_from_a_thread():
    q = shmwire.Queue()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        q.get(timeout=30)
    assert time.monotonic() - t < 3.0
    timer.join()


def test_keyboard_interrupt_in_a_blocked_get_from_a_child(ctx):
    q = shmwire.Queue()
    p = ctx.Process(target=_interrupt_parent_later, args=(0.5,))
    p.start()
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        q.get()
    assert time.monotonic() - t < 10.0
    p.join(10)


def _pool_init(q):
    global _POOL_Q
    _POOL_Q = q


def _pool_task(x):
    _POOL_Q.put(x * x)
    return x


def test_queue_into_a_pool_initializer(ctx):
    q = shmwire.Queue()
    with ctx.Pool(2, initializer=_pool_init, initargs=(q,)) as pool:
        assert pool.map(_pool_task, range(5)) == list(range(5))
    assert sorted(q.get(timeout=5) for _ in range(5)) == [0, 1, 4, 9, 16]
