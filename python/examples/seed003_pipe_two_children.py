"""Seed 003: two children talk through the two ends of one Pipe (one way, then both ways).
Only the imports differ from the seed."""
from multiprocessing import Process
from shmwire import Pipe


def sender(conn):
    conn.send("Hello, World!")
    conn.close()


def receiver(conn):
    message = conn.recv()
    print(f"Received: {message}", flush=True)
    conn.close()


def process_a(conn):
    message = conn.recv()
    print(f"Process A received: {message}", flush=True)
    conn.send("Thanks, Process B!")
    conn.close()


def process_b(conn):
    conn.send("Hello from Process B!")
    response = conn.recv()
    print(f"Process B received: {response}", flush=True)
    conn.close()


if __name__ == "__main__":
    parent_conn, child_conn = Pipe()
    p1 = Process(target=sender, args=(child_conn,))
    p2 = Process(target=receiver, args=(parent_conn,))
    p1.start()
    p2.start()
    p1.join()
    p2.join()

    parent_conn, child_conn = Pipe()
    p1 = Process(target=process_a, args=(parent_conn,))
    p2 = Process(target=process_b, args=(child_conn,))
    p1.start()
    p2.start()
    p1.join()
    p2.join()
