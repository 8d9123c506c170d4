"""The life of streams apart from forecasting: idle streams expire into tombstones (410
until a reset) and a model may hold at most ``max_streams`` live streams (503 beyond)."""

from __future__ import annotations

import time

from statecast.service.errors import CapacityExceeded, StreamExpired
from statecast.service.metrics import Metrics
from statecast.service.stores import StateStore, StreamRecord


class StreamLifecycle:
    """Expiry (``ttl``: seconds a stream may stay idle; None: never) and capacity
    (``max_streams`` live streams per model; None: unlimited) of the streams in one store."""

    def __init__(self, store: StateStore, metrics: Metrics, ttl: float | None = None,
                 max_streams: int | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.ttl = ttl
        self.max_streams = max_streams

    def idle(self, record: StreamRecord, now: float) -> bool:
        """Whether ``record`` has been idle past the TTL at ``now``."""
        return self.ttl is not None and now - record.updated_at > self.ttl

    def live(self, record: StreamRecord | None, stream: str) -> StreamRecord | None:
        """The record if the stream is live (None if it does not exist); raise 410 for a
        tombstone or an idle stream (which becomes a tombstone: a call finds it, even when
        no sweep has run yet)."""
        if record is None:
            return None
        if not record.expired and self.idle(record, time.time()):
            if self.store.compare_and_set(record.tombstone(), record.revision):
                self.metrics.expiries.labels("access").inc()
            record = record.tombstone()
        if record.expired:
            raise StreamExpired(f"stream {stream!r} expired after being idle; send "
                                "\"reset\": true to start it over")
        return record

    def check_capacity(self, name: str) -> None:
        """Refuse a new stream of model ``name`` when it already has ``max_streams``."""
        if self.max_streams is not None and self.store.count(name) >= self.max_streams:
            raise CapacityExceeded(f"model {name!r} already has {self.max_streams} live "
                                   "streams; retry later or delete streams",
                                   limit=self.max_streams)

    def expire_idle(self) -> int:
        """Turn every stream idle past the TTL into a tombstone; return how many."""
        if self.ttl is None:
            return 0
        now = time.time()
        expired = 0
        for record in self.store.scan():
            if not record.expired and self.idle(record, now):
                expired += self.store.compare_and_set(record.tombstone(now), record.revision)
        if expired:
            self.metrics.expiries.labels("sweep").inc(expired)
        return expired
