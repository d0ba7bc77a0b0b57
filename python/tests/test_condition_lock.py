"""Condition(lock): a Condition over a shmwire Lock or RLock (None: a new RLock), after CPython's
test_multiprocessing expectations for Condition (test_notify, test_notify_all, test_notify_n,
test_timeout, test_waitfor, test_waitfor_timeout), between real processes."""
import os
import signal
import time

import pytest

import shmwire

BOUND = 10.0  # a liveness bound (10x what these take unloaded)


def _waiter(cond, sleeping, woken, timeout=None):
    with cond:
        sleeping.release()
        cond.wait(timeout)
        woken.release()


def _wait_value(sem, n, limit=BOUND):
    end = time.monotonic() + limit
    while sem.get_value() < n and time.monotonic() < end:
        time.sleep(0.01)
    return sem.get_value()


@pytest.mark.parametrize("kind", ["lock", "rlock", "none"])
def test_notify_wakes_one_then_the_other(ctx, kind):
    lock = {"lock": shmwire.Lock, "rlock": shmwire.RLock, "none": lambda: None}[kind]()
    cond = shmwire.Condition(lock)
    sleeping, woken = shmwire.Semaphore(0), shmwire.Semaphore(0)
    ps = [ctx.Process(target=_waiter, args=(cond, sleeping, woken)) for _ in range(2)]
    for p in ps:
        p.start()
    for _ in ps:
        assert sleeping.acquire(timeout=BOUND)
    time.sleep(0.3)
    assert woken.get_value() == 0
    with cond:
        cond.notify()
    assert _wait_value(woken, 1) >= 1
    time.sleep(0.3)
    assert woken.get_value() == 1
    with cond:
        cond.notify()
    assert _wait_value(woken, 2) == 2
    for p in ps:
        p.join(BOUND)
        assert p.exitcode == 0


def test_notify_all_and_notify_n(ctx):
    cond = shmwire.Condition(shmwire.Lock())
    sleeping, woken = shmwire.Semaphore(0), shmwire.Semaphore(0)
    ps = [ctx.Process(target=_waiter, args=(cond, sleeping, woken)) for _ in range(4)]
    for p in ps:
        p.start()
    for _ in ps:
        assert sleeping.acquire(timeout=BOUND)
    time.sleep(0.3)
    with cond:
        cond.notify(n=2)
    assert _wait_value(woken, 2) >= 2
    with cond:
        cond.notify_all()
    assert _wait_value(woken, 4) == 4
    for p in ps:
        p.join(BOUND)
        assert p.exitcode == 0


def _take(lock, got):
    if lock.acquire(timeout=BOUND):
        got.set()
        lock.release()


def test_wait_releases_an_rlock_taken_several_times_and_takes_it_back(ctx):
    rlock = shmwire.RLock()
    cond = shmwire.Condition(rlock)
    got = shmwire.Event()
    for _ in range(3):
        rlock.acquire()
    p = ctx.Process(target=_take, args=(rlock, got))
    p.start()
    t0 = time.monotonic()
    while not got.is_set() and time.monotonic() - t0 < BOUND:
        assert cond.wait(0.2) is False  # the child takes the lock meanwhile
    assert got.is_set()
    for _ in range(3):
        rlock.release()  # all three levels are ours again
    with pytest.raises((AssertionError, RuntimeError)):
        rlock.release()
    p.join(BOUND)
    assert p.exitcode == 0


def test_timeout_returns_false_and_keeps_the_lock():
    cond = shmwire.Condition(shmwire.Lock())
    with cond:
        t0 = time.monotonic()
        assert cond.wait(0.2) is False
        assert time.monotonic() - t0 >= 0.19
        assert cond.wait(0) is False
        cond.notify()  # still held: no error


def test_wait_and_notify_without_the_lock_raise_as_cpythons():
    for lock in (shmwire.Lock(), shmwire.RLock(), None):
        cond = shmwire.Condition(lock)
        with pytest.raises(AssertionError):
            cond.notify()
        with pytest.raises(AssertionError):
            cond.notify_all()
        with pytest.raises(AssertionError):
            cond.wait(0.01)


def test_condition_of_none_is_reentrant_like_multiprocessing():
    cond = shmwire.Condition()
    with cond:
        assert cond.acquire(timeout=1.0)  # held already: taken again at once
        assert cond.wait(0.01) is False
        cond.notify_all()
        cond.release()


def _bump(cond, state, n):
    for _ in range(n):
        time.sleep(0.05)
        with cond:
            state.value += 1
            cond.notify()


