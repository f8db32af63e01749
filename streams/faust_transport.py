"""faust fast paths for the raw topic: whole runs of records, no per-message events.

faust's ``Consumer._drain_messages`` delivers every fetched message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``:
two asyncio tasks and several event-loop turns per message, then the
conductor makes an Event and queues it for the agent's stream. At 15k
messages/s that machinery alone was a worker's whole budget.
:class:`FastConsumer` fetches with faust's own ``_wait_next_records`` and
keeps its checks (flow active, rebalance generation, active partitions,
read offsets, gaps, ``commit_every``) but makes them once per partition run
(:meth:`FastConsumer.fetch_runs`), and hands a topic registered in
``FastConsumer.direct`` (the raw topic) each run as one :class:`Run` of the
processor's :class:`~streams.pipeline.RawRecord` (:func:`deliver_to`) into a
:class:`RunBuffer` the agent takes its batches from. No faust message is
made per record, nor an aiokafka ``ConsumerRecord``: the consumer's fetcher
makes each record a :class:`RawRecord` at once (:class:`RawPartitionRecords`).
The agent tracks and acks each run through faust's consumer as one unit
(:meth:`FastConsumer.track_run`, :meth:`FastConsumer.ack_run`), which puts
every offset of the run into faust's bookkeeping exactly as an ack per message would, so commits are
computed by faust exactly as for a Stream. (A faust message, its tracking,
its ack and its conversion took ~4 µs a record: ~20 ms of a 5,000-line burst.)

While the flow is suspended for a rebalance, a run is dropped (read offset
still advanced: the consumer seeks back to the committed offsets), and the
rebalance clears the buffer as it clears the stream buffers. A run that was
blocked on a full buffer when the rebalance started carries the old
``generation_id``; the agent (:mod:`streams.app`) drops it without an ack
(it is fetched again from the committed offsets), and the fetch loop leaves
the read offsets as the rebalance's seek set them: advancing them past the
old run would filter those records out when they come again, and the
partition would never be processed or committed past them.

:class:`RawSchema` makes the raw topic's events straight from the message
(key and value stay bytes) instead of going through faust's codec registry
for the ``raw`` codec (used where events still exist: ``test_context``).

Pacing (:class:`FetchWindow`): while the feed is live, the broker answers a
fetch once its window is over (:class:`FetchPacing`, :func:`install`: longer
at a low input rate), with everything that arrived meanwhile. aiokafka
fetches a broker's partitions again only once their fetched records were
taken, so this bounds the broker's fetch requests as well as the agent's
batches, Redis writes and produce requests; a fetch after a quiet spell is
answered as soon as a record arrives.

This module must never change what is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.consumer.fetcher import PartitionRecords
from faust.exceptions import ConsumerNotStarted
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from hqcore.host import CORE_WAIT_PERIOD_S, BusyNotice, CoreWait
from streams import metrics
from streams.pipeline import RawRecord

logger = logging.getLogger(__name__)


@dataclass(eq=False, slots=True, weakref_slot=True)
class Run:
    """Records of one partition fetched together, in offset order, as the processor reads them.

    faust tracks and acks a run as one unit (:meth:`FastConsumer.track_run`,
    :meth:`FastConsumer.ack_run`): it stands in faust's set of unacked
    messages, by identity, until every offset in it is acked.
    """

    tp: TP
    generation_id: int  # the rebalance generation it was fetched in
    records: list[RawRecord]
    acked: bool = False

    @property
    def refcount(self) -> int:
        """What faust's ``wait_empty`` logs for a message it still waits for."""
        return 0 if self.acked else 1

    def split(self, n: int) -> tuple[Run, Run]:
        """Its first ``n`` records and the rest, as two runs."""
        return (
            Run(self.tp, self.generation_id, self.records[:n]),
            Run(self.tp, self.generation_id, self.records[n:]),
        )


def raw_records(records: list[Any]) -> list[RawRecord]:
    """aiokafka's fetched records as the processor's: as they are when
    :class:`RawPartitionRecords` made them, else converted from ``ConsumerRecord``."""
    if not records or isinstance(records[0], RawRecord):
        return records
    return [
        RawRecord(r.key, r.value if r.value is not None else b"", r.headers or [],
                  r.topic, r.partition, r.offset, r.timestamp or 0)
        for r in records
    ]  # fmt: skip


def raw_record_keys(key: bytes | None) -> bytes | None:
    """The key "deserializer" of :class:`FastConsumer`'s aiokafka consumer: the key as it
    is. It marks the consumer whose fetched records :class:`RawPartitionRecords` makes."""
    return key


