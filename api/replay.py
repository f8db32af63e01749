"""Replay of one stock's quotes from Kafka, for ``subscribe_stock`` with ``since``.

The code's partition is found with Kafka's murmur2 partitioner (what the
receiver uses, key = code); ``offsets_for_times`` gives the first offset at
or after ``since`` (minus a margin, record timestamps are receive times), and
the partition is read up to the high watermark taken at the start (the live
position). Records of other codes are skipped; quotes with ``exchange_ts <
since`` are dropped. Runs in a worker thread with a throwaway consumer that
never commits; bounded in records scanned and time.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition

from api.feed import to_event
from api.murmur2 import partition_for
from api.session import QuoteEvent
from api.settings import GatewaySettings
from schemas.serde import SerdeError, make_codec

logger = logging.getLogger(__name__)

TS_MARGIN_MS = 60_000
TIMEOUT_S = 30.0


class ReplayError(Exception):
    """The replay could not be served (broker unavailable, topic missing)."""


def replay_quotes(settings: GatewaySettings, code: str, since: int) -> list[QuoteEvent]:
    """Every stored quote of ``code`` with exchange_ts >= ``since``, oldest first."""
    topic = settings.normalized_topic
    codec = make_codec("quote", settings.schema_registry_url, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"hqstream-gateway-replay.{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 20,
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=5)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ReplayError(f"topic {topic} is not available")
        partition = partition_for(code.encode(), len(meta.partitions))
        tp = TopicPartition(topic, partition)
        _, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        found = consumer.offsets_for_times(
            [TopicPartition(topic, partition, max(0, since - TS_MARGIN_MS))], timeout=5
        )[0]
        start = found.offset
        if start < 0 or start >= high:
            return []
        consumer.assign([TopicPartition(topic, partition, start)])
        out: list[QuoteEvent] = []
        key = code.encode()
        scanned = 0
        deadline = time.monotonic() + TIMEOUT_S
        position = start
        last_ts = -1
        while position < high and scanned < settings.replay_max_records:
            if time.monotonic() > deadline:
                raise ReplayError("replay timed out")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        position = high
                    continue
                offset = msg.offset() or 0
                position = offset + 1
                if offset >= high:
                    break
                scanned += 1
                value = msg.value()
                if msg.key() != key or value is None:
                    continue
                try:
                    rec = codec.decode(value)
                except SerdeError as exc:
                    logger.warning("replay: undecodable record at %d: %s", offset, exc)
                    continue
                ts = int(rec["exchange_ts"])
                if ts >= since and ts > last_ts:  # dedupe by exchange_ts
                    ev = to_event("quote", rec).quote
                    assert ev is not None
                    out.append(ev)
                    last_ts = ts
        return out
    finally:
        consumer.close()
