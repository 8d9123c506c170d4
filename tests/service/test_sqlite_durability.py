"""The sqlite store across processes: shared by several, and nothing acknowledged is lost
when a writer is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np

from statecast.service.stores import SqliteStore, StreamRecord

WRITER = textwrap.dedent("""
    import sys
    from statecast.service.stores import SqliteStore
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


def test_a_file_in_the_earlier_without_rowid_layout_is_migrated_with_its_streams(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("""CREATE TABLE streams (model TEXT NOT NULL, stream TEXT NOT NULL,
        version TEXT NOT NULL, origin INTEGER NOT NULL, step INTEGER NOT NULL,
        revision INTEGER NOT NULL, state BLOB NOT NULL, tail BLOB NOT NULL,
        tail_rows INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        expired INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, stream)) WITHOUT ROWID""")
    old.commit()
    old.close()
    first = SqliteStore(path)
    record = StreamRecord(model="m", stream="a", version="1", origin=0, step=3,
                          state=np.arange(4, dtype=np.float32),
                          tail=np.ones((2, 1), np.float32))
    assert first.compare_and_set(record, None)
    first.close()
    # Put the row into an old-layout file, then open it with the store.
    conn = sqlite3.connect(path)
    rows = [row[:12] for row in conn.execute("SELECT * FROM streams").fetchall()]
    conn.execute("DROP TABLE streams")
    conn.execute("DROP INDEX IF EXISTS streams_key")
    conn.execute("""CREATE TABLE streams (model TEXT NOT NULL, stream TEXT NOT NULL,
        version TEXT NOT NULL, origin INTEGER NOT NULL, step INTEGER NOT NULL,
        revision INTEGER NOT NULL, state BLOB NOT NULL, tail BLOB NOT NULL,
        tail_rows INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        expired INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, stream)) WITHOUT ROWID""")
    conn.executemany("INSERT INTO streams VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    found = store.get("m", "a")
    assert found is not None and found.step == 3 and found.revision == record.revision
    np.testing.assert_array_equal(found.state, record.state)
    np.testing.assert_array_equal(found.tail, record.tail)
    layout = sqlite3.connect(path).execute(
        "SELECT sql FROM sqlite_master WHERE name = 'streams'").fetchone()[0]
    assert "WITHOUT ROWID" not in layout.upper()
    assert found.pending == b""  # the file predates scoring: its streams have none pending
    # The unique key still guards a create against an existing stream.
    assert not store.compare_and_set(record, None)
    assert SqliteStore(path).get("m", "a") is not None  # opening again changes nothing
