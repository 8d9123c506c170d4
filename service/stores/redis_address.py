"""A redis store's address: ``redis://host:port/db`` (also ``rediss://``, ``unix://``) or
``redis+cluster://host:port`` (``rediss+cluster://``: TLS) for a Redis Cluster, any node of
it, and statecast's own query options:

- ``wait=N``: after each write, Redis's ``WAIT N`` — the write is acknowledged only once N
  replicas of its master have it (else ``503 replication_unconfirmed``); 0, the default,
  waits for none;
- ``wait_timeout_ms=T``: how long ``WAIT`` waits for them (default 100).

Other query options go to redis-py as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from statecast.service.errors import InvalidStoreUrl

SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
DEFAULT_WAIT_TIMEOUT_MS = 100


@dataclass(frozen=True)
class RedisAddress:
    """What redis-py connects to (``url``, statecast's options removed), whether it is a
    Redis Cluster, and the replicas each write waits for (``wait``, within
    ``wait_timeout_ms``)."""

    url: str
    cluster: bool = False
    wait: int = 0
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS


def _count(address: str, name: str, value: str, least: int) -> int:
    if not value.isdigit() or int(value) < least:
        raise InvalidStoreUrl(f"store {address!r}: {name} must be an integer >= {least}")
    return int(value)


def parse_redis_address(address: str) -> RedisAddress:
    """The parts of a redis store address; :class:`InvalidStoreUrl` when it is not one."""
    parts = urlsplit(address)
    cluster = parts.scheme in CLUSTER_SCHEMES
    if not cluster and parts.scheme not in SCHEMES:
        raise InvalidStoreUrl(f"store {address!r} is not a redis:// or redis+cluster:// "
                              "address")
    if cluster and parts.path not in ("", "/", "/0"):
        raise InvalidStoreUrl(f"store {address!r}: a Redis Cluster has one database; use "
                              "redis+cluster://host:port")
    wait, timeout, rest = 0, DEFAULT_WAIT_TIMEOUT_MS, []
    options = parse_qsl(parts.query, keep_blank_values=True)
    for name, value in options:
        if name == "wait":
            wait = _count(address, name, value, 0)
        elif name == "wait_timeout_ms":
            timeout = _count(address, name, value, 1)  # WAIT's 0 would block for ever
        else:
            rest.append((name, value))
    if not cluster and len(rest) == len(options):
        return RedisAddress(address)  # as given, to the letter
    scheme = CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    path = "" if cluster else parts.path
    url = urlunsplit((scheme, parts.netloc, path, urlencode(rest, quote_via=quote),
                      parts.fragment))
    if scheme == "unix" and not parts.netloc:
        url = url.replace("unix:", "unix://", 1)
    return RedisAddress(url, cluster, wait, timeout)
