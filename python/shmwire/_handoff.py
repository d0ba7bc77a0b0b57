"""Objects handed to a child that is being spawned are kept for it until it has its own copy.

A shmwire object crosses to another process by name and lives while some process holds it. A child
made by the spawn (or forkserver) start method opens its arguments only once it runs, so a parent
that lets go of an object right after ``p.start()`` (as a multiprocessing program may) would remove
the name before the child looks for it. Pickling an object while a child is being spawned therefore
*reserves* it:

* the parent keeps a reference to the object. For each child it makes one pipe, whose write end
  goes to the child with its arguments (``popen.duplicate_for_child``, the way multiprocessing
  passes descriptors);
* each reservation has a number (its place among this child's); the child writes that number
  (4 bytes) when it has opened the object, and the parent lets go of it. (Not by order: an object
  pickled inside another's arguments, a Value's lock, is opened before the one that holds it.) The
  child closes its end once its arguments are unpickled (multiprocessing's after-fork hooks run
  then), or when it dies: the kernel closes a dead process's descriptors;
* the parent closes its own write end once the child exists (``popen.pid`` is set), so the end of
  the pipe (EOF) means the child will open nothing more: the rest is let go.

One daemon thread waits on the read ends. It makes no shmwire call while it waits (only ``select``
on descriptors) and drops references with the GIL held. A child of fork drops no reservation it
inherited (a drop there would run inside the library's at-fork hook; the child holds what its parent
held, as with any object) and closes the descriptors of them it inherited.
"""

import os
import threading
import weakref
from multiprocessing import context as _mp_context
from multiprocessing import util as _mp_util
from multiprocessing.connection import wait as _wait

# Children being spawned with reservations, and the pipe that wakes the thread when one is added.
# Guarded by _lock; reset in a child of fork (the thread does not exist there).
_lock = threading.Lock()
_children = []
_wake = None  # (read, write) of the thread's wake-up pipe, or None before the first reservation
_thread = None
# What a child of fork inherited: kept, never dropped (see the module's text).
_inherited = []


class Reservation:
    """One object kept for one child; `done` is set when the child has it or will never open it.
    `pid` is the process that made it (a child of fork inherits it, and does not wait for it)."""

    __slots__ = ("keep", "done", "pid")

    def __init__(self, keep):
        self.keep = keep
        self.done = threading.Event()
        self.pid = os.getpid()

    def end(self):
        self.keep = None
        self.done.set()


class _Child:
    """A child being spawned: its pipe, and what is kept for it, in the order it was pickled."""

    __slots__ = ("popen", "r", "w", "dupfd", "kept", "made", "partial")

    def __init__(self, popen, r, w):
        self.popen = weakref.ref(popen)
        self.r, self.w = r, w
        self.dupfd = popen.DupFd(popen.duplicate_for_child(w))
        self.kept = {}  # number -> Reservation
        self.made = 0  # reservations numbered so far
        self.partial = b""  # the start of a number not yet all read

    def spawned(self):
        """Whether the child exists (then our write end can go), or never will (its popen is gone
        without a pid: the start failed)."""
        p = self.popen()
        return p is None or getattr(p, "pid", None) is not None


def reduce(keep, opener, args, on_reserve=None):
    """The `__reduce__` value of a shmwire object: `opener(*args)` in the receiver. While a child
    is being spawned, `keep` is also reserved for that child (see the module's text); `on_reserve`
    is then called with the reservation (a Connection waits for it in `close()`)."""
    popen = _mp_context.get_spawning_popen()
    if popen is None or not hasattr(popen, "duplicate_for_child"):
        return (opener, args)
    res = Reservation(keep)
    child, number = _add(popen, res)
    if on_reserve is not None:
        on_reserve(res)
    return (_open_reserved, (opener, args, child.dupfd, number))


# In a spawned child: the descriptor to tell the parent on, closed once the arguments are unpickled.
_told = None


