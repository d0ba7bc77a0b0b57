"""A child made by os.fork (not by shmwire) holds tokens of its own: its parent's death is seen."""
import multiprocessing
import os
import signal
import time

import shmwire


def _middle(q):
    # This process is killed by the test; its os.fork child must see it die.
    a, b = shmwire.Pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            a.close()  # the grandchild keeps only b; the middle process holds a
            q.put(("ready", os.getpid()))
            t = time.monotonic()
            if b.poll(10):
                try:
                    b.recv()
                except EOFError:
                    q.put(("eof", time.monotonic() - t))
                    code = 0
            else:
                q.put(("no eof", time.monotonic() - t))
        finally:
            shmwire.release_at_exit()  # a child of os.fork ending in os._exit lets go first
            os._exit(code)
    b.close()
    time.sleep(60)


def test_os_fork_child_sees_its_killed_parent():
    q = shmwire.Queue()
    m = multiprocessing.get_context("spawn").Process(target=_middle, args=(q,))
    m.start()
    what, _pid = q.get(timeout=30)
    assert what == "ready"
    time.sleep(0.2)
    os.kill(m.pid, signal.SIGKILL)
    m.join(10)
    what, waited = q.get(timeout=30)
    assert what == "eof", "the grandchild did not see its parent die (waited %.1f s)" % waited
    assert waited < 3.0
