"""The ``redis`` store (``redis://host:port/db``): state shared by several machines or
replicas, on an existing, trusted server.

One hash per stream under a key hash-tagged by stream (``statecast:{model/stream}``), so a
Redis Cluster keeps every stream's fields in one slot. Compare-and-set is a Lua script:
atomic in Redis, a write happens whole or not at all. States are little-endian float32
bytes. Batch reads are pipelined (one round trip). Connection errors and timeouts become
:class:`StoreError` (503). Durability is the server's: run it with AOF on.

Idle streams (``ttl``) are expired by Redis itself: every write of a live stream sets the
key's time to live, so Redis frees an idle stream whether or not a statecast worker runs.
The key's "seen" marker (same hash tag) outlives it and holds the stream's version, origin
and step: a stream Redis expired reads back as a tombstone (``410 stream_expired`` until a
reset), as in the other stores: by default for ever (a marker is ~100 bytes), or for
``tombstone_ttl`` seconds after which the stream is forgotten entirely.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from statecast.service.errors import StoreError
from statecast.service.stores.base import StateStore, StreamRecord, decode_array, encode_array

_PREFIX = "statecast:"
_SEEN = "statecast-seen:"
#: KEYS: the stream's hash, its "seen" marker. ARGV: expected revision ('' or '-1': the
#: key must not exist), the key's time to live in ms ('' for none), the marker's ('' for
#: none), the marker's value, '1' when the store expires idle streams (else the last three
#: are unused), then the hash's fields and values.
_CAS = """
local current = redis.call('HGET', KEYS[1], 'revision')
if ARGV[1] == '' or ARGV[1] == '-1' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
if ARGV[5] == '1' then
  if ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2])
  else redis.call('PERSIST', KEYS[1]) end
  if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
  else redis.call('SET', KEYS[2], ARGV[4]) end
end
return 1
"""
#: Revision of a tombstone read back from a marker (its key is gone): a reset creates the
#: stream anew.
MARKER_REVISION = -1
_SEPARATOR = "\x1f"


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
                        expired=text("expired") == "1")


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
        tail_rows = int(record.tail.shape[0]) if record.tail.ndim == 2 else 0
        expected = "" if expected_revision is None else str(expected_revision)
        # A live stream's key lives ttl; a tombstone's as long as its marker.
        ttl = self._tombstone_ms if record.expired else self._ttl_ms
        marker_ms = (str(int(self._tombstone_ms) + int(self._ttl_ms))
                     if self._tombstone_ms and self._ttl_ms else "")
        return [expected, ttl, marker_ms, _marker(record), "1" if self.expires_idle else "",
                "version", record.version,
                "origin", record.origin, "step", record.step, "revision", record.revision,
                "state", encode_array(record.state),
                "tail", encode_array(record.tail), "tail_rows", tail_rows,
                "created_at", repr(record.created_at), "updated_at", repr(record.updated_at),
                "expired", int(record.expired)]

    def _write(self, record: StreamRecord, expected_revision: int | None,
               client: Any = None) -> Any:
        """Run the compare-and-set script (on ``client``: a pipeline; default the store's)."""
        return self._cas([_key(record.model, record.stream), _seen(record.model, record.stream)],
                         self._arguments(record, expected_revision), client=client)

    def compare_and_set(self, record: StreamRecord, expected_revision: int | None) -> bool:
        return bool(self._call("compare_and_set", self._write, record, expected_revision))

    def compare_and_set_many(self, writes: Sequence[tuple[StreamRecord, int | None]]
                             ) -> list[bool]:
        """The scripts of all writes in one pipelined round trip (each atomic alone)."""
        if len(writes) < 2:
            return super().compare_and_set_many(writes)

        def run() -> list[Any]:
            pipeline = self.client.pipeline(transaction=False)
            for record, expected in writes:
                self._write(record, expected, pipeline)
            return list(pipeline.execute())

        return [bool(result) for result in self._call("compare_and_set_many", run)]

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
