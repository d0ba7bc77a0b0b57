"""shmwire for Python: multiprocessing's Pipe, Queue, locks, Value/Array and Manager on shared memory.

Change ``from multiprocessing import Pipe, Queue`` to ``from shmwire import Pipe, Queue`` and keep
your ``Process`` and ``Pool``: the objects pass to their children under the fork and spawn start
methods. Linux only.

How it maps onto the Rust library:

* Every object is a *named* shmwire object (a random name under ``/dev/shm/shmwire.*``). Pickling
  one (for a spawned child, a Pool initializer, or through a Queue/Pipe) carries its name, and the
  receiver opens it by name. A named object lives while some process holds it; an object pickled
  for a child being spawned is kept for that child until it has opened its copy or ended (see
  ``_handoff``), so the parent may let go of it right after ``p.start()``. Through a Queue or Pipe,
  the sender keeps its copy until the receiver has opened it, as with any named object.
* A child made by ``os.fork`` (multiprocessing's fork start method) gets liveness tokens of its own
  through an at-fork handler, and holds every object its parent held (as Python's fork does).
* ``send``/``recv`` pickle in Python (``multiprocessing.reduction.ForkingPickler``) and move bytes
  through the rings; blocking calls release the GIL and wait in slices of 50 ms, so Ctrl-C raises
  ``KeyboardInterrupt``.
* ``close()`` lets go of this process's end or queue; the other processes keep theirs.
* Manager dict keys are compared as Python compares them for None, bool, int, float, str, bytes and
  tuples of these (``1``, ``1.0`` and ``True`` are one key, stored as ``1``); other keys compare by
  their pickle. Values are pickled.
"""

import os
import pickle
import queue as _queue
import threading as _threading
from multiprocessing import BufferTooShort, TimeoutError as _MpTimeoutError  # noqa: F401
from multiprocessing import context as _mp_context
from multiprocessing import util as _mp_util
from multiprocessing.reduction import ForkingPickler as _Pickler

from . import _handoff, _shmwire
from ._shmwire import Error, cleanup, PROBE_INTERVAL  # noqa: F401
from ._shmwire import _release_at_exit as release_at_exit  # noqa: F401

__all__ = [
    "Pipe", "Connection", "Queue", "JoinableQueue", "SimpleQueue", "Lock", "RLock", "Semaphore",
    "BoundedSemaphore", "Event", "Condition", "Barrier", "Value", "Array", "Manager", "Error",
    "BufferTooShort", "cleanup", "release_at_exit", "Listener", "Client",
]

# A child of os.fork takes over prepared slots (its own liveness tokens) for everything we hold.
# The parent hook is given no pid (a slot's pid is only shown, never trusted): 0.
# The reservations for spawned children (see _handoff) are reset in the child after the library's
# own hook has run, never before: the library's locks are held until then.
def _after_fork_in_child():
    _shmwire._after_fork_in_child()
    _handoff._after_fork_in_child()


os.register_at_fork(
    before=_shmwire._before_fork,
    after_in_child=_after_fork_in_child,
    after_in_parent=lambda: _shmwire._after_fork_in_parent(0),
)


class _ExitAnchor:
    pass


_EXIT_ANCHOR = _ExitAnchor()


def _release_at_exit_in_children(_anchor):
    # A multiprocessing child ends in os._exit (no drops): give up what it holds, and the names it
    # was the last to hold, when its finalizers run. (The registry was cleared after the fork.)
    _mp_util.Finalize(None, _shmwire._release_at_exit, exitpriority=-100)


# In this process (main or spawned child) at exit, and in every multiprocessing child after fork.
_mp_util.Finalize(None, _shmwire._release_at_exit, exitpriority=-100)
_mp_util.register_after_fork(_EXIT_ANCHOR, _release_at_exit_in_children)


def _name(kind):
    return "py%s-%d-%s" % (kind, os.getpid(), os.urandom(8).hex())


def _timeout(block, timeout):
    """multiprocessing's (block, timeout) as seconds: 0 = don't wait, None = for ever."""
    if not block:
        return 0.0
    if timeout is None:
        return None
    return max(0.0, float(timeout))


_SCALARS = frozenset([int, float, str, bytes, bool, type(None), complex])
_HIGHEST = pickle.HIGHEST_PROTOCOL