def test_wait_for_across_processes(ctx):
    cond = shmwire.Condition(shmwire.Lock())
    state = shmwire.Value("i", 0)
    p = ctx.Process(target=_bump, args=(cond, state, 4))
    p.start()
    with cond:
        assert cond.wait_for(lambda: state.value == 4, timeout=BOUND)
        assert state.value == 4
        t0 = time.monotonic()
        assert not cond.wait_for(lambda: state.value == 5, timeout=0.2)
        assert time.monotonic() - t0 >= 0.19
    p.join(BOUND)
    assert p.exitcode == 0


def _sleep_forever_waiting(cond, sleeping):
    with cond:
        sleeping.release()
        cond.wait()


def test_a_killed_waiter_does_not_wedge_notify(ctx):
    cond = shmwire.Condition(shmwire.RLock())
    sleeping, woken = shmwire.Semaphore(0), shmwire.Semaphore(0)
    dead = ctx.Process(target=_sleep_forever_waiting, args=(cond, sleeping))
    dead.start()
    assert sleeping.acquire(timeout=BOUND)
    time.sleep(0.2)
    os.kill(dead.pid, signal.SIGKILL)
    dead.join(BOUND)
    live = ctx.Process(target=_waiter, args=(cond, sleeping, woken))
    live.start()
    assert sleeping.acquire(timeout=BOUND)
    time.sleep(0.2)
    t0 = time.monotonic()
    with cond:
        cond.notify()  # may go to the dead one: must not wait for it
        cond.notify_all()
    assert time.monotonic() - t0 < BOUND
    assert woken.acquire(timeout=BOUND)
    live.join(BOUND)
    assert live.exitcode == 0


@pytest.mark.parametrize("lock", [None, "lock"])
def test_ctrl_c_interrupts_a_wait_and_the_lock_is_held_after(lock):
    import threading
    cond = shmwire.Condition(shmwire.Lock() if lock else None)
    killer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    killer.start()
    t0 = time.monotonic()
    with cond:
        with pytest.raises(KeyboardInterrupt):
            cond.wait(BOUND * 3)
        cond.notify()  # held again: no error
    killer.join()
    assert time.monotonic() - t0 < BOUND


def test_notify_n_wakes_exactly_n_round_after_round():
    # Waiters sleep in one piece: a notify is neither lost (landing while a waiter was between
    # two slices of its sleep) nor taken by a waiter it was not meant for (one that slept
    # through it and then saw the sequence moved). Lock-less Condition() and Condition(lock).
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    for rnd in range(8):
        cond = shmwire.Condition(shmwire.Lock() if rnd % 2 else None)
        sleeping, woken = shmwire.Semaphore(0), shmwire.Semaphore(0)
        ps = [ctx.Process(target=_waiter, args=(cond, sleeping, woken)) for _ in range(4)]
        for p in ps:
            p.start()
        for _ in ps:
            assert sleeping.acquire(timeout=BOUND)
        time.sleep(0.3)
        with cond:
            cond.notify(n=2)
        assert _wait_value(woken, 2) == 2, "round %d: a notify was lost" % rnd
        time.sleep(0.3)  # several slices of 50 ms: the others stay asleep
        assert woken.get_value() == 2, "round %d: a waiter took another's notify" % rnd
        with cond:
            cond.notify_all()
        assert _wait_value(woken, 4) == 4
        for p in ps:
            p.join(BOUND)
            assert p.exitcode == 0


def _timed_waiter(cond, sleeping, out, timeout):
    with cond:
        sleeping.release()
        out.value = 1 if cond.wait(timeout) else 2


def test_a_timed_wait_that_sleeps_through_a_notify_meant_for_another_times_out():
    # notify(1) with two timed waiters asleep: one is woken (True), the other sleeps on to its
    # deadline and must say so (False), not take the moved sequence for a notify of its own.
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    for rnd in range(3):
        cond = shmwire.Condition(shmwire.Lock())
        sleeping = shmwire.Semaphore(0)
        outs = [shmwire.Value("i", 0) for _ in range(2)]
        ps = [ctx.Process(target=_timed_waiter, args=(cond, sleeping, o, 1.0)) for o in outs]
        for p in ps:
            p.start()
        for _ in ps:
            assert sleeping.acquire(timeout=BOUND)
        time.sleep(0.2)
        with cond:
            cond.notify(1)
        for p in ps:
            p.join(BOUND)
            assert p.exitcode == 0
        assert sorted(o.value for o in outs) == [1, 2], "round %d: notify(1) woke two" % rnd


def _waiter_with_a_harmless_handler(cond, sleeping, out):
    signal.signal(signal.SIGUSR1, lambda *a: None)
    with cond:
        sleeping.release()
        out.value = 1 if cond.wait(3.0) else 2


