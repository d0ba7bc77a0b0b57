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
        """Sends `buf[offset:offset + size]` as one message. Over a socket (a Listener/Client
        connection), a KeyboardInterrupt may come once part of a message has gone out: that
        message is still sent whole, its rest first with this end's next call (do not send it
        again); closing the end before then leaves the peer a cut message, an error there."""
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
    raw = _shmwire.RawQueue.open(name, getattr(cls, "_joinable", False))
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


class _NotOwned(AssertionError, RuntimeError):
    """A Condition used without holding its lock: AssertionError as multiprocessing's Condition
    raises (also a RuntimeError, as threading's)."""


class Condition:
    """multiprocessing.Condition over `lock`, a shmwire Lock or RLock (None: a new RLock).

    The wait queue is a shmwire condition variable with a small lock of its own (a futex sequence
    word, see ``shmwire::Condition``): a waiter takes that inner lock while it still holds
    `lock`, then releases `lock` (every level of an RLock) and sleeps, the inner lock released
    by the sleep itself; a notifier (who holds `lock`, so comes after) takes the inner lock to
    notify. So no notify falls between a waiter's release of `lock` and its sleep, and a notify
    never waits for the sleepers it wakes: one killed while waiting cannot hold anybody up (a
    holder of either lock that dies is taken over by the next acquire). After waking, the waiter
    takes `lock` back, at its former level (not the inner lock: a timed wait ends by its deadline
    plus what taking `lock` back costs). A wait whose timeout passed answers False; a notify(n)
    wakes n waiters, save for the limits stated at ``shmwire::Condition::sleep_interruptible``
    (rarely, a spurious True: use wait_for, as with threading)."""

    def __init__(self, lock=None, *, ctx=None, _raw=None):
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, (Lock, RLock)):
            raise TypeError("shmwire.Condition needs a shmwire Lock or RLock, not %r" % (lock,))
        self._lock = lock
        self._cond = _raw or _shmwire.RawCondition.create(_name("cond"))

    def __reduce__(self):
        return _handoff.reduce(self._cond, _open_condition, (self._lock, self._cond.name))

    def acquire(self, block=True, timeout=None):
        return self._lock.acquire(block, timeout)

    def release(self):
        self._lock.release()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)

    def _levels(self):
        """How many times this thread (process, for a Lock) holds the lock: 0 if it does not."""
        raw = self._lock._raw
        if isinstance(self._lock, RLock):
            return raw.levels()
        return 1 if raw.held() else 0

    def wait(self, timeout=None):
        levels = self._levels()
        if not levels:
            raise _NotOwned("must acquire() condition before using wait()")
        if timeout is not None:
            timeout = max(0.0, timeout)
        # One native call (see RawCondition.wait_releasing): no bytecode between taking the inner
        # lock, letting go of `lock`, sleeping and taking `lock` back, so an exception raised by a
        # signal handler cannot leave the inner lock taken or `lock` at another level.
        return self._cond.wait_releasing(self._lock._raw, levels, timeout)

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
        if not self._levels():
            raise _NotOwned("lock is not owned")
        self._cond.notify_holding(n)  # one native call: no bytecode to raise in

    def notify_all(self):
        if not self._levels():
            raise _NotOwned("lock is not owned")
        self._cond.notify_holding(0xFFFFFFFF)  # every waiter, in one native call

    def __repr__(self):
        return "<shmwire.Condition(%r)>" % (self._lock,)


def _open_condition(lock, name):
    return Condition(lock, _raw=_shmwire.RawCondition.open(name))