class RawPartitionRecords(PartitionRecords):  # type: ignore[misc]
    """aiokafka's records of one fetched partition, each made a :class:`RawRecord` at once.

    aiokafka makes a ``ConsumerRecord`` of each record (eleven fields, the
    headers copied into a tuple), which :func:`raw_records` then copied into
    a :class:`RawRecord`: 6.0 µs a record, against 3.9 µs made here
    (calibration 0.68 s; docs/benchmarks.md, "Fetched records made once").
    Everything else (batches, CRCs, aborted transactions, the next fetch
    offset) is aiokafka's.
    """

    def _consumer_record(self, tp: Any, record: Any) -> RawRecord:
        value = record.value
        return RawRecord(record.key, b"" if value is None else value, record.headers,
                         tp.topic, tp.partition, record.offset, record.timestamp or 0)  # fmt: skip


def _partition_records(
    tp: Any, records: Any, aborted: Any, fetch_offset: int, key_deserializer: Any, *rest: Any
) -> PartitionRecords:
    """What aiokafka's fetcher makes of a fetched partition (see :func:`install`)."""
    kind = RawPartitionRecords if key_deserializer is raw_record_keys else _AIOKAFKA_RECORDS
    return kind(tp, records, aborted, fetch_offset, key_deserializer, *rest)


_AIOKAFKA_RECORDS: Any = aiokafka_fetcher.PartitionRecords


async def seek_to_committed_or_beginning(consumer: AIOKafkaConsumer) -> dict[Any, int | None]:
    """Seek every assigned partition to its committed offset, or to its beginning if none.

    aiokafka's ``seek_to_committed`` seeks only partitions whose committed
    offset is above 0 and leaves the others at the position they were
    fetched to. faust calls it to fetch again what it dropped during a
    rebalance; for a partition nothing was committed on yet (a new group or
    topic), those dropped records were then never fetched again, and faust
    committed past them with the first records it processed (161 ticks of a
    fault-suite run; ``tests/streams/test_faust_transport.py``). The
    beginning is what ``auto_offset_reset="earliest"`` starts such a
    partition at anyway.
    """
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    never = [tp for tp, offset in committed.items() if not offset or offset < 0]
    if never:
        await consumer.seek_to_beginning(*never)
    return committed


def _fetch_positions(consumer: AIOKafkaConsumer, topic: str) -> Iterator[tuple[Any, int | None]]:
    """Per assigned partition of ``topic``: (its TopicPartition, how many of the records
    up to the last fetch response's high watermark are still to be handed over; None:
    no valid position or no fetch response yet)."""
    assignment = consumer._subscription.subscription.assignment  # no public getter
    for tp in consumer.assignment():
        if tp.topic != topic:
            continue
        state, high = assignment.state_value(tp), consumer.highwater(tp)
        valid = state is not None and state.has_valid_position and high is not None
        yield tp, high - state.position if valid else None


