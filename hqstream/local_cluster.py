"""A real Redis Cluster on loopback: 3 masters and 3 replicas of Debian's redis-server.

Used by ``hqstream up --redis-cluster``, the test fixtures (the Redis-touching
integration tests run against it as well as against one server) and the
``redis-master-kill`` row of ``hqstream bench faults``. Each node is a
:class:`~hqstream.local_runner.LocalRedis` started with ``--cluster-enabled
yes``; ``redis-cli --cluster create ... --cluster-replicas 1`` assigns the
slots. ``cluster-node-timeout`` is lowered to :data:`NODE_TIMEOUT_MS` so a
killed master's replica is promoted within seconds (production keeps Redis's
15 s default, see docs/deploy.md). Never touches anything but its own processes.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis

from hqstream.local_runner import LocalRedis, LocalRunnerError, free_port

logger = logging.getLogger(__name__)

#: how long a master may be silent before its replica takes over (Redis's default: 15000)
NODE_TIMEOUT_MS: Final = 2000


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:  # free_port() may hand the same port out twice
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class LocalRedisCluster:
    """``masters`` masters with ``replicas`` replicas each, all on 127.0.0.1."""

    run_dir: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = NODE_TIMEOUT_MS
    nice: int = 0  # the nodes' CPU priority below the caller's (local_runner.REDIS_NICE)
    nodes: list[LocalRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def port(self) -> int:
        return self.nodes[0].port if self.nodes else 0

    def start(self, timeout: float = 60.0) -> None:
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        if not Path(cli).exists():
            raise LocalRunnerError("redis-cli not found: run `make setup` (Debian's redis-tools)")
        count = self.masters * (1 + self.replicas)
        ports = _free_ports(2 * count)
        self.nodes = [
            LocalRedis(
                self.run_dir,
                port=ports[2 * i],
                name=f"redis-cluster/{ports[2 * i]}",
                options=self._node_options(ports[2 * i + 1]),
                nice=self.nice,
            )
            for i in range(count)
        ]
        for node in self.nodes:
            shutil.rmtree(self.run_dir / node.name, ignore_errors=True)
        try:
            for node in self.nodes:
                node.start()
            seeds = [f"127.0.0.1:{n.port}" for n in self.nodes]
            replicas = ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            create = subprocess.run(
                [cli, "--cluster", "create", *seeds, *replicas],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if create.returncode != 0:
                raise LocalRunnerError(f"redis-cli --cluster create failed: {create.stdout}")
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        logger.info("redis cluster ready on %s", self.url)

    def _node_options(self, bus_port: int) -> tuple[str, ...]:
        return ("--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-replica-validity-factor", "0")  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until :meth:`ready`."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise LocalRunnerError(f"redis cluster not ready within {timeout:.0f}s")
            time.sleep(0.2)

    def ready(self) -> bool:
        """Every running node sees the whole cluster ``ok``, and every replica has synced
        with its master (a master killed before that would take its data along)."""
        running = [n for n in self.nodes if n.proc is not None]
        for node in running:
            try:
                with self._node_client(node) as client:
                    info = client.execute_command("CLUSTER INFO")
                    replication = client.info("replication")
            except redis.RedisError:
                return False
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
            if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != 16384:
                return False
            if int(info["cluster_known_nodes"]) != len(self.nodes):
                return False
        return True

    def master_nodes(self) -> list[LocalRedis]:
        """The running nodes that are masters now (failovers move the role)."""
        masters = []
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                with self._node_client(node) as client:
                    role = client.execute_command("ROLE")[0]
            except redis.RedisError:
                continue
            if role in (b"master", "master"):
                masters.append(node)
        return masters

    def flush(self) -> None:
        """Delete every key (FLUSHALL on each master; the replicas follow)."""
        for node in self.master_nodes():
            with self._node_client(node) as client:
                client.flushall()

    def kill_master(self) -> LocalRedis:
        """SIGKILL one master (fault tests): its replica takes over after the node timeout."""
        node = self.master_nodes()[0]
        node.kill()
        return node

    def wait_promoted(self, timeout: float = 60.0) -> None:
        """Until a replica replaced every dead master and the cluster is ``ok`` again.

        Restart a killed master only after this: back before its replica took
        over, it would return as the (empty, no persistence) master of its
        slots and its replica would copy the emptiness.
        """
        deadline = time.monotonic() + timeout
        while len(self.master_nodes()) < self.masters or not self.ready():
            if time.monotonic() > deadline:
                raise LocalRunnerError(f"no replica promoted within {timeout:.0f}s")
            time.sleep(0.1)

    def restart(self, node: LocalRedis) -> None:
        """Start a killed node again on its port and data: it rejoins (as a replica)."""
        node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @staticmethod
    def _node_client(node: LocalRedis) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=2, socket_connect_timeout=2)

    def __enter__(self) -> LocalRedisCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
