"""Python and a Rust program talking through shmwire: the crate's `echo_server` example (Rust) as the
peer, over a shared-memory name, a Unix socket and TCP; bytes always, Python objects when the Rust
side has the `pickle` feature. Also shmwire's Listener against Python's own
multiprocessing.connection.Client (the same wire)."""
import multiprocessing
import os
import pathlib
import subprocess
import threading
from multiprocessing.connection import Client as MpClient

import pytest

import shmwire

ROOT = pathlib.Path(__file__).resolve().parents[2]
ECHO = ROOT / "target" / "debug" / "examples" / "echo_server"


def echo_server(address, key, *flags):
    if not ECHO.exists():
        pytest.skip("the Rust echo_server example is not built: cargo build --features pickle "
                    "--example echo_server (.ci/run builds it before these tests)")
    p = subprocess.Popen([str(ECHO), address, key, *flags], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        err = p.communicate()[1]
        if "needs the pickle feature" in err:
            pytest.skip("echo_server was built without the pickle feature: " + err.strip())
        raise AssertionError("echo_server did not start: %r %r" % (line, err))
    return p, line[len("listening on "):].strip()


def stop(p):
    """Kills the server; its listener's name is left stale (it never dropped it), and cleanup()
    removes it, as for any killed owner."""
    p.kill()
    p.communicate()
    shmwire.cleanup()


def addresses(tmp_path):
    return [
        "rustpeer-%d-%s" % (os.getpid(), os.urandom(4).hex()),  # shared memory
        "unix:%s" % (tmp_path / "echo.sock"),
        "tcp://127.0.0.1:0",
    ]


@pytest.mark.parametrize("kind", [0, 1, 2], ids=["shm", "unix", "tcp"])
def test_bytes_with_a_rust_program(tmp_path, kind):
    p, address = echo_server(addresses(tmp_path)[kind], "secret")
    try:
        with shmwire.Client(address, authkey=b"secret") as c:
            for msg in [b"hello", b"", bytes(range(256)) * 12288]:  # the last is 3 MiB
                c.send_bytes(msg)
                assert c.recv_bytes() == msg
            assert c.poll(0) is False
    finally:
        stop(p)


@pytest.mark.parametrize("kind", [0, 2], ids=["shm", "tcp"])
def test_python_objects_with_a_rust_program(tmp_path, kind):
    p, address = echo_server(addresses(tmp_path)[kind], "secret", "--objects")
    try:
        with shmwire.Client(address, authkey=b"secret") as c:
            obj = (1, "text", [2.5, None, True], {"k": b"v"}, 2 ** 70, -(2 ** 80))
            c.send(obj)
            assert c.recv() == (obj, "tuple")
            c.send({"count": 100})
            assert c.recv() == ({"count": 100}, "dict")
    finally:
        stop(p)


def test_a_wrong_key_is_pythons_authentication_error(tmp_path):
    p, address = echo_server(addresses(tmp_path)[0], "secret")
    try:
        with pytest.raises(multiprocessing.AuthenticationError):
            shmwire.Client(address, authkey=b"wrong")
        with shmwire.Client(address, authkey=b"secret") as c:  # the server goes on
            c.send_bytes(b"after")
            assert c.recv_bytes() == b"after"
    finally:
        stop(p)


def test_our_listener_and_pythons_client_over_tcp():
    with shmwire.Listener(("127.0.0.1", 0), authkey=b"k") as listener:
        port = int(listener.address.rsplit(":", 1)[1])

        def python_side():
            c = MpClient(("127.0.0.1", port), authkey=b"k")
            c.send({"from": "python"})
            c.send_bytes(c.recv_bytes() + b"!")
            c.close()

        t = threading.Thread(target=python_side)
        t.start()
        conn = listener.accept(timeout=10)
        assert conn.recv() == {"from": "python"}
        conn.send_bytes(b"hi")
        assert conn.recv_bytes() == b"hi!"
        with pytest.raises(EOFError):
            conn.recv()
        t.join()
        with pytest.raises(TypeError):
            import pickle
            pickle.dumps(conn)
        conn.close()


def _client_child(address, q):
    with shmwire.Client(address) as c:
        c.send(("child", os.getpid()))
        q.put(c.recv())


def test_our_listener_and_client_over_shared_memory(ctx):
    with shmwire.Listener() as listener:
        q = ctx.Queue()
        p = ctx.Process(target=_client_child, args=(listener.address, q))
        p.start()
        conn = listener.accept(timeout=30)
        who, pid = conn.recv()
        assert who == "child" and pid == p.pid
        conn.send("welcome")
        assert q.get(timeout=30) == "welcome"
        p.join(30)
        assert p.exitcode == 0
        conn.close()
        with pytest.raises(TimeoutError):
            listener.accept(timeout=0.05)
