"""The worker's fetched records, made :class:`RawRecord` by aiokafka's fetcher at once.

:class:`RawPartitionRecords` must give exactly what :func:`raw_records` made
of aiokafka's ``ConsumerRecord`` objects (a missing value as ``b""``, the
headers, offsets, timestamps), and only for the consumer marked with
:func:`raw_record_keys`: every other aiokafka consumer keeps its
``ConsumerRecord`` objects.
"""

from __future__ import annotations

from typing import Any

import faust
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams.faust_transport import (
    FastConsumerThread,
    RawPartitionRecords,
    install,
    raw_record_keys,
    raw_records,
)
from streams.pipeline import RawRecord

TP = TopicPartition("hq.ticks.raw", 3)
HEADERS = [("format", b"sse"), ("receive_ts", b"1764034200123"), ("source", b"primary")]


def fetched(first_offset: int = 40) -> MemoryRecords:
    """Two batches as a fetch answers them: records with and without key, value, headers."""
    data = b""
    for base in (first_offset, first_offset + 3):
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=0, is_transactional=0,
            producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
        )  # fmt: skip
        builder.append(0, timestamp=1764034200000 + base, key=b"600000",
                       value=b"sh600000$...", headers=HEADERS)  # fmt: skip
        builder.append(1, timestamp=1764034200001 + base, key=None, value=None, headers=[])
        builder.append(2, timestamp=1764034200002 + base, key=b"920001",
                       value=b'{"code": "920001"}', headers=HEADERS[1:])  # fmt: skip
        batch = bytearray(builder.build())
        batch[0:8] = base.to_bytes(8, "big")  # the batch's base offset, as the broker sets it
        data += bytes(batch)
    return MemoryRecords(data)


def records_of(kind: type, key_deserializer: object, fetch_offset: int = 40) -> list[Any]:
    return list(kind(TP, fetched(), [], fetch_offset, key_deserializer, None, True, 0))


def test_the_records_are_those_raw_records_made_of_aiokafka_s() -> None:
    theirs = records_of(aiokafka_fetcher.PartitionRecords, None)
    assert all(type(r) is ConsumerRecord for r in theirs)
    ours = records_of(RawPartitionRecords, raw_record_keys)
    assert all(type(r) is RawRecord for r in ours)
    expected = raw_records(theirs)
    assert [r.offset for r in ours] == [40, 41, 42, 43, 44, 45]
    assert [(r.key, r.value, list(r.headers), r.topic, r.partition, r.offset, r.timestamp_ms)
            for r in ours] == [
        (r.key, r.value, list(r.headers), r.topic, r.partition, r.offset, r.timestamp_ms)
        for r in expected
    ]  # fmt: skip
    assert ours[1].value == b"" and ours[1].key is None and not ours[1].headers
    assert raw_records(ours) is ours  # nothing left to convert


def test_records_before_the_fetch_offset_are_skipped_as_aiokafka_does() -> None:
    ours = records_of(RawPartitionRecords, raw_record_keys, fetch_offset=42)
    assert [r.offset for r in ours] == [42, 43, 44, 45]


async def test_only_the_marked_consumer_s_fetcher_makes_raw_records() -> None:
    original = aiokafka_fetcher.PartitionRecords
    app = faust.App("raw-records-test", broker="kafka://127.0.0.1:9")
    try:
        install(app)
        factory = aiokafka_fetcher.PartitionRecords
        args: tuple[Any, ...] = (TP, fetched(), [], 40)
        plain = factory(*args, None, None, True, 0)
        assert type(plain) is not RawPartitionRecords
        assert all(type(r) is ConsumerRecord for r in plain)
        marked = factory(*args, raw_record_keys, None, True, 0)
        assert type(marked) is RawPartitionRecords

        async def nothing(*_: object) -> None:
            return None

        consumer: Any = app.transport.create_consumer(
            callback=nothing, on_partitions_revoked=nothing, on_partitions_assigned=nothing
        )
        thread = consumer._new_consumer_thread()
        assert type(thread) is FastConsumerThread
        aiokafka_consumer = thread._create_worker_consumer(app.transport)
        assert aiokafka_consumer._key_deserializer is raw_record_keys  # its fetcher's mark
    finally:
        aiokafka_fetcher.PartitionRecords = original