_LOCK_OPENERS = {
    Lock: _shmwire.RawLock.open,
    RLock: _shmwire.RawRLock.open,
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
    """multiprocessing.Barrier (threading.BrokenBarrierError when broken).

    With an `action`, a round has two phases, each a shmwire barrier of `parties`: all arrive at
    the first; the last to arrive runs the action while the others wait at the second, which
    releases everyone once it is done. An action that raises (or a second phase that times out)
    breaks both; the party that ran it gets its exception. Every party enrols in the second
    barrier before the first phase (and the one running the action again before it), so a party
    killed while running the action breaks the round for the others, as a dead party does.

    reset(), as threading.Barrier's: the parties waiting get BrokenBarrierError and the barrier is
    usable at once. A party joins the second phase only in the round of it that was current
    before its first phase (``RawBarrier.wait_in``): a reset that cancels a second phase with
    parties in it moves that round on, so those still running the action or on their way get
    BrokenBarrierError too, rather than waiting in a round the others left. (A reset that lands
    while nobody is in the second phase yet does not stop the round: it completes. Limit: if
    the party running the action is then killed, its enrolment was forgotten by that reset:
    the others wait for it until their timeout.) `timeout` is each wait's default, in
    the children too; the action goes to them pickled (as with multiprocessing, it must pickle)."""

    def __init__(self, parties, action=None, timeout=None, *, ctx=None, _raw=None, _after=None):
        self._raw = _raw or _shmwire.RawBarrier.create(_name("barrier"), parties)
        self._action = action
        self._timeout = timeout
        self._after = _after
        if action is not None and _after is None:
            self._after = _shmwire.RawBarrier.create(_name("barrier"), parties)

    def __reduce__(self):
        if self._action is None and self._timeout is None:
            return _handoff.reduce(self._raw, _open_simple, ("barrier", self._raw.name))
        after = None if self._after is None else self._after.name
        return _handoff.reduce(
            (self._raw, self._after),
            _open_barrier,
            (self._raw.name, self._action, self._timeout, after))

    def wait(self, timeout=None):
        import time
        if timeout is None:
            timeout = self._timeout
        end = None if timeout is None else time.monotonic() + timeout
        if self._after is not None:
            # Known to the second phase before the first: a party that dies running the action
            # (before it ever waits there) breaks it for the others. And the round of the second
            # phase this party will join, read before the first phase ends: see the class docs.
            self._after.enrol()
            second = self._after.generation
        i = self._raw.wait(timeout)
        if i is None:
            raise _threading.BrokenBarrierError
        if self._after is None:
            return i
        if i == self._raw.parties - 1:
            self._after.enrol()  # again: a reset since the first forgot it
            try:
                self._action()
            except BaseException:
                self._after.abort()
                self._raw.abort()
                raise
        left = None if end is None else max(0.0, end - time.monotonic())
        if self._after.wait_in(second, left) is None:
            if self._after.broken:
                self._raw.abort()  # aborted, or timed out: broken for later arrivals too
            raise _threading.BrokenBarrierError
        return i

    def abort(self):
        self._raw.abort()
        if self._after is not None:
            self._after.abort()

    def reset(self):
        self._raw.reset()
        if self._after is not None:
            self._after.reset()

    @property
    def parties(self):
        return self._raw.parties

    @property
    def n_waiting(self):
        return self._raw.n_waiting + (0 if self._after is None else self._after.n_waiting)

    @property
    def broken(self):
        return self._raw.broken or (self._after is not None and self._after.broken)


def _open_barrier(name, action, timeout, after):
    after = None if after is None else _shmwire.RawBarrier.open(after)
    return Barrier(0, action, timeout, _raw=_shmwire.RawBarrier.open(name), _after=after)


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


class _RawValue:
    """Value(..., lock=False): `.value` only (each get and set whole), as CPython's raw ctypes
    object gives (no get_lock/acquire)."""

    def __init__(self, raw):
        self._raw = raw

    @property
    def value(self):
        return _convert(self._raw.typecode, self._raw.get())

    @value.setter
    def value(self, v):
        self._raw.set(v)

    def __reduce__(self):
        return _handoff.reduce(
            self._raw, _open_value, (self._raw.name, self._raw.typecode, False))

    def __repr__(self):
        return "<shmwire.Value(%r, %r)>" % (self._raw.typecode, self.value)


class _Value(_Synchronized, _RawValue):
    def __init__(self, raw, lock):
        self._raw, self._lock = raw, lock

    def get_obj(self):
        return _RawValue(self._raw)

    def __reduce__(self):
        return _handoff.reduce(
            self._raw, _open_value, (self._raw.name, self._raw.typecode, self._lock))


def _open_value(name, typecode, lock):
    raw = _shmwire.RawValue.open(name, typecode)
    return _RawValue(raw) if lock is False else _Value(raw, lock)


def Value(typecode_or_type, *args, lock=True, ctx=None):
    """multiprocessing.Value: `.value` (each get and set whole), `get_lock()` (an RLock by
    default, the given lock, or none with lock=False), `get_obj()`."""
    code = _typecode(typecode_or_type)
    init = args[0] if args else (b"\0" if code == "c" else 0)
    raw = _shmwire.RawValue.create(_name("value"), code, init)
    if lock is False:
        return _RawValue(raw)
    return _Value(raw, _lock_for(lock))


def _lock_for(lock):
    if lock is True or lock is None:
        return RLock()
    if not hasattr(lock, "acquire"):
        raise AttributeError("%r has no method 'acquire'" % lock)
    return lock


class _RawArray:
    """Array(..., lock=False): indexing, slices, len, iteration (a char array also `.value` and
    `.raw`, bytes), as CPython's raw ctypes array."""

    def __init__(self, raw):
        self._raw = raw

    def __len__(self):
        return len(self._raw)

    def __getitem__(self, i):
        code = self._raw.typecode
        if isinstance(i, slice):
            items = self._raw.to_list()[i]
            if code == "c":
                return bytes(items)
            return [_convert(code, x) for x in items]
        return _convert(code, self._raw.get(i))

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            idx = range(len(self))[i]
            v = list(v)  # bytes give ints, as a char array's slice takes them
            if len(v) != len(idx):
                raise ValueError("Can only assign sequence of same size")
            for j, x in zip(idx, v):
                self._raw.set(j, x)
        else:
            self._raw.set(i, v)

    def __iter__(self):
        return iter(self[:])

    def _chars(self):
        if self._raw.typecode != "c":
            raise AttributeError("'value' and 'raw' are for arrays of typecode 'c'")

    # The char array's views, on the raw elements (a synchronized array wraps them in its lock).
    def _get_raw(self):
        self._chars()
        return bytes(self._raw.to_list())

    def _set_raw(self, b):
        self._chars()
        b = bytes(b)
        if len(b) > len(self):
            raise ValueError("byte string too long")
        _RawArray.__setitem__(self, slice(0, len(b)), b)

    def _get_value(self):
        return _RawArray._get_raw(self).split(b"\0", 1)[0]

    def _set_value(self, b):
        self._chars()
        b = bytes(b)
        if len(b) > len(self):
            raise ValueError("byte string too long")
        if len(b) < len(self):
            b += b"\0"  # NUL-terminated, as ctypes' c_char arrays
        _RawArray.__setitem__(self, slice(0, len(b)), b)

    raw = property(lambda self: self._get_raw(), lambda self, b: self._set_raw(b))
    value = property(lambda self: self._get_value(), lambda self, b: self._set_value(b))

    def __reduce__(self):
        return _handoff.reduce(
            self._raw, _open_array, (self._raw.name, self._raw.typecode, False))

    def __repr__(self):
        return "<shmwire.Array(%r, %r)>" % (self._raw.typecode, self[:])


class _Array(_Synchronized, _RawArray):
    def __init__(self, raw, lock):
        self._raw, self._lock = raw, lock

    def get_obj(self):
        return _RawArray(self._raw)

    # `.value` and `.raw` whole under the lock, as CPython's SynchronizedString.
    def _get_raw(self):
        with self._lock:
            return _RawArray._get_raw(self)

    def _set_raw(self, b):
        with self._lock:
            _RawArray._set_raw(self, b)

    def _get_value(self):
        with self._lock:
            return _RawArray._get_value(self)

    def _set_value(self, b):
        with self._lock:
            _RawArray._set_value(self, b)

    def __getitem__(self, i):
        if isinstance(i, slice):
            with self._lock:
                return _RawArray.__getitem__(self, i)
        return _RawArray.__getitem__(self, i)

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            with self._lock:
                return _RawArray.__setitem__(self, i, v)
        return _RawArray.__setitem__(self, i, v)

    def __reduce__(self):
        return _handoff.reduce(
            self._raw, _open_array, (self._raw.name, self._raw.typecode, self._lock))


def _open_array(name, typecode, lock):
    raw = _shmwire.RawArray.open(name, typecode)
    return _RawArray(raw) if lock is False else _Array(raw, lock)


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None):
    """multiprocessing.Array: indexing, slicing, len, `get_lock()` (none with lock=False),
    `get_obj()`; for typecode 'c', `.value` and `.raw`."""
    code = _typecode(typecode_or_type)
    if isinstance(size_or_initializer, int):
        init = [0] * size_or_initializer
    else:
        init = list(size_or_initializer)
    raw = _shmwire.RawArray.create(_name("array"), code, init)
    if lock is False:
        return _RawArray(raw)
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

    def popitem(self):
        """Removes and returns some (key, value) pair (KeyError if empty), as one step."""
        while True:
            keys = self._raw.keys()
            if not keys:
                raise KeyError("popitem(): dictionary is empty")
            try:
                return (_unkey(keys[-1]), _loads(self._raw.pop(keys[-1])))
            except KeyError:
                continue  # another process took it first

    def copy(self):
        return dict(self.items())

    def __eq__(self, other):
        return self.copy() == (other.copy() if isinstance(other, DictProxy) else other)

    __hash__ = None

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
            return [_loads(b) for b in self._raw.to_list()[i]]
        return _loads(self._raw.get(self._index(i)))

    # How long a rewrite tries against writers that keep changing the list.
    _REWRITE_FOR = 30.0

    def _rewrite(self, edit):
        """Applies `edit` (a function of the list of pickles, editing it in place; what it
        returns is returned): computed from a snapshot, stored only if the list is still that
        snapshot (else again, from a new one, after a pause that grows). Against other writers it
        is one step; a reader may see it part way, and a writer killed part way leaves the list
        part way (each element whole). Lists that keep changing under it for `_REWRITE_FOR`
        seconds: TimeoutError, the list as the other writers left it."""
        import random
        import time

        deadline = time.monotonic() + self._REWRITE_FOR
        pause = 0.0005
        while True:
            old = self._raw.to_list()
            new = list(old)
            out = edit(new)
            if self._raw.replace_all_if(old, new):
                return out
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    "the Manager list changed under every attempt to rewrite it for %.0f s: "
                    "other processes write it without pause; retry when they do less"
                    % self._REWRITE_FOR)
            time.sleep(random.uniform(0, pause))  # let the others' writes through
            pause = min(pause * 2, 0.05)

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            items = [_dumps(x) for x in v]

            def edit(lst):
                lst[i] = items  # a step slice of another length: ValueError, as a list's
            self._rewrite(edit)
            return
        self._raw.set(self._index(i), _dumps(v))

    def __delitem__(self, i):
        if isinstance(i, slice):
            def edit(lst):
                del lst[i]
            self._rewrite(edit)
            return
        self._raw.remove_at(self._index(i))

    def __len__(self):
        return len(self._raw)

    def __iter__(self):
        return iter(self._copy())

    def __reversed__(self):
        return reversed(self._copy())

    def __contains__(self, v):
        return v in self._copy()

    def _copy(self):
        return [_loads(b) for b in self._raw.to_list()]

    def __eq__(self, other):
        return self._copy() == (other._copy() if isinstance(other, ListProxy) else other)

    def __ne__(self, other):
        return not self == other

    def __lt__(self, other):
        return self._copy() < list(other)

    def __le__(self, other):
        return self._copy() <= list(other)

    def __gt__(self, other):
        return self._copy() > list(other)

    def __ge__(self, other):
        return self._copy() >= list(other)

    __hash__ = None

    def __add__(self, other):
        return self._copy() + list(other)

    def __radd__(self, other):
        return list(other) + self._copy()

    def __mul__(self, n):
        return self._copy() * n

    __rmul__ = __mul__

    def __iadd__(self, other):
        self.extend(other)
        return self

    def __imul__(self, n):
        def edit(lst):
            lst *= n
        self._rewrite(edit)
        return self

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
        def edit(lst):
            for j, b in enumerate(lst):
                if _loads(b) == v:
                    del lst[j]
                    return
            raise ValueError("list.remove(x): x not in list")
        self._rewrite(edit)

    def index(self, v, *bounds):
        items = self._copy()
        try:
            return items.index(v, *bounds)
        except ValueError:
            raise ValueError("%r is not in list" % (v,)) from None

    def count(self, v):
        return self._copy().count(v)

    def sort(self, *, key=None, reverse=False):
        def edit(lst):
            pairs = [(_loads(b), b) for b in lst]
            pairs.sort(key=(lambda p: p[0]) if key is None else (lambda p: key(p[0])),
                       reverse=reverse)
            lst[:] = [b for _, b in pairs]
        self._rewrite(edit)

    def reverse(self):
        def edit(lst):
            lst.reverse()
        self._rewrite(edit)

    def clear(self):
        self._raw.clear()

    def copy(self):
        return self._copy()

    def __str__(self):
        return str(self._copy())

    __repr__ = __str__


