"""Every name a test run makes carries its own prefix; the run fails if any is left in /dev/shm,
or if a test leaves a child process behind."""
import gc
import multiprocessing
import os

import pytest

PREFIX = os.environ.setdefault("SHMWIRE_PREFIX", "pytest%d" % os.getpid())


def leftovers():
    return [n for n in os.listdir("/dev/shm") if n.startswith("shmwire.%s." % PREFIX)]


@pytest.fixture(autouse=True)
def no_children_left():
    yield
    left = multiprocessing.active_children()
    for p in left:
        p.kill()
        p.join()
    assert not left, "the test left processes running: %r" % left


@pytest.fixture(params=["fork", "spawn"])
def ctx(request):
    """Each start method of multiprocessing, for the tests that pass objects to children."""
    return multiprocessing.get_context(request.param)


def pytest_sessionfinish(session, exitstatus):
    gc.collect()
    import shmwire

    shmwire._shmwire._release_at_exit()
    left = leftovers()
    if left:
        for n in left:
            os.unlink(os.path.join("/dev/shm", n))
        print("\nleft in /dev/shm (deleted now): %s" % " ".join(left))
        session.exitstatus = 1
