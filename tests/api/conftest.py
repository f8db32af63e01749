"""Gateway fixtures: settings on a per-test Redis DB and uuid topics, TestClient apps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import GatewaySettings
from hqcore.redis_client import sync_client
from schemas import topics
from tests.conftest import KafkaEndpoint


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client: Any = sync_client(redis_url)  # a RedisCluster under ON_BOTH_REDIS
    yield client
    client.close()


@pytest.fixture
def rest_settings(redis_url: str) -> GatewaySettings:
    """Settings for REST tests: real Redis, Kafka not consumed, no keys (auth off)."""
    return GatewaySettings(
        auth="off",
        redis_url=redis_url,
        kafka_bootstrap="127.0.0.1:1",
        producer_metrics_url="http://127.0.0.1:1/metrics",
    )


@pytest.fixture
def client(rest_settings: GatewaySettings) -> Iterator[TestClient]:
    with TestClient(create_app(rest_settings, consume=False)) as c:
        yield c


def push_settings(kafka: KafkaEndpoint, redis_url: str, **over: object) -> GatewaySettings:
    """Settings on uuid-prefixed topics (created here) of the shared broker; auth off by default."""
    prefix = f"{KafkaEndpoint.group('gwt')}."
    for spec in topics.topic_specs(partitions=3):
        if spec.name in (topics.NORMALIZED, topics.MARKET_STATS, topics.ALERTS,
                         *topics.CANDLES.values(), topics.QUOTES_LATEST, topics.BARS_STATE,
                         topics.FEED_WINNERS):  # fmt: skip
            kafka.create(prefix + spec.name, spec.partitions)
    over.setdefault("auth", "off")
    return GatewaySettings(
        kafka_bootstrap=kafka.bootstrap,
        redis_url=redis_url,
        topic_prefix=prefix,
        producer_metrics_url="http://127.0.0.1:1/metrics",
        **over,  # type: ignore[arg-type]
    )
