"""The state store interface every implementation follows (one contract test suite).

Writes are compare-and-set: a writer reads a record, computes, and writes back only if the
record's ``revision`` is still the one it read; a writer that lost the race re-reads and
re-applies only what is still new. The check is on the revision, not on ``step``: a stream
reset and advanced again to the same step by another writer in between would pass a check
on ``step`` alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

from statecast.service.stores.record import StreamRecord


class StateStore(ABC):
    """Per-stream records keyed by ``(model, stream)``."""

    #: Whether acknowledged writes survive a process crash or restart.
    durable: bool = False
    #: Whether the store itself expires idle streams (Redis key expiry): the service then
    #: runs no sweep of its own.
    expires_idle: bool = False

    @abstractmethod
    def get(self, model: str, stream: str) -> StreamRecord | None:
        """The stream's record, or None when it does not exist."""

    def get_many(self, model: str, streams: Sequence[str]) -> list[StreamRecord | None]:
        """Records of several streams of one model, in the order asked."""
        return [self.get(model, stream) for stream in streams]

    @abstractmethod
    def compare_and_set(self, record: StreamRecord, expected_revision: int | None) -> bool:
        """Write ``record`` if the stored one has ``expected_revision`` (None: only if the
        stream does not exist). True when written, False when another writer won."""

    def compare_and_set_many(self, writes: Sequence[tuple[StreamRecord, int | None]]
                             ) -> list[bool]:
        """Several independent compare-and-sets (each succeeds or fails alone), in as few
        round trips as the store allows."""
        return [self.compare_and_set(record, expected) for record, expected in writes]

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
