"""Fixtures for real Kafka and Redis.

Where they come from, in order:

1. ``HQ_KAFKA_BOOTSTRAP`` / ``HQ_REDIS_URL`` when set (an existing cluster);
2. testcontainers, when a Docker engine answers;
3. the local runner (``hqstream.local_runner``): a real Apache Kafka broker
   from Maven Central on Java 17, and Debian's redis-server.

They are session-scoped; each test gets its own uuid topic names and consumer
group (``kafka.topic()``, ``kafka.group()``) and its own Redis database
(``redis_url``). If no broker can be had the fixture fails: integration tests
never skip silently.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from hqstream.local_runner import LocalKafka, LocalRedis, LocalStack


def _docker_engine_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@dataclass
class KafkaEndpoint:
    """A reachable broker, plus helpers that keep tests apart."""

    bootstrap: str
    broker: LocalKafka | None = None  # set when we own the process (fault tests)
    created: list[str] = field(default_factory=list)

    def topic(self, prefix: str = "t", partitions: int = 3, **configs: str) -> str:
        """Create a fresh topic named ``<prefix>.<uuid>`` and return its name."""
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        self.create(name, partitions, **configs)
        return name

    def create(self, name: str, partitions: int = 3, **configs: str) -> str:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        fut = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs)]
        )[name]
        fut.result(timeout=30)
        self.created.append(name)
        return name

    @staticmethod
    def group(prefix: str = "g") -> str:
        return f"{prefix}.{uuid.uuid4().hex[:12]}"


@dataclass
class RedisEndpoint:
    """A reachable Redis server; ``next_url()`` hands out a clean database."""

    base_url: str  # redis://host:port
    _dbs: Iterator[int] | None = None

    def next_url(self) -> str:
        import redis

        if self._dbs is None:
            # Start at a per-process offset so concurrent pytest runs sharing one
            # server (HQ_REDIS_URL) do not flush each other's databases.
            probe = redis.Redis.from_url(f"{self.base_url}/0")
            try:
                count = int(probe.config_get("databases").get("databases", 16))
            finally:
                probe.close()
            start = 1 + (os.getpid() * 37) % max(1, count - 1)
            self._dbs = (1 + (start + i) % (count - 1) for i in itertools.count())
        db = next(self._dbs)
        url = f"{self.base_url}/{db}"
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()
        return url


@pytest.fixture(scope="session")
def _local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack | None]:
    if os.environ.get("HQ_KAFKA_BOOTSTRAP") and os.environ.get("HQ_REDIS_URL"):
        yield None
        return
    stack = LocalStack(Path(tmp_path_factory.mktemp("hqstack")))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def kafka(_local_stack: LocalStack | None) -> Iterator[KafkaEndpoint]:
    env = os.environ.get("HQ_KAFKA_BOOTSTRAP")
    if env:
        yield KafkaEndpoint(env)
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

        # the workers' 3 s session timeout is below Kafka's default 6 s floor
        container = KafkaContainer().with_kraft()
        container.with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "3000")
        with container:
            yield KafkaEndpoint(container.get_bootstrap_server())
        return
    assert _local_stack is not None
    _local_stack.kafka.start()
    yield KafkaEndpoint(_local_stack.kafka.bootstrap, broker=_local_stack.kafka)


@pytest.fixture(scope="session")
def redis_server(_local_stack: LocalStack | None) -> Iterator[RedisEndpoint]:
    env = os.environ.get("HQ_REDIS_URL")
    if env:
        base = env.rsplit("/", 1)[0] if env.count("/") > 2 else env
        yield RedisEndpoint(base)
        return
    if _docker_engine_answers():
        from testcontainers.redis import RedisContainer  # type: ignore[import-untyped]

        with RedisContainer() as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield RedisEndpoint(f"redis://{host}:{port}")
        return
    assert _local_stack is not None
    _local_stack.redis.start()
    yield RedisEndpoint(f"redis://127.0.0.1:{_local_stack.redis.port}")


@pytest.fixture
def redis_url(redis_server: RedisEndpoint) -> str:
    """A Redis URL with a database of its own, flushed before the test."""
    return redis_server.next_url()


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test's own, for fault tests that pause or kill it."""
    broker = LocalKafka(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        with contextlib.suppress(Exception):
            broker.resume()
        broker.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A redis-server of this test's own, for fault tests that stop it."""
    server = LocalRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
