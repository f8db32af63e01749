"""Offset ranges of Kafka topics: planned with batched ListOffsets, read with a plain consumer.

The state rebuild (:mod:`streams.state_rebuild`) reads bounded ranges of the
workers' output topics. :class:`KafkaRanges` asks for offsets with the admin
client's ``list_offsets`` (one request per spec for every partition at once;
never ``list_consumer_group_offsets``, see librdkafka#5040) and reads with
consumers that join no group and commit nothing, one per read running at
once. Never writes to Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from hqcore.kafka_client import librdkafka_config
from schemas.exchange import SHANGHAI_TZ
from streams.errors import StreamsError
from streams.settings import StreamsSettings

logger = logging.getLogger(__name__)

#: records one ``consume`` call returns at most: handled in one go, so small enough that the
#: event loop (the other reads, Redis replies, a worker's timers) is never held up for long
FETCH_MAX = 500
#: reads that may run at once (one consumer and one fetch thread each)
MAX_READS = 16

Ranges = dict[int, tuple[int, int]]
"""``partition -> [start offset, end offset)`` of one topic."""


class KafkaRanges:
    """Plans and reads offset ranges of topics: an admin client for the offsets (never
    ``list_consumer_group_offsets``), plain consumers (no group, no commits) to read.

    Reads may run at once (the rebuild reads its topics concurrently): each
    takes an idle consumer, or a new one, and gives it back when done.
    """

    def __init__(self, settings: StreamsSettings) -> None:
        self.admin = AdminClient(librdkafka_config(settings))
        self._consumer_config = {
            **librdkafka_config(settings),
            "group.id": f"{settings.group_id}-state-rebuild-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.min.messages": 200_000,
            "fetch.wait.max.ms": 50,  # a partition at its end answers at once
        }
        self._consumers: list[Consumer] = []
        self._idle: list[Consumer] = []
        #: a fetch thread per read at most (``consume`` waits up to its timeout there)
        self._fetching = ThreadPoolExecutor(MAX_READS, thread_name_prefix="rebuild-fetch")

    def close(self) -> None:
        """Close the consumers and destroy the admin client now, not when collected."""
        self._fetching.shutdown(wait=True)
        for consumer in self._consumers:
            consumer.close()
        self.admin.__exit__(None, None, None)  # what ``with AdminClient(...)`` ends with

    def partitions(self, topic: str, only: set[int] | None) -> list[int]:
        """The partitions of ``topic`` (those in ``only`` when given)."""
        md = self.admin.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise StreamsError(f"topic {topic} does not exist")
        return sorted(p for p in md.partitions if only is None or p in only)

    def offsets(
        self, specs: dict[tuple[str, int], OffsetSpec]
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """``(topic, partition) -> (offset, timestamp)`` for each spec: one request per broker.

        ``OffsetSpec.max_timestamp()`` gives the newest record's timestamp
        without reading it; ``for_timestamp`` the first offset at or after a
        time (-1 when there is none).
        """
        if not specs:
            return {}
        futures = self.admin.list_offsets(
            {TopicPartition(t, p): spec for (t, p), spec in specs.items()}, request_timeout=30
        )
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for tp, future in futures.items():
            info = future.result()
            out[(tp.topic, tp.partition)] = (int(info.offset), int(info.timestamp))
        return out

    async def read(
        self,
        topic: str,
        ranges: Ranges,
        handle: Callable[[Message], None],
        progress: Callable[[int], None] | None = None,
        after_fetch: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Hand every record of ``ranges`` (``partition -> [start, end)``) to ``handle``.

        A partition is done at its end offset or at its end of log (a
        compacted topic may have no record at ``end - 1``). Fetches run in a
        thread, one ahead: the next batch is fetched while this one is handled.
        """
        todo = {p: end for p, (start, end) in ranges.items() if end > start}
        if not todo:
            return 0
        consumer = self._idle.pop() if self._idle else self._new_consumer()
        consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in todo])
        loop = asyncio.get_running_loop()

        def fetch() -> asyncio.Future[list[Message]]:
            return loop.run_in_executor(self._fetching, consumer.consume, FETCH_MAX, 0.1)

        fetching = fetch()
        read = 0
        try:
            while todo:
                msgs = await asyncio.shield(fetching)  # cancelled: the thread still ends below
                fetching = fetch()
                read += _hand_over(msgs, todo, handle)
                if progress is not None and msgs:
                    progress(len(msgs))
                if after_fetch is not None:
                    await after_fetch()
                await asyncio.sleep(0)
        finally:
            with contextlib.suppress(Exception):  # the fetch ahead: its records are past the ends
                await fetching
            consumer.unassign()
            self._idle.append(consumer)
        return read

    def _new_consumer(self) -> Consumer:
        consumer = Consumer(self._consumer_config)
        self._consumers.append(consumer)
        return consumer


def _hand_over(msgs: list[Message], todo: dict[int, int], handle: Callable[[Message], None]) -> int:
    """Hand the records of ``msgs`` below their partition's end in ``todo`` to ``handle``;
    a partition leaves ``todo`` at its end. Returns how many were handed over."""
    handed = 0
    for msg in msgs:
        err = msg.error()
        p: Any = msg.partition()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                todo.pop(p, None)
            elif not err.retriable():
                raise KafkaException(err)
            continue
        end = todo.get(p)
        offset: Any = msg.offset()
        if end is None or offset >= end:
            continue
        handle(msg)
        handed += 1
        if offset + 1 >= end:
            del todo[p]
    return handed


def shanghai_day_start_ms(ts_ms: int) -> int:
    """Epoch ms of 00:00 Shanghai time of the day holding ``ts_ms``."""
    day = dt.datetime.fromtimestamp(ts_ms / 1000, SHANGHAI_TZ).date()
    return int(dt.datetime.combine(day, dt.time(), SHANGHAI_TZ).timestamp() * 1000)


class OneInFlight:
    """Redis writes of a rebuild, one at a time in order, each overlapping the next decode."""

    def __init__(self) -> None:
        self._task: asyncio.Task[int] | None = None
        self.done = 0  # what the finished writes returned, summed

    async def submit(self, write: Coroutine[Any, Any, int]) -> None:
        try:
            await self.drain()
        except BaseException:
            write.close()  # never started
            raise
        self._task = asyncio.create_task(write)

    async def drain(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self.done += await task
