"""Issue 21: a worker reads its state markers once a second or after a Redis error, not
before every batch, and an emptied Redis is still found and rebuilt.

(A restart that no write saw, the client reconnecting on its own, is found
by the once-a-second check, as a FLUSHDB is.)

Real Kafka, a Redis server of the test's own (its command counts are the test's
alone), the worker's :class:`streams.runtime.StreamsRuntime` driven batch by
batch, and a clock the test moves: "not read again within the second" is a fact
of the code, not of the machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from hqstream.local_runner import LocalRedis, create_topics
from producers.sample_feed import generate
from schemas import redis_keys as rk
from schemas.topics import topic_specs
from streams.outbox import ConfluentOutbox
from streams.parse import parse_record
from streams.pipeline import Processor, RawRecord
from streams.redis_sink import RedisSink
from streams.runtime import STATE_CHECK_EVERY_S, StreamsRuntime
from streams.settings import StreamsSettings
from streams.state_rebuild import StateRebuilder
from tests.conftest import KafkaEndpoint
from tests.waits import eventually

pytestmark = pytest.mark.integration

PARTITIONS = 3
STOCKS = 40


def redis_retries() -> float:
    return REGISTRY.get_sample_value("hq_streams_redis_retries_total") or 0.0


class ManualClock:
    """The runtime's monotonic clock: moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Worker:
    runtime: StreamsRuntime
    clock: ManualClock
    client: Any  # redis.asyncio.Redis of the test's server
    batches: list[list[RawRecord]]  # one snapshot of every stock each

    async def hmgets(self) -> int:
        """HMGET calls the server has run (the markers are read with one; so are the quotes
        a worker seeds its memory with after a rebuild)."""
        stats = await self.client.info("commandstats")
        return int(stats.get("cmdstat_hmget", {}).get("calls", 0))

    def code(self, index: int) -> str:
        """The code of the ``index``-th stock of the batches."""
        return str(parse_record(self.batches[0][index].value, 0)["code"])

    async def handle(self, index: int) -> None:
        await self.runtime.handle(self.batches[index])

    async def quotes_at(self, index: int) -> bool:
        """Whether every stock's Redis quote is at (or past) its tick of batch ``index``."""
        for record in self.batches[index]:
            quote = parse_record(record.value, 0)
            stored = await self.client.hget(rk.quote(quote["code"]), "ts")
            if int(stored or 0) < quote["exchange_ts"]:
                return False
        return True


@pytest.fixture
async def worker(own_redis: LocalRedis, kafka: KafkaEndpoint) -> AsyncIterator[Worker]:
    prefix = f"{kafka.group('check')}."
    create_topics(kafka.bootstrap, topic_specs(PARTITIONS), prefix=prefix)
    settings = StreamsSettings(
        redis_url=own_redis.url, kafka_bootstrap=kafka.bootstrap, topic_prefix=prefix,
        partitions=PARTITIONS, metrics_port=0, redis_retry_max_s=0.3,
    )  # fmt: skip
    sink = RedisSink.from_url(own_redis.url)
    clock = ManualClock()
    runtime = StreamsRuntime(
        settings, sink, ConfluentOutbox(kafka.bootstrap), "w", processor=Processor(settings),
        rebuilder=StateRebuilder(settings, sink), clock=clock,
    )  # fmt: skip
    runtime.on_assigned(set(range(PARTITIONS)))
    lines, _ = generate(STOCKS, 6, seed=11)
    records = [RawRecord(key, value, cast(Any, headers), "raw", i % PARTITIONS, i, 0)
               for i, (key, value, headers) in enumerate(lines)]  # fmt: skip
    batches = [records[i : i + STOCKS] for i in range(0, len(records), STOCKS)]
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        yield Worker(runtime, clock, client, batches)
    finally:
        await client.aclose()
        await sink.close()
        await runtime.outbox.close()


