"""The faust agent: batching with noack_take, ack-after-persist, DLQ routing.

Faust agents run under ``agent.test_context()`` (in-memory channel, no
broker); Redis is real (the ``redis_url`` fixture). The first two tests pin
down the faust behaviour our design relies on: ``take()`` acks a batch even
when the agent body raised, ``noack_take()`` leaves acking to us.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import faust
import pytest
import redis.asyncio as aioredis
from faust.streams import Stream

from hqstream.bench.rawlines import generate
from schemas import redis_keys as rk
from streams.agents import StreamsRuntime
from streams.app import create_app
from streams.errors import BadRecord
from streams.outbox import ConfluentOutbox
from streams.parse import parse_record
from streams.pipeline import Processor
from streams.redis_sink import RedisSink
from streams.settings import StreamsSettings
from tests.conftest import KafkaEndpoint


@pytest.fixture
def acked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Record the value of every event a stream acks."""
    seen: list[bytes] = []
    original = Stream.ack

    async def recording_ack(self: Stream[Any], event: Any) -> bool:
        seen.append(event.value)
        return await original(self, event)

    monkeypatch.setattr(Stream, "ack", recording_ack)
    yield seen


def _app(name: str) -> tuple[faust.App, faust.TopicT]:
    app = faust.App(name, store="memory://", key_serializer="raw", value_serializer="raw")
    return app, app.topic("raw", key_type=bytes, value_type=bytes)


async def _put_three(agent: Any) -> list[Any]:
    events = []
    async with agent.test_context() as tc:
        for i in range(3):
            events.append(await tc.put(key=b"k", value=str(i).encode()))
        await asyncio.sleep(0.4)
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

    await _put_three(agent)
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

    events = await _put_three(agent)
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


async def test_agent_writes_redis_then_acks_every_event(
    runtime: StreamsRuntime, redis_url: str, acked: list[bytes]
) -> None:
    lines, bad = generate(40, 2, bad_fraction=0.1, seed=3)
    built = create_app(runtime.settings, worker_id="unit", runtime=runtime)
    async with built.agent.test_context() as tc:
        for key, value, headers in lines:
            await tc.put(key=key, value=value, headers=headers)
        for _ in range(100):
            if len(acked) == len(lines):
                break
            await asyncio.sleep(0.05)
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
    acked: list[bytes], kafka: KafkaEndpoint
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
    async with built.agent.test_context() as tc:
        for key, value, headers in lines:
            await tc.put(key=key, value=value, headers=headers)
        await asyncio.sleep(1.0)
        assert acked == []
    await sink.close()
