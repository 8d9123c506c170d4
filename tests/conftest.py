"""Shared fixtures: a real Redis server for the whole run."""

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture()
def redis_url(redis_server):
    """A Redis URL on an empty database."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    return redis_server.url
