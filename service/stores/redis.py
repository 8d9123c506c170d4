"""The ``redis`` store (``redis://host:port/db``): state shared by several machines or
replicas, on an existing, trusted server (a Redis Cluster: :mod:`.redis_cluster`).

One hash per stream under a key hash-tagged by stream (``statecast:{model/stream}``), so a
Redis Cluster keeps every stream's fields in one slot. Compare-and-set is a Lua script
(:mod:`.redis_script`): atomic in Redis, a write happens whole or not at all. The writes of
one call (one model version) run in one script, all or nothing, with the scores they add to
their version's totals (``statecast-accuracy:{model/version}``) and residuals: a score is
counted exactly when its write lands. States are little-endian float32 bytes. Batch reads
are pipelined (one round trip). Connection errors and timeouts become :class:`StoreError`
(503). Durability is the server's: run it with AOF on. With ``?wait=N`` in the address each
write is followed by ``WAIT N`` on the same connection (:mod:`.redis_address`).

Idle streams (``ttl``) are expired by Redis itself: every write of a live stream sets the
key's time to live, so Redis frees an idle stream whether or not a statecast worker runs.
The key's "seen" marker (same hash tag) outlives it and holds the stream's version, origin
and step: a stream Redis expired reads back as a tombstone (``410 stream_expired`` until a
reset), as in the other stores: by default for ever (a marker is ~100 bytes), or for
``tombstone_ttl`` seconds after which the stream is forgotten entirely.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from statecast.service.accuracy import RESIDUAL_WRITES, Scores, Totals, residual_chunk
from statecast.service.errors import ReplicationUnconfirmed, StoreError
from statecast.service.scoring import WriteScores
from statecast.service.stores.base import StateStore, StreamRecord, decode_array, encode_array
from statecast.service.stores.redis_address import parse_redis_address
from statecast.service.stores.redis_script import CAS, CAS_SHA

_PREFIX = "statecast:"
_SEEN = "statecast-seen:"
_ACCURACY = "statecast-accuracy:"
_RESIDUALS = "statecast-residuals:"
#: Revision of a tombstone read back from a marker (its key is gone): a reset creates the
#: stream anew.
MARKER_REVISION = -1
_SEPARATOR = "\x1f"
#: One run of the script: its keys and arguments.
ScriptCall = tuple[list[str], list[Any]]


def _accuracy_key(model: str, version: str) -> str:
    return f"{_ACCURACY}{{{model}/{version}}}"


def _residuals_key(model: str, version: str) -> str:
    return f"{_RESIDUALS}{{{model}/{version}}}"


def stream_key(model: str, stream: str) -> str:
    """The key of a stream's hash."""
    return f"{_PREFIX}{{{model}/{stream}}}"


def _seen(model: str, stream: str) -> str:
    return f"{_SEEN}{{{model}/{stream}}}"


def _marker(record: StreamRecord) -> str:
    return _SEPARATOR.join((record.version, str(record.origin), str(record.step),
                            repr(record.created_at), repr(record.updated_at)))


def _tombstone(model: str, stream: str, marker: bytes) -> StreamRecord:
    version, origin, step, created, updated = marker.decode().split(_SEPARATOR)
    empty = np.zeros(0, np.float32)
    return StreamRecord(model=model, stream=stream, version=version, origin=int(origin),
                        step=int(step), state=empty, tail=empty.reshape(0, 0),
                        revision=MARKER_REVISION, created_at=float(created),
                        updated_at=float(updated), expired=True)


def _record(model: str, stream: str, fields: dict[bytes, bytes]) -> StreamRecord:
    def text(name: str) -> str:
        return fields[name.encode()].decode()

    return StreamRecord(model=model, stream=stream, version=text("version"),
                        origin=int(text("origin")), step=int(text("step")),
                        state=decode_array(fields[b"state"]),
                        tail=decode_array(fields[b"tail"], int(text("tail_rows"))),
                        revision=int(text("revision")),
                        created_at=float(text("created_at")),
                        updated_at=float(text("updated_at")),
                        expired=text("expired") == "1", pending=fields.get(b"pending", b""))


def read_totals(hashes: Iterable[dict[bytes, bytes]]) -> tuple[float | None, Totals]:
    """When a model version's first score was added and its totals, from its totals
    hashes (one; on a Redis Cluster one per slot, added up)."""
    firsts: list[float] = []
    cells: dict[str, dict[int, float]] = {}
    for fields in hashes:
        for field, value in fields.items():
            if field == b"since":
                firsts.append(float(value))
            elif field != b"newest":
                name, _, index = field.decode().rpartition(":")
                row = cells.setdefault(name, {})
                row[int(index)] = row.get(int(index), 0.0) + float(value)
    width = 1 + max((max(row) for row in cells.values()), default=-1)
    totals = {}
    for name, row in cells.items():
        totals[name] = np.zeros(width)
        for step, total in row.items():
            totals[name][step] = total
    return min(firsts, default=None), totals


