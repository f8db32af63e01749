"""The gateway's status probes against a real broker."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from api.settings import GatewaySettings
from api.status import StatusProbe
from api.store import Store
from schemas import topics
from tests.conftest import KafkaEndpoint

pytestmark = pytest.mark.integration


async def test_streams_lag_is_read_from_the_groups_committed_offsets(
    kafka: KafkaEndpoint, redis_url: str
) -> None:
    """Committed offsets come from a consumer of the workers' group (never
    subscribing or committing); the admin API's OffsetFetch path can SIGSEGV the
    gateway on NOT_COORDINATOR (librdkafka#5040)."""
    prefix = f"{KafkaEndpoint.group('st')}."
    raw = kafka.create(prefix + topics.RAW, 2)
    group = KafkaEndpoint.group("workers")
    settings = GatewaySettings(
        kafka_bootstrap=kafka.bootstrap, redis_url=redis_url, topic_prefix=prefix,
        streams_group=group,
    )  # fmt: skip
    probe = StatusProbe(settings, Store(redis_url))
    try:
        # A fresh group's first lookups may be answered NOT_COORDINATOR: reported as
        # "lag unavailable" (the admin path crashed the process here), then settled.
        deadline = time.monotonic() + 60
        while "no committed offsets" not in (none := await probe.streams_lag()).detail:
            assert not none.ok and "lag unavailable" in none.detail, none
            assert time.monotonic() < deadline, none
            await asyncio.sleep(0.2)
        producer = Producer({"bootstrap.servers": kafka.bootstrap})
        for i in range(10):
            producer.produce(raw, b"x", partition=i % 2)
        assert producer.flush(10) == 0
        worker = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group})
        worker.commit(
            offsets=[TopicPartition(raw, 0, 4), TopicPartition(raw, 1, 5)], asynchronous=False
        )
        worker.close()
        while not (lag := await probe.streams_lag()).ok:
            assert time.monotonic() < deadline, lag
            await asyncio.sleep(0.2)
        assert lag.data == {"lag": 1, "partitions": 2}
    finally:
        probe.close()
        await probe.store.close()
