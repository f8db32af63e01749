"""Records in doubt after a broker outage, looked up on a real broker.

The broker may write a record and die before acknowledging it; the receiver
journals it and, without this lookup, writes it a second time on replay.
Here the "written" records are produced by a plain producer, the others never
are; :meth:`InDoubt.find_in_kafka` must tell them apart, count by count.
"""

from __future__ import annotations

import collections

import pytest
from confluent_kafka import KafkaError, Message, Producer

from producers.in_doubt import InDoubt, RecordId, Skips
from schemas import topics
from tests.conftest import KafkaEndpoint

pytestmark = pytest.mark.integration

SOURCE = b"a"


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> list[int]:
    """Write ``(value, receive_ts)`` records keyed by value; their partitions, in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    partitions: dict[int, int] = {}

    def delivered(i: int):  # type: ignore[no-untyped-def]
        def report(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            partitions[i] = msg.partition() or 0

        return report

    for i, (value, ts) in enumerate(records):
        producer.produce(
            topic,
            value=value,
            key=value[:6],
            headers=[(topics.H_RECEIVE_TS, ts), (topics.H_SOURCE, SOURCE)],
            # a record's Kafka timestamp is when it was produced: never before it was received
            timestamp=int(ts) + 5,
            on_delivery=delivered(i),
        )
    assert producer.flush(30) == 0
    return [partitions[i] for i in range(len(records))]


def test_only_the_records_the_broker_wrote_are_found_once_each(kafka: KafkaEndpoint) -> None:
    topic = kafka.topic("raw", 3)
    older = [(f"{600000 + i:06d}$old".encode(), b"1700000000000") for i in range(20)]
    written = [(f"{600100 + i:06d}$in-flight".encode(), b"1700000001000") for i in range(6)]
    # the same line twice in one read, written once: one copy is in Kafka, one is not
    twice = (b"600200$same", b"1700000001000")
    partitions = _produce(kafka.bootstrap, topic, [*older, *written, twice])

    doubt = InDoubt()
    for (value, ts), partition in zip(
        [*written, twice, twice], [*partitions[20:], partitions[-1]], strict=True
    ):
        doubt.add(partition, RecordId(topic, value, ts, SOURCE))
    never_sent = [
        RecordId(topic, f"{600300 + i:06d}$lost".encode(), b"1700000001000", SOURCE)
        for i in range(4)
    ]
    for i, rid in enumerate(never_sent):
        doubt.add(i % 3, rid)
    # another feed's copy of a written line is not ours
    doubt.add(partitions[20], RecordId(topic, written[0][0], written[0][1], b"b"))

    found = doubt.find_in_kafka({"bootstrap.servers": kafka.bootstrap}, timeout_s=30)

    expected = collections.Counter(RecordId(topic, v, ts, SOURCE) for v, ts in [*written, twice])
    assert found == expected


def test_nothing_in_doubt_reads_nothing() -> None:
    assert (
        InDoubt().find_in_kafka({"bootstrap.servers": "127.0.0.1:1"}, timeout_s=1)
        == collections.Counter()
    )


def test_skips_take_each_known_record_once() -> None:
    rid = RecordId("raw", b"600000$x", b"1", SOURCE)
    skips = Skips()
    skips.add(collections.Counter({rid: 2}))
    assert [skips.take(rid) for _ in range(3)] == [True, True, False]
    assert skips.skipped == 2 and len(skips) == 0