def _scored(scores: WriteScores | None, group: Sequence[int], writes: int) -> Scores | None:
    """What the writes ``group`` of all ``writes`` scored, added up."""
    if scores is None:
        return None
    if len(group) == 1 and writes > 1:  # a slot of its own on a cluster: no mask to build
        return scores.only(group[0]).select([True])
    written = [False] * writes
    for index in group:
        written[index] = True
    return scores.select(written)


class RedisStore(StateStore):
    """Streams in Redis hashes (``redis://host:port/db``)."""

    def __init__(self, url: str, timeout: float = 5.0, ttl: float | None = None,
                 tombstone_ttl: float | None = None) -> None:
        try:
            import redis
        except ImportError:
            raise StoreError("the redis store needs: pip install 'statecast[redis]'") from None
        self._redis = redis
        self._errors = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)
        self.url = url
        self.address = parse_redis_address(url)
        self.timeout = timeout
        self._client: Any = self._connect()
        self.expires_idle = ttl is not None
        self._flags = "e" if self.expires_idle else ""
        self._ttl_ms = "" if ttl is None else str(max(1, round(ttl * 1000)))
        self._tombstone_ms = ("" if tombstone_ttl is None else
                              str(max(1, round(tombstone_ttl * 1000))))

    def _connect(self) -> Any:
        """The redis-py client (it connects when first used)."""
        return self._redis.Redis.from_url(self.address.url, socket_timeout=self.timeout,
                                          socket_connect_timeout=self.timeout,
                                          health_check_interval=30)

    @property
    def client(self) -> Any:
        """The redis-py client."""
        return self._client

    def _call(self, what: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except self._errors as error:
            raise StoreError(f"redis store {self.url}: {what}: {type(error).__name__}: "
                             f"{error}") from None

    def _pipeline(self) -> Any:
        return self.client.pipeline(transaction=False)

    def _read(self, model: str, stream: str, fields: dict[bytes, bytes],
              marker: bytes | None) -> StreamRecord | None:
        if fields:
            return _record(model, stream, fields)
        return _tombstone(model, stream, marker) if marker else None

    def get(self, model: str, stream: str) -> StreamRecord | None:
        if self.expires_idle:  # the marker too: one pipelined round trip
            return self.get_many(model, [stream])[0]
        fields = self._call("get", lambda: self.client.hgetall(stream_key(model, stream)))
        return _record(model, stream, fields) if fields else None

    def get_many(self, model: str, streams: Sequence[str]) -> list[StreamRecord | None]:
        def fetch() -> list[Any]:
            pipeline = self._pipeline()
            for stream in streams:
                pipeline.hgetall(stream_key(model, stream))
                if self.expires_idle:
                    pipeline.get(_seen(model, stream))
            return list(pipeline.execute())

        results = self._call("get", fetch)
        if not self.expires_idle:
            return [self._read(model, stream, fields, None)
                    for stream, fields in zip(streams, results, strict=True)]
        return [self._read(model, stream, results[2 * i], results[2 * i + 1])
                for i, stream in enumerate(streams)]

    def _arguments(self, record: StreamRecord, expected_revision: int | None) -> list[Any]:
        """One item's part of the script's arguments."""
        tail_rows = int(record.tail.shape[0]) if record.tail.ndim == 2 else 0
        expected = "" if expected_revision is None else str(expected_revision)
        # A live stream's key lives ttl; a tombstone's as long as its marker.
        ttl = self._tombstone_ms if record.expired else self._ttl_ms
        marker_ms = (str(int(self._tombstone_ms) + int(self._ttl_ms))
                     if self._tombstone_ms and self._ttl_ms else "")
        fields = ["version", record.version,
                  "origin", record.origin, "step", record.step, "revision", record.revision,
                  "state", encode_array(record.state),
                  "tail", encode_array(record.tail), "tail_rows", tail_rows,
                  "created_at", repr(record.created_at), "updated_at", repr(record.updated_at),
                  "expired", int(record.expired), "pending", record.pending]
        return [expected, ttl, marker_ms, _marker(record), len(fields) // 2, *fields]

    def compare_and_set(self, record: StreamRecord, expected_revision: int | None,
                        scores: WriteScores | None = None) -> bool:
        return self.compare_and_set_many([(record, expected_revision)], scores)[0]

    def compare_and_set_many(self, writes: Sequence[tuple[StreamRecord, int | None]],
                             scores: WriteScores | None = None) -> list[bool]:
        """The writes of one model version in one script per group (:meth:`_groups`), all
        or nothing, the groups' scripts in one round trip: a group where some fail runs
        again without them (their scores are then not added)."""
        if len({(record.model, record.version) for record, _ in writes}) > 1:
            return super().compare_and_set_many(writes, scores)
        results = [True] * len(writes)
        groups = self._call("compare_and_set", self._groups, writes, scores)
        while groups:
            calls = [self._script_call([writes[i] for i in group],
                                       _scored(scores, group, len(writes)))
                     for group in groups]
            replies = self._call("compare_and_set", self._run_scripts, calls)
            retry = []
            for group, failed in zip(groups, replies, strict=True):
                for position in failed:
                    results[group[int(position) - 1]] = False
                if failed:
                    retry.append([index for index in group if results[index]])
            groups = [group for group in retry if group]
        return results

    def _groups(self, writes: Sequence[tuple[StreamRecord, int | None]],
                scores: WriteScores | None) -> list[list[int]]:
        """The writes (their indices) that run in one script: here all of them."""
        return [list(range(len(writes)))] if writes else []

    def _score_keys(self, model: str, version: str, key: str) -> tuple[str, str, int]:
        """The totals and residuals keys a write of the version to stream ``key`` adds its
        scores to, and how many residual chunks that list keeps."""
        return _accuracy_key(model, version), _residuals_key(model, version), RESIDUAL_WRITES

    def _residual_entry(self, added: Scores, now: float) -> bytes:
        """What one script pushes to the residuals list."""
        return residual_chunk(added)

    def _script_call(self, writes: Sequence[tuple[StreamRecord, int | None]],
                     added: Scores | None) -> ScriptCall:
        """The script's keys and arguments for writes of one model version (and one slot)
        adding what they scored."""
        first = writes[0][0]
        deltas: list[Any] = []
        if added is not None:
            for name, row in added.totals.items():
                for step, value in enumerate(row):  # zeros too: every row a write has
                    deltas += [f"{name}:{step}", repr(float(value))]
        now = time.time()
        totals, residuals, kept = self._score_keys(first.model, first.version,
                                                   stream_key(first.model, first.stream))
        keys = [totals, residuals]
        arguments: list[Any] = [len(writes), self._flags,
                                b"" if added is None else self._residual_entry(added, now),
                                repr(now), kept, len(deltas) // 2, *deltas]
        for record, expected in writes:
            keys += [stream_key(record.model, record.stream), _seen(record.model, record.stream)]
            arguments += self._arguments(record, expected)
        return keys, arguments

    def _run_scripts(self, calls: Sequence[ScriptCall]) -> list[list[Any]]:
        """Run the script once per call, in one round trip; each call's failing items
        (1-based)."""
        replies = self._send([("EVALSHA", CAS_SHA, len(keys), *keys, *arguments)
                              for keys, arguments in calls], [keys[2] for keys, _ in calls])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [list(reply) for reply in replies]

    def _send(self, commands: Sequence[tuple[Any, ...]], keys: Sequence[str]) -> list[Any]:
        """Replies (errors as values) of write commands, each on the key in ``keys``."""
        return self._send_on(self.client, commands)

    def _send_on(self, client: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Replies of write commands sent in one pipeline through one connection of
        ``client``, with ``WAIT`` after them. A server that lost the script (restarted)
        gets it again."""
        replies = self._pipelined(client, commands)
        missing = [i for i, reply in enumerate(replies)
                   if isinstance(reply, self._redis.exceptions.NoScriptError)]
        if missing:
            client.script_load(CAS)
            for i, reply in zip(missing, self._pipelined(client, [commands[i]
                                                                  for i in missing]),
                                strict=True):
                replies[i] = reply
        return replies

    def _pipelined(self, client: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        pipeline = client.pipeline(transaction=False)
        for command in commands:
            pipeline.execute_command(*command)
        if self.address.wait:  # same connection: WAIT counts the acks of these writes
            pipeline.execute_command("WAIT", self.address.wait, self.address.wait_timeout_ms)
        replies = list(pipeline.execute(raise_on_error=False))
        if self.address.wait:
            self._check_wait(replies.pop())
        return replies

    def _check_wait(self, reply: Any) -> None:
        """Raise :class:`ReplicationUnconfirmed` unless ``WAIT`` counted enough replicas."""
        if isinstance(reply, Exception):
            raise reply
        if int(reply) < self.address.wait:
            raise ReplicationUnconfirmed(
                f"the write is on the Redis master, but {reply} of {self.address.wait} "
                f"replicas acknowledged it within {self.address.wait_timeout_ms} ms; "
                "retrying the call is safe")

    def accuracy(self, model: str, version: str) -> tuple[float | None, Totals]:
        fields = self._call("accuracy",
                            lambda: self.client.hgetall(_accuracy_key(model, version)))
        return read_totals([fields])

    def residuals(self, model: str, version: str) -> list[bytes]:
        return list(self._call("residuals", lambda: self.client.lrange(
            _residuals_key(model, version), 0, -1)))

    def delete(self, model: str, stream: str) -> bool:
        key = stream_key(model, stream)

        def remove() -> Any:
            reply = self._send([("DEL", key, _seen(model, stream))], [key])[0]
            if isinstance(reply, Exception):
                raise reply
            return reply

        return bool(self._call("delete", remove))

    def scan(self, model: str | None = None) -> Iterator[StreamRecord]:
        pattern = f"{_PREFIX}{{{model}/*}}" if model is not None else f"{_PREFIX}{{*}}"
        keys = self._call("scan", lambda: list(self.client.scan_iter(match=pattern,
                                                                     count=1000)))
        for key in keys:
            name = key.decode()[len(_PREFIX) + 1:-1]
            key_model, _, stream = name.partition("/")
            fields = self._call("scan", lambda key=key: self.client.hgetall(key))
            if fields:
                yield _record(key_model, stream, fields)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