def _send_dumps(obj, _dumps=pickle.dumps, _fp=_Pickler.dumps):
    """Pickles `obj` for a Pipe or Queue: plain pickle for scalars (no reducer of multiprocessing
    can be needed: 5x cheaper than building a ForkingPickler), ForkingPickler for anything else."""
    if type(obj) in _SCALARS:
        return _dumps(obj, _HIGHEST)
    return _fp(obj)


def _bytes_view(buf):
    m = memoryview(buf)
    if m.itemsize != 1 or m.format not in ("B", "b", "c"):
        m = m.cast("B")
    return m


# ---- Pipe and Connection -------------------------------------------------------------------------


class Connection:
    """One end of a pipe, with multiprocessing.connection.Connection's methods."""

    def __init__(self, raw):
        self._raw = raw
        self._handoffs = []  # reservations of this end for spawned children

    def __reduce__(self):
        if self._raw.end > 1:
            raise TypeError(
                "a Connection made by Listener/Client cannot be pickled; connect again in the "
                "other process, or send it a Pipe end")
        # For a spawned child, the end is kept for it until it has opened its copy (or ended), and
        # close() waits for that, so `p.start(); conn.close()` works.
        return _handoff.reduce(
            self._raw, _open_connection, (self._raw.name, self._raw.end), self._handoffs.append)

    def _wait_handoffs(self, limit=30.0):
        import time
        deadline = time.monotonic() + limit
        for res in self._handoffs:
            if res.pid == os.getpid():  # (a child of fork does not wait for its parent's)
                res.done.wait(max(0.0, deadline - time.monotonic()))
        self._handoffs = []

    def _check(self):
        if self._raw.closed:
            raise OSError("handle is closed")

    @property
    def closed(self):
        return self._raw.closed

    @property
    def readable(self):
        return self._raw.readable

    @property
    def writable(self):
        return self._raw.writable

    def fileno(self):
        self._check()
        return self._raw.fileno()

    def close(self):
        if self._handoffs:
            self._wait_handoffs()
        self._raw.close()

    def send_bytes(self, buf, offset=0, size=None):
        self._check()
        m = _bytes_view(buf)
        n = len(m)
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        self._raw.send_bytes(m[offset:offset + size])

    def send(self, obj):
        self._check()
        self._raw.send_bytes(_send_dumps(obj))

    def recv_bytes(self, maxlength=None):
        self._check()
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        data = self._raw.recv_bytes()
        if maxlength is not None and len(data) > maxlength:
            self.close()
            raise OSError("bad message length")
        return data

    def recv_bytes_into(self, buf, offset=0):
        self._check()
        with memoryview(buf) as m:
            itemsize = m.itemsize
            bytesize = itemsize * len(m)
            if offset < 0:
                raise ValueError("negative offset")
            elif offset > bytesize:
                raise ValueError("offset too large")
            data = self._raw.recv_bytes()
            size = len(data)
            if bytesize - offset < size:
                raise BufferTooShort(data)
            m.cast("B")[offset:offset + size] = data
        return size

    def recv(self):
        self._check()
        return _loads(self._raw.recv_bytes())

    def poll(self, timeout=0.0):
        self._check()
        return self._raw.poll(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<shmwire.Connection %s end %d%s>" % (
            self._raw.name, self._raw.end, " closed" if self._raw.closed else "")


def _open_connection(name, end):
    return Connection(_shmwire.RawConnection.open(name, end))


def Pipe(duplex=True):
    """Two Connections; with duplex=False, the first only receives and the second only sends."""
    a, b = _shmwire.RawConnection.pipe(_name("pipe"), duplex)
    return Connection(a), Connection(b)  # simplex: (reader, writer), as multiprocessing's


def _address(address):
    """A shmwire address: a name (shared memory), 'unix:/path', 'tcp://host:port', or Python's
    (host, port) tuple for TCP."""
    if isinstance(address, tuple):
        host, port = address
        return "tcp://[%s]:%d" % (host, port) if ":" in host else "tcp://%s:%d" % (host, port)
    return str(address)


