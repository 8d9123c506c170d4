"""Real Redis servers for the tests (never a mock): started on free local ports in temporary
folders, AOF on (``appendfsync everysec``, Redis's default), stopped at the end: one server,
or a Redis Cluster of three masters. ``make test`` installs redis-server when the machine
lacks it."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} is not installed: run the tests with `make test` (it "
                           "installs the Debian package) or apt-get install redis-server")
    return binary


class RedisServer:
    """``redis-server`` on 127.0.0.1:<free port>, AOF on, data in its own folder; ``options``
    are more command-line options (a cluster node's, a replica's)."""

    def __init__(self, options: tuple[str, ...] = (), port: int | None = None) -> None:
        self.binary = _binary("redis-server")
        self.folder = Path(tempfile.mkdtemp(prefix="statecast-redis-"))
        self.port = port or free_port()
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart: same port, same folder and files) and wait until it answers."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--appendonly", "yes", "--save", "", "--daemonize", "no",
             "--repl-diskless-sync-delay", "0",
             # As the README recommends: a stream's hash stays in the compact encoding.
             "--hash-max-listpack-value", "1024", *self.options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """SIGTERM (Redis shuts down cleanly), SIGKILL if that takes over 10 s."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last AOF flush; what reached the AOF file stays."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def wait_for_replicas(port: int, count: int, probe: str = "statecast-probe",
                      timeout: float = 20) -> None:
    """Until the master on ``port`` has ``count`` replicas online that acknowledge a write
    (``probe``: a key the master serves) at once: just after its first sync a replica
    answers ``WAIT`` late for a moment."""
    import redis

    client = redis.Redis(port=port)
    deadline = time.time() + timeout
    try:
        while True:
            info = client.info("replication")
            online = [value for name, value in info.items() if name.startswith("slave")
                      and isinstance(value, dict) and value.get("state") == "online"]
            if len(online) >= count:
                client.set(probe, 1)
                acknowledged = client.wait(count, 100)
                client.delete(probe)
                if acknowledged >= count:
                    return
            if time.time() > deadline:
                raise RuntimeError(f"no {count} replicas acknowledging on {port}: {info}")
            time.sleep(0.02)
    finally:
        client.close()


def start_replica(master: RedisServer) -> RedisServer:
    """A replica of a (plain) Redis server, started and in sync with it."""
    replica = RedisServer(("--replicaof", "127.0.0.1", str(master.port)))
    try:
        replica.start()
        wait_for_replicas(master.port, 1)
    except BaseException:
        replica.cleanup()
        raise
    return replica


class RedisCluster:
    """A Redis Cluster of three masters without replicas on free local ports, each node a
    :class:`RedisServer` (AOF on, ``nodes.conf`` in its folder, so a node restarted keeps its
    identity and slots), built with ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 5000) -> None:
        self.nodes = [RedisServer(("--cluster-enabled", "yes", "--cluster-config-file",
                                   "nodes.conf", "--cluster-node-timeout",
                                   str(node_timeout_ms)), port=free_cluster_port())
                      for _ in range(masters)]
        self.replicas: list[RedisServer] = []

    @property
    def url(self) -> str:
        """The store address: one node; the client discovers the rest."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        try:
            self._create()
        except BaseException:
            self.cleanup()
            raise

    def _create(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [_binary("redis-cli"), "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60)
        self.wait_until_ok()

    def wait_until_ok(self, timeout: float = 30) -> None:
        """Until every node reports ``cluster_state:ok`` and knows every other."""
        import redis

        deadline = time.time() + timeout
        for node in self.nodes + self.replicas:
            client = redis.Redis(port=node.port)
            try:
                while True:
                    info = client.execute_command("CLUSTER INFO")
                    if (info["cluster_state"] == "ok" and int(info["cluster_known_nodes"])
                            == len(self.nodes) + len(self.replicas)):
                        break
                    if time.time() > deadline:
                        raise RuntimeError(f"cluster not ok on {node.port}: {info}")
                    time.sleep(0.02)
            finally:
                client.close()

    def flush(self) -> None:
        """Empty every master."""
        import redis

        for node in self.nodes:
            client = redis.Redis(port=node.port)
            try:
                client.flushall()
            finally:
                client.close()

    def node_of(self, key: str) -> int:
        """Index of the node serving a key's slot."""
        import redis

        client = redis.Redis(port=self.nodes[0].port)
        try:
            slot = client.execute_command("CLUSTER KEYSLOT", key)
            for start, end, (_, port, *_), *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return next(i for i, n in enumerate(self.nodes) if n.port == port)
        finally:
            client.close()
        raise LookupError(key)

    def _client(self, index: int) -> Any:
        import redis

        return redis.Redis(port=self.nodes[index].port)

    def node_id(self, index: int) -> str:
        client = self._client(index)
        try:
            return str(client.execute_command("CLUSTER MYID").decode())
        finally:
            client.close()

    def add_replica(self, index: int) -> RedisServer:
        """A replica of master ``index``, joined to the cluster and in sync."""
        import redis

        replica = RedisServer(self.nodes[0].options, port=free_cluster_port())
        replica.start()
        self.replicas.append(replica)
        client = redis.Redis(port=replica.port)
        try:
            client.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
            master = self.node_id(index)
            deadline = time.time() + 20
            while True:  # REPLICATE needs the master known first
                try:
                    client.execute_command("CLUSTER REPLICATE", master)
                    break
                except redis.ResponseError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()
        wait_for_replicas(self.nodes[index].port, 1, self._key_on(index))
        self.wait_until_ok()
        return replica

    def _key_on(self, index: int) -> str:
        """A key master ``index`` serves."""
        number = 0
        while self.node_of(f"{{probe{number}}}") != index:
            number += 1
        return f"{{probe{number}}}"

    def move_slot(self, slot: int, source: int, target: int, finish: bool = True) -> None:
        """Reshard: move one slot's keys from master ``source`` to ``target``, then (with
        ``finish``) the slot itself; unfinished, the source answers ``ASK`` for them."""
        source_id, target_id = self.node_id(source), self.node_id(target)
        to, away = self._client(target), self._client(source)
        try:
            to.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            away.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            while keys := away.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                away.execute_command("MIGRATE", "127.0.0.1", self.nodes[target].port, "", 0,
                                     5000, "KEYS", *keys)
        finally:
            to.close()
            away.close()
        if finish:
            for index in range(len(self.nodes)):
                client = self._client(index)
                try:
                    client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
                finally:
                    client.close()

    def cleanup(self) -> None:
        for node in self.nodes + self.replicas:
            node.cleanup()
