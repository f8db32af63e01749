"""Small helpers for tests that read what landed in Kafka (real broker)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message, TopicPartition


def consume_all(
    bootstrap: str,
    topic: str,
    expected: int | None = None,
    timeout: float = 60.0,
    idle: float = 3.0,
) -> list[Message]:
    """Every record of ``topic`` from the beginning.

    Stops when ``expected`` records were read (then waits ``idle`` more seconds
    to catch duplicates), or after ``idle`` seconds without a record when
    ``expected`` is None, or at ``timeout``.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            for msg in batch:
                if msg.error() is None:
                    out.append(msg)
            if batch:
                last = time.monotonic()
            reached = expected is not None and len(out) >= expected
            if (reached or expected is None) and time.monotonic() - last > idle:
                break
    finally:
        consumer.close()
    return out


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """A record's headers decoded to text (e.g. a DLQ record's reason and detail)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or []}
