"""A stream's record, its byte encoding for durable stores, and the state store interface
every implementation follows (one contract test suite).

Writes are compare-and-set: a writer reads a record, computes, and writes back only if the
record's ``revision`` is still the one it read; a writer that lost the race re-reads and
re-applies only what is still new. The check is on the revision, not on ``step``: a stream
reset and advanced again to the same step by another writer in between would pass a check
on ``step`` alone.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from statecast.service.accuracy import Totals
from statecast.service.scoring import WriteScores


@dataclass(slots=True)
class StreamRecord:
    """One stream's server-side record, keyed by ``(model, stream)``.

    ``version`` is the model version whose weights built ``state`` (the stream stays bound
    to it); ``origin`` the absolute index of the stream's first observation (the ``start``
    of its first call) and ``step`` of the next one it expects (``origin`` + consumed);
    ``state`` its ``float32 [state_size]`` arena row (h and c of every layer); ``tail`` the
    last ``n <= retain`` raw observations ``float32 [n, features]``, oldest first;
    ``revision`` is incremented by every write (compare-and-set is on it); times are Unix
    seconds. ``expired`` marks a tombstone: the stream was idle past the TTL, calls on it
    are refused until a reset (never silently restarted from zero), state and tail are
    empty. ``pending`` holds the stream's committed forecasts awaiting their observations
    and its rolling error (:class:`service.scoring.Pending`, encoded; empty: none).

    Records are values: nothing changes one once made (:meth:`advanced`, ``replace`` make
    another). The class is not frozen only because a frozen one takes four times as long
    to build, and a batch call reads and writes hundreds.
    """

    model: str
    stream: str
    version: str
    origin: int
    step: int
    state: np.ndarray
    tail: np.ndarray
    revision: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    expired: bool = False
    pending: bytes = b""

    def tombstone(self, now: float | None = None) -> StreamRecord:
        """This stream as an expired tombstone (next revision, state dropped)."""
        return replace(self, state=np.zeros(0, np.float32),
                       tail=np.zeros((0, self.tail.shape[1] if self.tail.ndim == 2 else 0),
                                     np.float32),
                       revision=self.revision + 1, expired=True, pending=b"",
                       updated_at=time.time() if now is None else now)

    def advanced(self, *, step: int, state: np.ndarray, tail: np.ndarray,
                 now: float | None = None) -> StreamRecord:
        """The record after a write: new step, state and tail, next revision."""
        return replace(self, step=step, state=state, tail=tail, revision=self.revision + 1,
                       updated_at=time.time() if now is None else now)

    def same_content(self, other: StreamRecord) -> bool:
        """True when both records hold the same data (arrays compared exactly)."""
        return (self.model, self.stream, self.version, self.origin, self.step, self.revision,
                self.expired, self.pending) == (
            other.model, other.stream, other.version, other.origin, other.step,
            other.revision, other.expired, other.pending) and np.array_equal(
            self.state, other.state) and (
            self.tail.shape == other.tail.shape and np.array_equal(self.tail, other.tail))

    @property
    def tail_rows(self) -> int:
        """Rows of ``tail`` (0 for an empty tail that lost its width)."""
        return int(self.tail.shape[0]) if self.tail.ndim == 2 else 0


_LITTLE_ENDIAN = np.dtype(np.float32).byteorder in ("=", "<") and np.little_endian


def encode_array(array: np.ndarray) -> bytes:
    """Little-endian float32 bytes of an array (its shape is stored beside it)."""
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def decode_array(data: bytes, rows: int | None = None) -> np.ndarray:
    """The float32 array of :func:`encode_array` (a read-only view of ``data``); ``rows``
    reshapes it to ``[rows, -1]``."""
    flat = np.frombuffer(data, dtype=np.float32 if _LITTLE_ENDIAN else "<f4")
    if rows is None:
        return flat
    return flat.reshape(rows, -1) if rows else np.zeros((0, 0), np.float32)


class StateStore(ABC):
    """Per-stream records keyed by ``(model, stream)``, and per model version the accuracy
    their committed forecasts scored (:mod:`service.accuracy`): a write's scores are added
    in the same atomic step as the write, only when it succeeds."""

    #: Whether the store itself expires idle streams (Redis key expiry): the service then
    #: runs no sweep of its own.
    expires_idle: bool = False
    #: Whether batch calls may run their kernel on the store's own tables
    #: (:meth:`in_place`) instead of reading and compare-and-setting records.
    runs_in_place: bool = False

    def in_place(self, model: str) -> AbstractContextManager[Any]:
        """The store's tables of ``model`` with its lock held (stores that
        :attr:`runs_in_place`)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no tables to run on")

    @abstractmethod
    def get(self, model: str, stream: str) -> StreamRecord | None:
        """The stream's record, or None when it does not exist."""

    def get_many(self, model: str, streams: Sequence[str]) -> list[StreamRecord | None]:
        """Records of several streams of one model, in the order asked."""
        return [self.get(model, stream) for stream in streams]

    @abstractmethod
    def compare_and_set(self, record: StreamRecord, expected_revision: int | None,
                        scores: WriteScores | None = None) -> bool:
        """Write ``record`` if the stored one has ``expected_revision`` (None: only if the
        stream does not exist), adding what it scored (``scores`` of one write) to its
        version's accuracy with it. True when written, False when another writer won
        (nothing changed)."""

    def compare_and_set_many(self, writes: Sequence[tuple[StreamRecord, int | None]],
                             scores: WriteScores | None = None) -> list[bool]:
        """Several independent compare-and-sets (each succeeds or fails alone, adding what
        it scored: ``scores`` of these writes, all of one model version), in as few round
        trips as the store allows."""
        return [self.compare_and_set(record, expected,
                                     None if scores is None else scores.only(index))
                for index, (record, expected) in enumerate(writes)]

    @abstractmethod
    def accuracy(self, model: str, version: str) -> tuple[float | None, Totals]:
        """When a model version's first score was added (None: never) and its totals."""

    @abstractmethod
    def residuals(self, model: str, version: str) -> list[bytes]:
        """The residual chunks (:func:`service.accuracy.residual_chunk`) of a model
        version's newest writes, oldest first."""

    @abstractmethod
    def delete(self, model: str, stream: str) -> bool:
        """Forget a stream entirely; True when it existed."""

    @abstractmethod
    def scan(self, model: str | None = None) -> Iterator[StreamRecord]:
        """Every record (of one model), in no particular order."""

    def count(self, model: str) -> int:
        """Live (not expired) streams of one model."""
        return sum(1 for record in self.scan(model) if not record.expired)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is unusable afterwards."""
