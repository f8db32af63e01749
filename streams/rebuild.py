"""``hqstream streams --rebuild-from-raw``: replay ``hq.ticks.raw`` into an empty Redis.

(The workers' own rebuild, from their outputs, is :mod:`streams.state_rebuild`;
this one reparses every retained raw line: for when the outputs are wrong.)

A plain confluent-kafka consumer (own consumer group, every partition assigned
from the earliest retained offset) reads up to the end offsets taken at the
start and hands batches to the very same :class:`streams.pipeline.Processor`
and :class:`streams.runtime.StreamsRuntime` as the faust worker, so Redis ends
in the state live processing leaves (quotes, ticks, rankings, candles,
alerts, market summaries). Nothing is produced to Kafka: the normalized,
candle, alert and DLQ topics already hold the live run's outputs; bad records
are counted. Refuses a Redis that holds ``hq:*`` keys unless ``force``, which
deletes only ``hq:*`` keys. :func:`consume_batches` is also the benchmark's
plain-consumer path. Never writes to the raw topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from hqcore.kafka_client import librdkafka_config
from streams.errors import StreamsError
from streams.outbox import ConfluentOutbox
from streams.pipeline import Processor, RawRecord
from streams.redis_sink import RedisSink, SinkBatch
from streams.runtime import StreamsRuntime, now_ms, tune_memory
from streams.settings import StreamsSettings

logger = logging.getLogger(__name__)


class RebuildRefused(StreamsError):
    """Redis is not empty and ``--force`` was not given."""


@dataclass
class RebuildSummary:
    records: int
    quotes: int
    dead: int
    seconds: float

    def __str__(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        return (
            f"rebuild done: {self.records} raw records ({self.quotes} quotes, "
            f"{self.dead} bad) in {self.seconds:.1f}s = {rate:,.0f} records/s"
        )


def end_offsets(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """``partition -> (low, high)`` watermarks of ``topic``."""
    md = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        raise StreamsError(f"topic {topic} does not exist")
    out: dict[int, tuple[int, int]] = {}
    for p in sorted(md.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        out[p] = (int(low), int(high))
    return out


def to_record(msg: object) -> RawRecord:
    from confluent_kafka import Message

    assert isinstance(msg, Message)
    _, ts = msg.timestamp()
    return RawRecord(
        key=msg.key(),
        value=msg.value() or b"",
        headers=_headers(msg),
        topic=msg.topic() or "",
        partition=int(msg.partition() or 0),
        offset=int(msg.offset() or 0),
        timestamp_ms=int(ts),
    )


def _headers(msg: Any) -> list[tuple[str, bytes]]:
    return [(str(k), bytes(v or b"")) for k, v in (msg.headers() or [])]


async def consume_batches(
    consumer: Consumer,
    runtime: StreamsRuntime,
    ends: dict[int, int],
    batch_max: int,
    on_batch: Callable[[int], None] | None = None,
    commit: bool = True,
) -> tuple[int, int, int]:
    """Consume (assigned) partitions until each reaches ``ends``; returns counts.

    Batches go through :meth:`StreamsRuntime.submit` (batch N+1 is parsed
    while batch N is written); a batch's offsets are committed once it is
    durable. Returns when the last batch is durable.
    """
    position = {p: -1 for p in ends}
    remaining = {p for p, end in ends.items() if end > 0}
    records = quotes = dead = 0
    topic = ""

    def committer(offsets: dict[int, int]) -> Callable[[], None]:
        def commit_batch() -> None:
            if commit:
                tps = [TopicPartition(topic, p, o + 1) for p, o in offsets.items()]
                consumer.commit(offsets=tps, asynchronous=True)

        return commit_batch

    while remaining:
        msgs = consumer.consume(num_messages=batch_max, timeout=0.2)
        batch: list[RawRecord] = []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.retriable() or err.code() == -191:  # _PARTITION_EOF
                    continue
                raise KafkaException(err)
            batch.append(to_record(msg))
        if not batch:
            await asyncio.sleep(0)
            continue
        done: dict[int, int] = {}
        for rec in batch:
            done[rec.partition] = max(done.get(rec.partition, -1), rec.offset)
        topic = batch[0].topic
        result = await runtime.submit(batch, committer(done))
        assert result is not None  # (not ``more``: finished before it returns)
        for p, offset in done.items():
            position[p] = max(position[p], offset)
        records += len(batch)
        quotes += len(result.sink.quotes)
        dead += len(result.dlq)
        remaining = {p for p in remaining if position[p] + 1 < ends[p]}
        if on_batch is not None:
            on_batch(len(batch))
    await runtime.drain()
    return records, quotes, dead


async def _rebuild(settings: StreamsSettings, force: bool) -> RebuildSummary:
    tune_memory(settings.gc_threshold)
    sink = RedisSink.from_url(
        settings.redis_url,
        chunk_ticks=settings.redis_chunk_ticks,
        replica_wait_ms=settings.redis_replica_wait_ms,
        native=settings.native,
    )
    try:
        existing = await sink.hq_key_count()
        if existing and not force:
            raise RebuildRefused(
                f"redis holds {existing} hq:* keys; rebuild needs an empty one (or --force)"
            )
        if existing:
            logger.warning("--force: deleting %d hq:* keys", await sink.flush_hq())
        topic = settings.topic_names.raw
        consumer = Consumer(
            {
                **librdkafka_config(settings),
                "group.id": f"{settings.group_id}-rebuild-{now_ms()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 64 * 1024 * 1024,
                "queued.min.messages": 200_000,
            }
        )
        try:
            marks = end_offsets(consumer, topic)
            ends = {p: high for p, (_, high) in marks.items()}
            total = sum(high - low for low, high in marks.values())
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in marks])
            processor = Processor(settings, publish_normalized=False)
            runtime = StreamsRuntime(
                settings, sink, ConfluentOutbox(**librdkafka_config(settings)), "rebuild",
                processor=processor,
            )  # fmt: skip
            started = time.perf_counter()
            counts = await _with_progress(consumer, runtime, ends, total, settings.batch_max)
            # what the live worker's candle timer would close by now
            closed = processor.flush_candles(now_ms(), int(settings.candle_quiet_s * 1000))
            if closed:
                await sink.write(SinkBatch(quotes=[], candles=closed, alerts=[],
                                           bars=processor.take_bar_states()))  # fmt: skip
            stats = processor.snapshots(now_ms())
            await sink.write_market(stats, now_ms())
            await sink.mark_state(set(marks), True, now_ms())  # the workers need not rebuild
            return RebuildSummary(*counts, seconds=time.perf_counter() - started)
        finally:
            consumer.close()
    finally:
        await sink.close()


async def _with_progress(
    consumer: Consumer, runtime: StreamsRuntime, ends: dict[int, int], total: int, batch_max: int
) -> tuple[int, int, int]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]rebuild[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rec/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("replay", total=total, rate="-")
        done = 0

        def on_batch(n: int) -> None:
            nonlocal done
            done += n
            rate = done / max(1e-6, time.perf_counter() - started)
            progress.update(task, advance=n, rate=f"{rate:,.0f}")

        return await consume_batches(consumer, runtime, ends, batch_max, on_batch)


def run_rebuild(settings: StreamsSettings, *, force: bool = False) -> RebuildSummary:
    """Replay the raw topic into Redis; returns what was done."""
    return asyncio.run(_rebuild(settings, force))
