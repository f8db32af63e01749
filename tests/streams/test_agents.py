"""The faust agent: bulk batches, ack-after-persist, DLQ routing, timers' work.

Faust agents run under ``agent.test_context()`` (in-memory channel, no
broker); Redis is real (the ``redis_url`` fixture). The first two tests pin
down the faust behaviour that made us stop iterating the Stream: ``take()``
acks a batch even when the agent body raised, ``noack_take()`` leaves acking
to us (as our bulk reader does). Our agent reads its channel's queue itself,
so the tests put runs of faust messages into its buffer as the consumer
would, and see acks on the consumer (``Consumer.ack``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import faust
import orjson
import pytest
import redis.asyncio as aioredis
from confluent_kafka import Consumer
from faust.events import Event
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP, Message

from hqstream.local_runner import create_topics
from producers.sample_feed import generate, session_start_ms
from schemas import redis_keys as rk
from schemas.topics import topic_specs
from streams import app as app_module
from streams import runtime as runtime_module
from streams.app import StreamsApp, create_app, live_runs
from streams.errors import BadRecord
from streams.faust_transport import FastConsumer, Run, RunBuffer, deliver_to
from streams.faust_transport import install as install_fast_transport
from streams.outbox import ConfluentOutbox
from streams.parse import parse_record
from streams.pipeline import Processor, RawRecord
from streams.redis_sink import RedisSink
from streams.runtime import StreamsRuntime
from streams.settings import StreamsSettings
from tests.conftest import KafkaEndpoint
from tests.streams.stats_reference import recompute
from tests.waits import eventually


@pytest.fixture
def acked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Record the value of every event acked (by a Stream or by our agent)."""
    seen: list[bytes] = []
    original = Event.ack

    def recording_ack(self: Event) -> bool:
        seen.append(self.value)
        return original(self)

    monkeypatch.setattr(Event, "ack", recording_ack)
    yield seen


@pytest.fixture
def consumer_acked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Record the value of every record acked through faust's consumer (in runs)."""
    seen: list[bytes] = []
    original = FastConsumer.ack_run

    def recording_ack(self: FastConsumer, run: Run) -> int:
        if not run.acked:
            seen.extend(record.value for record in run.records)
        return original(self, run)

    monkeypatch.setattr(FastConsumer, "ack_run", recording_ack)
    yield seen


def _app(name: str) -> tuple[faust.App, faust.TopicT]:
    app = faust.App(name, store="memory://", key_serializer="raw", value_serializer="raw")
    return app, app.topic("raw", key_type=bytes, value_type=bytes)


async def _put_three(agent: Any, done: Callable[[], bool]) -> list[Any]:
    """Puts three events and waits until ``done`` holds (the agent has seen them)."""
    events = []
    async with agent.test_context() as tc:
        for i in range(3):
            events.append(await tc.put(key=b"k", value=str(i).encode()))
        await eventually(done, "the agent's batch")
    return events


async def test_faust_take_acks_a_batch_whose_processing_raised(acked: list[bytes]) -> None:
    """Why we do not use take(): a failed batch is acked (committed) anyway."""
    app, topic = _app("take-hazard")
    batches: list[list[bytes]] = []

    @app.agent(topic)
    async def agent(stream: Any) -> None:
        async for batch in stream.take(3, within=5):
            batches.append(list(batch))
            raise RuntimeError("redis is down")

    await _put_three(agent, lambda: len(acked) == 3)
    assert batches == [[b"0", b"1", b"2"]]
    assert sorted(acked) == [b"0", b"1", b"2"]


async def test_faust_noack_take_leaves_a_failed_batch_unacked(acked: list[bytes]) -> None:
    app, topic = _app("noack-take")
    batches: list[int] = []

    @app.agent(topic)
    async def agent(stream: Any) -> None:
        async for events in stream.noack_take(3, within=5):
            batches.append(len(events))
            raise RuntimeError("redis is down")

    events = await _put_three(agent, lambda: batches == [3])
    assert batches == [3]
    assert acked == []
    assert not any(e.message.acked for e in events)


def _valid(value: bytes) -> bool:
    try:
        parse_record(value, 0)
    except BadRecord:
        return False
    return True


