"""The ``sqlite`` store: the embedded durable default, one file shared by worker processes.

WAL journal with ``synchronous=NORMAL``: an acknowledged write survives a process crash
(``kill -9``) or restart; several processes (gunicorn workers) read and write the same file.
Each thread of each process opens its own connection. Compare-and-set is a single
conditional ``UPDATE`` (or ``INSERT ... ON CONFLICT DO NOTHING``), atomic in SQLite.

Writers queue on an advisory lock (``flock`` on ``PATH.write-lock``) before they write:
SQLite itself answers a writer that finds the database locked by sleeping 1, 2, 5, 10 ...
ms and retrying, which under many concurrent writers (gunicorn workers x threads) turned
sub-millisecond calls into multi-millisecond ones; ``flock`` wakes the next writer as soon
as the lock is free. Readers never wait (WAL).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from statecast.service.accuracy import (
    RESIDUAL_WRITES,
    Totals,
    add_totals,
)
from statecast.service.errors import StoreError
from statecast.service.scoring import WriteScores
from statecast.service.stores.base import StateStore, StreamRecord, decode_array, encode_array
from statecast.service.stores.sqlite_scores import (
    ACCURACY,
    SCORES,
    add_scores,
    log_row,
    read_totals,
)

_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    model TEXT NOT NULL,
    stream TEXT NOT NULL,
    version TEXT NOT NULL,
    origin INTEGER NOT NULL,
    step INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    state BLOB NOT NULL,
    tail BLOB NOT NULL,
    tail_rows INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expired INTEGER NOT NULL DEFAULT 0,
    pending BLOB NOT NULL DEFAULT x''
)
"""
_KEY = "CREATE UNIQUE INDEX IF NOT EXISTS streams_key ON streams (model, stream)"
_COLUMNS = ("model, stream, version, origin, step, revision, state, tail, tail_rows, "
            "created_at, updated_at, expired, pending")
_INSERT = f"INSERT INTO streams ({_COLUMNS}) VALUES ({', '.join('?' * 13)})"
#: Parameters: the columns after ``model, stream`` (:func:`_values`), then model and stream.
_UPDATE = ("UPDATE streams SET version = ?, origin = ?, step = ?, revision = ?, state = ?, "
           "tail = ?, tail_rows = ?, created_at = ?, updated_at = ?, expired = ?, "
           "pending = ? WHERE model = ? AND stream = ?")
_BATCH = 500
#: The most of the file a connection maps (address space, not memory).
_MMAP_BYTES = 1 << 34


def _row_to_record(row: tuple[Any, ...]) -> StreamRecord:
    (model, stream, version, origin, step, revision, state, tail, tail_rows, created_at,
     updated_at, expired, pending) = row
    return StreamRecord(model, stream, version, origin, step, decode_array(state),
                        decode_array(tail, tail_rows), revision, created_at, updated_at,
                        bool(expired), pending)


def _values(record: StreamRecord) -> tuple[Any, ...]:
    """The record's columns after ``model, stream``, as stored."""
    tail_rows = int(record.tail.shape[0]) if record.tail.ndim == 2 else 0
    return (record.version, record.origin, record.step, record.revision,
            encode_array(record.state), encode_array(record.tail), tail_rows,
            record.created_at, record.updated_at, int(record.expired), record.pending)


