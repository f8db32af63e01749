"""Replay of one stock's quotes from Kafka, for ``subscribe_stock`` with ``since``.

One clock: ``since`` is an exchange timestamp (epoch ms, the quotes'
``exchange_ts``), and so is everything it is compared with. Kafka's record
timestamps are the workers' wall clock, which may run hours apart from the
exchange clock (a simulator, a replayed day, a backlog after an outage), so
``offsets_for_times`` cannot find ``since``. Instead the start offset is found
by a binary search on the records' own ``exchange_ts``: within a partition
quotes arrive snapshot by snapshot, so their exchange times only grow (to
within a few seconds; :data:`TS_MARGIN_MS` covers that). From there the
partition is read in pages up to the high watermark taken when the replay
started (the live position): records of other codes are skipped by key
without decoding, quotes older than ``since`` are dropped, and quotes are
deduplicated by ``exchange_ts``.

The window ``since`` may reach back to is on the exchange clock too
(:func:`window_start`): by default the whole trading day of the newest quote
the gateway knows. Runs in a worker thread with a throwaway consumer that
never commits; bounded in records scanned, quotes returned and time.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from api.kafka_feed import to_event
from api.murmur2 import partition_for
from api.settings import GatewaySettings
from api.ws_session import QuoteEvent
from hqcore.kafka_client import librdkafka_config
from schemas.exchange import SHANGHAI_TZ, describe_ms, shanghai_datetime
from schemas.serde import Codec, SerdeError, make_codec

logger = logging.getLogger(__name__)

TS_MARGIN_MS = 60_000  # how far out of exchange-time order a partition's records may be
TIMEOUT_S = 60.0
PAGE = 1000  # records read per call; the GIL is yielded between pages
PROBE = 32  # records read at each step of the binary search


class ReplayError(Exception):
    """The replay could not be served (too large, timed out)."""


class ReplayUnavailable(ReplayError):
    """Kafka or the topic could not be reached: try again later."""


def window_start(newest_ms: int, window: Literal["day"] | int) -> int:
    """The oldest ``since`` accepted when the newest known quote is ``newest_ms``.

    ``"day"``: midnight (Shanghai) of that quote's trading day, so a client at
    14:00 may replay from the open; seconds: that long before it. Both on the
    exchange clock, never the server's."""
    if window == "day":
        day = shanghai_datetime(newest_ms).date()
        return int(dt.datetime.combine(day, dt.time(0, 0), SHANGHAI_TZ).timestamp() * 1000)
    return newest_ms - window * 1000


def replay_quotes(settings: GatewaySettings, code: str, since: int) -> list[QuoteEvent]:
    """Every stored quote of ``code`` with exchange_ts >= ``since``, oldest first."""
    topic = settings.normalized_topic
    codec = make_codec("quote", settings.schema_registry_url, topic)
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": f"hqstream-gateway-replay.{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 20,
        }
    )
    try:
        return _replay(consumer, settings, codec, topic, code, since)
    except KafkaException as exc:
        raise ReplayUnavailable(f"Kafka is unavailable ({exc.args[0].str()})") from None
    finally:
        consumer.close()


def _replay(
    consumer: Consumer, settings: GatewaySettings, codec: Codec, topic: str, code: str, since: int
) -> list[QuoteEvent]:
    md = consumer.list_topics(topic, timeout=5)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise ReplayUnavailable(f"topic {topic} is not available")
    partition = partition_for(code.encode(), len(meta.partitions))
    low, high = consumer.get_watermark_offsets(
        TopicPartition(topic, partition), timeout=5, cached=False
    )
    deadline = time.monotonic() + TIMEOUT_S
    reader = _Reader(consumer, topic, partition, high, deadline)
    start = reader.first_at_or_after(low, since - TS_MARGIN_MS, codec)
    if start >= high:
        return []
    out: list[QuoteEvent] = []
    key = code.encode()
    scanned = 0
    last_ts = -1
    for page in reader.pages(start):
        for msg in page:
            scanned += 1
            value = msg.value()
            if msg.key() != key or value is None:
                continue
            try:
                rec = codec.decode(value)
            except SerdeError as exc:
                logger.warning("replay: undecodable record at %s: %s", msg.offset(), exc)
                continue
            ts = int(rec["exchange_ts"])
            if ts >= since and ts > last_ts:  # dedupe by exchange_ts
                ev = to_event("quote", rec).quote
                assert ev is not None
                out.append(ev)
                last_ts = ts
        if scanned > settings.replay_max_records or len(out) > settings.replay_max_quotes:
            raise ReplayError(
                f"more than {settings.replay_max_quotes:,} quotes or "
                f"{settings.replay_max_records:,} records since {describe_ms(since)}: "
                "ask for a later since"
            )
        time.sleep(0)  # a page at a time: let the event loop's thread run
    return out


class _Reader:
    """Reads one partition below ``high`` with a throwaway consumer."""

    def __init__(
        self, consumer: Consumer, topic: str, partition: int, high: int, deadline: float
    ) -> None:
        self.consumer, self.topic, self.partition = consumer, topic, partition
        self.high, self.deadline = high, deadline

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise ReplayError("replay timed out")

    def _seek(self, offset: int) -> None:
        self.consumer.assign([TopicPartition(self.topic, self.partition, offset)])

    def pages(self, start: int) -> Iterator[list[Message]]:
        """Pages of records from ``start`` up to ``high`` (exclusive), in order."""
        self._seek(start)
        position = start
        while position < self.high:
            self._check_time()
            page: list[Message] = []
            for msg in self.consumer.consume(PAGE, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        position = self.high
                    continue
                offset = msg.offset() or 0
                position = offset + 1
                if offset >= self.high:
                    position = self.high
                    break
                page.append(msg)
            yield page

    def _exchange_ts_near(self, offset: int, codec: Codec) -> int | None:
        """The newest exchange time among the few records from ``offset`` on (None past
        the end). The newest, not the first: one stock stamped late (a halted one, a
        stale vendor time) must not send the search the wrong way."""
        self._seek(offset)
        newest: int | None = None
        while True:
            self._check_time()
            msgs = self.consumer.consume(PROBE, 0.5)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return newest
                    continue
                if (msg.offset() or 0) >= self.high:
                    return newest
                value = msg.value()
                try:
                    ts = int(codec.decode(value)["exchange_ts"]) if value else None
                except SerdeError:
                    ts = None
                if ts is not None and (newest is None or ts > newest):
                    newest = ts
            if msgs and newest is not None:
                return newest

    def first_at_or_after(self, low: int, target_ms: int, codec: Codec) -> int:
        """The first offset in [low, high) whose quote is not older than ``target_ms``
        (binary search on exchange time: ~log2(records) single-record reads)."""
        lo, hi = low, self.high
        while lo < hi:
            mid = (lo + hi) // 2
            ts = self._exchange_ts_near(mid, codec)
            if ts is not None and ts < target_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo
