"""The ``memory`` store: every stream of a model version in one table of arrays, in-process.

Fastest, for one process (gunicorn ``gthread`` with one worker); keeps nothing across a
restart, by design. One lock serialises every access. Records read are copies; batch calls
run the kernel on the tables themselves (:meth:`MemoryStore.in_place`), under the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from statecast.service.accuracy import RESIDUAL_WRITES, Scores, Totals, add_totals, residual_chunk
from statecast.service.errors import StoreError
from statecast.service.scoring import WriteScores
from statecast.service.stores.base import StateStore, StreamRecord
from statecast.service.stores.memory_table import StreamTable

#: A stream's place: its table's number in the high bits, its row in the low ones.
_ROW_BITS = 40
_ROW_MASK = (1 << _ROW_BITS) - 1


@dataclass
class _Accuracy:
    since: float
    totals: Totals
    residuals: deque[bytes]


class InPlace:
    """The store's tables of one model, for a caller holding the store's lock: where each
    stream lives, and the tables a kernel updates in place. A caller changes a row only
    through :meth:`advanced` (the same record semantics as a compare-and-set that won)."""

    def __init__(self, store: MemoryStore, model: str) -> None:
        self._store = store
        self.model = model
        self._index = store._index.get(model, {})

    def locate(self, streams: Sequence[str]) -> list[int]:
        """Each live stream's place (table number and row, :meth:`table`/:meth:`row`), -1
        for a stream that does not exist or is a tombstone."""
        get = self._index.get
        return [get(stream, -1) for stream in streams]

    @staticmethod
    def number(place: int) -> int:
        """The number of a place's table."""
        return place >> _ROW_BITS

    @staticmethod
    def row(place: int) -> int:
        """A place's row in its table."""
        return place & _ROW_MASK

    def table(self, number: int) -> tuple[str, StreamTable]:
        """The model version and table of a table number."""
        _, version, table = self._store._tables[number]
        return version, table

    def add_scores(self, version: str, scores: Scores | None) -> None:
        """Add what committed rows of ``version`` scored to its accuracy."""
        if scores is not None:
            self._store._add_scores(self.model, version, scores)


class MemoryStore(StateStore):
    """Streams held in per-``(model, version)`` tables of this process."""

    runs_in_place = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: model -> stream -> place (table number << _ROW_BITS | row) of live streams.
        self._index: dict[str, dict[str, int]] = {}
        self._tables: list[tuple[str, str, StreamTable]] = []
        self._numbers: dict[tuple[str, str], int] = {}
        self._tombstones: dict[tuple[str, str], StreamRecord] = {}
        self._accuracy: dict[tuple[str, str], _Accuracy] = {}

    def arena(self, model: str, version: str) -> StreamTable | None:
        """The table of one model version (None before its first stream)."""
        number = self._numbers.get((model, version))
        return None if number is None else self._tables[number][2]

    @contextmanager
    def in_place(self, model: str) -> Iterator[InPlace]:
        """The tables of ``model`` under the store's lock, for a batch call that runs its
        kernel on them: every other access waits until it is done."""
        with self._lock:
            yield InPlace(self, model)

    def _record(self, model: str, stream: str, place: int) -> StreamRecord:
        _, version, table = self._tables[place >> _ROW_BITS]
        row = place & _ROW_MASK
        return StreamRecord(model=model, stream=stream, version=version,
                            origin=int(table.origin[row]), step=int(table.step[row]),
                            state=table.state[row].copy(), tail=table.read_tail(row),
                            revision=int(table.revision[row]),
                            created_at=float(table.created[row]),
                            updated_at=float(table.updated[row]),
                            pending=table.read_pending(row))

    def _read(self, model: str, stream: str) -> StreamRecord | None:
        place = self._index.get(model, {}).get(stream)
        if place is not None:
            return self._record(model, stream, place)
        return self._tombstones.get((model, stream))

    def get(self, model: str, stream: str) -> StreamRecord | None:
        with self._lock:
            return self._read(model, stream)

    def get_many(self, model: str, streams: Sequence[str]) -> list[StreamRecord | None]:
        with self._lock:
            return [self._read(model, stream) for stream in streams]

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

    def _table(self, model: str, version: str, width: int) -> tuple[int, StreamTable]:
        number = self._numbers.get((model, version))
        if number is None:
            number = self._numbers[(model, version)] = len(self._tables)
            self._tables.append((model, version, StreamTable(width)))
        return number, self._tables[number][2]

    def _write(self, record: StreamRecord, expected_revision: int | None) -> bool:
        """One compare-and-set, under the lock."""
        model, stream = record.model, record.stream
        index = self._index.setdefault(model, {})
        place = index.get(stream)
        tombstone = self._tombstones.get((model, stream)) if place is None else None
        if place is not None:
            current: int | None = int(
                self._tables[place >> _ROW_BITS][2].revision[place & _ROW_MASK])
        else:
            current = None if tombstone is None else tombstone.revision
        if (current is None) != (expected_revision is None) or current != expected_revision:
            return False
        state = np.asarray(record.state, dtype=np.float32)
        if not record.expired:
            number, table = self._table(model, record.version, state.size)
            if table.width != state.size:
                raise StoreError(f"stream {stream!r}: state of {state.size} values "
                                 f"for a version whose streams hold {table.width}")
        if place is not None and (record.expired or self._tables[
                place >> _ROW_BITS][1] != record.version):
            self._tables[place >> _ROW_BITS][2].release(place & _ROW_MASK)
            del index[stream]
            place = None
        if record.expired:
            self._tombstones[(model, stream)] = record
            return True
        self._tombstones.pop((model, stream), None)
        if place is None:
            row = table.allocate(stream)
            index[stream] = place = number << _ROW_BITS | row
        row = place & _ROW_MASK
        table.state[row] = state
        table.write_tail(row, np.asarray(record.tail, np.float32))
        table.step[row], table.origin[row] = record.step, record.origin
        table.revision[row] = record.revision
        table.created[row], table.updated[row] = record.created_at, record.updated_at
        table.write_pending(row, record.pending)
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
            if self._tombstones.pop((model, stream), None) is not None:
                return True
            place = self._index.get(model, {}).pop(stream, None)
            if place is None:
                return False
            self._tables[place >> _ROW_BITS][2].release(place & _ROW_MASK)
            return True

    def count(self, model: str) -> int:
        with self._lock:
            return len(self._index.get(model, {}))

    def scan(self, model: str | None = None) -> Iterator[StreamRecord]:
        with self._lock:
            records = [self._record(name, stream, place)
                       for name, index in self._index.items()
                       if model is None or name == model
                       for stream, place in index.items()]
            records += [record for (name, _), record in self._tombstones.items()
                        if model is None or name == model]
        yield from records