def test_a_signal_whose_handler_returns_does_not_turn_into_a_notify():
    # notify(1) wakes one of two sleepers; a signal then interrupts the other's sleep: its
    # handler returns, so it sleeps on to its deadline (the sequence moved, but not for it).
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    cond = shmwire.Condition(shmwire.Lock())
    sleeping = shmwire.Semaphore(0)
    outs = [shmwire.Value("i", 0) for _ in range(2)]
    ps = [ctx.Process(target=_waiter_with_a_harmless_handler, args=(cond, sleeping, o))
          for o in outs]
    for p in ps:
        p.start()
    for _ in ps:
        assert sleeping.acquire(timeout=BOUND)
    time.sleep(0.3)
    with cond:
        cond.notify(1)
    time.sleep(0.3)
    for p in ps:
        os.kill(p.pid, signal.SIGUSR1)
    for p in ps:
        p.join(BOUND)
        assert p.exitcode == 0
    assert sorted(o.value for o in outs) == [1, 2]


def _notify_once(cond, done):
    with cond:
        cond.notify()
    done.value = 1


@pytest.mark.parametrize("kind", ["lock", "rlock"])
def test_ctrl_c_at_any_bytecode_of_wait_leaves_both_locks_sound(kind):
    # A KeyboardInterrupt may land between any two bytecodes (a signal handler runs there):
    # raise one at each opcode of Condition.wait in turn. Each time, the caller must hold its
    # lock at its former level, and the inner lock must be free (a notify in another process
    # goes through).
    import multiprocessing
    import sys
    ctx = multiprocessing.get_context("fork")
    lock = shmwire.Lock() if kind == "lock" else shmwire.RLock()
    cond = shmwire.Condition(lock)
    levels = 1 if kind == "lock" else 2
    code = shmwire.Condition.wait.__code__
    fired = []

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None
        frame.f_trace_opcodes = True
        count = [0]

        def local(f, ev, a):
            if ev == "opcode":
                count[0] += 1
                if count[0] == target[0]:
                    fired.append(f.f_lasti)
                    raise KeyboardInterrupt
            return local
        return local

    target = [0]
    for n in range(1, 200):
        target[0] = n
        fired.clear()
        for _ in range(levels):
            lock.acquire()
        sys.settrace(tracer)
        try:
            cond.wait(0.01)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        assert cond._levels() == levels, "opcode %d: the lock is held %d times, not %d" % (
            n, cond._levels(), levels)
        assert cond._cond.acquire(0.0), "opcode %d: the inner lock was left taken" % n
        cond._cond.release()
        for _ in range(levels):
            lock.release()
        if not fired:
            break  # past the last opcode
    assert n > 2
    done = shmwire.Value("i", 0)
    p = ctx.Process(target=_notify_once, args=(cond, done))
    p.start()
    p.join(BOUND)
    assert p.exitcode == 0 and done.value == 1


def _wait_and_time(cond, out, timeout):
    t0 = time.monotonic()
    try:
        with cond:
            cond.wait(timeout)
        out.value = time.monotonic() - t0
    except KeyboardInterrupt:
        out.value = -(time.monotonic() - t0)


def _stop_holding_the_inner_lock(cond, ready):
    cond.acquire()
    cond._cond.acquire(None)  # as inside another's wait(): inner lock taken, then stopped
    cond.release()
    ready.release()
    os.kill(os.getpid(), signal.SIGSTOP)


def test_a_process_stopped_holding_the_inner_lock_holds_no_wait_past_its_deadline():
    # The deadline: a wait(0.5) asleep when the other stops, and one that starts after, both
    # return (False) within the bound. Ctrl-C: an untimed wait that starts after is interrupted.
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    cond = shmwire.Condition(shmwire.Lock())
    early, late, untimed = (shmwire.Value("d", 0.0) for _ in range(3))
    w1 = ctx.Process(target=_wait_and_time, args=(cond, early, 0.5))
    w1.start()
    time.sleep(0.2)
    ready = shmwire.Semaphore(0)
    s = ctx.Process(target=_stop_holding_the_inner_lock, args=(cond, ready))
    s.start()
    try:
        assert ready.acquire(timeout=BOUND)
        w1.join(BOUND)
        assert w1.exitcode == 0 and 0 < early.value < BOUND
        w2 = ctx.Process(target=_wait_and_time, args=(cond, late, 0.5))
        w2.start()
        w2.join(BOUND)
        assert w2.exitcode == 0 and 0 < late.value < BOUND
        w3 = ctx.Process(target=_wait_and_time, args=(cond, untimed, None))
        w3.start()
        time.sleep(0.5)
        os.kill(w3.pid, signal.SIGINT)
        w3.join(BOUND)
        assert w3.exitcode == 0 and untimed.value < 0, "Ctrl-C did not end the wait"
    finally:
        os.kill(s.pid, signal.SIGKILL)
        s.join()
        for p in multiprocessing.active_children():
            p.kill()
            p.join()
