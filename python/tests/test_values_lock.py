"""Value/Array with lock=False or a given lock, get_obj(), char arrays' value/raw and slices,
after CPython's sharedctypes and test_multiprocessing (test_value, test_array, test_rawvalue,
test_getobj_getlock)."""
import pytest

import shmwire


def _add(v, a, n):
    v.value += n
    for i in range(len(a)):
        a[i] += n


def test_lock_false_gives_no_lock_and_still_shares(ctx):
    v = shmwire.Value("i", 5, lock=False)
    a = shmwire.Array("i", range(4), lock=False)
    for obj in (v, a):
        assert not hasattr(obj, "get_lock")
        assert not hasattr(obj, "acquire")
        assert not hasattr(obj, "get_obj")
    p = ctx.Process(target=_add, args=(v, a, 10))
    p.start()
    p.join(10)
    assert p.exitcode == 0
    assert v.value == 15
    assert a[:] == [10, 11, 12, 13]


def test_a_given_lock_is_used_and_get_obj_gives_the_object(ctx):
    lock = shmwire.Lock()
    v = shmwire.Value("i", 1, lock=lock)
    assert v.get_lock() is lock
    a = shmwire.Array("d", 3, lock=shmwire.RLock())
    with v:
        assert not lock.acquire(False)  # `with v` took the given lock
    assert lock.acquire(False)
    lock.release()
    obj = v.get_obj()
    assert obj.value == 1
    obj.value = 7
    assert v.value == 7
    assert not hasattr(obj, "get_lock")
    assert len(a.get_obj()) == 3
    with pytest.raises(AttributeError):
        shmwire.Value("i", 0, lock=object())
    # a Value with a given lock still pickles to a child, lock and all
    p = ctx.Process(target=_add, args=(v, a, 2))
    p.start()
    p.join(10)
    assert p.exitcode == 0
    assert v.value == 9 and a[:] == [2.0, 2.0, 2.0]


def test_char_array_value_and_raw():
    a = shmwire.Array("c", b"hello\0world")
    assert len(a) == 11
    assert a.value == b"hello"
    assert a.raw == b"hello\0world"
    assert a[1:3] == b"el"
    assert a[0] == b"h"
    a.value = b"hi"
    assert a.value == b"hi"
    assert a.raw == b"hi\0lo\0world"
    a.raw = b"abc"  # no NUL added: the old bytes after it stay
    assert a.raw == b"abclo\0world"
    assert a.value == b"abclo"
    with pytest.raises(ValueError):
        a.value = b"x" * 12
    with pytest.raises(ValueError):
        a.raw = b"x" * 12
    a[0:2] = b"XY"
    assert a.value == b"XYclo"
    b = shmwire.Array("c", 5, lock=False)
    assert b.value == b"" and b.raw == b"\0" * 5


def _set_chars(a):
    a.value = b"from child"


def test_char_array_shared_with_a_child(ctx):
    a = shmwire.Array("c", 20)
    p = ctx.Process(target=_set_chars, args=(a,))
    p.start()
    p.join(10)
    assert p.exitcode == 0
    assert a.value == b"from child"


def test_slices_as_cpythons():
    a = shmwire.Array("i", range(6))
    assert a[1:3] == [1, 2]
    assert a[::2] == [0, 2, 4]
    assert a[-2:] == [4, 5]
    a[1:3] = [7, 8]
    assert a[:] == [0, 7, 8, 3, 4, 5]
    a[::2] = [9, 9, 9]
    assert a[:] == [9, 7, 9, 3, 9, 5]
    with pytest.raises(ValueError):
        a[1:3] = [1]
    with pytest.raises(ValueError):
        a[1:3] = [1, 2, 3]
    with pytest.raises(IndexError):
        a[6]
    assert a[-1] == 5
    raw = shmwire.Array("i", range(3), lock=False)
    raw[0:2] = [5, 6]
    assert raw[:] == [5, 6, 2]


def _flip(a, n):
    for i in range(n):
        a.value = (b"a" if i % 2 else b"b") * len(a)


@pytest.mark.parametrize("lock", ["rlock", "lock"])
def test_a_synchronized_char_arrays_value_is_read_and_written_whole(lock):
    # A writer flips the whole value between a's and b's under the array's lock; a reader must
    # never see a mix (it did: .value and .raw read the elements without the lock).
    import multiprocessing

    given = shmwire.Lock() if lock == "lock" else True
    a = shmwire.Array("c", b"a" * 64, lock=given)
    p = multiprocessing.get_context("fork").Process(target=_flip, args=(a, 20000))
    p.start()
    torn = 0
    while p.is_alive():
        for v in (a.value, a.raw):
            if len(set(v)) > 1:
                torn += 1
    p.join()
    assert p.exitcode == 0
    assert torn == 0, "%d reads saw a value half written" % torn