class Listener:
    """multiprocessing.connection.Listener's counterpart: accepts connections from any program using
    shmwire (Rust or Python) at a shared-memory name, 'unix:/path' or 'tcp://host:port' (also a
    (host, port) tuple), with Python's authkey handshake when ``authkey`` is given. Over a socket the
    wire is Python's own, so a ``multiprocessing.connection.Client`` can connect too. ``address`` is
    the address as a string."""

    def __init__(self, address=None, family=None, backlog=1, authkey=None):
        if address is None:
            address = _name("listener")
        self._raw = _shmwire.RawListener.bind(_address(address), authkey)

    @property
    def address(self):
        return self._raw.address

    def accept(self, timeout=None):
        raw = self._raw.accept(timeout)
        if raw is None:
            raise TimeoutError("no client within the timeout")
        return Connection(raw)

    def close(self):
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def Client(address, family=None, authkey=None):
    """A Connection to the Listener at ``address`` (multiprocessing.connection.Client's
    counterpart)."""
    return Connection(_shmwire.client(_address(address), authkey))


# ---- Queues ----------------------------------------------------------------------------------------


class Queue:
    """multiprocessing.Queue: put/get with block and timeout, queue.Full/queue.Empty."""

    _joinable = False

    def __init__(self, maxsize=0, *, ctx=None, _raw=None):
        if _raw is None:
            _raw = _shmwire.RawQueue.create(_name("queue"), max(0, int(maxsize)), self._joinable)
        self._raw = _raw
        self._closed = False

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_queue, (type(self), self._raw.name))

    def _check_closed(self):
        if self._closed:
            raise ValueError("Queue %r is closed" % self)

    def put(self, obj, block=True, timeout=None):
        self._check_closed()
        if not self._raw.put(_send_dumps(obj), _timeout(block, timeout)):
            raise _queue.Full

    def put_nowait(self, obj):
        return self.put(obj, False)

    def get(self, block=True, timeout=None):
        self._check_closed()
        data = self._raw.get(_timeout(block, timeout))
        if data is None:
            raise _queue.Empty
        return _loads(data)

    def get_nowait(self):
        return self.get(False)

    def qsize(self):
        return self._raw.qsize()

    def empty(self):
        return self._raw.empty()

    def full(self):
        return self._raw.full()

    def close(self):
        """This process lets go of the queue (later calls here raise ValueError)."""
        self._closed = True

    def join_thread(self):
        pass  # no feeder thread: a put is done when it returns

    def cancel_join_thread(self):
        pass

    def __repr__(self):
        return "<shmwire.%s %s>" % (type(self).__name__, self._raw.name)


class JoinableQueue(Queue):
    """multiprocessing.JoinableQueue: task_done() and join()."""

    _joinable = True

    def task_done(self):
        self._raw.task_done()

    def join(self):
        self._raw.join(None)


class SimpleQueue:
    """multiprocessing.SimpleQueue: put, get, empty, close."""

    def __init__(self, *, ctx=None, _raw=None):
        self._raw = _raw if _raw is not None else _shmwire.RawQueue.create(_name("squeue"), 0)
        self._closed = False

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_queue, (type(self), self._raw.name))

    def put(self, obj):
        if self._closed:
            raise OSError("handle is closed")
        self._raw.put(_send_dumps(obj), None)

    def get(self):
        if self._closed:
            raise OSError("handle is closed")
        return _loads(self._raw.get(None))

    def empty(self):
        return self._raw.empty()

    def close(self):
        self._closed = True


def _open_queue(cls, name):
    raw = _shmwire.RawQueue.open(name, cls is JoinableQueue)
    return cls(_raw=raw)


# ---- Locks ---------------------------------------------------------------------------------------


class _LockBase:
    def __init__(self, raw):
        self._raw = raw

    def acquire(self, block=True, timeout=None):
        return self._raw.acquire(_timeout(block, timeout))

    def release(self):
        self._raw.release()

    def __enter__(self):
        self.acquire()
        return True

    def __exit__(self, *exc):
        self.release()

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_lock, (type(self), self._raw.name))

    def __repr__(self):
        return "<shmwire.%s %s>" % (type(self).__name__, self._raw.name)


class Lock(_LockBase):
    """multiprocessing.Lock (a holder that died is taken over by the next acquire)."""

    def __init__(self, *, ctx=None, _raw=None):
        super().__init__(_raw or _shmwire.RawLock.create(_name("lock")))


class RLock(_LockBase):
    """multiprocessing.RLock: the holding thread may acquire it again."""

    def __init__(self, *, ctx=None, _raw=None):
        super().__init__(_raw or _shmwire.RawRLock.create(_name("rlock")))


