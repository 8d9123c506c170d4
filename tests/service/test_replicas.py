"""Two servers (several workers each) sharing one Redis, or one Redis Cluster: concurrent
clients spread over both, a worker killed with SIGKILL, a whole server killed and restarted,
Redis restarted once (AOF on) — on the cluster one master killed with SIGKILL and restarted
on its AOF. Afterwards every stream consumed exactly what was sent and holds the state an
offline replay computes."""

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from statecast.models import Registry
from statecast.service.bundled import seed_registry
from statecast.service.stores import open_store
from statecast.service.stores.redis import stream_key
from tests.redis_server import RedisCluster, RedisServer
from tests.service.test_server import (
    STREAMS,
    Server,
    assert_replayed,
    assert_served_steps,
    children,
    client,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.slow


def serve_through_faults(tmp_path: Path, store: str, outage: Callable[[], None]) -> Path:
    """Two servers on ``store`` under four clients, through a worker killed, a server
    killed and restarted and the store's ``outage``; the shared registry."""
    registry = tmp_path / "registry"
    seed_registry(Registry(registry))  # one registry folder shared by both servers
    servers = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        (root / "registry").symlink_to(registry)
        servers.append(Server(root, free_port(), store=store))
    answered: list[int] = []
    failures: list[str] = []
    try:
        for server in servers:
            server.start()
        ports = [server.port for server in servers]
        clients = [threading.Thread(target=client, args=(ports, answered, failures))
                   for _ in range(4)]
        for thread in clients:
            thread.start()
        wait_for(answered, 25)
        os.kill(children(servers[0].process.pid)[0], signal.SIGKILL)  # a worker of A
        wait_for(answered, 60)
        servers[1].kill()  # all of B ...
        time.sleep(0.3)
        servers[1].start()  # ... and B again
        wait_for(answered, 100)
        outage()  # calls answer 503 meanwhile, clients retry
        for thread in clients:
            thread.join(timeout=180)
        assert not failures, failures
        assert_served_steps(ports[0])
    finally:
        for server in servers:
            if server.process is not None and server.process.poll() is None:
                server.stop()
    return registry


def serve_and_replay(tmp_path, url, fault):
    """Serve through ``fault`` on the store at ``url``, then check that every acknowledged
    update is in it, once."""
    registry = serve_through_faults(tmp_path, url, fault)
    store = open_store(url)
    try:
        assert_replayed(store, registry)
    finally:
        store.close()


def test_replicas_on_one_redis_lose_and_double_nothing(tmp_path):
    redis = RedisServer()
    redis.start()

    def restart() -> None:
        redis.stop()  # Redis goes away ...
        time.sleep(0.5)
        redis.start()  # ... and comes back on its AOF file

    try:
        serve_and_replay(tmp_path, redis.url, restart)
    finally:
        redis.cleanup()


def test_replicas_on_a_redis_cluster_lose_and_double_nothing(tmp_path):
    cluster = RedisCluster()
    cluster.start()
    masters = [cluster.node_of(stream_key("sunspots", stream)) for stream in STREAMS]
    assert sorted(masters) == [0, 1, 2]  # one stream on each master

    def kill_a_master() -> None:
        master = cluster.nodes[masters[0]]
        master.kill()  # SIGKILL: no shutdown ...
        time.sleep(0.5)
        master.start()  # ... and back on its AOF file and nodes.conf

    try:
        serve_and_replay(tmp_path, cluster.url, kill_a_master)
    finally:
        cluster.cleanup()
