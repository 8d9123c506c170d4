"""The sqlite store across processes: shared by several, and nothing acknowledged is lost
when a writer is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

from service.stores import SqliteStore, StreamRecord

WRITER = textwrap.dedent("""
    import sys
    from service.stores import SqliteStore
    store = SqliteStore(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        while True:
            current = store.get("m", "a")
            new = current.advanced(step=current.step + 1, state=current.state + 1,
                                   tail=current.tail)
            if store.compare_and_set(new, current.revision):
                break
        print(new.step, flush=True)
""")


def seed(path):
    store = SqliteStore(path)
    store.compare_and_set(StreamRecord(model="m", stream="a", version="1", origin=0, step=0,
                                       state=np.zeros(4, np.float32),
                                       tail=np.zeros((0, 1), np.float32)), None)
    return store


def writer(path, count):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(count)],
                            stdout=subprocess.PIPE, text=True, cwd=os.getcwd(),
                            env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_processes_share_the_file_without_losing_updates(tmp_path):
    path = tmp_path / "streams.db"
    seed(path)
    processes = [writer(path, 60) for _ in range(3)]
    for process in processes:
        assert process.wait(timeout=120) == 0
    final = SqliteStore(path).get("m", "a")
    assert final.step == 180 and final.revision == 180
    np.testing.assert_array_equal(final.state, np.full(4, 180, np.float32))


def test_acknowledged_writes_survive_sigkill_and_reopen(tmp_path):
    path = tmp_path / "streams.db"
    seed(path).close()
    process = writer(path, 100_000)
    acknowledged = 0
    for line in process.stdout:
        acknowledged = int(line)
        if acknowledged >= 200:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    reopened = SqliteStore(path).get("m", "a")
    assert reopened.step >= acknowledged
    assert reopened.revision == reopened.step
    np.testing.assert_array_equal(reopened.state, np.full(4, reopened.step, np.float32))