def _open_reserved(opener, args, dupfd, number):
    """In the child: opens the object, then tells the parent it may let go of reservation `number`
    (also on failure: the parent's copy is of no use to this child then)."""
    global _told
    fd = dupfd.detach()
    if _told is None:
        _told = fd
        _mp_util.register_after_fork(_Anchor, _close_told)
    try:
        return opener(*args)
    finally:
        try:
            os.write(fd, number.to_bytes(4, "little"))  # atomic: under PIPE_BUF
        except OSError:
            pass


class _Anchor:
    """A long-lived object for multiprocessing's after-fork registry (it holds weak references)."""


def _close_told(_anchor):
    # Runs in the child once its Process object is unpickled (Process._bootstrap): nothing more
    # will be opened, and a grandchild must not inherit the descriptor.
    global _told
    fd, _told = _told, None
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _add(popen, res):
    """Files `res` under `popen`'s child (made on its first reservation); starts or wakes the
    thread. Returns the child and the reservation's number."""
    global _wake, _thread
    with _lock:
        child = next((c for c in _children if c.popen() is popen), None)
        if child is None:
            r, w = os.pipe()
            child = _Child(popen, r, w)
            _children.append(child)
        number = child.made
        child.made += 1
        child.kept[number] = res
        if _wake is None:
            _wake = os.pipe()
            os.set_blocking(_wake[1], False)  # a full pipe already wakes the thread
        if _thread is None:
            _thread = threading.Thread(target=_run, name="shmwire-handoff", daemon=True)
            _thread.start()
        else:
            try:
                os.write(_wake[1], b"\0")
            except BlockingIOError:
                pass
    return child, number


def _take(obj, attr):
    """Takes a descriptor out of `obj` before closing it: a fork while it closes then never finds
    a number that may already name something else."""
    fd = getattr(obj, attr)
    setattr(obj, attr, None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _run():
    """The thread: lets go of what each child has opened; checks every 50 ms while a child is
    still being started (its pid decides when our write end may close)."""
    global _thread
    wake_r = _wake[0]
    while True:
        with _lock:
            children = list(_children)
        starting = False
        for c in children:
            if c.w is not None:
                if c.spawned():
                    _take(c, "w")
                else:
                    starting = True
        ready = _wait([wake_r] + [c.r for c in children], 0.05 if starting else None)
        if wake_r in ready:
            os.read(wake_r, 4096)
        with _lock:
            for c in children:
                if c.r not in ready:
                    continue
                try:
                    got = os.read(c.r, 4096)
                except OSError:
                    got = b""
                if got:
                    # Numbers of what the child opened (a number it never had is ignored).
                    data = c.partial + got
                    whole = len(data) - len(data) % 4
                    c.partial = data[whole:]
                    for i in range(0, whole, 4):
                        res = c.kept.pop(int.from_bytes(data[i : i + 4], "little"), None)
                        if res is not None:
                            res.end()
                else:
                    # The end: nothing more will be opened.
                    for res in c.kept.values():
                        res.end()
                    c.kept.clear()
                    _take(c, "r")
                    _take(c, "w")
                    _children.remove(c)
            if not _children:
                # Nothing left to wait for: the thread ends (a later reservation starts another),
                # so a program that forks later has no thread of ours.
                _thread = None
                return


def _after_fork_in_child():
    """Called by the package's at-fork hook, after the library's own: the parent's reservations
    are the parent's. This child closes its copies of their descriptors and keeps the references
    (dropping one here could run library code inside the fork hook)."""
    global _lock, _children, _wake, _thread
    for c in _children:
        _inherited.append(list(c.kept.values()))
        for attr in ("r", "w"):
            fd = getattr(c, attr)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
    if _wake is not None:
        for fd in _wake:
            os.close(fd)
    _lock = threading.Lock()
    _children = []
    _wake = None
    _thread = None
