"""Manager().dict() and .list(): the proxies' calls, Python's key equality, children of both
start methods, and the seeds' `d['count'] -= 1` under a Lock."""
import pytest

import shmwire


def _decrement(d, lock):
    with lock:
        d["count"] -= 1


def _list_child(num):
    num[0] -= 1
    num.append("from child")


def test_dict_calls():
    with shmwire.Manager() as m:
        d = m.dict({"count": 100})
        assert d["count"] == 100
        d["count"] -= 1
        assert d["count"] == 99
        assert d.get("missing") is None
        assert d.get("missing", 5) == 5
        with pytest.raises(KeyError):
            d["missing"]
        d.update({"a": [1, 2]}, b=(3,))
        assert len(d) == 3
        assert sorted(d) == ["a", "b", "count"]
        assert dict(d.items()) == {"count": 99, "a": [1, 2], "b": (3,)}
        assert "a" in d and "z" not in d
        del d["a"]
        with pytest.raises(KeyError):
            del d["a"]
        assert d.pop("b") == (3,)
        assert d.pop("b", None) is None
        assert d.setdefault("n", 1) == 1
        assert d.setdefault("n", 2) == 1
        assert str(d) == str({"count": 99, "n": 1}) or str(d) == str({"n": 1, "count": 99})
        d.clear()
        assert len(d) == 0


def test_keys_compare_as_python_compares_them():
    d = shmwire.Manager().dict()
    d[1] = "int"
    d[1.0] = "float"
    d[True] = "bool"
    assert len(d) == 1
    assert d[1] == "bool"
    d[(1, "a")] = "tuple"
    assert d[(1.0, "a")] == "tuple"
    d[None] = 0
    d[b"b"] = 1
    d[2.5] = 2
    assert d[2.5] == 2 and d[None] == 0 and d[b"b"] == 1
    assert set(d.keys()) == {1, (1, "a"), None, b"b", 2.5}


def test_list_calls():
    lst = shmwire.Manager().list([1, 2, 3])
    lst[0] -= 1
    assert lst[:] == [0, 2, 3]
    assert str(lst) == "[0, 2, 3]"
    lst.append(4)
    lst.extend([5, 6])
    lst.insert(0, -1)
    assert list(lst) == [-1, 0, 2, 3, 4, 5, 6]
    assert lst.pop() == 6
    assert lst.pop(0) == -1
    assert lst.index(3) == 2
    lst.remove(3)
    del lst[-1]
    assert lst[-1] == 4 and len(lst) == 3
    with pytest.raises(IndexError):
        lst[10]
    with pytest.raises(ValueError):
        lst.index(42)


def test_seed_count_under_a_lock(ctx):
    lock = shmwire.Lock()
    with shmwire.Manager() as m:
        dic = m.dict({"count": 20})
        ps = [ctx.Process(target=_decrement, args=(dic, lock)) for _ in range(20)]
        for p in ps:
            p.start()
        for p in ps:
            p.join(30)
            assert p.exitcode == 0
        assert dic["count"] == 0
        assert str(dic) == "{'count': 0}"


def test_list_changed_by_a_child(ctx):
    m = shmwire.Manager()
    num = m.list([1, 2, 3])
    p = ctx.Process(target=_list_child, args=(num,))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert num[:] == [0, 2, 3, "from child"]