def fetched_to_end_ms(consumer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    """Per assigned partition of ``topic``: the wall time (epoch ms) of the latest fetch
    response, if every record up to its high watermark has been handed over since; 0 if not.

    A partition the broker keeps answering "nothing new" for is really quiet; one
    that is not fetched (broker down, flow paused, records not taken yet) is not.
    aiokafka keeps both in its fetch state: the response's time and high watermark
    (``last_poll_timestamp``, ``highwater``) and the next offset to hand over.
    """
    ends: dict[int, int] = {}
    for tp, behind in _fetch_positions(consumer, topic):
        polled = consumer.last_poll_timestamp(tp)
        ends[tp.partition] = polled if behind is not None and behind <= 0 and polled else 0
    return ends


def fetched_ahead(consumer: AIOKafkaConsumer, topic: str) -> bool:
    """Whether the last fetch response of some assigned partition of ``topic`` had records
    not handed over yet (a batch took ``max_poll_records``; the rest waits in aiokafka)."""
    return any(behind is not None and behind > 0 for _, behind in _fetch_positions(consumer, topic))


#: what the broker waits for before it answers a live feed's fetch (the window ends first).
#: A raw record takes ~124-148 bytes in the receiver's LZ4 batches, so a steady
#: feed's window holds a few KB (15 ms at 1,667 ticks/s: ~25 lines, ~3.3 KB; at
#: 5,000/s: ~10 KB) and its fetches still wait the whole window, while a burst's
#: 5,000 lines (~620 KB) fill this within ~500 lines and its next fetch is answered
#: with what came meanwhile. (1 MB: a burst never filled it, and each of its
#: fetches waited the window; docs/benchmarks.md, "A burst's fetches and quotes
#: first, held".)
WINDOW_MIN_BYTES = 64 * 1024
#: how often the fetch loop looks for the deliverer of a topic (the agent registers it)
DELIVERER_POLL_S = 0.1
DELIVERER_WARN_POLLS = 100
#: how often the window's estimate of the input rate is renewed
RATE_PERIOD_S = 0.5


@dataclass(frozen=True, slots=True)
class FetchPacing:
    """How long the broker holds a live feed's fetch: about ``batch_ticks`` records'
    worth at the rate records came in lately, never less than ``min_s`` nor more
    than ``max_s``; on a busy host never less than ``busy_s``.

    Each batch costs the worker a fixed few milliseconds whatever it holds (the
    fetch, a Redis pipeline, a produce request, the gateway's fetch of it), so
    at a low rate a short window spends most of the CPU on batches of one or
    two ticks; at a high rate ``min_s`` already fills batches and bounds the
    latency. ``max_s`` <= ``min_s`` or ``batch_ticks`` 0: a fixed ``min_s``;
    ``min_s`` 0: no window at all.

    When the host has no core to spare (:class:`CoreWait`), the same fixed
    costs are what every quote queues behind: the shortest window grows
    towards ``busy_s`` (0: never), and the pipeline buys its headroom back
    with a few milliseconds of each quote's wait (at an emulated host as slow
    as issue 22's day, 15 -> 30 ms took 14 % of the pipeline's CPU per tick
    and the steady p99 from 279-483 to 108-157 ms; docs/benchmarks.md, "The
    window on a busy host").
    """

    min_s: float = 0.0
    max_s: float = 0.0
    batch_ticks: int = 0
    busy_s: float = 0.0

    def window_s(self, rate: float | None, busy: float = 0.0) -> float:
        """The window at ``rate`` records/s (None: not known yet, the shortest) on a host
        ``busy`` from 0 (cores to spare) to 1 (none: the shortest is ``busy_s``)."""
        least = self.min_s
        if busy > 0 and self.busy_s > least > 0:
            least += (self.busy_s - least) * min(1.0, busy)
        if not rate or self.batch_ticks <= 0 or self.max_s <= self.min_s:
            return least
        return min(max(self.max_s, least), max(least, self.batch_ticks / rate))


class FetchWindow:
    """While the feed is live, the broker collects a window of records per fetch.

    aiokafka sends the next fetch as soon as the records of the last one were
    taken, and with ``fetch.min.bytes`` 1 the broker answers it at the next
    record: a fetch, a batch, a Redis write and a produce request per record
    or two. While fetches bring records this sets the aiokafka fetcher's
    ``fetch_max_wait_ms`` to the window and ``fetch_min_bytes`` to
    :data:`WINDOW_MIN_BYTES`, so each fetch is answered once the window is
    over (or a backlog fills it) with everything that arrived meanwhile, and
    every record waits at most the window. The window follows the input rate
    measured over :data:`RATE_PERIOD_S`, and how busy the host is
    (:class:`CoreWait`, measured while the feed is live; :class:`FetchPacing`). After a fetch
    that found nothing for a whole poll (the feed went quiet) the defaults
    come back: a quiet feed costs no fetch a window and is answered at its
    first record, and the next live spell starts at the shortest window.

    (It replaced a pause in the worker's own fetch loop, which did not bound
    the wait: the fetch aiokafka sent right after a take was answered at the
    pause's first record and held through it, so most of the pause's records
    waited for the fetch after the *next* pause: receive -> normalized p50
    34 ms at 1,667 ticks/s with a 15 ms pause. docs/benchmarks.md.)

    The fetcher's settings are private attributes of aiokafka's ``Fetcher``
    (read each time it builds a request); ``tests/streams/test_fetch_pacing.py``
    checks the behaviour on a real broker.
    """

    def __init__(
        self,
        fetcher: Callable[[], Any],
        pacing: FetchPacing,
        clock: Callable[[], float] = time.monotonic,
        core_wait: CoreWait | None = None,
    ) -> None:
        self._fetcher = fetcher  # the aiokafka Fetcher now (None before the consumer started)
        self.pacing = pacing
        self._clock = clock
        self._core_wait = core_wait or CoreWait(clock=clock)
        self.live = False
        self.rate: float | None = None  # records/s over the last rate period (None: unknown)
        self.busy = 0.0  # how busy the host is (CoreWait), while the feed is live
        self._notice = BusyNotice(clock)
        self._counted, self._since = 0, 0.0  # records fetched since ``_since`` (0: not started)
        self._set: Any = None  # the fetcher whose settings this controls
        self._defaults = (0, 0)  # its own fetch_max_wait_ms and fetch_min_bytes

    @property
    def window_s(self) -> float:
        return self.pacing.window_s(self.rate, self.busy)

    def fetched(self, records: int) -> None:
        """Say how many records the last poll brought; switches the window on or off
        and sets its length."""
        if self.pacing.min_s <= 0:
            return
        fetcher = self._fetcher()
        if fetcher is None:
            return
        if fetcher is not self._set:  # the first, or a consumer made anew: its own defaults
            self._set, self.live = fetcher, False
            self._defaults = (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes)
        if not records:
            if self.live:
                fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes = self._defaults
                self.live, self.rate, self._since = False, None, 0.0
                metrics.FETCH_WINDOW.set(0)
            return
        self._measure(records)
        if self.pacing.busy_s > 0:
            self._follow_the_host(self._core_wait.busy())
        wait_ms = max(1, round(self.window_s * 1000))
        if not self.live or fetcher._fetch_max_wait_ms != wait_ms:
            fetcher._fetch_max_wait_ms = wait_ms
            fetcher._fetch_min_bytes = WINDOW_MIN_BYTES
            self.live = True
            metrics.FETCH_WINDOW.set(wait_ms / 1000)

    def _follow_the_host(self, busy: float) -> None:
        self.busy = busy
        share = self._core_wait.share
        metrics.CORE_WAIT.set(share)
        tell = self._notice.update(busy)
        if tell:
            logger.warning(
                "the host is busy: the worker's main thread waited for a core %.0f%% of the "
                "last %.0f s; the fetch window is %.0f ms (fewer, larger batches)",
                share * 100, CORE_WAIT_PERIOD_S, self.window_s * 1000,
            )  # fmt: skip
        elif tell is False:
            logger.info(
                "the host is not busy any more: the worker's main thread waited for a core "
                "%.0f%% of the last %.0f s; the fetch window is %.0f ms",
                share * 100, CORE_WAIT_PERIOD_S, self.window_s * 1000,
            )  # fmt: skip

    def _measure(self, records: int) -> None:
        now = self._clock()
        if not self._since:  # a live spell starts: its first records arrived before now
            self._counted, self._since = 0, now
            return
        self._counted += records
        if (elapsed := now - self._since) >= RATE_PERIOD_S:
            self.rate = self._counted / elapsed
            self._counted, self._since = 0, now


class FastConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's thread of the aiokafka consumer, whose fetches make :class:`RawRecord`
    objects directly (:class:`RawPartitionRecords`)."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._key_deserializer = raw_record_keys  # read by its fetcher, made at start
        return consumer


class FastConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer delivering whole runs of records.

    ``direct[topic]`` receives each fetched :class:`Run` of that topic in one
    call instead of the conductor's per-message callback; the fetch loop
    waits for the agent to register it.
    """

    direct: dict[str, Callable[[Run], Awaitable[None]]]
    #: awaited first when faust waits for every fetched message to be acked (a
    #: rebalance, a stop): the worker gives the acks it holds back
    before_wait_empty: Callable[[], Awaitable[None]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct = {}
        self.fetch_pacing: FetchPacing = getattr(self.transport, "fetch_pacing", FetchPacing())

    def _new_consumer_thread(self) -> FastConsumerThread:
        return FastConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_empty(self) -> None:
        """faust's wait for the acks of every message handed out, after
        :attr:`before_wait_empty`."""
        if self.before_wait_empty is not None:
            await self.before_wait_empty()
        await super().wait_empty()

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """faust's seek back to the committed offsets (after a rebalance, while the flow
        is suspended), also for partitions with none: :func:`seek_to_committed_or_beginning`."""
        thread = self._thread
        consumer = thread._ensure_consumer()
        return cast(
            Mapping[Any, int], await thread.call_thread(seek_to_committed_or_beginning, consumer)
        )

    def fetched_to_end_ms(self, topic: str) -> dict[int, int]:
        """:func:`fetched_to_end_ms` of this worker's aiokafka consumer ({} before it started)."""
        try:
            consumer = self._thread._ensure_consumer()
        except ConsumerNotStarted:
            return {}
        return fetched_to_end_ms(consumer, topic)

    def fetched_ahead(self, topic: str) -> bool:
        """:func:`fetched_ahead` of this worker's aiokafka consumer (False before it started)."""
        try:
            consumer = self._thread._ensure_consumer()
        except ConsumerNotStarted:
            return False
        return fetched_ahead(consumer, topic)

    def _aiokafka_fetcher(self) -> Any:
        """The aiokafka consumer's fetcher, or None before it started."""
        try:
            return getattr(self._thread._ensure_consumer(), "_fetcher", None)
        except ConsumerNotStarted:
            return None

    async def fetch_runs(self, timeout: float) -> list[Run]:
        """faust's ``getmany`` returning each partition's records as one :class:`Run`.

        Same checks as faust's (flow active, same rebalance generation,
        partition active), made once per partition instead of once per
        message; partitions keep their order (there is one topic here, so
        faust's round-robin between topics has nothing to balance).
        """
        records, active = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return []
        if not self.flow_active:
            try:  # as faust: seek back to the committed offsets
                await self.perform_seek()
            except Exception as exc:
                logger.warning("seek while the flow is suspended failed: %r", exc)
            return []
        app = self.app
        generation = app.consumer_generation_id
        runs: list[Run] = []
        for tp, tp_records in records.items():
            if not self.flow_active or app.consumer_generation_id != generation:
                break
            if active is None or tp in active or tp in self._buffered_partitions:
                app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                runs.append(Run(tp, generation, raw_records(tp_records)))
        return runs

    def track_run(self, run: Run) -> None:
        """faust's ``track_message`` for a whole run: a rebalance or a stop waits for its ack.

        (faust's sensors are not told: they count messages for its web views,
        which the worker does not serve.)"""
        self._unacked_messages.add(cast(Any, run))  # a run stands in for its messages

    def ack_run(self, run: Run) -> int:
        """faust's ``ack`` of every record of ``run`` at once; returns how many offsets
        became committable (none twice, none below the committed offset)."""
        with ack_lock:
            if run.acked:
                return 0
            run.acked = True
            try:
                if not self.app.topics.acks_enabled_for(run.tp.topic):
                    return 0
                tp = run.tp
                committed = self._committed_offset[tp]
                index = self._acked_index[tp]
                offsets = [
                    r.offset for r in run.records
                    if (committed is None or r.offset >= committed) and r.offset not in index
                ]  # fmt: skip
                index.update(offsets)
                self._acked[tp].extend(offsets)
                self._n_acked += len(offsets)
                return len(offsets)
            finally:
                self._unacked_messages.discard(cast(Any, run))
                notify(self._waiting_for_ack)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - faust loop
        direct = self.direct
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        suspended = self.suspend_flow.is_set
        read_offset = self._read_offset
        app = self.app
        acks_enabled_for = app.topics.acks_enabled_for
        window = FetchWindow(self._aiokafka_fetcher, self.fetch_pacing)
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                runs = await self.fetch_runs(timeout=1.0)
                window.fetched(sum(len(run.records) for run in runs))
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                for run in runs:
                    tp, records = run.tp, run.records
                    r_offset = read_offset[tp]
                    if r_offset is not None and records[0].offset < r_offset:
                        run.records = records = [r for r in records if r.offset >= r_offset]
                    if not records:
                        continue
                    if acks_enabled_for(tp.topic):
                        await self._record_gaps(tp, r_offset, records)
                    commit_every = self._commit_every
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if not suspended():
                        deliver = direct.get(tp.topic) or await self._deliverer(tp.topic)
                        await deliver(run)
                    if run.generation_id != app.consumer_generation_id:
                        # A rebalance finished while this run waited to be
                        # delivered: its seek set the read offsets to the
                        # committed ones. Advancing them now would filter out
                        # (never process, never ack) every record up to this
                        # run's end when they are fetched again, and faust
                        # would commit nothing of the partition after them.
                        break
                    read_offset[tp] = records[-1].offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                logger.info("broker stopped the consumer, shutting down")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliverer(self, topic: str) -> Callable[[Run], Awaitable[None]]:
        """Waits for the agent to register the deliverer of ``topic`` (as it starts)."""
        polls = 0
        while (deliver := self.direct.get(topic)) is None:
            if polls and not polls % DELIVERER_WARN_POLLS:
                logger.warning("records of %s fetched, no agent takes them yet (%.0f s)",
                               topic, polls * DELIVERER_POLL_S)  # fmt: skip
            await asyncio.sleep(DELIVERER_POLL_S)
            polls += 1
        return deliver

    async def _record_gaps(self, tp: Any, r_offset: int | None, records: list[RawRecord]) -> None:
        """faust's gap bookkeeping (offsets skipped by the broker may be committed past)."""
        first, last = records[0].offset, records[-1].offset
        if last - first == len(records) - 1 and not (r_offset and first - r_offset > 1):
            return  # contiguous, the usual case
        previous = r_offset
        for record in records:
            offset = record.offset
            if previous and offset - previous > 1:
                await self._add_gap(tp, previous + 1, offset)
            previous = offset


