"""Health of every component for ``GET /api/realtime/status`` and ``/readyz``.

Feed receivers: each feed's (``HQ_FEEDS``, else the one at
``HQ_GATEWAY_PRODUCER_METRICS_URL``) scraped from its Prometheus endpoint
(connected gauge, lines and produced counters, rates from the previous
scrape, seconds since its last data); ``receiver`` is ok while any feed is
connected. Stream workers: consumer
lag of their group (committed offsets vs. high watermarks). Redis: ping.
Kafka: cluster metadata. Every probe is bounded by a timeout and reports a
failure instead of raising; none of them writes anything.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import httpx
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from prometheus_client.parser import text_string_to_metric_families

from api.models import ComponentStatus
from api.settings import GatewaySettings
from api.store import Store
from hqcore.kafka_client import librdkafka_config
from schemas import topics
from schemas.feeds import by_priority

TIMEOUT_S = 3.0
RECEIVER_METRICS = (
    "hq_receiver_connected",
    "hq_receiver_lines_total",
    "hq_receiver_produced_total",
    "hq_receiver_last_data_seconds",
)
#: the feed's name in the status when HQ_FEEDS is unset (one feed)
DEFAULT_FEED = "default"


@dataclass
class _Scrape:
    at: float
    values: dict[str, float]


class StatusProbe:
    """Probes the components; keeps the last receiver scrape to compute rates."""

    def __init__(self, settings: GatewaySettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.admin = AdminClient({**librdkafka_config(settings), "socket.timeout.ms": 3000})
        self._last: dict[str, _Scrape] = {}  # per metrics URL
        self._reader: Consumer | None = None  # created on the first lag probe
        self._reader_lock = threading.Lock()

    async def redis(self) -> ComponentStatus:
        try:
            ok = await asyncio.wait_for(self.store.ping(), TIMEOUT_S)
            return ComponentStatus(ok=ok, detail="ping ok" if ok else "ping failed")
        except Exception as exc:
            return ComponentStatus(ok=False, detail=f"redis unreachable: {type(exc).__name__}")

    async def kafka(self) -> ComponentStatus:
        try:
            md = await asyncio.to_thread(self.admin.list_topics, timeout=TIMEOUT_S)
        except Exception as exc:
            return ComponentStatus(ok=False, detail=f"kafka unreachable: {type(exc).__name__}")
        wanted = [
            self.settings.normalized_topic,
            self.settings.stats_topic,
            self.settings.alerts_topic,
            *self.settings.candle_topics.values(),
        ]
        missing = [t for t in wanted if t not in md.topics]
        return ComponentStatus(
            ok=not missing,
            detail=f"missing topics: {', '.join(missing)}" if missing else "metadata ok",
            data={"brokers": len(md.brokers), "topics": len(md.topics)},
        )

    def feed_urls(self) -> dict[str, str]:
        """Each feed's receiver metrics URL, the primary first."""
        feeds = by_priority(self.settings.feeds)
        if not feeds:
            return {DEFAULT_FEED: self.settings.producer_metrics_url}
        return {f.name: f.metrics_url for f in feeds}

    async def feeds(self) -> dict[str, ComponentStatus]:
        """The status of every feed's receiver."""
        urls = self.feed_urls()
        found = await asyncio.gather(*(self.receiver(url) for url in urls.values()))
        return dict(zip(urls, found, strict=True))

    @staticmethod
    def any_feed(feeds: dict[str, ComponentStatus]) -> ComponentStatus:
        """Quotes flow while any feed is connected (the others are the spare lines)."""
        up = [name for name, status in feeds.items() if status.ok]
        if len(feeds) == 1:
            return next(iter(feeds.values()))
        return ComponentStatus(
            ok=bool(up),
            detail=f"{len(up)} of {len(feeds)} feeds connected",
            data={"connected": ",".join(up)},
        )

    async def receiver(self, url: str | None = None) -> ComponentStatus:
        url = url or self.settings.producer_metrics_url
        if not url:
            return ComponentStatus(ok=False, detail="no metrics_url for this feed in HQ_FEEDS")
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                resp = await client.get(url)
                resp.raise_for_status()
        except Exception as exc:
            return ComponentStatus(ok=False, detail=f"receiver metrics unreachable: {exc}")
        values = parse_receiver_metrics(resp.text)
        now = time.monotonic()
        last_data = values.get("hq_receiver_last_data_seconds")
        data: dict[str, float | int | str | bool | None] = {
            "connected": values.get("hq_receiver_connected", 0.0) >= 1.0,
            "lines_total": values.get("hq_receiver_lines_total"),
            "produced_total": values.get("hq_receiver_produced_total"),
            "lines_per_s": None,
            "produced_per_s": None,
            "data_age_s": round(time.time() - last_data, 1) if last_data else None,
        }
        last = self._last.get(url)
        if last is not None and now - last.at > 0.5:
            for name, key in (
                ("hq_receiver_lines_total", "lines_per_s"),
                ("hq_receiver_produced_total", "produced_per_s"),
            ):
                if name in values and name in last.values:
                    data[key] = round((values[name] - last.values[name]) / (now - last.at), 1)
        if last is None or now - last.at > 0.5:
            self._last[url] = _Scrape(now, values)
        connected = bool(data["connected"])
        return ComponentStatus(
            ok=connected, detail="feed connected" if connected else "feed disconnected", data=data
        )

    async def streams_lag(self) -> ComponentStatus:
        try:
            lag, parts = await asyncio.to_thread(self._lag_sync)
        except Exception as exc:
            return ComponentStatus(ok=False, detail=f"lag unavailable: {exc}")
        if parts == 0:
            return ComponentStatus(
                ok=False, detail=f"group {self.settings.streams_group} has no committed offsets"
            )
        return ComponentStatus(
            ok=True, detail="consumer group lag", data={"lag": lag, "partitions": parts}
        )

    def _lag_sync(self) -> tuple[int, int]:
        committed = [tp for tp in self._committed() if tp.offset >= 0]
        if not committed:
            return 0, 0
        specs = {
            TopicPartition(tp.topic, tp.partition): OffsetSpec.latest()  # type: ignore[no-untyped-call]
            for tp in committed
        }
        highs = {
            (tp.topic, tp.partition): f.result(timeout=TIMEOUT_S).offset
            for tp, f in self.admin.list_offsets(specs, request_timeout=TIMEOUT_S).items()
        }
        lag = sum(max(0, highs[(tp.topic, tp.partition)] - tp.offset) for tp in committed)
        return lag, len(committed)

    def _committed(self) -> list[TopicPartition]:
        """The stream workers' committed offsets on the raw topic.

        Read with a consumer of their group that never subscribes or commits,
        not with AdminClient.list_consumer_group_offsets: librdkafka's admin
        path dereferences a missing consumer-group handle when the coordinator
        answers NOT_COORDINATOR (a fresh cluster, a broker restart) and the
        whole gateway dies with SIGSEGV (librdkafka#5040; seen here as 1 in 2
        gateway starts on a fresh broker). A consumer handles that answer."""
        with self._reader_lock:  # probes run in worker threads
            return self._committed_locked()

    def _committed_locked(self) -> list[TopicPartition]:
        if self._reader is None:
            self._reader = Consumer(
                {
                    **librdkafka_config(self.settings),
                    "group.id": self.settings.streams_group,
                    "enable.auto.commit": False,
                    "socket.timeout.ms": 3000,
                }
            )
        topic = self.settings.topic(topics.RAW)
        meta = self._reader.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        return list(self._reader.committed(parts, timeout=TIMEOUT_S))

    def close(self) -> None:
        """Close the lag reader and destroy the admin client (now, not when collected)."""
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self.admin.__exit__(None, None, None)


def parse_receiver_metrics(text: str) -> dict[str, float]:
    """The receiver's metrics of interest, summed over labels."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in RECEIVER_METRICS:
                out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out
