"""Objects handed to a child that is being spawned are kept for it until it has its own copy.

A shmwire object crosses to another process by name and lives while some process holds it. A child
made by the spawn (or forkserver) start method opens its arguments only once it runs, so a parent
that lets go of an object right after ``p.start()`` (as a multiprocessing program may) would remove
the name before the child looks for it. Pickling an object while a child is being spawned therefore
*reserves* it:

* the parent keeps a reference to the object and makes a pipe; the write end is passed to the child
  with its arguments (``popen.duplicate_for_child``, the way multiprocessing passes descriptors);
* the child, once it has opened the object, writes a byte and closes its end;
* the parent closes its own write end once the child exists (``popen.pid`` is set), so the read end
  becomes readable when the child has opened the object *or* has ended without doing so (the kernel
  closes a dead process's descriptors): either way the reference is dropped.

One daemon thread waits on the read ends. It makes no shmwire call while it waits (only ``select``
on descriptors), and drops references with the GIL held, so a fork never finds it inside the
library; a child of fork inherits no reservation (they are the parent's to keep).
"""

import os
import threading
import weakref
from multiprocessing import context as _mp_context
from multiprocessing.connection import wait as _wait

# Reservations not yet ended, and the pipe that wakes the thread when one is added. Guarded by
# _lock; everything is reset in a child of fork (the thread does not exist there).
_lock = threading.Lock()
_pending = []
_wake = None  # (read, write) of the thread's wake-up pipe, or None before the first reservation
_thread = None


class Reservation:
    """One object kept for one child; `done` is set when the child has it or has ended."""

    __slots__ = ("keep", "r", "w", "popen", "done")

    def __init__(self, keep, r, w, popen):
        self.keep, self.r, self.w = keep, r, w
        self.popen = weakref.ref(popen)
        self.done = threading.Event()

    def spawned(self):
        """Whether the child exists (then our write end can go), or never will (its popen is gone
        without a pid: the start failed)."""
        p = self.popen()
        return p is None or getattr(p, "pid", None) is not None

    def end(self):
        self.keep = None
        for fd in (self.r, self.w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.r = self.w = None
        self.done.set()


def reduce(keep, opener, args, on_reserve=None):
    """The `__reduce__` value of a shmwire object: `opener(*args)` in the receiver. While a child
    is being spawned, `keep` is also reserved for that child (see the module's text); `on_reserve`
    is then called with the reservation (a Connection waits for it in `close()`)."""
    popen = _mp_context.get_spawning_popen()
    if popen is None or not hasattr(popen, "duplicate_for_child"):
        return (opener, args)
    r, w = os.pipe()
    res = Reservation(keep, r, w, popen)
    _add(res)
    if on_reserve is not None:
        on_reserve(res)
    return (_open_reserved, (opener, args, popen.DupFd(popen.duplicate_for_child(w))))


def _open_reserved(opener, args, dupfd):
    """In the child: opens the object, then tells the parent it may let go (also on failure: the
    parent's copy is of no use to this child then)."""
    fd = dupfd.detach()
    try:
        return opener(*args)
    finally:
        try:
            os.write(fd, b"\1")
        except OSError:
            pass
        os.close(fd)


def _add(res):
    global _wake, _thread
    with _lock:
        _pending.append(res)
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


def _run():
    global _thread
    """The thread: waits for reservations to end; checks every 50 ms while a child is still being
    started (its pid decides when our write end may close)."""
    wake_r = _wake[0]
    while True:
        with _lock:
            pending = list(_pending)
        starting = False
        for res in pending:
            if res.w is not None:
                if res.spawned():
                    os.close(res.w)
                    res.w = None
                else:
                    starting = True
        fds = [res.r for res in pending if res.r is not None]
        ready = _wait([wake_r] + fds, 0.05 if starting else None)
        if wake_r in ready:
            os.read(wake_r, 4096)
        ended = [res for res in pending if res.r in ready]
        with _lock:
            for res in ended:
                _pending.remove(res)
            for res in ended:
                res.end()
            if not _pending:
                # Nothing left to wait for: the thread ends (a later reservation starts another),
                # so a program that forks later has no thread of ours.
                _thread = None
                return


def _after_fork_in_child():
    # The parent's reservations are the parent's: this child lets go of its inherited copies of the
    # descriptors (the references are dropped with the list) and starts afresh.
    global _lock, _pending, _wake, _thread
    for res in _pending:
        for fd in (res.r, res.w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        res.r = res.w = None
    if _wake is not None:
        for fd in _wake:
            os.close(fd)
    _lock = threading.Lock()
    _pending = []
    _wake = None
    _thread = None


os.register_at_fork(after_in_child=_after_fork_in_child)
