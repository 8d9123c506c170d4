"""The ``redis`` store (``redis://host:port/db``): state shared by several machines or
replicas, on an existing, trusted server.

One hash per stream under a key hash-tagged by stream (``statecast:{model/stream}``), so a
Redis Cluster keeps every stream's fields in one slot. Compare-and-set is a Lua script:
atomic in Redis, a write happens whole or not at all. The writes of one call (one model
version) run in one script, all or nothing, with the scores they add to their version's
totals (``statecast-accuracy:{model/version}``) and residuals: a score is counted exactly
when its write lands. A Redis Cluster runs a script on one slot only, so there the writes
would have to be grouped by slot and the totals kept per slot. States are little-endian
float32 bytes. Batch reads are pipelined (one round trip). Connection errors and timeouts become
:class:`StoreError` (503). Durability is the server's: run it with AOF on.

Idle streams (``ttl``) are expired by Redis itself: every write of a live stream sets the
key's time to live, so Redis frees an idle stream whether or not a statecast worker runs.
The key's "seen" marker (same hash tag) outlives it and holds the stream's version, origin
and step: a stream Redis expired reads back as a tombstone (``410 stream_expired`` until a
reset), as in the other stores: by default for ever (a marker is ~100 bytes), or for
``tombstone_ttl`` seconds after which the stream is forgotten entirely.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from statecast.service.accuracy import RESIDUAL_WRITES, Scores, Totals, residual_chunk
from statecast.service.errors import StoreError
from statecast.service.scoring import WriteScores
from statecast.service.stores.base import StateStore, StreamRecord, decode_array, encode_array

_PREFIX = "statecast:"
_SEEN = "statecast-seen:"
_ACCURACY = "statecast-accuracy:"
_RESIDUALS = "statecast-residuals:"
#: Compare-and-set of several streams, all or nothing: when a stream's stored revision is
#: not the one expected, nothing is written and the failing items (1-based) are returned;
#: else every record is written, the writes' scores added to their model version's totals
#: (a hash: ``since``, ``<row>:<step index>``) and residual chunks (a list, trimmed), and
#: an empty list returned. KEYS: the totals, the residuals, then per item the stream's hash
#: and its "seen" marker. ARGV: items, '1' when the store expires idle streams, the
#: residual chunk ('' for none), the time, the number of total fields, then those fields
#: and values, then per item: expected revision ('' or '-1': the key must not exist), the
#: key's time to live in ms ('' for none), the marker's ('' for none), the marker's value,
#: the number of hash fields, those fields and values.
_CAS = """
local items = tonumber(ARGV[1])
local at = 6 + 2 * tonumber(ARGV[5])
local starts, failed, claimed = {}, {}, {}
for i = 1, items do
  starts[i] = at
  local key = KEYS[1 + 2 * i]
  local current = redis.call('HGET', key, 'revision')
  local expected = ARGV[at]
  if claimed[key] then  -- a stream written twice: the second write finds the first's
    failed[#failed + 1] = i
  elseif expected == '' or expected == '-1' then
    if current then failed[#failed + 1] = i end
  elseif current ~= expected then
    failed[#failed + 1] = i
  end
  claimed[key] = true
  at = at + 5 + 2 * tonumber(ARGV[at + 4])
end
if #failed > 0 then return failed end
for i = 1, items do
  local a = starts[i]
  local key, seen = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  redis.call('HSET', key, unpack(ARGV, a + 5, a + 4 + 2 * tonumber(ARGV[a + 4])))
  if ARGV[2] == '1' then
    if ARGV[a + 1] ~= '' then redis.call('PEXPIRE', key, ARGV[a + 1])
    else redis.call('PERSIST', key) end
    if ARGV[a + 2] ~= '' then redis.call('SET', seen, ARGV[a + 3], 'PX', ARGV[a + 2])
    else redis.call('SET', seen, ARGV[a + 3]) end
  end
end
if tonumber(ARGV[5]) > 0 then
  redis.call('HSETNX', KEYS[1], 'since', ARGV[4])
  for j = 6, 5 + 2 * tonumber(ARGV[5]), 2 do
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[j], ARGV[j + 1])
  end
end
if ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  redis.call('LTRIM', KEYS[2], -RESIDUAL_WRITES, -1)
end
return {}
""".replace("RESIDUAL_WRITES", str(RESIDUAL_WRITES))
#: Revision of a tombstone read back from a marker (its key is gone): a reset creates the
#: stream anew.
MARKER_REVISION = -1
_SEPARATOR = "\x1f"


def _accuracy_key(model: str, version: str) -> str:
    return f"{_ACCURACY}{{{model}/{version}}}"


def _residuals_key(model: str, version: str) -> str:
    return f"{_RESIDUALS}{{{model}/{version}}}"


def _key(model: str, stream: str) -> str:
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


class RedisStore(StateStore):
    """Streams in Redis hashes (``redis://host:port/db``)."""

    def __init__(self, url: str, timeout: float = 5.0, ttl: float | None = None,
                 tombstone_ttl: float | None = None) -> None:
        try:
            import redis
        except ImportError:
            raise StoreError("the redis store needs: pip install 'statecast[redis]'") from None
        self._errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout,
                                           health_check_interval=30)
        self._cas = self.client.register_script(_CAS)
        self.url = url
        self.expires_idle = ttl is not None
        self._ttl_ms = "" if ttl is None else str(max(1, round(ttl * 1000)))
        self._tombstone_ms = ("" if tombstone_ttl is None else
                              str(max(1, round(tombstone_ttl * 1000))))

    def _call(self, what: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except self._errors as error:
            raise StoreError(f"redis store {self.url}: {what}: {error}") from None

    def _read(self, model: str, stream: str, fields: dict[bytes, bytes],
              marker: bytes | None) -> StreamRecord | None:
        if fields:
            return _record(model, stream, fields)
        return _tombstone(model, stream, marker) if marker else None

    def get(self, model: str, stream: str) -> StreamRecord | None:
        if self.expires_idle:  # the marker too: one pipelined round trip
            return self.get_many(model, [stream])[0]
        fields = self._call("get", self.client.hgetall, _key(model, stream))
        return _record(model, stream, fields) if fields else None

    def get_many(self, model: str, streams: Sequence[str]) -> list[StreamRecord | None]:
        def fetch() -> list[Any]:
            pipeline = self.client.pipeline(transaction=False)
            for stream in streams:
                pipeline.hgetall(_key(model, stream))
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
        """All writes of one model version in one script, all or nothing: when some fail,
        the script runs again without them (their scores are then not added)."""
        if len({(record.model, record.version) for record, _ in writes}) > 1:
            return super().compare_and_set_many(writes, scores)
        results = [True] * len(writes)
        pending = list(range(len(writes)))
        while pending:
            added = None if scores is None else scores.select(results)
            failed = self._call("compare_and_set", self._write_all,
                                [writes[i] for i in pending], added)
            if not failed:
                break
            for position in failed:
                results[pending[int(position) - 1]] = False
            pending = [i for i in pending if results[i]]
        return results

    def _write_all(self, writes: Sequence[tuple[StreamRecord, int | None]],
                   added: Scores | None) -> list[Any]:
        """Run the script on writes of one model version adding what they scored (all or
        nothing); the failing items (1-based)."""
        model, version = writes[0][0].model, writes[0][0].version
        deltas: list[Any] = []
        if added is not None:
            for name, row in added.totals.items():
                for step, value in enumerate(row):  # zeros too: every row a write has
                    deltas += [f"{name}:{step}", repr(float(value))]
        keys = [_accuracy_key(model, version), _residuals_key(model, version)]
        arguments: list[Any] = [len(writes), "1" if self.expires_idle else "",
                                b"" if added is None else residual_chunk(added),
                                repr(time.time()), len(deltas) // 2, *deltas]
        for record, expected in writes:
            keys += [_key(record.model, record.stream), _seen(record.model, record.stream)]
            arguments += self._arguments(record, expected)
        return list(self._cas(keys, arguments))

    def accuracy(self, model: str, version: str) -> tuple[float | None, Totals]:
        fields = self._call("accuracy", self.client.hgetall, _accuracy_key(model, version))
        since = fields.pop(b"since", None)
        cells: dict[str, dict[int, float]] = {}
        for field, value in fields.items():
            name, _, step = field.decode().rpartition(":")
            cells.setdefault(name, {})[int(step)] = float(value)
        width = 1 + max((max(row) for row in cells.values()), default=-1)
        totals = {}
        for name, row in cells.items():
            totals[name] = np.zeros(width)
            for step, value in row.items():
                totals[name][step] = value
        return (None if since is None else float(since)), totals

    def residuals(self, model: str, version: str) -> list[bytes]:
        return list(self._call("residuals", self.client.lrange,
                               _residuals_key(model, version), 0, -1))

    def delete(self, model: str, stream: str) -> bool:
        removed = self._call("delete", self.client.delete, _key(model, stream),
                             _seen(model, stream))
        return bool(removed)

    def scan(self, model: str | None = None) -> Iterator[StreamRecord]:
        pattern = f"{_PREFIX}{{{model}/*}}" if model is not None else f"{_PREFIX}{{*}}"
        keys = self._call("scan", lambda: list(self.client.scan_iter(match=pattern,
                                                                     count=1000)))
        for key in keys:
            name = key.decode()[len(_PREFIX) + 1:-1]
            key_model, _, stream = name.partition("/")
            fields = self._call("scan", self.client.hgetall, key)
            if fields:
                yield _record(key_model, stream, fields)

    def close(self) -> None:
        self.client.close()