def _select_streams(execute: Callable[..., Any], columns: str, model: str,
                    streams: Sequence[str]) -> Iterator[Any]:
    """``columns`` of the rows of ``streams`` of one model, :data:`_BATCH` streams a query."""
    for start in range(0, len(streams), _BATCH):
        chunk = list(streams[start:start + _BATCH])
        yield from execute(f"SELECT {columns} FROM streams WHERE model = ? AND stream IN "
                           f"({', '.join('?' * len(chunk))})", (model, *chunk))


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction, rolled back when its body raises."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class SqliteStore(StateStore):
    """Streams in one SQLite file (``sqlite:PATH``)."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".write-lock")
        with self._writing():
            self._create_or_migrate(self._connection())

    @staticmethod
    def _create_or_migrate(connection: sqlite3.Connection) -> None:
        """Create the table, or move a file whose table has the ``WITHOUT ROWID`` layout to
        the rowid one. Rows are kept in a rowid table with a unique key on ``(model, stream)``: a
        row (state and tail, ~1 KiB for a small model) is too large for a ``WITHOUT ROWID``
        table, whose every B-tree page then holds only a few rows (SQLite's own advice);
        writing 256 streams in one transaction took twice as long there (measured)."""
        row = connection.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'streams'"
        ).fetchone()
        with _transaction(connection):
            connection.execute(ACCURACY)
            connection.execute(SCORES)
            if row is not None and "pending" not in row[0]:  # a file from before scoring
                connection.execute(
                    "ALTER TABLE streams ADD COLUMN pending BLOB NOT NULL DEFAULT x''")
        if row is not None and "WITHOUT ROWID" not in row[0].upper():
            connection.execute(_KEY)
            return
        with _transaction(connection):
            if row is None:
                connection.execute(_TABLE.format(name="streams"))
            else:
                connection.execute(_TABLE.format(name="streams_rowid"))
                connection.execute(f"INSERT INTO streams_rowid ({_COLUMNS}) "
                                   f"SELECT {_COLUMNS} FROM streams")
                connection.execute("DROP TABLE streams")
                connection.execute("ALTER TABLE streams_rowid RENAME TO streams")
            connection.execute(_KEY)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the writers' lock (one open file per thread: ``flock`` locks of different
        open files exclude each other, across threads and processes alike)."""
        local = self._local
        if getattr(local, "lock_pid", None) != os.getpid():
            local.lock_file = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            local.lock_pid = os.getpid()
        descriptor = local.lock_file
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (a forked child never reuses its parent's)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            try:
                connection = sqlite3.connect(self.path, timeout=self.timeout,
                                             isolation_level=None, check_same_thread=True)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                # Reads map the file (the OS page cache, shared by every connection)
                # instead of copying pages into each connection's small cache: a million
                # streams' file stays as fast to read as a thousand's.
                connection.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
            except sqlite3.Error as error:
                raise StoreError(f"cannot open sqlite store {self.path}: {error}") from None
            local.connection, local.pid = connection, os.getpid()
        current: sqlite3.Connection = local.connection
        return current

    def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, parameters)
        except sqlite3.Error as error:
            raise StoreError(f"sqlite store {self.path}: {error}") from None

    def get(self, model: str, stream: str) -> StreamRecord | None:
        row = self._execute(f"SELECT {_COLUMNS} FROM streams WHERE model = ? AND stream = ?",
                            (model, stream)).fetchone()
        return None if row is None else _row_to_record(row)

    def get_many(self, model: str, streams: Sequence[str]) -> list[StreamRecord | None]:
        found = {row[1]: _row_to_record(row)
                 for row in _select_streams(self._execute, _COLUMNS, model, streams)}
        return [found.get(stream) for stream in streams]

    def compare_and_set_many(self, writes: Sequence[tuple[StreamRecord, int | None]],
                             scores: WriteScores | None = None) -> list[bool]:
        """All writes in one transaction under the writers' lock: the current revisions
        read in one query, then every write whose check passes in one ``executemany`` per
        kind (inside the transaction nobody else writes, so check-then-write is atomic);
        each write still succeeds or fails alone."""
        if len(writes) < 2:
            return super().compare_and_set_many(writes, scores)
        connection = self._connection()
        prepared = log_row(scores, [True] * len(writes))
        try:
            with self._writing(), _transaction(connection):
                results = self._write_many(connection, writes)
                add_scores(connection, writes, results, scores, prepared)
                return results
        except sqlite3.Error as error:
            raise StoreError(f"sqlite store {self.path}: {error}") from None

    @staticmethod
    def _write_many(connection: sqlite3.Connection,
                    writes: Sequence[tuple[StreamRecord, int | None]]) -> list[bool]:
        by_model: dict[str, list[str]] = {}
        for record, _ in writes:
            by_model.setdefault(record.model, []).append(record.stream)
        current = {(model, stream): revision for model, streams in by_model.items()
                   for stream, revision in _select_streams(connection.execute,
                                                           "stream, revision", model, streams)}
        inserts, updates, results = [], [], []
        for record, expected in writes:
            key = (record.model, record.stream)
            ok = key not in current if expected is None else current.get(key) == expected
            results.append(ok)
            if not ok:
                continue
            current[key] = record.revision
            values = _values(record)
            if expected is None:
                inserts.append((record.model, record.stream, *values))
            else:
                updates.append((*values, record.model, record.stream))
        if inserts:
            connection.executemany(_INSERT, inserts)
        if updates:
            connection.executemany(_UPDATE, updates)
        return results

    def compare_and_set(self, record: StreamRecord, expected_revision: int | None,
                        scores: WriteScores | None = None) -> bool:
        try:
            connection = self._connection()
            prepared = log_row(scores, [True])
            with self._writing():
                if prepared is None:
                    return self._write(connection, record, expected_revision)
                with _transaction(connection):
                    written = self._write(connection, record, expected_revision)
                    add_scores(connection, [(record, expected_revision)], [written], scores,
                                prepared)
                    return written
        except sqlite3.Error as error:
            raise StoreError(f"sqlite store {self.path}: {error}") from None

    @staticmethod
    def _write(connection: sqlite3.Connection, record: StreamRecord,
               expected_revision: int | None) -> bool:
        values = _values(record)
        if expected_revision is None:
            cursor = connection.execute(f"{_INSERT} ON CONFLICT (model, stream) DO NOTHING",
                                        (record.model, record.stream, *values))
        else:
            cursor = connection.execute(f"{_UPDATE} AND revision = ?",
                                        (*values, record.model, record.stream,
                                         expected_revision))
        return cursor.rowcount == 1

    def accuracy(self, model: str, version: str) -> tuple[float | None, Totals]:
        connection = self._connection()
        try:
            connection.execute("BEGIN")  # one snapshot of the folded and logged totals
            try:
                since, totals, first, logged, _ = read_totals(connection, model, version)
            finally:
                connection.execute("COMMIT")
        except sqlite3.Error as error:
            raise StoreError(f"sqlite store {self.path}: {error}") from None
        return (since if since is not None else first), add_totals(totals, logged)

    def residuals(self, model: str, version: str) -> list[bytes]:
        rows = self._execute(
            "SELECT chunk FROM scores WHERE model = ? AND version = ? ORDER BY rowid DESC "
            "LIMIT ?", (model, version, RESIDUAL_WRITES)).fetchall()
        return [row[0] for row in reversed(rows)]

    def count(self, model: str) -> int:
        row = self._execute("SELECT COUNT(*) FROM streams WHERE model = ? AND expired = 0",
                            (model,)).fetchone()
        return int(row[0])

    def delete(self, model: str, stream: str) -> bool:
        with self._writing():
            cursor = self._execute("DELETE FROM streams WHERE model = ? AND stream = ?",
                                   (model, stream))
        return cursor.rowcount == 1

    def scan(self, model: str | None = None) -> Iterator[StreamRecord]:
        if model is None:
            rows = self._execute(f"SELECT {_COLUMNS} FROM streams").fetchall()
        else:
            rows = self._execute(f"SELECT {_COLUMNS} FROM streams WHERE model = ?",
                                 (model,)).fetchall()
        for row in rows:
            yield _row_to_record(row)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None and getattr(self._local, "pid", None) == os.getpid():
            connection.close()
        if getattr(self._local, "lock_pid", None) == os.getpid():
            os.close(self._local.lock_file)
        self._local = threading.local()
