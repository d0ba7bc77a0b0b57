"""Manager().Namespace() and the rest of CPython's ListProxy/DictProxy (slices, index, count,
insert, remove, extend, +=, *=, sort, reverse; items, values, copy, clear, popitem), after
test_multiprocessing's test_list, test_dict and test_namespace, between real processes."""
import pytest

import shmwire


def _ns_child(ns):
    assert ns.name == "Bob"
    ns.job = "Builder"
    del ns.name


def test_namespace_shared_with_a_child(ctx):
    m = shmwire.Manager()
    ns = m.Namespace(name="Bob")
    ns.x = 1
    ns.y = [1, 2]
    p = ctx.Process(target=_ns_child, args=(ns,))
    p.start()
    p.join(10)
    assert p.exitcode == 0
    assert ns.job == "Builder"
    assert ns.x == 1 and ns.y == [1, 2]
    with pytest.raises(AttributeError):
        ns.name
    with pytest.raises(AttributeError):
        del ns.nothing
    assert repr(ns) == "Namespace(job='Builder', x=1, y=[1, 2])"
    ns._local = 3  # names starting with '_' stay in this proxy, as CPython's
    assert ns._local == 3


def test_list_slices_and_methods():
    m = shmwire.Manager()
    lst = m.list(range(10))
    assert lst[1:3] == [1, 2]
    assert lst[::2] == [0, 2, 4, 6, 8]
    assert lst[-1] == 9 and lst[-3:] == [7, 8, 9]
    lst[1:3] = ["a", "b", "c"]
    assert lst[:] == [0, "a", "b", "c", 3, 4, 5, 6, 7, 8, 9]
    del lst[2:4]
    assert lst[:] == [0, "a", 3, 4, 5, 6, 7, 8, 9]
    lst[1:2] = [1, 2]
    assert lst[:] == list(range(10))
    lst[::2] = [None] * 5
    assert lst[:5] == [None, 1, None, 3, None]
    with pytest.raises(ValueError):
        lst[::2] = [1, 2]
    del lst[::2]
    assert lst[:] == [1, 3, 5, 7, 9]
    lst[-2:] = []
    assert lst[:] == [1, 3, 5]
    lst.insert(-1, 4)
    lst.extend([5, 3])
    assert lst[:] == [1, 3, 4, 5, 5, 3]
    assert lst.index(5) == 3 and lst.index(5, 4) == 4 and lst.count(3) == 2
    with pytest.raises(ValueError):
        lst.index(42)
    lst.remove(3)
    assert lst[:] == [1, 4, 5, 5, 3]
    with pytest.raises(ValueError):
        lst.remove(42)
    lst.sort()
    assert lst[:] == [1, 3, 4, 5, 5]
    lst.sort(key=lambda x: -x)
    assert lst[:] == [5, 5, 4, 3, 1]
    lst.reverse()
    assert lst[:] == [1, 3, 4, 5, 5]
    lst += [6]
    assert isinstance(lst, shmwire.ListProxy)
    assert lst[:] == [1, 3, 4, 5, 5, 6]
    lst *= 2
    assert isinstance(lst, shmwire.ListProxy) and len(lst) == 12
    assert lst + [0] == [1, 3, 4, 5, 5, 6, 1, 3, 4, 5, 5, 6, 0]
    assert lst == [1, 3, 4, 5, 5, 6] * 2
    assert lst * 0 == []
    del lst[-1]
    with pytest.raises(IndexError):
        lst[100]
    assert list(reversed(lst))[0] == 5


def test_dict_methods():
    m = shmwire.Manager()
    d = m.dict(a=1, b=2)
    assert sorted(d.items()) == [("a", 1), ("b", 2)]
    assert sorted(d.values()) == [1, 2]
    c = d.copy()
    assert c == {"a": 1, "b": 2} and type(c) is dict
    k, v = d.popitem()
    assert (k, v) in [("a", 1), ("b", 2)] and k not in d and len(d) == 1
    d.clear()
    with pytest.raises(KeyError):
        d.popitem()
    d.update([(1, "x")], y=2)
    assert d == {1: "x", "y": 2}
    assert d.setdefault("z", 3) == 3 and d["z"] == 3
    assert d.pop("nope", None) is None


def _slicer(lst, n):
    for i in range(n):
        del lst[0:1]


def _appender(lst, n):
    for i in range(n):
        lst.append(("q", i))


def test_slice_deletion_loses_no_concurrent_append(ctx):
    # Each `del lst[0:1]` is one step for every process: none of the other process's appends
    # is lost (a slice done as snapshot-then-write-back would drop some).
    m = shmwire.Manager()
    lst = m.list(range(300))
    ps = [ctx.Process(target=_slicer, args=(lst, 300)),
          ctx.Process(target=_appender, args=(lst, 300))]
    for p in ps:
        p.start()
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    assert lst[:] == [("q", i) for i in range(300)]


def _append_for_ever(lst, stop):
    i = 0
    while not stop.is_set():
        lst.append(i)
        i += 1


def test_a_rewrite_against_a_writer_without_pause_ends():
    # A sort of a long list while another process appends without pause: it retried for ever (15 s
    # and going); now it gets through or gives up with TimeoutError after its bound.
    import multiprocessing
    import threading
    import time

    m = shmwire.Manager()
    lst = m.list(range(20000))
    lst._REWRITE_FOR = 2.0
    stop = multiprocessing.get_context("fork").Event()
    p = multiprocessing.get_context("fork").Process(target=_append_for_ever, args=(lst, stop))
    p.start()
    got = []

    def sort():
        try:
            lst.sort()
            got.append("sorted")
        except TimeoutError:
            got.append("timeout")

    t = threading.Thread(target=sort, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(20)
    stop.set()
    p.join(30)
    assert not t.is_alive(), "the sort still retried after %.0f s" % (time.monotonic() - t0)
    assert got in (["sorted"], ["timeout"])
