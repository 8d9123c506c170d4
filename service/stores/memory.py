"""The ``memory`` store: every stream of a model version in one float32 arena, in-process.

Fastest, for one process (gunicorn ``gthread`` with one worker); keeps nothing across a
restart, by design. A lock serialises writes; reads copy the stream's row out.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from statecast.service.accuracy import RESIDUAL_WRITES, Scores, Totals, add_totals, residual_chunk
from statecast.service.errors import StoreError
from statecast.service.scoring import WriteScores
from statecast.service.stores.base import StateStore, StreamRecord

_INITIAL_ROWS = 64


class Arena:
    """A growable ``float32 [rows, width]`` array with a free list of rows."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows = np.zeros((_INITIAL_ROWS, width), np.float32)
        self._free = list(range(_INITIAL_ROWS - 1, -1, -1))

    def allocate(self) -> int:
        """A free row's index (the arena doubles when full)."""
        if not self._free:
            old = self.rows.shape[0]
            self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
            self._free = list(range(2 * old - 1, old - 1, -1))
        return self._free.pop()

    def release(self, row: int) -> None:
        self.rows[row] = 0.0
        self._free.append(row)

    @property
    def used(self) -> int:
        return self.rows.shape[0] - len(self._free)


@dataclass
class _Entry:
    version: str
    row: int  # -1 for a tombstone
    origin: int
    step: int
    revision: int
    tail: np.ndarray
    created_at: float
    updated_at: float
    expired: bool = False
    pending: bytes = b""


@dataclass
class _Accuracy:
    since: float
    totals: Totals
    residuals: deque[bytes]


class MemoryStore(StateStore):
    """Streams held in per-``(model, version)`` arenas of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._arenas: dict[tuple[str, str], Arena] = {}
        self._accuracy: dict[tuple[str, str], _Accuracy] = {}

    def arena(self, model: str, version: str) -> Arena | None:
        """The arena of one model version (None before its first stream)."""
        return self._arenas.get((model, version))

    def _record(self, model: str, stream: str, entry: _Entry) -> StreamRecord:
        state = (np.zeros(0, np.float32) if entry.row < 0
                 else self._arenas[(model, entry.version)].rows[entry.row].copy())
        return StreamRecord(model=model, stream=stream, version=entry.version,
                            origin=entry.origin, step=entry.step, state=state,
                            tail=entry.tail.copy(), revision=entry.revision,
                            created_at=entry.created_at, updated_at=entry.updated_at,
                            expired=entry.expired, pending=entry.pending)

    def get(self, model: str, stream: str) -> StreamRecord | None:
        with self._lock:
            entry = self._entries.get((model, stream))
            return None if entry is None else self._record(model, stream, entry)

    def compare_and_set(self, record: StreamRecord, expected_revision: int | None,
                        scores: WriteScores | None = None) -> bool:
        return self._write_all([(record, expected_revision)], scores)[0]

    def compare_and_set_many(self, writes: Sequence[tuple[StreamRecord, int | None]],
                             scores: WriteScores | None = None) -> list[bool]:
        return self._write_all(writes, scores)

    def _write_all(self, writes: Sequence[tuple[StreamRecord, int | None]],
                   scores: WriteScores | None) -> list[bool]:
        """Every write under the lock at once, then what those that succeeded scored."""
        with self._lock:
            results = [self._write(record, expected) for record, expected in writes]
            added = None if scores is None else scores.select(results)
            if added is not None:
                self._add_scores(writes[0][0].model, writes[0][0].version, added)
        return results

    def _write(self, record: StreamRecord, expected_revision: int | None) -> bool:
        """One compare-and-set, under the lock."""
        key = (record.model, record.stream)
        state = np.asarray(record.state, dtype=np.float32)
        entry = self._entries.get(key)
        if (entry is None) != (expected_revision is None):
            return False
        if entry is not None and entry.revision != expected_revision:
            return False
        if entry is not None and entry.row >= 0 and (
                entry.version != record.version or record.expired):
            self._arenas[(record.model, entry.version)].release(entry.row)
            entry.row = -1
        row = -1
        if not record.expired:
            arena = self._arenas.get((record.model, record.version))
            if arena is None:
                arena = self._arenas[(record.model, record.version)] = Arena(state.size)
            if arena.width != state.size:
                raise StoreError(f"stream {record.stream!r}: state of {state.size} values "
                                 f"for a version whose streams hold {arena.width}")
            row = entry.row if entry is not None and entry.row >= 0 else arena.allocate()
            arena.rows[row] = state
        self._entries[key] = _Entry(
            version=record.version, row=row, origin=record.origin, step=record.step,
            revision=record.revision, tail=np.array(record.tail, np.float32),
            created_at=record.created_at, updated_at=record.updated_at,
            expired=record.expired, pending=record.pending)
        return True

    def _add_scores(self, model: str, version: str, scores: Scores) -> None:
        book = self._accuracy.get((model, version))
        if book is None:
            book = self._accuracy[(model, version)] = _Accuracy(
                time.time(), {}, deque(maxlen=RESIDUAL_WRITES))
        add_totals(book.totals, scores.totals)
        book.residuals.append(residual_chunk(scores))

    def accuracy(self, model: str, version: str) -> tuple[float | None, Totals]:
        with self._lock:
            book = self._accuracy.get((model, version))
            if book is None:
                return None, {}
            return book.since, {name: row.copy() for name, row in book.totals.items()}

    def residuals(self, model: str, version: str) -> list[bytes]:
        with self._lock:
            book = self._accuracy.get((model, version))
            return [] if book is None else list(book.residuals)

    def delete(self, model: str, stream: str) -> bool:
        with self._lock:
            entry = self._entries.pop((model, stream), None)
            if entry is None:
                return False
            if entry.row >= 0:
                self._arenas[(model, entry.version)].release(entry.row)
            return True

    def count(self, model: str) -> int:
        with self._lock:
            return sum(1 for (m, _), entry in self._entries.items()
                       if m == model and not entry.expired)

    def scan(self, model: str | None = None) -> Iterator[StreamRecord]:
        with self._lock:
            records = [self._record(m, s, e) for (m, s), e in self._entries.items()
                       if model is None or m == model]
        yield from records
