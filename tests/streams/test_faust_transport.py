"""The consumer's seek back after a rebalance, against a real broker.

faust drops what was fetched while a rebalance suspended the flow and seeks
the partitions back to their committed offsets, to fetch it again. aiokafka
seeks only partitions with a committed offset above 0, so on a partition
nothing was committed on yet the dropped records were never fetched again
and faust committed past them (a fault-suite run lost 161 ticks that way, at
the start of a fresh group). :func:`seek_to_committed_or_beginning` rewinds
those partitions to their beginning.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from confluent_kafka import Producer

from streams.faust_transport import (
    fetched_ahead,
    fetched_to_end_ms,
    seek_to_committed_or_beginning,
)
from tests.conftest import KafkaEndpoint

RECORDS = 10


@pytest.fixture
async def consumer(kafka: KafkaEndpoint) -> AsyncIterator[tuple[AIOKafkaConsumer, TopicPartition]]:
    topic = kafka.topic("seekback", partitions=1)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    for i in range(RECORDS):
        producer.produce(topic, f"record {i}".encode())
    assert producer.flush(30) == 0
    c = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=kafka.group("seekback"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await c.start()
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    try:
        yield c, tp
    finally:
        await c.stop()


async def fetch_all(c: AIOKafkaConsumer, tp: TopicPartition, n: int) -> list[int]:
    """The offsets of the next ``n`` records fetched (30 s at most)."""
    offsets: list[int] = []
    deadline = time.monotonic() + 30
    while len(offsets) < n:
        assert time.monotonic() < deadline, f"{len(offsets)} of {n} records fetched in 30 s"
        batch = await c.getmany(tp, timeout_ms=500)
        offsets.extend(r.offset for r in batch.get(tp, []))
    return offsets


async def test_a_partition_without_a_committed_offset_is_fetched_again_from_its_beginning(
    consumer: tuple[AIOKafkaConsumer, TopicPartition],
) -> None:
    c, tp = consumer
    assert await fetch_all(c, tp, RECORDS) == list(range(RECORDS))  # dropped by a rebalance

    await c.seek_to_committed()  # what faust calls: nothing committed, so no seek
    assert await c.position(tp) == RECORDS  # aiokafka would go on after the dropped records

    assert await seek_to_committed_or_beginning(c) == {tp: None}
    assert await c.position(tp) == 0
    assert await fetch_all(c, tp, RECORDS) == list(range(RECORDS))


async def test_a_partition_committed_at_zero_is_fetched_again_from_zero(
    consumer: tuple[AIOKafkaConsumer, TopicPartition],
) -> None:
    c, tp = consumer
    await fetch_all(c, tp, RECORDS)
    await c.commit({tp: OffsetAndMetadata(0, "")})

    await seek_to_committed_or_beginning(c)
    assert await c.position(tp) == 0


async def test_a_committed_partition_is_fetched_again_from_its_committed_offset(
    consumer: tuple[AIOKafkaConsumer, TopicPartition],
) -> None:
    c, tp = consumer
    await fetch_all(c, tp, RECORDS)
    await c.commit({tp: OffsetAndMetadata(4, "")})

    assert await seek_to_committed_or_beginning(c) == {tp: 4}
    assert await c.position(tp) == 4
    assert await fetch_all(c, tp, RECORDS - 4) == list(range(4, RECORDS))


async def test_fetched_to_end_is_the_time_of_the_answer_that_found_the_partition_read(
    consumer: tuple[AIOKafkaConsumer, TopicPartition],
) -> None:
    """What the candle clock asks before it calls a partition quiet (streams/pipeline.py)."""
    c, tp = consumer
    assert fetched_to_end_ms(c, tp.topic) == {0: 0}  # nothing fetched yet

    first = await c.getmany(tp, timeout_ms=10_000, max_records=3)
    assert len(first[tp]) == 3
    assert fetched_to_end_ms(c, tp.topic) == {0: 0}  # 7 records fetched, not handed over

    before_ms = int(time.time() * 1000)
    await fetch_all(c, tp, RECORDS - 3)
    deadline = time.monotonic() + 30
    while fetched_to_end_ms(c, tp.topic)[0] < before_ms:  # till the broker answers "nothing new"
        assert time.monotonic() < deadline, "no fetch answered within 30 s"
        assert await c.getmany(tp, timeout_ms=200) == {}
    assert fetched_to_end_ms(c, "another topic") == {}


async def test_fetched_ahead_while_a_fetch_s_records_wait_to_be_handed_over(
    consumer: tuple[AIOKafkaConsumer, TopicPartition],
) -> None:
    """What a batch asks before its rest may wait (streams/runtime.py, quotes first)."""
    c, tp = consumer
    assert not fetched_ahead(c, tp.topic)  # nothing fetched yet
    first = await c.getmany(tp, timeout_ms=10_000, max_records=3)
    assert len(first[tp]) == 3
    assert fetched_ahead(c, tp.topic)  # 7 records fetched, not handed over
    assert not fetched_ahead(c, "another topic")
    await fetch_all(c, tp, RECORDS - 3)
    assert not fetched_ahead(c, tp.topic)
