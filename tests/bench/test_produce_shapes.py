"""``hqstream bench produce-shapes``: its feed shape, and each way delivering every record."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from hqstream.bench.produce_shapes import SLICE_S, WAYS, run_way, slices
from tests.conftest import KafkaEndpoint


def test_the_rate_is_spread_evenly_over_5_ms_slices() -> None:
    counts = slices(1667, 3.0)
    assert len(counts) == round(3.0 / SLICE_S)
    assert sum(counts) in (5000, 5001)  # 1,667 a second, carried over between slices
    assert max(counts) - min(counts) <= 1


@pytest.mark.parametrize("way", WAYS)
def test_every_way_delivers_every_record_keyed_by_code(kafka: KafkaEndpoint, way: str) -> None:
    topic = kafka.topic(way, partitions=12)
    sent, acked = run_way(way, kafka.bootstrap, topic, slices(2000, 0.25))
    assert sent == acked == 500
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": kafka.group(way),
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    got = []
    try:
        for _ in range(60):  # 30 s at most
            got += [m for m in consumer.consume(500, 0.5) if not m.error()]
            if len(got) >= sent:
                break
    finally:
        consumer.close()
    assert len(got) == sent
    assert all((m.value() or b"").startswith(b"sh" + (m.key() or b"") + b"$") for m in got)