class Semaphore(_LockBase):
    """multiprocessing.Semaphore."""

    _bounded = False

    def __init__(self, value=1, *, ctx=None, _raw=None):
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        super().__init__(_raw or _shmwire.RawSemaphore.create(_name("sem"), value, self._bounded))

    def get_value(self):
        return self._raw.get_value()

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_semaphore, (type(self), self._raw.name))


class BoundedSemaphore(Semaphore):
    """multiprocessing.BoundedSemaphore: releasing past the initial value is ValueError."""

    _bounded = True


def _open_semaphore(cls, name):
    return cls(_raw=_shmwire.RawSemaphore.open(name, cls._bounded))


class Condition(_LockBase):
    """multiprocessing.Condition, with a lock of its own (lock=None only)."""

    def __init__(self, lock=None, *, ctx=None, _raw=None):
        if lock is not None:
            raise NotImplementedError("shmwire.Condition has a lock of its own: pass lock=None")
        super().__init__(_raw or _shmwire.RawCondition.create(_name("cond")))

    def wait(self, timeout=None):
        return self._raw.wait(None if timeout is None else max(0.0, timeout))

    def wait_for(self, predicate, timeout=None):
        import time
        result = predicate()
        if result:
            return result
        endtime = None if timeout is None else time.monotonic() + timeout
        while not result:
            if endtime is not None:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
                self.wait(waittime)
            else:
                self.wait()
            result = predicate()
        return result

    def notify(self, n=1):
        self._raw.notify(n)

    def notify_all(self):
        self._raw.notify_all()


_LOCK_OPENERS = {
    Lock: _shmwire.RawLock.open,
    RLock: _shmwire.RawRLock.open,
    Condition: _shmwire.RawCondition.open,
}


def _open_lock(cls, name):
    return cls(_raw=_LOCK_OPENERS[cls](name))


class Event:
    """multiprocessing.Event."""

    def __init__(self, *, ctx=None, _raw=None):
        self._raw = _raw or _shmwire.RawEvent.create(_name("event"))

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_simple, ("event", self._raw.name))

    def is_set(self):
        return self._raw.is_set()

    def set(self):
        self._raw.set()

    def clear(self):
        self._raw.clear()

    def wait(self, timeout=None):
        return self._raw.wait(None if timeout is None else max(0.0, timeout))


class Barrier:
    """multiprocessing.Barrier (threading.BrokenBarrierError when broken)."""

    def __init__(self, parties, action=None, timeout=None, *, ctx=None, _raw=None):
        if action is not None:
            raise NotImplementedError("shmwire.Barrier takes no action")
        self._raw = _raw or _shmwire.RawBarrier.create(_name("barrier"), parties)
        self._timeout = timeout

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_simple, ("barrier", self._raw.name))

    def wait(self, timeout=None):
        if timeout is None:
            timeout = self._timeout
        i = self._raw.wait(timeout)
        if i is None:
            raise _threading.BrokenBarrierError
        return i

    def abort(self):
        self._raw.abort()

    def reset(self):
        self._raw.reset()

    @property
    def parties(self):
        return self._raw.parties

    @property
    def n_waiting(self):
        return self._raw.n_waiting

    @property
    def broken(self):
        return self._raw.broken


def _open_simple(kind, name):
    if kind == "event":
        return Event(_raw=_shmwire.RawEvent.open(name))
    return Barrier(0, _raw=_shmwire.RawBarrier.open(name))


# ---- Value and Array -------------------------------------------------------------------------------


def _typecode(typecode_or_type):
    if isinstance(typecode_or_type, str):
        return typecode_or_type
    code = getattr(typecode_or_type, "_type_", None)  # ctypes.c_int and friends
    if isinstance(code, str):
        return code
    raise TypeError("unsupported type %r" % (typecode_or_type,))


def _convert(typecode, x):
    if typecode == "c":
        return bytes([x])
    if typecode == "?":
        return bool(x)
    return x


class _Synchronized:
    def get_lock(self):
        return self._lock

    def acquire(self, *args):
        return self._lock.acquire(*args)

    def release(self):
        return self._lock.release()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)


class _Value(_Synchronized):
    def __init__(self, raw, lock):
        self._raw, self._lock = raw, lock

    @property
    def value(self):
        return _convert(self._raw.typecode, self._raw.get())

    @value.setter
    def value(self, v):
        self._raw.set(v)

    def __reduce__(self):
        return _handoff.reduce(
            self._raw, _open_value, (self._raw.name, self._raw.typecode, self._lock))

    def __repr__(self):
        return "<shmwire.Value(%r, %r)>" % (self._raw.typecode, self.value)


