"""Seed 004: the baozi producer and consumer, through a Pipe, then through a Queue (fork).
Only the imports differ from the seed (SEED_SLEEP_SCALE=0 skips its sleeps, for the tests)."""
import os
import random
import time
from multiprocessing import Process, set_start_method
from shmwire import Pipe, Queue

SCALE = float(os.environ.get("SEED_SLEEP_SCALE", "1"))


def consumer(p, name):
    left, right = p
    left.close()
    while True:
        try:
            baozi = right.recv()
            print('%s 收到包子:%s' % (name, baozi), flush=True)
        except EOFError:
            right.close()
            break


def producer(seq, p):
    left, right = p
    right.close()
    for i in seq:
        left.send(i)
        time.sleep(1 * SCALE)
    else:
        left.close()


def q_consumer(q):
    while True:
        res = q.get()
        if res is None:
            break  # the end signal
        time.sleep(random.randint(1, 3) * SCALE)
        print('\033[45m%s%s\033[0m' % (os.getpid(), res), flush=True)


def q_producer(q):
    for i in range(10):
        time.sleep(random.randint(1, 3) * SCALE)
        res = '包子%s' % i
        q.put(res)
        print('\033[46m%s 生产了 %s\033[0m' % (os.getpid(), res), flush=True)
    q.put(None)  # the end signal


if __name__ == '__main__':
    set_start_method('fork')
    left, right = Pipe()
    c1 = Process(target=consumer, args=((left, right), 'c1'))
    c1.start()
    seq = (i for i in range(10))
    producer(seq, (left, right))
    right.close()
    left.close()
    c1.join()
    print('进程间通信-管道-主进程', flush=True)

    q = Queue()
    p1 = Process(target=q_producer, args=(q,))
    c1 = Process(target=q_consumer, args=(q,))
    p1.start()
    c1.start()
    print('进程间通信-队列-主进程', flush=True)
    p1.join()
    c1.join()
