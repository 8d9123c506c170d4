"""What a state store keeps per stream, and its byte encoding for durable stores."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class StreamRecord:
    """One stream's server-side record: its version, position, state and retained tail.

    Attributes
    ----------
    model, stream : str
        The stream's key.
    version : str
        The model version whose weights built ``state``; the stream stays bound to it.
    origin : int
        Absolute index of the stream's first observation (the ``start`` of its first call).
    step : int
        Absolute index of the next observation the stream expects (``origin`` + consumed).
    revision : int
        Incremented by every write; compare-and-set is on it (see ``StateStore``).
    state : np.ndarray
        ``float32 [state_size]``: the stream's arena row (h and c of every layer).
    tail : np.ndarray
        ``float32 [n, features]``: the last ``n <= retain`` raw observations, oldest first.
    created_at, updated_at : float
        Unix times.
    expired : bool
        A tombstone: the stream expired (idle past the TTL); calls on it are refused until
        a reset, never silently restarted from zero. Its state and tail are empty.
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

    def tombstone(self, now: float | None = None) -> StreamRecord:
        """This stream as an expired tombstone (next revision, state dropped)."""
        return replace(self, state=np.zeros(0, np.float32),
                       tail=np.zeros((0, self.tail.shape[1] if self.tail.ndim == 2 else 0),
                                     np.float32),
                       revision=self.revision + 1, expired=True,
                       updated_at=time.time() if now is None else now)

    def advanced(self, *, step: int, state: np.ndarray, tail: np.ndarray,
                 now: float | None = None) -> StreamRecord:
        """The record after a write: new step, state and tail, next revision."""
        return replace(self, step=step, state=state, tail=tail, revision=self.revision + 1,
                       updated_at=time.time() if now is None else now)

    def same_content(self, other: StreamRecord) -> bool:
        """True when both records hold the same data (arrays compared exactly)."""
        return (self.model, self.stream, self.version, self.origin, self.step, self.revision,
                self.expired) == (other.model, other.stream, other.version, other.origin,
                                  other.step, other.revision, other.expired
                                  ) and np.array_equal(self.state, other.state) and (
            self.tail.shape == other.tail.shape and np.array_equal(self.tail, other.tail))


def encode_array(array: np.ndarray) -> bytes:
    """Little-endian float32 bytes of an array (its shape is stored beside it)."""
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def decode_array(data: bytes, rows: int | None = None) -> np.ndarray:
    """The float32 array of :func:`encode_array`; ``rows`` reshapes it to ``[rows, -1]``."""
    flat = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if rows is None:
        return flat
    return flat.reshape(rows, -1) if rows else np.zeros((0, 0), np.float32)