def _open_value(name, typecode, lock):
    return _Value(_shmwire.RawValue.open(name, typecode), lock)


def Value(typecode_or_type, *args, lock=True, ctx=None):
    """multiprocessing.Value: `.value` (each get and set whole), `get_lock()` (an RLock by default)."""
    code = _typecode(typecode_or_type)
    init = args[0] if args else (b"\0" if code == "c" else 0)
    raw = _shmwire.RawValue.create(_name("value"), code, init)
    return _Value(raw, _lock_for(lock))


def _lock_for(lock):
    if lock is True or lock is None:
        return RLock()
    if lock is False:
        return RLock()  # shmwire's Value is always whole per get/set; get_lock() still works
    return lock


class _Array(_Synchronized):
    def __init__(self, raw, lock):
        self._raw, self._lock = raw, lock

    def __len__(self):
        return len(self._raw)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [_convert(self._raw.typecode, x) for x in self._raw.to_list()[i]]
        return _convert(self._raw.typecode, self._raw.get(i))

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            idx = range(len(self))[i]
            v = list(v)
            if len(v) != len(idx):
                raise ValueError("Can only assign sequence of same size")
            for j, x in zip(idx, v):
                self._raw.set(j, x)
        else:
            self._raw.set(i, v)

    def __iter__(self):
        return iter(self[:])

    def __reduce__(self):
        return _handoff.reduce(
            self._raw, _open_array, (self._raw.name, self._raw.typecode, self._lock))

    def __repr__(self):
        return "<shmwire.Array(%r, %r)>" % (self._raw.typecode, self[:])


def _open_array(name, typecode, lock):
    return _Array(_shmwire.RawArray.open(name, typecode), lock)


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None):
    """multiprocessing.Array: indexing, slicing, len, `get_lock()`."""
    code = _typecode(typecode_or_type)
    if isinstance(size_or_initializer, int):
        init = [0] * size_or_initializer
    else:
        init = list(size_or_initializer)
    raw = _shmwire.RawArray.create(_name("array"), code, init)
    return _Array(raw, _lock_for(lock))


# ---- Manager ---------------------------------------------------------------------------------------


def _key(k):
    """A canonical encoding of a dict key: equal keys (as Python compares them) encode equally."""
    if k is None:
        return b"N"
    if isinstance(k, (bool, int)):
        return b"I" + str(int(k)).encode()
    if isinstance(k, float):
        if k.is_integer():
            return b"I" + str(int(k)).encode()
        return b"F" + k.hex().encode()
    if isinstance(k, str):
        return b"S" + k.encode("utf-8", "surrogatepass")
    if isinstance(k, bytes):
        return b"B" + k
    if isinstance(k, tuple):
        parts = [_key(x) for x in k]
        return b"T" + b"".join(b"%d:" % len(p) + p for p in parts)
    return b"P" + pickle.dumps(k, protocol=4)


def _unkey(b):
    tag, rest = b[:1], b[1:]
    if tag == b"N":
        return None
    if tag == b"I":
        return int(rest)
    if tag == b"F":
        return float.fromhex(rest.decode())
    if tag == b"S":
        return rest.decode("utf-8", "surrogatepass")
    if tag == b"B":
        return bytes(rest)
    if tag == b"T":
        out, i = [], 0
        while i < len(rest):
            j = rest.index(b":", i)
            n = int(rest[i:j])
            out.append(_unkey(rest[j + 1:j + 1 + n]))
            i = j + 1 + n
        return tuple(out)
    return pickle.loads(rest)


def _dumps(v):
    return pickle.dumps(v, pickle.HIGHEST_PROTOCOL)


_loads = pickle.loads


