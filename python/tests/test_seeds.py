"""The five seed programs (python/examples, multiprocessing swapped for shmwire in the imports) print
what the seeds print."""
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def run(name):
    env = dict(os.environ, SEED_SLEEP_SCALE="0")
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True,
                       timeout=120, env=env, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_seed000_pipe_eof_duplex_and_manager_list():
    assert run("seed000_pipe_manager.py") == [str(i) for i in range(10)] + [
        "[42, None, 'hello fromchild']",
        "[42, None, 'hello fromchild2']",
        "from parent: 范冰冰",
        "子进程中的num的值是 [0, 2, 3]",
        "父进程中的num的值是 [0, 2, 3]",
    ]


def test_seed001_queue_reader_writer_and_pipe():
    # The writer's and reader's lines interleave as they please (as in the seed).
    text = "\n".join(run("seed001_queue_pipe.py"))
    assert re.findall(r"Put (\w) to queue\.\.\.", text) == ["A", "B", "C"]
    assert re.findall(r"Get (\w) from queue\.", text) == ["A", "B", "C"]
    assert len(re.findall(r"Process to write: \d+", text)) == 1
    assert len(re.findall(r"Process to read: \d+", text)) == 1
    assert text.endswith("[42, None, 'hello']\n666")


def test_seed002_hundred_processes_count_under_a_lock():
    assert run("seed002_manager_lock.py") == ["{'count': 0}"]


def test_seed003_two_children_on_one_pipe():
    assert run("seed003_pipe_two_children.py") == [
        "Received: Hello, World!",
        "Process A received: Hello from Process B!",
        "Process B received: Thanks, Process B!",
    ]


def test_seed004_baozi_pipe_and_queue():
    out = run("seed004_baozi.py")
    assert out[:11] == ["c1 收到包子:%d" % i for i in range(10)] + ["进程间通信-管道-主进程"]
    # The producer's and consumer's lines interleave as they please (as in the seed).
    rest = "\n".join(out[11:])
    assert "进程间通信-队列-主进程" in rest
    assert re.findall(r"\d+ 生产了 包子(\d)", rest) == [str(i) for i in range(10)]
    assert re.findall(r"\033\[45m\d+包子(\d)", rest) == [str(i) for i in range(10)]


@pytest.mark.parametrize("name", ["seed000_pipe_manager.py", "seed002_manager_lock.py",
                                  "seed003_pipe_two_children.py"])
def test_seeds_under_spawn(name, tmp_path):
    # The same programs with the spawn start method set first: same output.
    src = open(os.path.join(EXAMPLES, name), encoding="utf-8").read()
    src = src.replace("if __name__ == '__main__':", 'if __name__ == "__main__":').replace(
        'if __name__ == "__main__":',
        'if __name__ == "__main__":\n    import multiprocessing\n'
        '    multiprocessing.set_start_method("spawn")', 1)
    path = tmp_path / name
    path.write_text(src, encoding="utf-8")
    forked = run(name)
    r = subprocess.run([sys.executable, str(path)], capture_output=True, timeout=300, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == forked
