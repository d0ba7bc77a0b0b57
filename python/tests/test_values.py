"""Value and Array: typecodes and ctypes types, indexing, get_lock() between processes."""
import ctypes

import pytest

import shmwire


def _add(v, arr, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1
        with arr.get_lock():
            arr[0] += 1.5


def test_value_types():
    assert shmwire.Value("i", 0).value == 0
    v = shmwire.Value("d", 1.25)
    assert v.value == 1.25
    v.value = -2.5
    assert v.value == -2.5
    c = shmwire.Value(ctypes.c_int, 7)
    assert c.value == 7
    assert shmwire.Value("c", b"x").value == b"x"
    assert shmwire.Value("q", 2**40).value == 2**40
    assert shmwire.Value("i").value == 0


def test_array_indexing_and_slices():
    a = shmwire.Array("d", 10)
    assert len(a) == 10
    assert a[:] == [0.0] * 10
    a[3] = 2.5
    a[-1] = 1.0
    assert a[3] == 2.5 and a[9] == 1.0
    a[0:2] = [7, 8]
    assert a[:3] == [7.0, 8.0, 0.0]
    with pytest.raises(IndexError):
        a[10]
    b = shmwire.Array("i", [1, 2, 3])
    assert list(b) == [1, 2, 3]


def test_get_lock_counts_across_processes(ctx):
    v = shmwire.Value("i", 0)
    arr = shmwire.Array("d", 2)
    ps = [ctx.Process(target=_add, args=(v, arr, 100)) for _ in range(4)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    assert v.value == 400
    assert arr[0] == 600.0
    with v.get_lock():
        with v.get_lock():  # an RLock, as Python's default
            v.value = 1
    assert v.value == 1
