"""The streams of one model version held as columns of arrays, one row per stream: the
``memory`` store's arena.

A stream costs its state row, its retained tail, a few numbers and its pending forecasts'
bytes, with no Python object of its own apart from the pending bytes, so that a million
streams fit in about the raw bytes they hold. The columns are what a kernel runs on in
place (``state`` rows by index); the store's lock guards every access.
"""

from __future__ import annotations

import numpy as np

_INITIAL_ROWS = 64
_EMPTY = b""


class StreamTable:
    """Growable columns of ``width``-value state rows (half as many again when full), with
    a free list of rows.

    ``tail`` is ``[rows, capacity, features]``: each stream's retained observations in a
    ring (the last ``tail_rows[row]`` written before position ``tail_end[row]``), so that
    appending writes only the new observations; the capacity grows to the longest tail
    written (a model's ``retain``).
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.state = np.zeros((_INITIAL_ROWS, width), np.float32)
        self.tail = np.zeros((_INITIAL_ROWS, 0, 0), np.float32)
        self.tail_rows = np.zeros(_INITIAL_ROWS, np.int32)
        self.tail_end = np.zeros(_INITIAL_ROWS, np.int32)
        self.step = np.zeros(_INITIAL_ROWS, np.int64)
        self.origin = np.zeros(_INITIAL_ROWS, np.int64)
        self.revision = np.zeros(_INITIAL_ROWS, np.int64)
        self.created = np.zeros(_INITIAL_ROWS, np.float64)
        self.updated = np.zeros(_INITIAL_ROWS, np.float64)
        #: Pending forecasts (:mod:`service.scoring`) of the one record size the table
        #: adopted (its first stream's): ``uint8 [rows, size]``, scored in place; a record
        #: of another size (one with interval bounds) is kept in ``overflow`` by row.
        self.pending = np.zeros((_INITIAL_ROWS, 0), np.uint8)
        #: Per row: 0 no pending forecasts, 1 in ``pending``, 2 in ``overflow``.
        self.pending_kind = np.zeros(_INITIAL_ROWS, np.int8)
        self.overflow: dict[int, bytes] = {}
        self.streams: list[str | None] = [None] * _INITIAL_ROWS
        self._free = list(range(_INITIAL_ROWS - 1, -1, -1))

    _COLUMNS = ("state", "tail", "tail_rows", "tail_end", "step", "origin", "revision",
                "created", "updated", "pending", "pending_kind")

    @property
    def rows(self) -> np.ndarray:
        """The state rows ``float32 [capacity, width]`` (free rows hold zeros)."""
        return self.state

    @property
    def used(self) -> int:
        return len(self.streams) - len(self._free)

    def read_pending(self, row: int) -> bytes:
        """The row's pending forecasts (a copy)."""
        kind = self.pending_kind[row]
        if kind == 1:
            return self.pending[row].tobytes()
        return self.overflow.get(row, _EMPTY) if kind == 2 else _EMPTY

    def write_pending(self, row: int, data: bytes) -> None:
        self.overflow.pop(row, None)
        if not data:
            self.pending_kind[row] = 0
            return
        if not self.pending.shape[1] and not self.pending_kind.any():
            self.pending = np.zeros((len(self.streams), len(data)), np.uint8)
        if len(data) == self.pending.shape[1]:
            self.pending[row] = np.frombuffer(data, np.uint8)
            self.pending_kind[row] = 1
        else:
            self.overflow[row] = data
            self.pending_kind[row] = 2

    def allocate(self, stream: str) -> int:
        """A free row for ``stream`` (the columns double when full)."""
        if not self._free:
            self._grow()
        row = self._free.pop()
        self.streams[row] = stream
        return row

    def release(self, row: int) -> None:
        self.state[row] = 0.0
        self.tail_rows[row] = self.tail_end[row] = 0
        self.write_pending(row, _EMPTY)
        self.streams[row] = None
        self._free.append(row)

    def _grow(self) -> None:
        """Half as many rows again: a full table holds at most a third more rows than
        streams, and growing copies each column once into a larger one."""
        old = len(self.streams)
        new = old + max(old // 2, _INITIAL_ROWS)
        for name in self._COLUMNS:
            column = getattr(self, name)
            grown = np.zeros((new, *column.shape[1:]), column.dtype)
            grown[:old] = column
            setattr(self, name, grown)
        self.streams.extend([None] * (new - old))
        self._free = list(range(new - 1, old - 1, -1))

    def fit_tail(self, rows: int, features: int) -> None:
        """Make room for tails of ``rows`` observations of ``features`` values."""
        capacity, width = self.tail.shape[1:]
        if rows <= capacity and (features == width or rows == 0):
            return
        if width not in (0, features) and self.tail_rows.any():
            raise ValueError(f"tails of {features} features in a table of {width}")
        grown = np.zeros((len(self.streams), max(rows, capacity), features), np.float32)
        if capacity and width == features:
            # Unroll every ring, oldest first, at the start of the larger one.
            order = (self.tail_end[:, None] + np.arange(capacity)) % capacity
            grown[:, :capacity] = np.take_along_axis(self.tail, order[:, :, None], axis=1)
            self.tail_end[:] = capacity % grown.shape[1]
        self.tail = grown

    def read_tail(self, row: int) -> np.ndarray:
        """A copy of the row's retained observations ``[n, features]``, oldest first."""
        count, capacity = int(self.tail_rows[row]), self.tail.shape[1]
        if not count:
            return np.zeros((0, self.tail.shape[2]), np.float32)
        return self.tail[row, (self.tail_end[row] - count + np.arange(count)) % capacity]

    def write_tail(self, row: int, tail: np.ndarray) -> None:
        count = len(tail)
        self.fit_tail(count, tail.shape[1] if tail.ndim == 2 else 0)
        if count:
            self.tail[row, :count] = tail
        self.tail_rows[row] = count
        self.tail_end[row] = count % max(self.tail.shape[1], 1)

    def append_tails(self, rows: np.ndarray, new: np.ndarray, retain: int) -> None:
        """Append ``new`` ``[len(rows), k, features]`` to the rows' tails, keeping the last
        ``retain`` observations of each."""
        self.fit_tail(retain, new.shape[2])
        capacity = self.tail.shape[1]
        if not capacity:
            return
        count = min(new.shape[1], capacity)
        ends = self.tail_end[rows]
        for k in range(count):
            self.tail[rows, (ends + k) % capacity] = new[:, new.shape[1] - count + k]
        self.tail_end[rows] = (ends + count) % capacity
        self.tail_rows[rows] = np.minimum(self.tail_rows[rows] + count, capacity)