class DictProxy:
    """A Manager's dict, in shared memory: the calls of multiprocessing's DictProxy."""

    def __init__(self, raw):
        self._raw = raw

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_dict, (self._raw.handle(),))

    def __getitem__(self, k):
        v = self._raw.get(_key(k))
        if v is None:
            raise KeyError(k)
        return _loads(v)

    def __setitem__(self, k, v):
        self._raw.set(_key(k), _dumps(v))

    def __delitem__(self, k):
        try:
            self._raw.pop(_key(k))
        except KeyError:
            raise KeyError(k) from None

    def __contains__(self, k):
        return self._raw.contains(_key(k))

    def __len__(self):
        return len(self._raw)

    def __iter__(self):
        return iter(self.keys())

    def get(self, k, default=None):
        v = self._raw.get(_key(k))
        return default if v is None else _loads(v)

    def pop(self, k, *default):
        try:
            return _loads(self._raw.pop(_key(k)))
        except KeyError:
            if default:
                return default[0]
            raise KeyError(k) from None

    def setdefault(self, k, default=None):
        return _loads(self._raw.setdefault(_key(k), _dumps(default)))

    def update(self, *args, **kw):
        items = dict(*args, **kw).items()
        self._raw.update([(_key(k), _dumps(v)) for k, v in items])

    def keys(self):
        return [_unkey(k) for k in self._raw.keys()]

    def values(self):
        return [_loads(v) for _, v in self._raw.items()]

    def items(self):
        return [(_unkey(k), _loads(v)) for k, v in self._raw.items()]

    def clear(self):
        self._raw.clear()

    def copy(self):
        return dict(self.items())

    def __str__(self):
        return str(self.copy())

    __repr__ = __str__


def _open_dict(handle):
    return DictProxy(_shmwire.RawDict.open(handle))


class ListProxy:
    """A Manager's list, in shared memory: the calls of multiprocessing's ListProxy."""

    def __init__(self, raw):
        self._raw = raw

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_list, (self._raw.handle(),))

    def _index(self, i):
        n = len(self._raw)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError("list index out of range")
        return j

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._copy()[i]
        return _loads(self._raw.get(self._index(i)))

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            raise NotImplementedError("slice assignment on a shmwire list")
        self._raw.set(self._index(i), _dumps(v))

    def __delitem__(self, i):
        self._raw.remove_at(self._index(i))

    def __len__(self):
        return len(self._raw)

    def __iter__(self):
        return iter(self._copy())

    def __contains__(self, v):
        return v in self._copy()

    def _copy(self):
        return [_loads(b) for b in self._raw.to_list()]

    def append(self, v):
        self._raw.append(_dumps(v))

    def extend(self, items):
        self._raw.extend([_dumps(v) for v in items])

    def insert(self, i, v):
        n = len(self._raw)
        i = max(0, min(n, i + n if i < 0 else i))
        self._raw.insert(i, _dumps(v))

    def pop(self, i=-1):
        if i == -1:
            return _loads(self._raw.pop_last())
        return _loads(self._raw.remove_at(self._index(i)))

    def remove(self, v):
        del self[self.index(v)]

    def index(self, v):
        for i, x in enumerate(self._copy()):
            if x == v:
                return i
        raise ValueError("%r is not in list" % (v,))

    def count(self, v):
        return self._copy().count(v)

    def __str__(self):
        return str(self._copy())

    __repr__ = __str__


def _open_list(handle):
    return ListProxy(_shmwire.RawList.open(handle))


class SyncManager:
    """multiprocessing.Manager() without a server process: dict and list live in shared memory."""

    def __init__(self, *, ctx=None, _raw=None):
        self._raw = _raw or _shmwire.RawManager.create(_name("manager"))

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_manager, (self._raw.name,))

    def start(self, *a, **kw):
        pass

    def shutdown(self):
        pass

    def join(self, timeout=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def dict(self, *args, **kw):
        d = DictProxy(self._raw.dict())
        if args or kw:
            d.update(*args, **kw)
        return d

    def list(self, sequence=()):
        lst = ListProxy(self._raw.list())
        if sequence:
            lst.extend(sequence)
        return lst

    Queue = staticmethod(Queue)
    JoinableQueue = staticmethod(JoinableQueue)
    Lock = staticmethod(Lock)
    RLock = staticmethod(RLock)
    Semaphore = staticmethod(Semaphore)
    BoundedSemaphore = staticmethod(BoundedSemaphore)
    Event = staticmethod(Event)
    Condition = staticmethod(Condition)
    Barrier = staticmethod(Barrier)
    Value = staticmethod(Value)
    Array = staticmethod(Array)


def _open_manager(name):
    return SyncManager(_raw=_shmwire.RawManager.open(name))


def Manager():
    """multiprocessing.Manager(): a SyncManager (no server process; `with Manager() as m:` works)."""
    return SyncManager()