async def test_markers_are_read_once_a_second_and_an_emptied_redis_is_rebuilt(
    worker: Worker,
) -> None:
    await worker.handle(0)  # the first batch checks: nothing marked, so a (quick) rebuild
    assert await worker.client.hgetall(rk.STATE_READY)
    reads = await worker.hmgets()
    for index in (1, 2):  # the clock stands still: no batch reads the markers
        await worker.handle(index)
    assert await worker.hmgets() == reads

    await worker.client.flushdb()  # Redis loses everything, without an error
    await worker.handle(3)
    assert await worker.hmgets() == reads  # not yet: the second is not over
    assert not await worker.client.exists(rk.STATE_READY)

    worker.clock.now += STATE_CHECK_EVERY_S
    await worker.handle(4)  # reads the markers, finds them gone, rebuilds from Kafka
    assert await worker.client.hgetall(rk.STATE_READY)
    assert await worker.quotes_at(4)
    code = worker.code(0)  # its ticks of batches 0-3: before the flush or before the check
    assert await worker.client.xlen(rk.ticks(code)) == 5


async def test_a_redis_restarted_empty_is_rebuilt_at_the_next_batch(
    worker: Worker, own_redis: LocalRedis
) -> None:
    await worker.handle(0)
    await worker.handle(1)
    own_redis.stop()
    failed = redis_retries()
    waiting = asyncio.create_task(worker.handle(2))
    await eventually(lambda: redis_retries() > failed, "a write of batch 2 failed")
    own_redis.start()  # same port, empty (no persistence)
    await asyncio.wait_for(waiting, 60)  # the write retried until Redis was back
    assert not await worker.client.exists(rk.STATE_READY)  # batch 2 went to an empty Redis

    await worker.handle(3)  # the clock has not moved: the Redis error asked for the check
    assert await worker.client.hgetall(rk.STATE_READY)
    assert await worker.quotes_at(3)
    assert await worker.client.xlen(rk.ticks(worker.code(0))) == 4  # batches 0, 1 came back


async def test_the_stats_timer_reads_the_markers_so_that_the_batches_need_not(
    worker: Worker,
) -> None:
    await worker.handle(0)  # the first batch checks (and rebuilds the empty Redis)
    reads = await worker.hmgets()
    worker.clock.now += STATE_CHECK_EVERY_S * 0.4
    await worker.runtime.check_state()  # read less than half a period ago: not again
    assert await worker.hmgets() == reads
    worker.clock.now += STATE_CHECK_EVERY_S * 0.2
    await worker.runtime.check_state()
    assert await worker.hmgets() == reads + 1
    worker.clock.now += STATE_CHECK_EVERY_S * 1.4  # past the batch's own due time
    await worker.handle(1)
    assert await worker.hmgets() == reads + 1  # the timer's read counted for 1.5 periods
    worker.clock.now += STATE_CHECK_EVERY_S * 0.1
    await worker.handle(2)  # no timer read for 1.5 periods: the batch reads them
    assert await worker.hmgets() == reads + 2

    await worker.client.flushdb()  # Redis loses everything, without an error
    worker.clock.now += STATE_CHECK_EVERY_S * 0.5
    await worker.runtime.check_state()  # finds the markers gone: the next batch rebuilds
    assert not await worker.client.exists(rk.STATE_READY)
    await worker.handle(3)
    assert await worker.client.hgetall(rk.STATE_READY)
    assert await worker.quotes_at(3)


async def test_a_read_that_started_before_an_assignment_does_not_count(
    worker: Worker,
) -> None:
    await worker.handle(0)
    worker.clock.now += STATE_CHECK_EVERY_S
    runtime = worker.runtime
    rebuilder = runtime.rebuilder
    assert rebuilder is not None
    read = rebuilder.missing

    async def assigned_meanwhile(partitions: set[int]) -> tuple[set[int], bool]:
        found = await read(partitions)  # every marker there
        await worker.client.flushdb()  # then Redis loses them
        runtime.on_assigned(set(range(PARTITIONS)))  # and a rebalance asks for a check
        return found

    rebuilder.missing = assigned_meanwhile  # type: ignore[method-assign]
    await runtime.check_state()
    rebuilder.missing = read  # type: ignore[method-assign]
    assert not await worker.client.exists(rk.STATE_READY)
    await worker.handle(1)  # the assignment's check is still due: rebuilt
    assert await worker.client.hgetall(rk.STATE_READY)
