"""Seed 002: a hundred processes decrement a Manager dict's count under a Lock.
Only the imports differ from the seed: shmwire's Manager and Lock, multiprocessing's Process."""
from multiprocessing import Process
from shmwire import Manager, Lock


def work(d, lock):
    with lock:  # without the lock the shared data would be corrupted
        d['count'] -= 1


if __name__ == '__main__':
    lock = Lock()
    with Manager() as m:
        dic = m.dict({'count': 100})
        p_l = []
        for i in range(100):
            p = Process(target=work, args=(dic, lock))
            p_l.append(p)
            p.start()
        for p in p_l:
            p.join()
        print(dic)
