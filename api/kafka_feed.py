"""The gateway's Kafka feed: consumes normalized quotes, stats, alerts and candles.

A confluent-kafka Consumer runs in one background thread with a consumer group
unique to this process (so every replica sees every record), starting at the
latest offsets (pinned at assignment time, so anything produced after
``ready`` is seen). The thread decodes Avro, serializes each record to JSON
once (a quote's straight from its Avro by the compiled writer of
:mod:`schemas.native` when it can: the same bytes), and hands batches to the
event loop (:meth:`api.hub.Hub.dispatch`) with ``call_soon_threadsafe``. It
never touches sessions or sockets itself, and never commits offsets (a
restarted gateway starts live).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, Message, TopicPartition

from api import metrics
from api.hub import Event, Hub
from api.settings import GatewaySettings
from api.ws_session import QuoteEvent, dumps
from hqcore.kafka_client import librdkafka_config
from schemas.native import native_quotes
from schemas.serde import Codec, SerdeError, make_codec

logger = logging.getLogger(__name__)

BATCH = 2000
POLL_S = 0.05


def consumer_config(settings: GatewaySettings, group: str) -> dict[str, Any]:
    return {
        **librdkafka_config(settings),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "latest",
        # an empty fetch waits at the broker up to 500 ms, but a fetch is answered
        # at its first byte (fetch.min.bytes 1): the wait costs no latency, and a
        # quiet feed costs 2 fetches a second instead of 100 (docs/architecture.md)
        "fetch.wait.max.ms": 500,
        "fetch.min.bytes": 1,
        "socket.nagle.disable": True,
        "topic.metadata.refresh.interval.ms": 10_000,
        "client.id": f"hqstream-gateway-{socket.gethostname()}",
    }


class KafkaFeed:
    """Background consumer thread feeding the hub on ``loop``."""

    def __init__(self, settings: GatewaySettings, hub: Hub, loop: asyncio.AbstractEventLoop):
        self.settings = settings
        self.hub = hub
        self.loop = loop
        self.group = f"hqstream-gateway.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        reg = settings.schema_registry_url
        quote_codec = make_codec("quote", reg, settings.normalized_topic)
        self._codecs: dict[str, tuple[str, Codec]] = {
            settings.normalized_topic: ("quote", quote_codec),
            settings.stats_topic: ("stats", make_codec("market_stats", reg, settings.stats_topic)),
            settings.alerts_topic: ("alert", make_codec("alert", reg, settings.alerts_topic)),
            **{
                topic: ("candle", make_codec("candle", reg, topic))
                for topic in settings.candle_topics.values()
            },
        }
        self._quote_json = quote_json_writer(quote_codec, settings.native)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hq-gateway-feed", daemon=True)
        self.assigned: set[str] = set()
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    @property
    def ready(self) -> bool:
        """Running and assigned every partition of the quote topic."""
        return self.running and self.settings.normalized_topic in self.assigned

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Pin "latest" now: records produced after assignment are all consumed.
        pinned = []
        for tp in partitions:
            try:
                _, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                pinned.append(TopicPartition(tp.topic, tp.partition, high))
            except Exception as exc:  # KafkaException: fall back to the reset policy
                logger.warning("watermarks of %s[%d]: %s", tp.topic, tp.partition, exc)
                pinned.append(TopicPartition(tp.topic, tp.partition, OFFSET_END))
        consumer.assign(pinned)
        self.assigned = {tp.topic for tp in partitions}
        logger.info("feed assigned %d partitions (group %s)", len(partitions), self.group)

    def _run(self) -> None:
        try:
            consumer = Consumer(consumer_config(self.settings, self.group))
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("feed consumer could not be created")
            self._stop.set()
            return
        try:
            consumer.subscribe(list(self._codecs), on_assign=self._on_assign)
            while not self._stop.is_set():
                # consume(n, timeout) waits for n messages or the timeout: at a few
                # thousand quotes/s that is always the timeout. Block on the first
                # message only, then take whatever else is already fetched.
                messages = consumer.consume(BATCH, 0)
                if not messages:
                    first = consumer.poll(POLL_S)
                    if first is None:
                        continue
                    messages = [first, *consumer.consume(BATCH - 1, 0)]
                events = self._decode(messages)
                if events:
                    self.loop.call_soon_threadsafe(self.hub.dispatch, events)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("feed thread failed")
        finally:
            self._stop.set()
            consumer.close()

    def _decode(self, messages: list[Message]) -> list[Event]:
        """The events of a polled batch (errors logged, end-of-partition markers skipped)."""
        records: list[tuple[str, bytes, bytes | None]] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    logger.warning("feed: %s", err)
                continue
            topic, value = msg.topic(), msg.value()
            if topic is not None and value is not None:
                records.append((topic, value, msg.key()))
        return self.decode(records)

    def decode(self, records: Iterable[tuple[str, bytes, bytes | None]]) -> list[Event]:
        """The events of ``(topic, value, key)`` records; an undecodable one is counted and
        logged. A bar keyed by its code is left undecoded for the hub (Event.decoded)."""
        events: list[Event] = []
        consumed: collections.Counter[str] = collections.Counter()  # counted once per batch
        # A burst is 5,000 quotes: each takes the shortest way (the compiled writer).
        quote_topic, write, written_quotes = self.settings.normalized_topic, self._quote_json, 0
        for topic, value, key in records:
            if topic == quote_topic and write is not None:
                written = write(value)
                if written is not None:  # else the Python path decides
                    written_quotes += 1
                    events.append(Event("quote", written[3], quote=QuoteEvent(*written)))
                    continue
            codec_of = self._codecs.get(topic)
            if codec_of is None:
                continue
            kind, codec = codec_of
            if kind == "candle" and key:
                consumed[kind] += 1
                pending = functools.partial(codec.decode, value)
                events.append(Event("candle", b"", key=key.decode(errors="replace"),
                                    pending=pending))  # fmt: skip
                continue
            try:
                rec = codec.decode(value)
            except SerdeError as exc:
                metrics.DECODE_ERRORS.inc()
                logger.warning("feed: undecodable record on %s: %s", topic, exc)
                continue
            consumed[kind] += 1
            events.append(to_event(kind, rec))
        consumed["quote"] += written_quotes
        for kind, count in consumed.items():
            if count:
                metrics.CONSUMED.labels(kind).inc(count)
        return events


#: a Quote payload -> ``(code, market, exchange_ts, JSON)``, or None for the Python path
QuoteJson = Callable[[bytes], tuple[str, str, int, bytes] | None]


def quote_json_writer(codec: Codec, enabled: bool) -> QuoteJson | None:
    """The compiled writer of quotes' JSON (:mod:`schemas.native`), or None; logs which.

    It writes what :func:`to_event` writes (``dumps`` of the decoded record) byte
    for byte, and answers None for any payload it cannot (another schema version,
    a float whose shortest form it does not prove): those take the Python path.
    """
    native = native_quotes(codec, enabled, "HQ_GATEWAY_NATIVE")
    logger.info("feed: quotes' JSON: %s", native.description)
    if native.header is None:
        return None
    import hqstream_native

    return hqstream_native.QuoteJsonWriter(native.header).write


def to_event(kind: str, rec: dict[str, Any]) -> Event:
    """An :class:`Event` from a decoded record; JSON serialized here, once."""
    if kind == "candle":
        event = Event("candle", b"", key=rec["code"])
        event.set_bar(rec)
        return event
    raw = dumps(rec)
    if kind == "quote":
        q = QuoteEvent(rec["code"], rec["market"], int(rec["exchange_ts"]), raw)
        return Event("quote", raw, quote=q)
    if kind == "stats":
        return Event("stats", raw, key=rec["market"])
    return Event("alert", raw)
