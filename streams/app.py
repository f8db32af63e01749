"""The faust-streaming application: one agent on ``hq.ticks.raw`` and the stats timer.

:func:`create_app` builds a faust App for the given settings (topic names,
group id, broker) and wires it to a :class:`streams.agents.StreamsRuntime`:

* the agent (concurrency 1: faust issue #606, with more it can commit past an
  event still being processed) reads batches with ``stream.noack_take`` and
  acks each event only after :meth:`StreamsRuntime.handle` returned, i.e.
  after Redis and Kafka have the results. Not ``take()``: it acks the batch
  in a ``finally`` even when the body raised, so a failed batch could be
  committed and lost (see tests/streams/test_agents.py).
* processing_guarantee ``at_least_once`` (faust's ``exactly_once`` is
  experimental); duplicates are harmless because Redis writes are newer-wins.
* a 1-second timer publishes market statistics (partials merged across workers).
* on every assignment the runtime reseeds its in-memory state from Redis.

No faust tables, no web server, no leader topic: nothing here creates topics
(they come from ``schemas.topics`` via the runner/Kubernetes). Never acks an
event whose outputs are not durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from streams.agents import StreamsRuntime
from streams.outbox import ConfluentOutbox, FaustOutbox, Outbox
from streams.pipeline import RawRecord
from streams.redis_sink import RedisSink
from streams.settings import StreamsSettings

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


def event_to_record(event: Any) -> RawRecord:
    msg = event.message
    headers = msg.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return RawRecord(
        key=msg.key,
        value=msg.value if msg.value is not None else b"",
        headers=[(k, v if v is not None else b"") for k, v in headers],
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=int((msg.timestamp or 0) * 1000),
    )


async def event_batches(queue: Any, max_n: int, within_s: float) -> Any:
    loop = asyncio.get_running_loop()
    while True:
        batch = [await queue.get()]
        deadline = loop.time() + within_s
        while len(batch) < max_n:
            if queue.empty():
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(0.002)
                continue
            batch.append(queue.get_nowait())
        yield batch


@dataclass(frozen=True, slots=True)
class StreamsApp:
    """A configured faust app, its agent and the runtime they drive."""

    app: faust.App
    agent: Any
    runtime: StreamsRuntime


def create_app(
    settings: StreamsSettings,
    *,
    worker_id: str | None = None,
    runtime: StreamsRuntime | None = None,
) -> StreamsApp:
    """The faust app wired to ``runtime`` (default: Redis and Kafka from settings)."""
    worker_id = worker_id or settings.worker_id or default_worker_id()
    names = settings.topic_names
    datadir = Path(settings.datadir) / worker_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.group_id,
        broker=broker_urls(settings.kafka_bootstrap),
        store="memory://",
        datadir=str(datadir),
        processing_guarantee="at_least_once",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        stream_buffer_maxsize=max(4096, settings.batch_max * 2),
        broker_max_poll_records=max(500, settings.batch_max),
        producer_acks=-1,
        logging_config=None,
    )
    if runtime is None:
        outbox: Outbox = (
            FaustOutbox(app)
            if settings.producer == "faust"
            else ConfluentOutbox(settings.kafka_bootstrap)
        )
        sink = RedisSink.from_url(settings.redis_url)
        runtime = StreamsRuntime(settings, sink, outbox, worker_id)
    rt = runtime
    raw_topic = app.topic(names.raw, key_type=bytes, value_type=bytes, acks=True)

    @app.agent(raw_topic, concurrency=1, name="hqstream.streams.process_raw")
    async def process_raw(stream: Any) -> None:
        channel = aiter(stream.channel)
        async for events in event_batches(channel.queue, settings.batch_max, settings.batch_within_s):
            await rt.handle([event_to_record(e) for e in events])
            for event in events:
                event.ack()

    @app.timer(settings.stats_interval_s, name="hqstream.streams.publish_stats")  # type: ignore[untyped-decorator,unused-ignore]
    async def publish_stats() -> None:
        await rt.publish_stats()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        rt.on_assigned({tp.partition for tp in assigned if tp.topic == names.raw})

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        logger.info("worker %s stopping after %d batches", worker_id, rt.batches)

    return StreamsApp(app, process_raw, rt)