@pytest.fixture
async def runtime(redis_url: str, kafka: KafkaEndpoint) -> AsyncIterator[StreamsRuntime]:
    settings = StreamsSettings(redis_url=redis_url, metrics_port=0, batch_max=50)
    sink = RedisSink.from_url(redis_url)
    # Redis only: the unit test has no broker, so nothing is produced.
    rt = StreamsRuntime(
        settings,
        sink,
        ConfluentOutbox(kafka.bootstrap),
        "unit",
        processor=Processor(settings, publish_normalized=False),
    )
    yield rt
    await sink.close()


async def _deliver(built: StreamsApp, lines: list[Any], run: int = 7) -> None:
    """Put ``lines`` into the agent's buffer as the consumer would: runs of records."""
    records = [
        RawRecord(key, value, headers, "raw", 0, i, 0)
        for i, (key, value, headers) in enumerate(lines)
    ]
    for start in range(0, len(records), run):
        await built.runs.put(
            Run(TP("raw", 0), built.app.consumer_generation_id, records[start : start + run])
        )


async def test_agent_writes_redis_then_acks_every_event(
    runtime: StreamsRuntime, redis_url: str, consumer_acked: list[bytes]
) -> None:
    acked = consumer_acked
    lines, bad = generate(40, 2, bad_fraction=0.1, seed=3)
    built = create_app(runtime.settings, worker_id="unit", runtime=runtime)
    async with built.agent.test_context():
        built.app.flow_control.resume()  # as after an assignment
        await _deliver(built, lines)
        await eventually(lambda: len(acked) == len(lines), "every record acked")
    assert sorted(acked) == sorted(v for _, v, _ in lines)
    client = aioredis.Redis.from_url(redis_url)
    try:
        codes = {parse_record(v, 0)["code"] for _, v, _ in lines if _valid(v)}
        stored = [await client.hget(rk.quote(c), "ts") for c in sorted(codes)]
        assert all(ts is not None for ts in stored)
        ticks = sum([await client.xlen(rk.ticks(c)) for c in codes])
        assert ticks == len(lines) - sum(bad.values())
    finally:
        await client.aclose()


async def test_agent_does_not_ack_while_redis_is_unreachable(
    consumer_acked: list[bytes], kafka: KafkaEndpoint
) -> None:
    settings = StreamsSettings(
        redis_url="redis://127.0.0.1:1/0", metrics_port=0, redis_retry_max_s=0.1
    )
    sink = RedisSink.from_url(settings.redis_url)
    rt = StreamsRuntime(
        settings, sink, ConfluentOutbox(kafka.bootstrap), "down",
        processor=Processor(settings, publish_normalized=False),
    )  # fmt: skip
    lines, _ = generate(5, 1, seed=4)
    built = create_app(settings, worker_id="down", runtime=rt)
    async with built.agent.test_context():
        built.app.flow_control.resume()
        await _deliver(built, lines)
        await asyncio.sleep(1.0)
        assert consumer_acked == []
    await sink.close()


