"""Barrier(parties, action, timeout), after threading.Barrier's rules (which multiprocessing's
Barrier follows): the action runs in exactly one party once all arrived and before any is
released; an action that raises breaks the barrier; the default timeout holds, in children too."""
import functools
import threading
import time

import pytest

import shmwire

BOUND = 10.0


def _count(runs):
    with runs.get_lock():
        runs.value += 1


def _party(barrier, runs, rounds, seen, bad):
    for r in range(rounds):
        barrier.wait()
        # released only after the action of this round ran
        if runs.value < r + 1:
            with bad.get_lock():
                bad.value += 1
        with seen.get_lock():
            seen.value += 1


def test_action_runs_once_per_round_before_anyone_is_released(ctx):
    runs, seen, bad = shmwire.Value("i", 0), shmwire.Value("i", 0), shmwire.Value("i", 0)
    b = shmwire.Barrier(3, action=functools.partial(_count, runs))
    ps = [ctx.Process(target=_party, args=(b, runs, 5, seen, bad)) for _ in range(2)]
    for p in ps:
        p.start()
    _party(b, runs, 5, seen, bad)
    for p in ps:
        p.join(BOUND)
        assert p.exitcode == 0
    assert runs.value == 5
    assert seen.value == 15
    assert bad.value == 0


def _boom():
    raise ZeroDivisionError("the action failed")


def _expect_broken(barrier, out):
    try:
        barrier.wait()
        out.value = 1
    except threading.BrokenBarrierError:
        out.value = 2
    except ZeroDivisionError:
        out.value = 3


def test_an_action_that_raises_breaks_the_barrier(ctx):
    b = shmwire.Barrier(3, action=_boom)
    outs = [shmwire.Value("i", 0) for _ in range(2)]
    ps = [ctx.Process(target=_expect_broken, args=(b, o)) for o in outs]
    for p in ps:
        p.start()
    mine = shmwire.Value("i", 0)
    _expect_broken(b, mine)
    for p in ps:
        p.join(BOUND)
        assert p.exitcode == 0
    got = sorted([mine.value] + [o.value for o in outs])
    assert got == [2, 2, 3]  # the caller that ran it gets the exception, the others broken
    assert b.broken
    b.reset()
    assert not b.broken


def _wait_alone(barrier, out):
    t0 = time.monotonic()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        out.value = time.monotonic() - t0


def test_the_default_timeout_holds_here_and_in_a_child(ctx):
    b = shmwire.Barrier(2, timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait()
    took = time.monotonic() - t0
    assert 0.19 <= took < BOUND
    b.reset()
    out = shmwire.Value("d", -1.0)
    p = ctx.Process(target=_wait_alone, args=(b, out))
    p.start()
    p.join(BOUND)
    assert p.exitcode == 0
    assert 0.19 <= out.value < BOUND


def test_an_unpicklable_action_cannot_go_to_a_spawned_child():
    import multiprocessing
    b = shmwire.Barrier(2, action=lambda: None)
    p = multiprocessing.get_context("spawn").Process(target=_wait_alone, args=(b, None))
    with pytest.raises(Exception):
        p.start()
    assert not p.is_alive()