def _open_list(handle):
    return ListProxy(_shmwire.RawList.open(handle))


class NamespaceProxy:
    """A Manager's Namespace: attributes shared by every process that holds it (kept in a
    Manager dict, values pickled). Names starting with '_' belong to this proxy alone, as with
    multiprocessing's NamespaceProxy."""

    def __init__(self, raw):
        object.__setattr__(self, "_raw", raw)

    def __reduce__(self):
        return _handoff.reduce(self._raw, _open_namespace, (self._raw.handle(),))

    def __getattr__(self, name):  # only called for names not found on the proxy itself
        if name.startswith("_"):
            raise AttributeError(name)
        v = self._raw.get(_key(name))
        if v is None:
            raise AttributeError("'Namespace' object has no attribute %r" % name)
        return _loads(v)

    def __setattr__(self, name, value):
        if name.startswith("_"):
            return object.__setattr__(self, name, value)
        self._raw.set(_key(name), _dumps(value))

    def __delattr__(self, name):
        if name.startswith("_"):
            return object.__delattr__(self, name)
        try:
            self._raw.pop(_key(name))
        except KeyError:
            raise AttributeError("'Namespace' object has no attribute %r" % name) from None

    def __repr__(self):
        items = sorted((_unkey(k), _loads(v)) for k, v in self._raw.items())
        return "Namespace(%s)" % ", ".join("%s=%r" % kv for kv in items)


def _open_namespace(handle):
    return NamespaceProxy(_shmwire.RawDict.open(handle))


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

    def Namespace(self, **kwds):
        ns = NamespaceProxy(self._raw.dict())
        for k, v in kwds.items():
            setattr(ns, k, v)
        return ns

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
