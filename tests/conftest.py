"""Shared fixtures: a real Redis server and a real Redis Cluster, each for the whole run."""

import pytest

from tests.redis_server import RedisCluster, RedisServer


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


@pytest.fixture(scope="session")
def redis_cluster():
    cluster = RedisCluster()
    cluster.start()
    yield cluster
    cluster.cleanup()


@pytest.fixture()
def redis_cluster_url(redis_cluster):
    """A ``redis+cluster://`` address of a cluster whose masters are all empty."""
    redis_cluster.flush()
    return redis_cluster.url
