"""The workers' Kafka outboxes against a real broker: where records land, and what a flush means."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiokafka.codec import lz4_encode
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.memory_records import MemoryRecords
from confluent_kafka import Consumer, Message

from streams.outbox import BatchOutbox, ConfluentOutbox, KafkaOutputError, lz4_fast
from tests.conftest import KafkaEndpoint

CODES = [f"{code:06d}".encode() for code in range(600000, 600500)]


def _consume(kafka: KafkaEndpoint, topic: str, count: int) -> list[Message]:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": kafka.group("c"),
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    got: list[Message] = []
    try:
        for _ in range(120):  # 60 s at most
            got += [m for m in consumer.consume(count, 0.5) if not m.error()]
            if len(got) >= count:
                break
    finally:
        consumer.close()
    return got


async def test_a_flush_delivers_every_record_on_the_partition_librdkafka_chooses(
    kafka: KafkaEndpoint,
) -> None:
    ours, theirs = kafka.topic("batch", partitions=12), kafka.topic("confluent", partitions=12)
    batch, confluent = (
        BatchOutbox(bootstrap_servers=kafka.bootstrap),
        ConfluentOutbox(kafka.bootstrap),
    )
    try:
        for flush in range(3):  # three batches, as a worker flushes them
            for code in CODES:
                headers = [("flush", str(flush)), ("raw", b"\x00\xff")]
                value = b"%d:%s" % (flush, code)
                await batch.send(ours, code, value, headers)
                await confluent.send(theirs, code, value, headers)
            await asyncio.gather(batch.flush(), confluent.flush())
        await batch.send(ours, None, b"no key", None)  # a dead letter without a key
        await batch.flush()
    finally:
        await batch.close()
        await confluent.close()

    got = _consume(kafka, ours, 3 * len(CODES) + 1)
    reference = _consume(kafka, theirs, 3 * len(CODES))
    assert len(got) == 3 * len(CODES) + 1
    assert Counter(m.value() for m in got) == Counter(
        [*(m.value() for m in reference), b"no key"]
    )  # every record once
    where = {(m.key(), m.value()): m.partition() for m in reference}
    assert {(m.key(), m.value()): m.partition() for m in got if m.key() is not None} == where
    by_key: dict[bytes, list[bytes]] = {}
    for m in sorted(got, key=lambda m: m.offset()):
        if m.key() is not None:
            by_key.setdefault(m.key(), []).append(m.value())  # type: ignore[arg-type]
    assert all(values == [b"%d:%s" % (i, k) for i in range(3)] for k, values in by_key.items())
    first = next(m for m in got if m.key() == CODES[0])
    assert first.headers() == [("flush", b"0"), ("raw", b"\x00\xff")]


def test_batches_are_compressed_in_lz4s_fast_mode_and_read_back() -> None:
    BatchOutbox(bootstrap_servers="127.0.0.1:1")  # installs the encoder; connects to nothing
    values = [b'{"code":"%s","price":%d.25,"volume":%d}' % (c, i, i * 7919) for i, c in
              enumerate(CODES[:60])]  # fmt: skip

    def build(codec: int) -> bytes:
        builder = BatchBuilder(1 << 20, codec)
        for code, value in zip(CODES, values, strict=False):
            builder.append(timestamp=1_700_000_000_000, key=code, value=value, headers=[])
        return bytes(builder._build())

    plain, lz4 = build(DefaultRecordBatch.CODEC_NONE), build(DefaultRecordBatch.CODEC_LZ4)
    header = 61  # a v2 record batch's header; the (compressed) records follow it
    records = plain[header:]
    assert lz4[header:] == lz4_fast(records)
    assert lz4_fast(records) != lz4_encode(records)  # aiokafka's level 9 makes other bytes
    batch = MemoryRecords(lz4).next_batch()
    assert batch is not None and batch.compression_type == DefaultRecordBatch.CODEC_LZ4
    assert [r.value for r in batch] == values


async def test_a_batch_larger_than_one_request_batch_is_split_not_refused(
    kafka: KafkaEndpoint,
) -> None:
    topic = kafka.topic("big", partitions=2)
    outbox = BatchOutbox(bootstrap_servers=kafka.bootstrap)
    value = b"x" * 1000
    count = 3 * BatchOutbox.MAX_BATCH_BYTES // len(value)  # ~3 batches' worth, one key
    try:
        for i in range(count):
            await outbox.send(topic, b"600000", value + b"%d" % i, None)
        await outbox.flush()
    finally:
        await outbox.close()
    got = _consume(kafka, topic, count)
    assert [m.value() for m in sorted(got, key=lambda m: m.offset())] == [
        value + b"%d" % i for i in range(count)
    ]


async def test_no_broker_is_an_output_error_the_worker_retries_not_a_crash() -> None:
    outbox = BatchOutbox(bootstrap_servers="127.0.0.1:9", request_timeout_ms=2000)
    with pytest.raises(KafkaOutputError, match="no producer"):
        await outbox.send("t", b"600000", b"v", None)
    await outbox.flush()  # nothing was queued: the batch is sent again whole
    await outbox.close()


async def test_after_a_failure_the_next_batch_goes_through_a_new_producer(
    kafka: KafkaEndpoint,
) -> None:
    topic = kafka.topic("after", partitions=3)
    outbox = BatchOutbox(bootstrap_servers=kafka.bootstrap, request_timeout_ms=2000)
    try:
        await outbox.send(topic, b"600000", b"queued before the failure", None)
        with pytest.raises(KafkaOutputError, match="no producer"):
            await outbox.send(f"{topic}.missing", b"600000", b"v", None)  # no such topic
        # the caller sends the whole batch again: nothing of the failed try is left
        await outbox.send(topic, b"600000", b"sent again", None)
        await outbox.flush()
    finally:
        await outbox.close()
    assert [m.value() for m in _consume(kafka, topic, 1)] == [b"sent again"]


async def test_flushes_hand_their_batches_over_in_the_order_they_were_called(
    kafka: KafkaEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush that waits while it hands its batches over (the producer's start, a full
    accumulator) holds back the flushes called after it: a partition keeps its order."""
    topic = kafka.topic("order", partitions=1)
    outbox = BatchOutbox(bootstrap_servers=kafka.bootstrap)
    try:
        await outbox.send(topic, b"k", b"first", None)  # starts the producer
        producer = await outbox._started()
        gate = asyncio.Event()
        send_batch = producer.send_batch
        calls = 0

        async def first_waits(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                await gate.wait()
            return await send_batch(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(producer, "send_batch", first_waits)
        first = asyncio.ensure_future(outbox.flush())
        await asyncio.sleep(0)  # it took "first" and waits at the gate
        await outbox.send(topic, b"k", b"second", None)
        second = asyncio.ensure_future(outbox.flush())
        for _ in range(20):
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, second)
    finally:
        await outbox.close()
    assert [m.value() for m in _consume(kafka, topic, 2)] == [b"first", b"second"]
