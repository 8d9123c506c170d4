"""State stores behind one interface, addressed by one syntax everywhere:
``memory``, ``sqlite:PATH``, ``redis://host:port/db`` or, for a Redis Cluster,
``redis+cluster://host:port`` (any node); redis addresses take options
(:mod:`.redis_address`)."""

from __future__ import annotations

from statecast.service.errors import InvalidStoreUrl
from statecast.service.stores.base import StateStore, StreamRecord
from statecast.service.stores.memory import MemoryStore
from statecast.service.stores.sqlite import SqliteStore


def open_store(url: str, ttl: float | None = None, tombstone_ttl: float | None = None
               ) -> StateStore:
    """Open the store an address names; raise :class:`InvalidStoreUrl` naming the forms.

    ``ttl``/``tombstone_ttl`` (seconds) let a store that can expire keys itself (Redis) do
    so; the others leave idle streams to the service."""
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:") and len(url) > len("sqlite:"):
        return SqliteStore(url[len("sqlite:"):])
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from statecast.service.stores.redis_cluster import RedisClusterStore

        return RedisClusterStore(url, ttl=ttl, tombstone_ttl=tombstone_ttl)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from statecast.service.stores.redis import RedisStore

        return RedisStore(url, ttl=ttl, tombstone_ttl=tombstone_ttl)
    raise InvalidStoreUrl(f"unknown store {url!r}: use memory, sqlite:PATH, "
                          "redis://host:port/db or redis+cluster://host:port")


__all__ = ["MemoryStore", "SqliteStore", "StateStore", "StreamRecord", "open_store"]