class RunBuffer:
    """The fetched :class:`Run` objects waiting for one agent, bounded in records.

    :meth:`put` blocks while ``max_records`` are buffered (backpressure:
    the fetcher is drained no further); :meth:`batch` takes runs of up to
    ``max_n`` records in all (splitting the last one if need be), waiting at
    most ``within_s`` after the first one for more. Registered with faust's
    flow control, so a rebalance clears it as it clears the stream buffers
    (nothing buffered is tracked or acked yet; the consumer seeks back to the
    committed offsets).
    """

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self._runs: deque[Run] = deque()
        self._size = 0
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()

    def __len__(self) -> int:
        return self._size

    async def put(self, run: Run) -> None:
        while self._size >= self.max_records:
            self._not_full.clear()
            await self._not_full.wait()
        self._runs.append(run)
        self._size += len(run.records)
        self._not_empty.set()

    async def wait_for_input(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a run to come; whether one is buffered."""
        if not self._runs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._not_empty.wait(), timeout_s)
        return bool(self._runs)

    def clear(self) -> None:
        self._runs.clear()
        self._size = 0
        self._not_empty.clear()
        self._not_full.set()

    def _pop(self, n: int) -> tuple[list[Run], int]:
        """Runs of up to ``n`` records in all, and how many records they hold."""
        out: list[Run] = []
        taken = 0
        runs = self._runs
        while runs and taken < n:
            run = runs[0]
            need = n - taken
            if len(run.records) <= need:
                out.append(runs.popleft())
                taken += len(run.records)
            else:
                head, runs[0] = run.split(need)
                out.append(head)
                taken = n
        self._size -= taken
        if not runs:
            self._not_empty.clear()
        if self._size < self.max_records:
            self._not_full.set()
        return out, taken

    async def batch(self, max_n: int, within_s: float) -> list[Run]:
        """Runs of up to ``max_n`` records in all, returned at most ``within_s`` after
        the first one."""
        while not self._runs:
            await self._not_empty.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        batch, taken = self._pop(max_n)
        while taken < max_n:
            if not self._runs:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await self.wait_for_input(remaining):
                    break
            more, n = self._pop(max_n - taken)
            batch += more
            taken += n
        return batch


class RawSchema(faust.Schema):  # type: ignore[type-arg]
    """Key and value as the raw bytes of the message, without the codec registry."""

    def compile(self, app: Any, **kwargs: Any) -> Any:
        event_cls = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event_cls(app, message.key, message.value, message.headers, message)

        return decode


class FastTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport using :class:`FastConsumer`."""

    Consumer = FastConsumer
    fetch_pacing = FetchPacing()  # for its consumers: see install()


def deliver_to(app: Any, buffer: RunBuffer) -> Callable[[Run], Coroutine[Any, Any, None]]:
    """A ``direct`` deliverer: each fetched run into ``buffer``.

    What the conductor does per message, once per run: wait while the flow
    is suspended, then queue (blocking while the buffer is full).
    """
    flow_control = app.flow_control
    flow_control.manage_queue(buffer)  # cleared when a rebalance clears the stream buffers

    async def deliver(run: Run) -> None:
        await flow_control.acquire()
        await buffer.put(run)

    return deliver


def install(app: Any, pacing: FetchPacing = FetchPacing()) -> None:
    """Make ``app`` consume through :class:`FastTransport`; call right after ``faust.App()``.

    ``pacing``: while the feed is live, how long the broker holds a fetch (records
    arriving meanwhile come in one fetch, one batch); the default: no window."""
    # aiokafka's fetcher makes each partition's records by this module-level name: the
    # factory makes RawPartitionRecords for FastConsumer's consumer only (raw_record_keys)
    aiokafka_fetcher.PartitionRecords = _partition_records
    transport = FastTransport(app.conf.broker_consumer, cast(Any, app))
    transport.fetch_pacing = pacing
    app.transport = transport
