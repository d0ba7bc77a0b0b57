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


def _noop():
    pass


def _slow():
    time.sleep(1.0)


def _wait_once(barrier, out, delay=0.0):
    time.sleep(delay)
    try:
        barrier.wait()
        out.value = 1
    except threading.BrokenBarrierError:
        out.value = 2


def _round(ctx, b, n):
    """A full round of `n` parties (this one and n - 1 children); their outcomes."""
    outs = [shmwire.Value("i", 0) for _ in range(n)]
    ps = [ctx.Process(target=_wait_once, args=(b, o)) for o in outs[1:]]
    for p in ps:
        p.start()
    try:
        b.wait(BOUND)
        outs[0].value = 1
    except threading.BrokenBarrierError:
        outs[0].value = 2
    for p in ps:
        p.join(BOUND)
    return [o.value for o in outs]


@pytest.mark.parametrize("when", ["arriving", "during_the_action"])
def test_reset_while_parties_wait_leaves_a_usable_barrier(when):
    # threading.Barrier.reset: the parties waiting get BrokenBarrierError, and the barrier is
    # usable at once: the next full round passes (and nobody is left waiting).
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    b = shmwire.Barrier(3, action=_slow if when == "during_the_action" else _noop)
    outs = [shmwire.Value("i", 0) for _ in range(3)]
    n = 3 if when == "during_the_action" else 2
    ps = [ctx.Process(target=_wait_once, args=(b, outs[i], 0.3 * i)) for i in range(n)]
    for p in ps:
        p.start()
    time.sleep(1.0 if n == 3 else 0.5)  # the action is running / two wait for the third
    b.reset()
    for p in ps:
        p.join(BOUND)
        assert p.exitcode == 0, "a party still waits after the reset"
    assert all(o.value == 2 for o in outs[:n]), [o.value for o in outs[:n]]
    assert not b.broken
    assert _round(ctx, b, 3) == [1, 1, 1]
    assert not b.broken


def _die():
    import os
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


def _die_in_round(n, runs):
    with runs.get_lock():
        runs.value += 1
        if runs.value == n:
            _die()


def _rounds(barrier, out, rounds, delay):
    time.sleep(delay)
    try:
        for _ in range(rounds):
            barrier.wait()
            time.sleep(delay)
        out.value = 1
    except threading.BrokenBarrierError:
        out.value = 2


@pytest.mark.parametrize("round_", [1, 2])
def test_a_killed_action_runner_breaks_the_barrier_for_the_others(round_):
    # The party running the action dies: the others, waiting for the action to end, must hear
    # BrokenBarrierError (a dead party breaks a barrier), in the first round as in later ones.
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    runs = shmwire.Value("i", 0)
    b = shmwire.Barrier(3, action=functools.partial(_die_in_round, round_, runs))
    outs = [shmwire.Value("i", 0) for _ in range(3)]
    ps = [ctx.Process(target=_rounds, args=(b, outs[i], round_, d))
          for i, d in enumerate([0.0, 0.0, 0.5])]
    for p in ps:
        p.start()
    for p in ps:
        p.join(BOUND)
    try:
        codes = [p.exitcode for p in ps]
        assert codes.count(-9) == 1, codes
        assert sorted(o.value for o in outs) == [0, 2, 2], [o.value for o in outs]
    finally:
        for p in ps:
            p.kill()
            p.join()
