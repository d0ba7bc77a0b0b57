"""Pipe and Connection, after CPython's test_multiprocessing expectations, between real processes."""
import array
import os
import signal
import threading
import time
from multiprocessing import BufferTooShort
from multiprocessing.connection import wait

import pytest

import shmwire


def _echo(ends):
    other, conn = ends
    other.close()  # a forked child holds a copy of every end, as with Python's own pipes
    while True:
        try:
            obj = conn.recv()
        except EOFError:
            break
        conn.send(obj)
    conn.close()


def _send_and_exit(conn, items):
    for x in items:
        conn.send(x)
    conn.close()


def _hold_and_sleep(conn):
    conn.send("ready")
    time.sleep(60)


def test_objects_round_trip_through_a_child(ctx):
    a, b = shmwire.Pipe()
    p = ctx.Process(target=_echo, args=((a, b),))
    p.start()
    for obj in [42, None, "hello", [42, None, "hello"], {"k": (1, 2.5)}, b"x" * 100_000]:
        a.send(obj)
        assert a.recv() == obj
    a.close()
    p.join(10)
    assert p.exitcode == 0


def test_eof_once_every_copy_of_the_other_end_is_closed(ctx):
    # The seed's pattern: the parent closes its copy of the child's end after start().
    a, b = shmwire.Pipe()
    p = ctx.Process(target=_send_and_exit, args=(b, list(range(10))))
    p.start()
    b.close()  # under spawn, returns once the child has opened its copy
    got = []
    while True:
        try:
            got.append(a.recv())
        except EOFError:
            break
    p.join(10)
    assert got == list(range(10))
    assert p.exitcode == 0
    with pytest.raises(EOFError):
        a.recv()


def test_send_bytes_offset_and_size():
    a, b = shmwire.Pipe()
    msg = b"abcdefghijklmnopqrstuvwxyz"
    a.send_bytes(msg)
    assert b.recv_bytes() == msg
    a.send_bytes(msg, 5)
    assert b.recv_bytes() == msg[5:]
    a.send_bytes(msg, 7, 8)
    assert b.recv_bytes() == msg[7:15]
    a.send_bytes(msg, 26)
    assert b.recv_bytes() == b""
    a.send_bytes(array.array("i", [1, 2, 3]))
    assert b.recv_bytes() == array.array("i", [1, 2, 3]).tobytes()
    with pytest.raises(ValueError):
        a.send_bytes(msg, -1)
    with pytest.raises(ValueError):
        a.send_bytes(msg, 27)
    with pytest.raises(ValueError):
        a.send_bytes(msg, 10, -1)
    with pytest.raises(ValueError):
        a.send_bytes(msg, 10, 17)


def test_recv_bytes_into_and_buffer_too_short():
    a, b = shmwire.Pipe()
    msg = b"hello world"
    buf = bytearray(20)
    a.send_bytes(msg)
    assert b.recv_bytes_into(buf) == len(msg)
    assert buf[: len(msg)] == msg
    a.send_bytes(msg)
    assert b.recv_bytes_into(buf, 5) == len(msg)
    assert buf[5 : 5 + len(msg)] == msg
    arr = array.array("i", range(4))
    a.send_bytes(array.array("i", [7, 8]))
    assert b.recv_bytes_into(arr, 4) == 8
    assert list(arr) == [0, 7, 8, 3]
    a.send_bytes(msg)
    with pytest.raises(BufferTooShort) as e:
        b.recv_bytes_into(bytearray(4))
    assert e.value.args[0] == msg  # the message is carried, as Python's does
    assert not b.poll()  # and was taken


def test_recv_bytes_maxlength():
    a, b = shmwire.Pipe()
    a.send_bytes(b"12345")
    assert b.recv_bytes(5) == b"12345"
    a.send_bytes(b"123456")
    with pytest.raises(OSError):
        b.recv_bytes(5)


def test_poll_and_its_timeout():
    a, b = shmwire.Pipe()
    assert b.poll() is False
    t = time.monotonic()
    assert b.poll(0.3) is False
    assert time.monotonic() - t >= 0.25
    a.send(1)
    assert b.poll() is True
    assert b.poll(None) is True
    assert b.recv() == 1


def test_closed_connection_raises_oserror():
    a, b = shmwire.Pipe()
    a.close()
    assert a.closed
    with pytest.raises(OSError):
        a.send(1)
    with pytest.raises(OSError):
        a.recv()
    with pytest.raises(OSError):
        a.poll()
    a.close()  # twice is fine


def test_simplex_pipe():
    r, w = shmwire.Pipe(duplex=False)
    assert r.readable and not r.writable
    assert w.writable and not w.readable
    w.send("one way")
    assert r.recv() == "one way"


def test_fileno_with_connection_wait(ctx):
    a, b = shmwire.Pipe()
    c, d = shmwire.Pipe()
    assert wait([a, c], 0.05) == [] or not (a.poll() or c.poll())
    p = ctx.Process(target=_send_and_exit, args=(d, ["late"]))
    p.start()
    ready = []
    deadline = time.monotonic() + 10
    while c not in ready and time.monotonic() < deadline:
        ready = [r for r in wait([a, c], 5) if r.poll()]
    assert ready == [c]
    assert c.recv() == "late"
    b.send("now")
    assert a in wait([a, c], 5)
    assert a.recv() == "now"
    p.join(10)
    assert p.exitcode == 0


def test_messages_larger_than_the_ring():
    a, b = shmwire.Pipe()
    big = os.urandom(8 << 20)
    t = threading.Thread(target=a.send_bytes, args=(big,))
    t.start()
    assert b.recv_bytes() == big
    t.join()


def test_killed_child_is_eof_not_a_hang(ctx):
    a, b = shmwire.Pipe()
    p = ctx.Process(target=_hold_and_sleep, args=(b,))
    p.start()
    assert a.recv() == "ready"
    b.close()
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    t = time.monotonic()
    with pytest.raises((EOFError, shmwire.Error)):
        a.recv()
    assert time.monotonic() - t < 2.0  # the dead-peer bound (200 ms) x10


def test_pickled_connection_through_a_queue():
    a, b = shmwire.Pipe()
    q = shmwire.Queue()
    q.put(b)
    b2 = q.get()
    a.send("via a handle")
    assert b2.recv() == "via a handle"
