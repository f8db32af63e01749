"""The faust-streaming application: one agent on ``hq.ticks.raw`` and the stats timer.

:func:`create_app` builds a faust App for the given settings (topic names,
group id, broker) and wires it to a :class:`streams.runtime.StreamsRuntime`:

* the agent (concurrency 1: faust issue #606, with more it can commit past an
  event still being processed) takes its records in batches (up to
  ``batch_max`` or ``batch_within_s``) from the :class:`RunBuffer` the
  consumer fills with whole fetched runs of records (:mod:`streams.faust_transport`)
  instead of iterating the faust Stream event by event: the Stream's
  per-event machinery (two asyncio tasks and an Event per message) capped a
  worker at ~14k events/s before any work was done. Runs of an old
  rebalance generation are dropped unacknowledged (:func:`live_runs`):
  they are fetched again from the committed offsets. Each run is acked through faust's consumer
  only when :meth:`StreamsRuntime.submit` reports its batch durable, i.e.
  after Redis and Kafka have the results; a batch whose processing raised is
  never acked. (Not ``take()``: it acks a batch in a ``finally`` even when
  the body raised; see tests/streams/test_agents.py.)
* processing_guarantee ``at_least_once`` (faust's ``exactly_once`` is
  experimental); duplicates are harmless because Redis writes are newer-wins.
* 1-second timers publish market statistics (partials merged across workers)
  and close the candles of stocks that stopped ticking.
* on every assignment the runtime reseeds its in-memory state from Redis; on
  revocation it drops the revoked partitions' stocks from its statistics.
* before each batch the runtime checks the Redis state marker of its
  partitions and rebuilds what is missing from Kafka (``HQ_STREAMS_AUTO_REBUILD``,
  :mod:`streams.state_rebuild`).

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from hqcore.kafka_client import aiokafka_kwargs, librdkafka_config, ssl_context
from hqcore.tuning import FrozenHeap, YoungCollections
from streams import metrics
from streams.faust_transport import (
    FastConsumer,
    FetchPacing,
    RawSchema,
    Run,
    RunBuffer,
    deliver_to,
)
from streams.faust_transport import install as install_fast_transport
from streams.lifecycle import Watchdog, fatal, install_resume_streams
from streams.outbox import BatchOutbox, ConfluentOutbox, Outbox
from streams.redis_sink import RedisSink
from streams.runtime import StreamsRuntime, tune_memory
from streams.settings import StreamsSettings
from streams.state_rebuild import StateRebuilder
from streams.static_membership import install as leave_as_static_member

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def broker_credentials(settings: StreamsSettings) -> faust.types.auth.CredentialsT | None:
    """TLS/SASL for faust's aiokafka clients, from the same settings as every other
    client (hqcore.kafka_client); None for the local runner's PLAINTEXT."""
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        librdkafka_config(settings)  # refuses SASL without a user or password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context) if context is not None else None


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


def fetch_pacing(settings: StreamsSettings) -> FetchPacing:
    """How long the broker holds a live feed's fetch, from the settings."""
    return FetchPacing(
        settings.fetch_interval_ms / 1000,
        settings.fetch_interval_max_ms / 1000,
        settings.fetch_batch_ticks,
        settings.fetch_interval_busy_ms / 1000,
    )


#: how long a stopping worker waits for its batch in flight to become durable
SHUTDOWN_DRAIN_S = 10.0
#: no batch for this long (the lunch break, the night): a full garbage collection
#: may pause the worker (:class:`hqcore.tuning.FrozenHeap`)
GC_IDLE_S = 30.0
GC_CHECK_S = 5.0


def live_runs(app: Any, runs: list[Run]) -> list[Run]:
    """The runs of a batch that belong to the current rebalance generation.

    The others (fetched before the current rebalance, or while the flow is
    suspended) are dropped *without* an ack: the consumer has sought back to
    the committed offsets and fetches them again. (faust's Stream acks such
    messages; an ack there lets faust commit past records that were never
    processed, because it commits the first run of consecutive acked offsets.
    The benchmark's two-worker runs lost ticks that way.) The live ones are
    tracked as unacked, so a rebalance waits for their batch to be durable.
    """
    generation = app.consumer_generation_id
    if not app.flow_control.is_active():
        return []
    live = [run for run in runs if run.generation_id == generation]
    for run in live:
        app.consumer.track_run(run)
    return live


def ack_runs(consumer: FastConsumer, runs: list[Run]) -> Callable[[], None]:
    """A callback acking every record of ``runs`` (their offsets become committable)."""

    def ack() -> None:
        for run in runs:
            consumer.ack_run(run)

    return ack


@dataclass(frozen=True, slots=True)
class StreamsApp:
    """A configured faust app, its agent and the runtime they drive."""

    app: faust.App
    agent: Any
    runtime: StreamsRuntime
    runs: RunBuffer  # what the consumer fetched for the agent (tests put runs here)


