"""Seed 001: a writer and a reader process on a Queue; then a Pipe to a child that is terminated.
Only the imports differ from the seed (SEED_SLEEP_SCALE=0 skips its random sleeps, for the tests)."""
import os
import random
import time
from multiprocessing import Process
from shmwire import Pipe, Queue

SCALE = float(os.environ.get("SEED_SLEEP_SCALE", "1"))


def write(q):
    print('Process to write: %s' % os.getpid(), flush=True)
    for value in ['A', 'B', 'C']:
        print('Put %s to queue...' % value, flush=True)
        q.put(value)
        time.sleep(random.random() * SCALE)


def read(q):
    print('Process to read: %s' % os.getpid(), flush=True)
    while True:
        value = q.get()
        print('Get %s from queue.' % value, flush=True)


def f(conn):
    conn.send([42, None, 'hello'])
    while True:
        print(conn.recv(), flush=True)


if __name__ == '__main__':
    q = Queue()
    pw = Process(target=write, args=(q,))
    pr = Process(target=read, args=(q,))
    pw.start()
    pr.start()
    pw.join()
    # The reader loops for ever: wait until it has taken everything, then stop it.
    while not q.empty():
        time.sleep(0.01)
    time.sleep(0.2)
    pr.terminate()
    pr.join()

    parent_conn, child_conn = Pipe()
    p = Process(target=f, args=(child_conn,))
    p.start()
    print(parent_conn.recv(), flush=True)  # prints "[42, None, 'hello']"
    parent_conn.send('666')
    time.sleep(0.2)
    p.terminate()
    p.join()
