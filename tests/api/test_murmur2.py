"""murmur2 matches Kafka's Java client, and librdkafka's murmur2_random partitioner."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from api.murmur2 import murmur2, partition_for
from tests.conftest import KafkaEndpoint

# From Kafka's UtilsTest.testMurmur2.
VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), VECTORS.items())
def test_java_vectors(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@pytest.mark.integration
def test_same_partition_as_librdkafka(kafka: KafkaEndpoint) -> None:
    topic = kafka.topic("murmur", partitions=12)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "partitioner": "murmur2_random"})
    placed: dict[str, int] = {}

    def report(err: object, msg: object) -> None:
        assert err is None
        placed[msg.key().decode()] = msg.partition()  # type: ignore[attr-defined]

    codes = [f"{i:06d}" for i in range(0, 999_999, 7919)] + ["000001", "600519", "920001"]
    for code in codes:
        producer.produce(topic, b"x", key=code.encode(), on_delivery=report)
    assert producer.flush(30) == 0
    assert len(placed) == len(codes)
    assert {c: partition_for(c.encode(), 12) for c in codes} == placed
    assert len(set(placed.values())) == 12
