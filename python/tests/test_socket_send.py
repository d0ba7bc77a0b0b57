"""A socket-backed Connection (Listener/Client over a Unix socket) whose peer does not read: a long
send_bytes in one thread must not keep the Connection (nor the GIL) from another thread's
recv/poll, and Ctrl-C must interrupt it (multiprocessing's connections allow both: a send and a
receive on one socket from two threads; a blocked send is interrupted by a signal)."""
import multiprocessing
import os
import signal
import threading
import time

import pytest

import shmwire

BIG = 64 << 20  # far more than a socket's buffers hold
RESCUE = 20.0  # the peer reads anyway after this long: unfixed code fails slowly instead of hanging
BOUND = 5.0  # a poll/recv of 0.2 s, or a send interrupted, returns within this (its slice is 50 ms)


def _slow_reader(address, go, out):
    """Connects, reads nothing until `go` (or RESCUE seconds), then reads everything until EOF."""
    conn = shmwire.Client(address)
    go.wait(RESCUE)
    total = 0
    try:
        while True:
            total += len(conn.recv_bytes())
    except (EOFError, OSError, shmwire.Error):
        pass
    out.put(total)


@pytest.fixture
def unix_pair(tmp_path):
    ctx = multiprocessing.get_context("fork")
    address = "unix:%s" % (tmp_path / "s.sock")
    listener = shmwire.Listener(address)
    go, out = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_slow_reader, args=(address, go, out))
    p.start()
    conn = listener.accept(10)
    try:
        yield conn, go, out, p
    finally:
        go.set()
        conn.close()
        listener.close()
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join()


def _send_in_thread(conn, data):
    done = []

    def run():
        try:
            conn.send_bytes(data)
            done.append("sent")
        except BaseException as e:  # noqa: B036 - reported to the test
            done.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, done


def test_poll_while_another_thread_sends_returns_within_its_timeout(unix_pair):
    conn, go, out, p = unix_pair
    t, done = _send_in_thread(conn, b"x" * BIG)
    time.sleep(0.5)  # the sender is blocked now: the peer reads nothing
    assert not done
    t0 = time.monotonic()
    assert conn.poll(0.2) is False
    assert conn.poll(0) is False
    took = time.monotonic() - t0
    go.set()
    t.join(60)
    assert done == ["sent"]
    assert took < BOUND, "poll(0.2) took %.1f s while another thread sent" % took


def test_other_threads_run_while_a_send_and_a_poll_wait(unix_pair):
    # The GIL is free meanwhile: a pure-Python thread keeps counting.
    conn, go, out, p = unix_pair
    t, done = _send_in_thread(conn, b"x" * BIG)
    time.sleep(0.3)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    c = threading.Thread(target=count)
    c.start()
    t0 = time.monotonic()
    conn.poll(1.0)
    took = time.monotonic() - t0
    stop.set()
    c.join()
    go.set()
    t.join(60)
    assert done == ["sent"]
    assert took < BOUND
    assert len(ticks) >= 10


def test_the_whole_message_arrives_after_a_long_send(unix_pair):
    conn, go, out, p = unix_pair
    t, done = _send_in_thread(conn, b"y" * BIG)
    time.sleep(0.3)
    go.set()
    t.join(60)
    assert done == ["sent"]
    conn.close()
    assert out.get(timeout=30) == BIG


def test_ctrl_c_interrupts_a_blocked_send(unix_pair):
    conn, go, out, p = unix_pair
    killer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    killer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        conn.send_bytes(b"z" * BIG)
    took = time.monotonic() - t0
    killer.join()
    assert took < BOUND, "the send was interrupted only after %.1f s" % took