async def test_young_objects_are_not_collected_while_a_burst_s_batches_wait(
    runtime: StreamsRuntime, consumer_acked: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The burst's next fetch is in aiokafka, not in the agent's buffer yet: the batches
    parsed so far wait for it, and so does the young collection (a collection would
    walk their objects, on the burst's path); once they are finished, it may come."""
    ahead = [True]  # aiokafka fetched records it has not handed over
    monkeypatch.setattr(FastConsumer, "fetched_ahead", lambda self, topic: ahead[0])
    asked: list[tuple[bool, int]] = []  # (caught up, batches waiting) at each ask

    class Recording:
        def __init__(self, gen0_threshold: int) -> None:
            pass

        def between_batches(self, caught_up: bool) -> bool:
            asked.append((caught_up, runtime.waiting))
            return False

    monkeypatch.setattr(app_module, "YoungCollections", Recording)
    lines, _ = generate(40, 2, seed=5)
    built = create_app(runtime.settings, worker_id="unit", runtime=runtime)
    async with built.agent.test_context():
        built.app.flow_control.resume()
        await _deliver(built, lines[:40])  # the burst's first fetches
        await eventually(
            lambda: not len(built.runs) and any(waiting for _, waiting in asked),
            "the agent asked while batches waited",
        )
        ahead[0] = False
        await _deliver(built, lines[40:])  # its last fetch
        await eventually(lambda: len(consumer_acked) == len(lines), "every record acked")
        await eventually(lambda: asked[-1] == (True, 0), "asked once the batches were finished")
    assert not [ask for ask in asked if ask[0] and ask[1]]  # never "caught up" while they wait


def _records(lines: list[Any], partition_of: Any = None) -> list[RawRecord]:
    return [
        RawRecord(k, v, h, "raw", partition_of(k) if partition_of else 0, i, 0)
        for i, (k, v, h) in enumerate(lines)
    ]


async def test_submit_acks_each_batch_only_once_durable_and_in_order(
    runtime: StreamsRuntime, redis_url: str
) -> None:
    lines, _ = generate(60, 6, seed=6)
    records = _records(lines)
    durable: list[int] = []
    ticks_when_durable: list[int] = []
    client = aioredis.Redis.from_url(redis_url)
    codes = {parse_record(v, 0)["code"] for _, v, _ in lines}

    def on_durable(n: int) -> Any:
        def done() -> None:
            durable.append(n)

        return done

    try:
        for n, start in enumerate(range(0, len(records), 50)):
            await runtime.submit(records[start : start + 50], on_durable(n))
            # two persists may be queued: batches n-1 and n may still be in flight,
            # batch n-2 is durable by now (queueing n waited for it), in order
            assert durable == list(range(len(durable))) and n - 1 <= len(durable) <= n + 1
            if durable:
                ticks_when_durable.append(sum([await client.xlen(rk.ticks(c)) for c in codes]))
        await runtime.drain()
        assert durable == list(range(len(records) // 50 + bool(len(records) % 50)))
        assert sum([await client.xlen(rk.ticks(c)) for c in codes]) == len(records)
        assert ticks_when_durable == sorted(ticks_when_durable)
    finally:
        await client.aclose()


def test_candle_clock_follows_the_wall_clock_only_when_the_feed_is_quiet() -> None:
    processor = Processor(StreamsSettings(metrics_port=0), publish_normalized=False)
    start = session_start_ms("2026-11-23", "11:29:40")
    lines, _ = generate(10, 3, seed=8, start_ms=start)  # 11:29:40, :43, :46
    quotes = [(parse_record(v, 0, 0), 0) for _, v, _ in lines]
    processor.derive(quotes)
    assert processor.newest_ts == start + 6_000
    processor.newest_wall_ms = fed_at = start + 6_000  # as if fed live, at 11:29:46
    assert processor.candles.open_count() == 10
    lunch = session_start_ms("2026-11-23", "11:30:35")  # past the 30 s grace for late ticks
    # not quiet for 60 s yet: the exchange clock (11:29:46) closes nothing
    assert processor.flush_candles(lunch, quiet_ms=60_000) == []
    # quiet, but the wall clock is still inside the minute: nothing either
    assert processor.flush_candles(fed_at + 5_000, quiet_ms=1_000) == []
    # quiet after the lunch break started: the 11:29 candles close
    assert processor.flush_candles(lunch - 10_000, quiet_ms=5_000) == []  # 11:30:25: grace
    closed = processor.flush_candles(lunch, quiet_ms=5_000)
    assert all(c["closed"] for c in closed)
    minutes = [c for c in closed if c["tf"] == "1m"]
    assert len(minutes) == 10
    assert {c["minute_ts"] for c in minutes} == {session_start_ms("2026-11-23", "11:29:00")}
    # with them, the morning's last 5/15/30/60-minute bars (the daily one stays open)
    assert Counter(c["tf"] for c in closed if c["tf"] != "1m") == dict.fromkeys(
        ("5m", "15m", "30m", "60m"), 10
    )
    assert processor.candles.open_count() == 0


def _timer_runtime(redis_url: str, kafka: KafkaEndpoint, name: str) -> StreamsRuntime:
    """A runtime on its own topics whose candle clock follows the wall clock at once
    (and whose batches send their latest quotes themselves: acked when durable)."""
    prefix = f"{kafka.group(name)}."
    create_topics(kafka.bootstrap, topic_specs(2), prefix=prefix)
    settings = StreamsSettings(
        redis_url=redis_url, kafka_bootstrap=kafka.bootstrap, topic_prefix=prefix,
        metrics_port=0, candle_quiet_s=0.001, latest_interval_s=0,
    )  # fmt: skip
    sink = RedisSink.from_url(redis_url)
    outbox = ConfluentOutbox(kafka.bootstrap)
    return StreamsRuntime(settings, sink, outbox, name, processor=Processor(settings))


async def test_flush_candles_writes_and_produces_the_candles_of_stocks_that_stopped(
    redis_url: str, kafka: KafkaEndpoint
) -> None:
    rt = _timer_runtime(redis_url, kafka, "flush")
    settings, sink, outbox = rt.settings, rt.sink, rt.outbox
    # a session that is over (the wall clock is later): 14:59:50 and 14:59:53
    lines, _ = generate(8, 2, seed=9, start_ms=session_start_ms("2025-06-03", "14:59:50"))
    try:
        await rt.handle(_records(lines))
        await asyncio.sleep(0.01)  # the feed is quiet
        assert await rt.flush_candles() == 8 * 6  # each 14:59 candle closes a bar of every tf
        assert await rt.flush_candles() == 0  # closed once
        minute = str(session_start_ms("2025-06-03", "14:59:00"))
        stored = [
            orjson.loads(
                await sink.client.hget(rk.candles(q["code"], "2025-06-03"), minute) or b"{}"
            )
            for q in (parse_record(v, 0) for _, v, _ in lines[:8])
        ]
        assert all(c.get("closed") is True for c in stored)
        consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": kafka.group("c"),
                             "auto.offset.reset": "earliest"})  # fmt: skip
        consumer.subscribe([settings.topic_names.candles])
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + 30
        while len(got) < 8 and asyncio.get_running_loop().time() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got.append(rt.processor.candle_codec.decode(msg.value() or b""))
        consumer.close()
        assert sorted(c["code"] for c in got) == sorted(c["code"] for c in stored)
        assert all(c["closed"] and c["minute_ts"] == int(minute) for c in got)
    finally:
        await outbox.close()
        await sink.close()


async def test_a_batch_goes_between_two_slices_of_the_candle_timer(
    redis_url: str, kafka: KafkaEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A minute's end closes every candle of the worker: the timer closes them a slice
    at a time, and a batch that came meanwhile is processed before the next slice."""
    monkeypatch.setattr(runtime_module, "CANDLE_SLICE", 2)
    rt = _timer_runtime(redis_url, kafka, "slices")
    processor, sink, outbox = rt.processor, rt.sink, rt.outbox
    lines, _ = generate(8, 2, seed=9, start_ms=session_start_ms("2025-06-03", "14:59:50"))
    events: list[str] = []
    slice_of, parse_batch = processor.flush_candle_slice, processor.parse_batch

    def recording_slice(*args: Any) -> Any:
        closed, done = slice_of(*args)
        events.append(f"slice {sum(b['tf'] == '1m' for b in closed)}")
        return closed, done

    async def recording_parse(*args: Any) -> Any:
        events.append("batch")
        return await parse_batch(*args)

    monkeypatch.setattr(processor, "flush_candle_slice", recording_slice)
    monkeypatch.setattr(processor, "parse_batch", recording_parse)
    try:
        await rt.handle(_records(lines))
        await asyncio.sleep(0.01)  # the feed is quiet
        events.clear()
        timer = asyncio.create_task(rt.flush_candles())
        durable = asyncio.Event()
        await asyncio.sleep(0)  # the timer takes the worker first
        await rt.submit(_records(lines), durable.set)  # (replays: they change nothing)
        assert await timer == 8 * 6
        await asyncio.wait_for(durable.wait(), 30)
        assert events == ["slice 2", "batch", "slice 2", "slice 2", "slice 2", "slice 0"]
        minute = str(session_start_ms("2025-06-03", "14:59:00"))
        codes = [parse_record(v, 0)["code"] for _, v, _ in lines[:8]]
        stored = [await sink.client.hget(rk.candles(c, "2025-06-03"), minute) for c in codes]
        assert all(orjson.loads(c or b"{}").get("closed") is True for c in stored)
    finally:
        await outbox.close()
        await sink.close()


async def test_revoked_partitions_are_not_counted_twice_in_merged_stats(
    redis_url: str, kafka: KafkaEndpoint
) -> None:
    lines, _ = generate(90, 2, seed=10)
    quotes = [parse_record(v, 0, 0) for _, v, _ in lines]

    def partition(key: bytes) -> int:
        return int(key) % 2

    prefix = f"{kafka.group('revoke')}."
    create_topics(kafka.bootstrap, topic_specs(2), prefix=prefix)  # no broker auto-create
    settings = StreamsSettings(
        redis_url=redis_url, kafka_bootstrap=kafka.bootstrap, topic_prefix=prefix,
        metrics_port=0, partial_ttl_s=60,
    )  # fmt: skip
    runtimes = []
    for worker in ("a", "b"):
        sink = RedisSink.from_url(redis_url)
        processor = Processor(settings, publish_normalized=False)
        outbox = ConfluentOutbox(kafka.bootstrap)
        runtimes.append(StreamsRuntime(settings, sink, outbox, worker, processor=processor))
    a, b = runtimes
    try:
        # worker a owned both partitions, then partition 1 moved to worker b
        await a.handle(_records(lines, partition))
        await a.publish_stats()
        assert await a.on_revoked({1}) == len({q["code"] for q in quotes if int(q["code"]) % 2})
        await b.handle(_records([ln for ln in lines if partition(ln[0]) == 1], partition))
        await b.publish_stats()
        merged = await a.publish_stats()  # a has the smallest id: it merges
        assert merged is not None
        expected = recompute(quotes, settings.stats_top_n, now_ms=0)
        for market in ("SH", "SZ", "BJ", "ALL"):
            assert {**merged[market], "ts": 0} == {**expected[market], "ts": 0}
    finally:
        for rt in runtimes:
            await rt.sink.close()


def _run(offsets: range, generation: int = 0, partition: int = 0) -> Run:
    records = [RawRecord(b"600000", str(o).encode(), [], "raw", partition, o, 0) for o in offsets]
    return Run(TP("raw", partition), generation, records)


def _values(runs: list[Run]) -> list[bytes]:
    return [record.value for run in runs for record in run.records]


def _unacked(consumer: FastConsumer) -> set[Any]:
    return set(consumer._unacked_messages)


async def _fast_app(name: str) -> tuple[faust.App, FastConsumer]:
    """An app consuming through :class:`FastConsumer`, subscribed to ``raw`` with acks."""
    app, topic = _app(name)
    install_fast_transport(app)
    app.topics.add(topic)
    await app.topics._update_indices()  # as a subscription does: acks enabled for "raw"
    assert isinstance(app.consumer, FastConsumer) and app.topics.acks_enabled_for("raw")
    return app, app.consumer


async def test_live_runs_drops_old_generation_runs_without_acking_them(
    consumer_acked: list[bytes],
) -> None:
    """An ack of a skipped record lets faust commit past records never processed."""
    app, consumer = await _fast_app("generations")
    app.flow_control.resume()  # as after an assignment
    app.consumer_generation_id = 7
    old = _run(range(0, 1), generation=6)
    live = live_runs(app, [old, _run(range(1, 3), generation=7)])
    assert _values(live) == [b"1", b"2"]
    assert consumer_acked == [] and not old.acked  # fetched again from the committed offset
    assert _unacked(consumer) == set(live)  # a rebalance waits for them
    app.flow_control.suspend()  # a rebalance started: nothing of the batch is live
    assert live_runs(app, [_run(range(3, 4), generation=7)]) == []
    assert consumer_acked == []


def _commit(consumer: FastConsumer, tp: TP) -> int | None:
    """What faust's commit would commit now, committed (no broker)."""
    offset = consumer._new_offset(tp)
    if offset is not None:
        consumer._committed_offset[tp] = offset
    return offset


async def test_acking_runs_commits_what_acking_every_message_would() -> None:
    """faust commits the first run of consecutive acked offsets: a run acked before the one
    before it is committable only once that one is; a run is acked once, and offsets
    below the committed one are not acked again. The same commits as faust's own ack of
    each message."""
    tp = TP("raw", 0)
    runs = [_run(range(8, 20)), _run(range(20, 25)), _run(range(25, 30))]
    order = [1, 0, 0, 2]  # the second run durable first; the first one acked twice

    _, consumer = await _fast_app("ack-runs")
    consumer._committed_offset[tp] = 10  # 8 and 9 were committed before
    for run in runs:
        consumer.track_run(run)
    counts, commits = [], []
    for i in order:
        counts.append(consumer.ack_run(runs[i]))
        commits.append(_commit(consumer, tp))
        if i == 0 and counts[-1]:
            assert _unacked(consumer) == {runs[2]}  # wait_empty waits for it alone
    assert counts == [5, 10, 0, 5] and commits == [None, 25, None, 30]
    assert not _unacked(consumer) and consumer._n_acked == 20

    _, reference = await _fast_app("ack-messages")
    reference._committed_offset[tp] = 10
    reference_commits = []
    for i in order:
        for record in runs[i].records:
            message = Message("raw", 0, record.offset, 0.0, 0, [], b"k", b"v", b"", 1, 1, tp=tp)
            FaustConsumer.ack(reference, message)
        reference_commits.append(_commit(reference, tp))
    assert reference_commits == commits and reference._n_acked == consumer._n_acked


async def test_direct_delivery_queues_whole_runs_and_blocks_when_the_buffer_is_full() -> None:
    app, _ = _app("direct")
    app.flow_control.resume()
    runs = RunBuffer(max_records=3)
    deliver = deliver_to(app, runs)
    await deliver(_run(range(3)))
    task = asyncio.create_task(deliver(_run(range(3, 4))))
    await asyncio.sleep(0.05)
    assert not task.done() and len(runs) == 3  # backpressure: the fetcher waits
    first = await runs.batch(2, within_s=0.01)  # a batch may split a run
    await asyncio.wait_for(task, 5)
    assert _values(first) == [b"0", b"1"]
    rest = await runs.batch(10, within_s=0.05)
    assert _values(rest) == [b"2", b"3"] and [len(run.records) for run in rest] == [1, 1]
    assert len(runs) == 0


async def test_run_buffer_batches_wait_for_more_only_within_the_window() -> None:
    runs = RunBuffer(max_records=100)
    await runs.put(_run(range(1, 3)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    loop.call_later(0.02, lambda: asyncio.ensure_future(runs.put(_run(range(3, 4), partition=1))))
    batch = await runs.batch(10, within_s=0.2)
    assert _values(batch) == [b"1", b"2", b"3"] and [r.tp.partition for r in batch] == [0, 1]
    await runs.put(_run(range(4, 5)))
    assert _values(await runs.batch(10, within_s=0.05)) == [b"4"]  # the window closes
    assert loop.time() - started < 1.0


async def test_run_buffer_waits_for_input_at_most_its_timeout() -> None:
    runs = RunBuffer(max_records=100)
    assert await runs.wait_for_input(0.01) is False  # none came: the timeout
    waiting = asyncio.create_task(runs.wait_for_input(30))
    await asyncio.sleep(0)
    await runs.put(_run(range(1)))
    assert await asyncio.wait_for(waiting, 5) is True  # at the run, not the timeout
    assert await runs.wait_for_input(30) is True  # one is there already: no wait


async def test_a_rebalance_clears_the_run_buffer_as_it_clears_stream_buffers() -> None:
    app, _ = _app("clear")
    runs = RunBuffer(max_records=1)
    deliver_to(app, runs)  # registers the buffer with faust's flow control
    await runs.put(_run(range(1)))
    app.flow_control.clear()  # what faust calls on a rebalance
    assert len(runs) == 0
    await asyncio.wait_for(runs.put(_run(range(1, 2))), 1)  # room again