def create_app(
    settings: StreamsSettings,
    *,
    worker_id: str | None = None,
    runtime: StreamsRuntime | None = None,
) -> StreamsApp:
    """The faust app wired to ``runtime`` (default: Redis and Kafka from settings)."""
    tune_memory(settings.gc_threshold)
    metrics.watch_gc()
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
        # failover in seconds, not faust's 60 s session + 60 s rebalance defaults
        # (docs/architecture.md, "Failover")
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_request_timeout=max(settings.request_timeout_s, settings.session_timeout_s),
        broker_max_poll_interval=settings.max_poll_interval_s,
        consumer_group_instance_id=settings.group_instance_id or None,
        broker_credentials=broker_credentials(settings),
    )
    install_fast_transport(app, fetch_pacing(settings))
    leave_as_static_member()  # a clean stop hands a static member's partitions over at once
    install_resume_streams(app)
    if runtime is None:
        outbox: Outbox = (
            ConfluentOutbox(**librdkafka_config(settings))
            if settings.producer == "confluent"
            else BatchOutbox(
                **aiokafka_kwargs(settings),
                request_timeout_ms=int(settings.request_timeout_s * 1000),
            )
        )
        sink = RedisSink.from_url(
            settings.redis_url,
            chunk_ticks=settings.redis_chunk_ticks,
            replica_wait_ms=settings.redis_replica_wait_ms,
            native=settings.native,
        )
        rebuilder = StateRebuilder(settings, sink) if settings.auto_rebuild else None
        runtime = StreamsRuntime(settings, sink, outbox, worker_id, rebuilder=rebuilder)
    rt = runtime
    raw_topic = app.topic(names.raw, schema=RawSchema(key_type=bytes, value_type=bytes), acks=True)

    runs = RunBuffer(max(4096, settings.batch_max * 2))
    young = YoungCollections(settings.gc_threshold) if settings.gc_threshold > 0 else None

    def input_waits() -> bool:
        """Records fetched for the agent: in ``runs``, or fetched by aiokafka, not handed over."""
        consumer = app.consumer
        return len(runs) > 0 or (
            isinstance(consumer, FastConsumer) and consumer.fetched_ahead(names.raw)
        )

    @app.agent(raw_topic, concurrency=1, name="hqstream.streams.process_raw")
    async def process_raw(stream: Any) -> None:
        aiter(stream.channel)  # subscribes the raw topic; its messages come through `runs`
        consumer = app.consumer
        assert isinstance(consumer, FastConsumer)  # install_fast_transport() made it
        consumer.direct[names.raw] = deliver_to(app, runs)
        consumer.before_wait_empty = rt.hand_over_acks
        try:
            while True:
                if metrics.HEALTH.fatal is not None:
                    # The worker is exiting (faust restarted this agent after a
                    # crash). Acking any later batch would let faust commit past
                    # the batch that failed (it commits the first run of
                    # consecutive acked offsets): that batch would be lost.
                    await asyncio.Event().wait()
                if rt.waiting and not input_waits():
                    # quotes first: the rest of a batch parsed only while no input waits,
                    # and (held) not before a burst's next fetch had the time to come
                    hold_s = rt.finish_wait_s()
                    if hold_s > 0 and await runs.wait_for_input(hold_s):
                        continue
                    await rt.finish_next()
                    continue
                if young is not None:  # its pause off a burst's path: not while batches wait
                    young.between_batches(caught_up=not len(runs) and not rt.waiting)
                batch = await runs.batch(settings.batch_max, settings.batch_within_s)
                live = live_runs(app, batch)
                if live:
                    records = [record for run in live for record in run.records]
                    await rt.submit(records, ack_runs(consumer, live), defer=input_waits)
                    await rt.catch_up(len(records))  # no batch's rest waits for ever
        except asyncio.CancelledError:
            raise  # stopping, or faust restarting the agent on a rebalance
        except Exception as exc:  # nothing would process this worker's partitions again
            fatal(f"the agent crashed: {exc!r}", exc)
            raise

    watchdog = Watchdog(app, settings.stall_exit_s)

    @app.timer(1.0, name="hqstream.streams.watchdog")  # type: ignore[untyped-decorator,unused-ignore]
    async def check_progress() -> None:
        watchdog.check()

    if settings.gc_threshold > 0:  # tune_memory froze the survivors: reclaim their garbage
        frozen_heap = FrozenHeap(GC_IDLE_S)

        @app.timer(GC_CHECK_S, name="hqstream.streams.collect_frozen")  # type: ignore[untyped-decorator,unused-ignore]
        async def collect_frozen() -> None:
            frozen_heap.check(rt.batches)

    @app.timer(settings.stats_interval_s, name="hqstream.streams.publish_stats")  # type: ignore[untyped-decorator,unused-ignore]
    async def publish_stats() -> None:
        await rt.publish_stats()

    if settings.latest_interval_s > 0:

        @app.timer(settings.latest_interval_s, name="hqstream.streams.flush_latest")  # type: ignore[untyped-decorator,unused-ignore]
        async def flush_latest() -> None:
            await rt.flush_latest()  # when no batch came to take them along

    @app.timer(settings.candle_flush_interval_s, name="hqstream.streams.flush_candles")  # type: ignore[untyped-decorator,unused-ignore]
    async def flush_candles() -> None:
        consumer = app.consumer
        assert isinstance(consumer, FastConsumer)  # install_fast_transport() made it
        fetched = consumer.fetched_to_end_ms(names.raw)
        if len(runs):  # records fetched but not processed yet: no partition is quiet
            fetched = dict.fromkeys(fetched, 0)
        await rt.flush_candles(fetched)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        await rt.on_revoked({tp.partition for tp in revoked if tp.topic == names.raw})

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        raw = {tp.partition for tp in assigned if tp.topic == names.raw}
        rt.on_assigned(raw, app.consumer_generation_id)  # faust set it before this signal

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        try:  # the batch in flight becomes durable and acked, so its offsets get committed
            await asyncio.wait_for(rt.drain(), SHUTDOWN_DRAIN_S)
        except Exception as exc:  # TimeoutError, or what the persist raised
            logger.warning("batch in flight not durable at shutdown (replayed later): %r", exc)
        try:
            await rt.outbox.close()
        except Exception as exc:
            logger.warning("closing the outputs' producer: %r", exc)
        logger.info("worker %s stopping after %d batches", worker_id, rt.batches)

    return StreamsApp(app, process_raw, rt, runs)
