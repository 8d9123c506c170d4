"""The ``redis`` store on a Redis Cluster (``redis+cluster://host:port``: any node; the
client discovers the rest): the same records, keys and scripts as :mod:`.redis`, spread
over the cluster's masters by stream.

A script runs on the keys of one hash slot, so a call's writes run as one script per slot
they fall in — each all or nothing with the scores it adds, to that slot's totals and
residuals (:mod:`.redis_slots`): a score is still counted exactly when its write lands. The
scripts of one call go out in one pipeline per master (each through one connection, so that
``WAIT`` counts the replicas that have them). Batch reads are pipelined over the masters,
``scan`` walks every master. During a resharding reads follow ``MOVED`` and ``ASK``, writes
``MOVED`` (a slot that moved: the map is read again); a write to a slot being migrated
(``ASK``, ``TRYAGAIN``), a master down or the cluster down is a :class:`StoreError` (503),
which the client retries. The client connects when first used, so the service starts while
the cluster is unreachable and recovers without a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from statecast.service.accuracy import RESIDUAL_WRITES, Scores, Totals
from statecast.service.scoring import WriteScores
from statecast.service.stores.base import StreamRecord
from statecast.service.stores.redis import RedisStore, read_totals, stream_key
from statecast.service.stores.redis_slots import (
    TagIndex,
    kept_per_slot,
    newest_chunks,
    residuals_key,
    slot_tags,
    stamped,
    tags_key,
    totals_key,
)

#: Times a write whose slot moved is sent again (each after the map is read again).
REDIRECTIONS = 3


class RedisClusterStore(RedisStore):
    """Streams in the hashes of a Redis Cluster (``redis+cluster://host:port``)."""

    def __init__(self, url: str, timeout: float = 5.0, ttl: float | None = None,
                 tombstone_ttl: float | None = None) -> None:
        self._lock = threading.Lock()
        self._tags = TagIndex()
        super().__init__(url, timeout, ttl, tombstone_ttl)
        self._flags += "n"  # stamp each slot's newest residuals: readers pick those slots

    def _connect(self) -> Any:
        return None  # when first used: see client

    @property
    def client(self) -> Any:
        """The redis-py cluster client, connected to the cluster (once) when first asked."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._call("connect", lambda: (
                        self._redis.cluster.RedisCluster.from_url(
                            self.address.url, socket_timeout=self.timeout,
                            socket_connect_timeout=self.timeout, health_check_interval=30)))
        return self._client

    def _groups(self, writes: Sequence[tuple[StreamRecord, int | None]],
                scores: WriteScores | None) -> list[list[int]]:
        """The writes by hash slot. When they add scores, the slots' tags are first added
        to the version's set (once per process, in one round trip)."""
        slots: dict[int, list[int]] = {}
        for index, (record, _) in enumerate(writes):
            slot = self._slot(stream_key(record.model, record.stream))
            slots.setdefault(slot, []).append(index)
        if scores is not None and writes:
            model, version = writes[0][0].model, writes[0][0].version
            tags = slot_tags()
            missing = self._tags.missing(model, version, (tags[slot] for slot in slots))
            if missing:
                pipeline = self._pipeline()
                pipeline.sadd(tags_key(model, version), *missing)
                pipeline.scard(tags_key(model, version))
                _, size = pipeline.execute()
                self._tags.added(model, version, missing, int(size))
        return list(slots.values())

    def _slot(self, key: str) -> int:
        from redis.crc import key_slot

        return int(key_slot(key.encode()))

    def _score_keys(self, model: str, version: str, key: str) -> tuple[str, str, int]:
        tag = slot_tags()[self._slot(key)]
        return (totals_key(model, version, tag), residuals_key(model, version, tag),
                kept_per_slot(self._tags.size(model, version)))

    def _residual_entry(self, added: Scores, now: float) -> bytes:
        return stamped(super()._residual_entry(added, now), now)

    def _send(self, commands: Sequence[tuple[Any, ...]], keys: Sequence[str]) -> list[Any]:
        """Each master's commands in one pipeline through one connection to it (so that
        ``WAIT`` counts their acks). A command refused with ``MOVED`` (its slot moved: it
        did not run) is sent again where the cluster's refreshed map says; other
        redirections and errors are left to the caller."""
        moved_error = self._redis.exceptions.MovedError
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        for _ in range(REDIRECTIONS):
            nodes: dict[str, tuple[Any, list[int]]] = {}
            for index in todo:
                node = self.client.get_node_from_key(keys[index])
                nodes.setdefault(node.name, (node, []))[1].append(index)
            moved = []
            for node, indices in nodes.values():
                try:
                    sent = self._send_on(self.client.get_redis_connection(node),
                                         [commands[i] for i in indices])
                except (self._redis.ConnectionError, self._redis.TimeoutError):
                    self._refresh()  # a master down: maybe replaced by a replica
                    raise
                for index, reply in zip(indices, sent, strict=True):
                    replies[index] = reply
                    if isinstance(reply, moved_error):
                        moved.append(index)
            if not moved:
                break
            self._refresh()
            todo = moved
        return replies

    def _refresh(self) -> None:
        """Read the cluster's map of slots again (best effort: the caller fails anyway
        when the cluster cannot answer)."""
        try:
            self.client.nodes_manager.initialize()
        except self._errors:
            pass

    def _version_tags(self, model: str, version: str) -> list[str]:
        return sorted(tag.decode() for tag in self.client.smembers(tags_key(model, version)))

    def accuracy(self, model: str, version: str) -> tuple[float | None, Totals]:
        def read() -> list[Any]:
            pipeline = self._pipeline()
            for tag in self._version_tags(model, version):
                pipeline.hgetall(totals_key(model, version, tag))
            return list(pipeline.execute())

        return read_totals(self._call("accuracy", read))

    def residuals(self, model: str, version: str) -> list[bytes]:
        def read() -> list[list[bytes]]:
            tags = self._version_tags(model, version)
            kept = kept_per_slot(len(tags))
            if len(tags) > RESIDUAL_WRITES:  # only the slots written to most recently
                pipeline = self._pipeline()
                for tag in tags:
                    pipeline.hget(totals_key(model, version, tag), "newest")
                newest = [float(stamp or 0) for stamp in pipeline.execute()]
                ranked = sorted(zip(newest, tags, strict=True), reverse=True)
                tags = [tag for _, tag in ranked[:RESIDUAL_WRITES]]
            pipeline = self._pipeline()
            for tag in tags:
                pipeline.lrange(residuals_key(model, version, tag), -kept, -1)
            return list(pipeline.execute())

        return newest_chunks(self._call("residuals", read))

    def close(self) -> None:
        with self._lock:
            super().close()
            self._client = None

