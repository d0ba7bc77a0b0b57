"""Seed 000: Pipe with EOFError, a duplex exchange, and a Manager list changed by a child.
Only the imports differ from the seed: shmwire's Pipe and Manager, multiprocessing's Process."""
from multiprocessing import Process
from shmwire import Pipe, Manager


def func(con):
    con1, con2 = con
    con1.close()  # the child talks through con2
    while 1:
        try:
            print(con2.recv())
        except EOFError:  # the parent closed con1 and everything was read
            con2.close()
            break


def f(conn):
    conn.send([42, None, 'hello fromchild'])
    conn.send([42, None, 'hello fromchild2'])
    print("from parent:", conn.recv())
    conn.close()


def func_list(num):
    num[0] -= 1
    print('子进程中的num的值是', num)


if __name__ == '__main__':
    con1, con2 = Pipe()
    p = Process(target=func, args=((con1, con2),))
    p.start()
    con2.close()
    for i in range(10):
        con1.send(i)
    con1.close()
    p.join()

    parent_conn, child_conn = Pipe()
    p = Process(target=f, args=(child_conn,))
    p.start()
    print(parent_conn.recv())
    print(parent_conn.recv())
    parent_conn.send("范冰冰")
    p.join()

    m = Manager()
    num = m.list([1, 2, 3])
    p = Process(target=func_list, args=(num,))
    p.start()
    p.join()
    print('父进程中的num的值是', num)
