"""What a stream worker does with each batch and each second, independent of faust.

:class:`StreamsRuntime` turns a batch of raw records into outputs with
:class:`streams.pipeline.Processor` and makes them durable: Kafka outputs are
queued, the Redis batch is written, then every Kafka delivery is awaited.
Two ways to drive it:

* :meth:`StreamsRuntime.handle`: process and persist; the caller may ack
  (commit) the batch when it returns (the rebuild, tests).
* :meth:`StreamsRuntime.submit`: process now, send the Kafka outputs at
  once (:meth:`StreamsRuntime._send_ahead`), write Redis in the background
  and call ``on_durable`` (the ack) once Redis and Kafka have it. Batch N+1 is
  parsed while batch N is written (Redis runs the scripts and the broker
  acknowledges on the other core), at most one batch is in flight, and
  persists run in batch order, so Redis sees exactly the writes of
  :meth:`handle` (the faust agent, the benchmark's plain loop).

A failure of Redis or Kafka is retried with backoff for as long as it takes
(logged loudly, counted): a batch is never skipped and the stream never
stops. An outage is never a reason to dead-letter; but when Redis refuses a
batch with an error that is not an outage (a script error: something in one
record), its quotes are written one by one and the ones Redis refuses go to
the DLQ as ``unprocessable`` (their normalized records are already queued to
Kafka by then). :meth:`StreamsRuntime.publish_stats` runs once a second,
:meth:`StreamsRuntime.flush_candles` too (it closes the candles of stocks
that stopped ticking), and :meth:`StreamsRuntime.on_revoked` drops revoked
partitions' stocks from this worker's market statistics. Their candles,
alerts and bars wait for the next assignment: the partitions it gives back
at once (the next generation: nobody else had them) keep that state, the
others' is dropped, so a rebalance warms up only the stocks that moved.

Market statistics across workers: every worker writes its partial state to
the Redis hash ``hq:stats:partials`` (field = worker id, with a timestamp);
the live worker with the smallest id merges all partials younger than
``partial_ttl_s`` (older ones are dead workers' and are deleted) and publishes
the result to ``hq.market.stats`` and the Redis market summaries.
This module never calls ``ack`` or commits offsets itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import KafkaException

from hqcore.tuning import freeze_survivors, tune_malloc
from schemas.exchange import MARKETS_AND_ALL, Market
from schemas.serde import Codec, make_codec
from streams import metrics
from streams.errors import StreamsError
from streams.finish_cost import TickCost
from streams.lifecycle import fatal
from streams.market_stats import MarketPartial, merge_partials
from streams.outbox import KafkaOutputError, Outbox
from streams.pipeline import BatchResult, KafkaOut, Parsed, Processor, RawRecord, unprocessable
from streams.redis_sink import RedisSink, SinkBatch, WriteResult, is_redis_error
from streams.settings import StreamsSettings
from streams.state_rebuild import StateRebuilder

logger = logging.getLogger(__name__)

#: what a merge of the market statistics is made of: each live worker's top-N and
#: market partials (their time left out: it moves every round)
StatsInputs = dict[str, tuple[int, dict[Market, MarketPartial]]]


#: end-to-end latencies observed per batch (evenly spaced quotes)
E2E_SAMPLES = 32
#: seconds between two reads of the state markers when no Redis error asked for one sooner
STATE_CHECK_EVERY_S = 1.0
#: seconds between two PINGs of a Redis that failed, while waiting to try again
REDIS_POLL_S = 0.25
#: candles the timer closes while it holds the worker (~30 ms of work with their
#: bars); the batches waiting go between two slices (docs/benchmarks.md,
#: "A stall every exchange minute")
CANDLE_SLICE = 200
#: seconds between two slices: a minute's 5,000 closes spread over ~2 s rather than
#: taking the worker, Redis and the broker at once
CANDLE_SLICE_PAUSE_S = 0.05


#: the most ticks of a waiting batch finished at a time (:meth:`StreamsRuntime.finish_next`;
#: fewer when they would take longer than ``finish_slice_ms``)
FINISH_SLICE = 500


def _no_ack() -> None:
    """The ack of a batch's slice: the batch is acked with its last slice."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tune_memory(gen0_threshold: int) -> None:
    """Keep Python's cyclic GC off a stream worker's state (``0`` leaves it alone),
    and keep glibc from returning each batch's memory to the kernel
    (:func:`hqcore.tuning.tune_malloc`).

    Each batch allocates ~100k short-lived dicts and lists (no cycles); with
    the default threshold (700) the collector runs every few hundred records
    and walks the ever older generations: measured ~40% of parse time. With
    ``gen0_threshold`` it runs once that many objects outlive their batch, and
    every survivor is frozen (:func:`hqcore.tuning.freeze_survivors`): a
    collection walks what was allocated since the last one, never the state.
    """
    tune_malloc()
    if gen0_threshold > 0:
        freeze_survivors(gen0_threshold)


@dataclass(slots=True)
class SentAhead:
    """A batch's Kafka outputs sent before the batch in flight was durable."""

    delivered: asyncio.Future[None]  # their flush
    resends: int  # StreamsRuntime._resends when they were sent


@dataclass(slots=True)
class Pending:
    """A batch parsed (:meth:`StreamsRuntime.submit`), its quotes perhaps published, waiting
    for the rest of its processing (:meth:`StreamsRuntime._finish`)."""

    parsed: Parsed
    on_durable: Callable[[], None]
    started: float  # perf_counter() when it was submitted
    quotes: SentAhead | None = None  # its normalized records, sent before the rest
    n_quotes: int = 0  # how many of its Kafka outputs ``quotes`` sent (the first ones)
    #: its quotes could not go first: counted in ``_unsent`` until its persist sends them
    unsent: bool = False
    #: the runtime's clock when it began to wait (:meth:`StreamsRuntime.finish_wait_s`)
    waiting_since: float = 0.0


async def _all_delivered(*flushes: asyncio.Future[None]) -> None:
    """Await every flush; then raise the first failure, if any."""
    for outcome in await asyncio.gather(*flushes, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def _outcome_ignored(future: asyncio.Future[Any]) -> None:
    """``future``'s records are sent again by their persist: its outcome is not awaited."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


class StreamsRuntime:
    """One worker's processor, Redis sink and Kafka outbox, with the retry policy."""

    def __init__(
        self,
        settings: StreamsSettings,
        sink: RedisSink,
        outbox: Outbox,
        worker_id: str,
        *,
        processor: Processor | None = None,
        rebuilder: StateRebuilder | None = None,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.rebuilder = rebuilder  # None: never checks or rebuilds the Redis state
        self._clock = clock  # seconds, for when the state markers are next read
        self._state_check_at = clock()  # due now: the first batch checks
        self._state_epoch = 0  # bumped when a check is asked for (see check_state)
        self._state_read_at = -math.inf  # the markers' last read
        self.sink = sink
        self.outbox = outbox
        self.worker_id = worker_id
        self.processor = processor or Processor(settings)
        self.stats_codec: Codec = make_codec(
            "market_stats", settings.schema_registry_url, settings.topic_names.market_stats
        )
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Task[object] | None = None  # the newest persist queued
        self._before_inflight: asyncio.Task[object] | None = None  # the one before it
        self._resends = 0  # sends by a persist itself, not ahead (see _send_ahead)
        self._unsent = 0  # batches processed whose persist has yet to send their outputs
        self._pending: list[Pending] = []  # parsed, quotes out, the rest to do (in order)
        self._catching_up = False  # a batch waited its most: the rest is finished as input comes
        self._timer = timer  # seconds, for what a slice of waiting work takes
        self.tick_cost = TickCost()  # what a waiting tick takes to finish, as measured
        self._derive_s = 0.0  # what the last batch's (or slice's) derive took
        self._candles_put_off = False  # the candle timer's last round gave way to them
        self._latest: dict[bytes | None, KafkaOut] = {}  # hq.quotes.latest records to send
        self._latest_due = clock()  # when the next batch takes them along
        self._held: list[Callable[[], None]] = []  # acks of durable batches they wait for
        self._hand_over = False  # a rebalance or a stop waits for acks: no batch holds one
        self._assignment: set[int] | None = None
        self._generation = -1  # of the assignment held
        self._revoked: dict[int, int] = {}  # partition -> the generation it was held in
        self._keep: set[int] = set()  # revoked, given back at once: state kept at the reseed
        self._reseed = False
        self.batches = 0
        self.last_batch_s = 0.0
        self._feed_metrics = metrics.FeedExport()
        # the partials the last published merge was made of, and when (wall clock, ms)
        self._published_stats: tuple[StatsInputs, int] | None = None
        self._after_close_seen = 0  # the candle builder's count exported so far

    # -- rebalance -----------------------------------------------------------

    def on_assigned(self, partitions: set[int], generation: int = -1) -> None:
        """Called on every (re)assignment of raw-topic partitions (``generation``: the
        group's, -1 unknown). Revoked partitions given back in the very next
        generation keep their stocks' state: no other worker had them."""
        self._keep = {
            p for p in partitions if generation >= 0 and self._revoked.get(p) == generation - 1
        }
        self._revoked.clear()
        self._generation = generation
        kept = f" ({len(self._keep)} given back, their state kept)" if self._keep else ""
        logger.info("worker %s assigned raw partitions %s%s", self.worker_id, sorted(partitions),
                    kept)  # fmt: skip
        self._assignment = set(partitions)
        self._hand_over = False
        self._reseed = True
        self._state_check_at = self._clock()  # new partitions: check their markers at once
        self._state_epoch += 1
        metrics.ASSIGNED.set(len(partitions))
        metrics.HEALTH.joined = True

    async def on_revoked(self, partitions: set[int]) -> int:
        """Called when raw-topic partitions are revoked: forget their stocks' statistics
        and pause their candles (their state waits for the next assignment).

        Then writes this worker's smaller partial at once, so the merged
        statistics never count those stocks twice (here and at their new
        owner). Never raises; returns how many stocks were forgotten.
        """
        if not partitions:
            return 0
        self._revoked.update(dict.fromkeys(partitions, self._generation))
        try:
            async with self._caught_up():
                await self._wait_inflight()
                dropped = self.processor.pause_partitions(partitions)
                logger.info("worker %s: partitions %s revoked, %d stocks dropped from stats",
                            self.worker_id, sorted(partitions), dropped)  # fmt: skip
                now = now_ms()
                partial = self.processor.stats.partial_state(self.settings.stats_top_n, now_ms=now)
                await self.sink.write_partial(self.worker_id, partial, now)
                return dropped
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("revoked partitions: partial not rewritten: %r", exc)
            return 0

    async def _maybe_reseed(self) -> None:
        if not self._reseed:
            return
        await self._wait_inflight()  # seed from a Redis that has every processed batch
        await self._with_retry("seed state", self._seed)
        self._reseed = False

    async def _ensure_state(self) -> None:
        """Rebuild this worker's part of the Redis state when its marker is missing.

        The markers are read (one HMGET) before the first batch, then at most
        once every :data:`STATE_CHECK_EVERY_S` (mostly by :meth:`check_state`,
        beside the batches) and before the next batch after any Redis error
        (a Redis that restarted empty fails the writes in flight first). So a
        Redis that lost its data (FLUSHDB, a restart without persistence) is
        restored within about a second: the batches written meanwhile are on
        Kafka and in the rebuild, and every write is newer-wins. The batch in
        flight is made durable first, so the rebuild reads its outputs too.
        Then the in-memory state is seeded again from the rebuilt Redis.
        """
        rebuilder, assignment = self.rebuilder, self._assignment
        if rebuilder is None or assignment is None or self._clock() < self._state_check_at:
            return
        partitions, market = await self._with_retry("check state", rebuilder.missing, assignment)
        self._state_read_at = self._clock()
        self._state_check_at = self._state_read_at + STATE_CHECK_EVERY_S
        if not partitions and not market:
            return
        await self._wait_inflight()
        what = f"partitions {sorted(partitions)}" + (" and market" if market else "")
        logger.warning("worker %s: redis state of %s missing: rebuilding", self.worker_id, what)
        attempt = 0
        while True:
            try:
                await rebuilder.rebuild(partitions, market)
                break
            except Exception as exc:
                if not (is_redis_error(exc) or isinstance(exc, KafkaException | StreamsError)):
                    raise
                attempt += 1
                await self._backoff(attempt, f"state rebuild failed, starting it again: {exc!r}",
                                    redis_down=is_redis_error(exc))  # fmt: skip
        self._reseed = True

    async def check_state(self) -> None:
        """Read the state markers beside the batches (the stats timer's, once a second).

        A batch then seldom waits for the read under the lock (a round trip
        queued behind the batches' Redis writes): after this read, a batch
        reads them itself only if no timer read came for 1.5 periods, or once
        a check is asked for (an assignment, a Redis error; a read that
        started before that does not count). Markers missing: the next batch
        (or stats round) reads them again and rebuilds under the lock. Reads
        at most every half period. Never raises.
        """
        rebuilder, assignment = self.rebuilder, self._assignment
        if rebuilder is None or assignment is None:
            return
        if self._clock() - self._state_read_at < STATE_CHECK_EVERY_S / 2:
            return
        epoch = self._state_epoch
        try:
            partitions, market = await rebuilder.missing(assignment)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the batches read them themselves, with retries
            logger.debug("state markers not read beside the batches: %r", exc)
            return
        if epoch != self._state_epoch:
            return
        now = self._clock()
        self._state_read_at = now
        if partitions or market:
            self._state_check_at = now
        else:
            self._state_check_at = now + STATE_CHECK_EVERY_S * 1.5

    async def _seed(self) -> None:
        await self.processor.seed(self.sink, self._assignment, keep=self._keep)
        self._keep = set()  # a later reseed (a state rebuild) starts afresh

    # -- the batch ------------------------------------------------------------

    async def handle(self, records: list[RawRecord]) -> BatchResult:
        """Process and persist one batch; returns once Redis and Kafka have it all."""
        started = time.perf_counter()
        async with self._caught_up():
            await self._ensure_state()
            await self._maybe_reseed()
            result: BatchResult = await self._with_retry(
                "process", self.processor.process, records, self.sink
            )
            self._carry_latest(result, force=True)
            await self._wait_inflight()
            await self._persist(result)
            self._release_held()
        self.last_batch_s = time.perf_counter() - started
        metrics.BATCH_LATENCY.observe(self.last_batch_s)
        self._observe(result)
        return result

    async def submit(
        self,
        records: list[RawRecord],
        on_durable: Callable[[], None],
        *,
        defer: Callable[[], bool] | None = None,
    ) -> BatchResult | None:
        """Parse ``records``; then the rest of the batch (statistics, candles, alerts, its
        outputs), persisted after the batch in flight, then ``on_durable()``.

        ``defer()``, asked once the batch is parsed: input waits for the
        worker. Then (or while batches wait already, or the batch holds at least
        ``quotes_first_batch`` records: a burst's first fetch, whose next one
        is on its way but not here yet) its quotes are published
        at once and the rest waits (up to ``quotes_first_ticks`` ticks) for
        :meth:`finish_next`, or anything else that takes the worker: the
        agent finishes waiting batches one at a time, only while no input
        waits, so every quote of a burst is parsed and published before the
        batches before it are derived and written (the last line of a
        5,000-line burst waited for all of that: docs/benchmarks.md, "Quotes
        first"). Otherwise the batch is finished now, its outputs in one
        produce request.
        Batches are finished in order; each is acked once durable, as before.

        Returns the batch processed (not yet durable), None while it waits;
        raises what the previous batch's persist raised (not a Redis/Kafka
        outage: those are retried until they succeed).
        """
        started = time.perf_counter()
        async with self._lock:
            if not self._pending:  # (a rebuild or reseed must see every batch parsed)
                await self._ensure_state()
                await self._maybe_reseed()
            parsed = await self.processor.parse_batch(records)
            room = self.ticks_waiting + len(parsed) < self.settings.quotes_first_ticks
            if room and defer is not None and (self._pending or self._burst(records) or defer()):
                self._pending.append(await self._publish_quotes(parsed, on_durable, started))
                metrics.TICKS_WAITING.set(self.ticks_waiting)
                return None
            self._pending.append(Pending(parsed, on_durable, started))
            result = await self._finish_pending()
        # Let the persist send its writes now: the caller may not yield to the
        # loop before the next batch is processed (its queue is full).
        await asyncio.sleep(0)
        return result

    def _burst(self, records: list[RawRecord]) -> bool:
        """A batch this large comes from a burst or a backlog: more input is on its way.

        A burst's first fetch was found finished at once in 4-10 of ~37
        bursts a run (its next fetch not handed over yet when its parse
        ended), and its ~40-90 ms of statistics, candles and Redis writes
        then came before the rest of the burst was parsed (docs/benchmarks.md,
        "A burst, event by event, a third time").
        """
        least = self.settings.quotes_first_batch
        return least > 0 and len(records) >= least

    async def finish_next(self) -> BatchResult | None:
        """Finish a slice of the oldest batch waiting (:meth:`submit`): as many of its ticks
        as take ``finish_slice_ms`` (at most :data:`FINISH_SLICE`); the rest of it waits
        at the head. None if none waits.

        So input that comes meanwhile waits for one slice, not a whole batch:
        at a minute's first burst each tick closes its stock's candle (~300 µs
        each), and a burst's last lines waited ~1 s for the 2,000-tick batch
        before them (docs/benchmarks.md, "A waiting batch finished in
        slices"); on a slow host 500 such ticks held the parse ~0.4 s, so a
        slice is sized by what its ticks cost (:class:`TickCost`, measured
        on the slices before it). Each slice is persisted as a batch of its
        own, in order; the batch is acked with its last slice.
        """
        async with self._lock:
            result = await self._finish_slice() if self._pending else None
        await asyncio.sleep(0)  # its persist sends its writes
        return result

    async def _finish_slice(self) -> BatchResult:
        """:meth:`finish_next`, the lock held and a batch waiting."""
        first = self._pending[0].parsed
        most = min(FINISH_SLICE, len(first))
        budget_s = self.settings.finish_slice_ms / 1000
        closing = self.processor.closing(first, most) if budget_s > 0 else []
        n = self.tick_cost.fit(closing, budget_s) if budget_s > 0 else most
        if n < len(first):
            result = await self._finish_or_exit(self._slice_of_first(n))
        else:
            result = await self._finish_or_exit(self._pop_first())
        closes = sum(closing[:n])
        self.tick_cost.observe(n - closes, closes, self._derive_s)
        return result

    async def catch_up(self, ticks: int) -> None:
        """After a batch of ``ticks`` was submitted: once the oldest batch waiting has
        waited ``quotes_first_max_wait_ms``, finish twice as many ticks of the batches
        waiting (oldest first, a slice at a time), or as many as take a slice's time
        (``finish_slice_ms``, at least one slice), and so after each batch until none waits.

        The agent finishes waiting batches only while no input waits, and a
        steady feed on a slow host always has input waiting (each fetch
        window's lines came while the last were parsed): their rest waited
        for the candle timer, which finished seconds of batches at once, and
        no quote was parsed for 1.3-1.5 s every ~3 s (calibration 0.64 s,
        docs/benchmarks.md, "A steady feed on a slower host"). Caught up so, a
        batch waits for twice its own work at most, and the backlog of waiting
        batches is gone after as much input as it held. A minute's closing
        ticks cost several times a plain one's: twice a batch's ticks of them
        starved the parse of new input (p50 480 ms at --steal 0.6), so the
        catch-up shares the worker's main thread by time too: the next input
        waits a slice's time at most (docs/benchmarks.md, "The catch-up by
        time")."""
        if not self._catching_up:
            most_s = self.settings.quotes_first_max_wait_ms / 1000
            if not self._pending or most_s <= 0:
                return
            if self._clock() - self._pending[0].waiting_since < most_s:
                return
            self._catching_up = True
            metrics.CATCH_UPS.inc()
            logger.debug("worker %s: catching up with %d ticks waiting", self.worker_id,
                         self.ticks_waiting)  # fmt: skip
        left = 2 * ticks
        slice_s = self.settings.finish_slice_ms / 1000
        until = self._timer() + slice_s if slice_s > 0 else math.inf
        while left > 0 and self._pending:
            before = self.ticks_waiting
            await self.finish_next()
            left -= max(1, before - self.ticks_waiting)
            if self._timer() >= until:
                break

    def _slice_of_first(self, n: int) -> Pending:
        """The first ``n`` ticks of the oldest batch waiting, as a batch of their own
        (acked with the rest of it: their ack does nothing)."""
        first = self._pending[0]
        part = Pending(
            first.parsed.take_first(n),
            _no_ack,
            first.started,
            quotes=first.quotes,
            n_quotes=n if first.quotes is not None else 0,
            unsent=first.unsent,
        )
        if first.quotes is not None:
            first.n_quotes -= n
        if first.unsent:
            self._unsent += 1  # each slice's persist sends its own outputs and counts down
        metrics.TICKS_WAITING.set(self.ticks_waiting)
        return part

    def finish_wait_s(self) -> float:
        """How much longer the batches waiting may wait for input before the agent
        finishes the oldest (0: now): ``quotes_first_hold_ms`` after the newest
        began to wait, i.e. once no batch came for that long.

        Between two fetches of a burst no input waits for a moment; a slice of
        the batches before (~15 ms) taken then delayed every line of the next
        fetch by as much (docs/benchmarks.md, "A burst's fetches and quotes
        first, held"). Counted from the newest batch, the hold lasts as long as
        the burst: its statistics, candles and Redis writes come once its
        fetches stopped, not beside the gateway's and the client's last quotes
        (counted from the oldest, slices began ~60 ms into a ~130 ms burst:
        docs/benchmarks.md, "The hold counted from the newest batch, and a
        fetch in one produce request").
        """
        if not self._pending or self._catching_up:
            return 0.0
        due = self._pending[-1].waiting_since + self.settings.quotes_first_hold_ms / 1000
        return max(0.0, due - self._clock())

    @property
    def waiting(self) -> int:
        """Batches parsed whose rest waits (:meth:`submit`)."""
        return len(self._pending)

    @property
    def ticks_waiting(self) -> int:
        """The quotes of the batches whose rest waits."""
        return sum(len(pending.parsed) for pending in self._pending)

    @contextlib.asynccontextmanager
    async def _caught_up(self) -> AsyncIterator[None]:
        """The worker's lock, once every batch waiting is finished: what takes it so (a
        revocation, the hand-over of acks, :meth:`handle`) sees every batch parsed."""
        async with self._lock:
            await self._finish_pending()
            yield

    async def _publish_quotes(
        self, parsed: Parsed, on_durable: Callable[[], None], started: float
    ) -> Pending:
        """Send ``parsed``'s normalized records ahead of the rest of its batch (in batch
        order, as :meth:`_send_ahead`); the batch as it waits for the rest."""
        pending = Pending(parsed, on_durable, started, waiting_since=self._clock())
        if not len(parsed):
            return pending
        if self._unsent:  # a batch before it sends its own outputs first
            self._unsent += 1
            pending.unsent = True
            return pending
        quotes = self.processor.normalized_outputs(parsed)
        try:
            for out in quotes:
                await self.outbox.send(out.topic, out.key, out.value, out.headers)
        except KafkaOutputError:
            self._unsent += 1
            pending.unsent = True
            return pending
        if quotes:
            delivered = asyncio.ensure_future(self.outbox.flush())
            pending.quotes, pending.n_quotes = SentAhead(delivered, self._resends), len(quotes)
            await asyncio.sleep(0)  # its flush takes these records before anything else
        return pending

    async def _finish_pending(self) -> BatchResult | None:
        """Finish every batch waiting, in order; the last one's result (None: none waited).

        What cannot be finished (not an outage: those are retried) can never
        be acked, so nothing after it would be committed: the worker exits."""
        result = None
        while self._pending:
            result = await self._finish_or_exit(self._pop_first())
        return result

    def _pop_first(self) -> Pending:
        """The oldest batch waiting, no longer waiting."""
        pending = self._pending.pop(0)
        metrics.TICKS_WAITING.set(self.ticks_waiting)
        if not self._pending:
            self._catching_up = False
        return pending

    async def _finish_or_exit(self, pending: Pending) -> BatchResult:
        try:
            return await self._finish(pending)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fatal(f"a batch could not be processed: {exc!r}", exc)
            raise

    async def _finish(self, pending: Pending) -> BatchResult:
        """Derive ``pending``'s batch and queue its persist (after the batch in flight)."""
        finish = functools.partial(self.processor.finish, published=pending.quotes is not None)
        started = self._timer()
        result: BatchResult = await self._with_retry("process", finish, pending.parsed, self.sink)
        self._derive_s = self._timer() - started
        hold = not self._carry_latest(result) and bool(self._latest)
        persist = functools.partial(
            self._persist_then, result, pending.on_durable, pending.started, hold
        )
        await self._queue_persist(result, persist, pending)
        return result

    async def _persist_then(
        self,
        result: BatchResult,
        on_durable: Callable[[], None],
        started: float,
        hold: bool,
        ahead: SentAhead | None,
    ) -> None:
        """Persist ``result``, then ack it; ``hold``: once its latest quotes are delivered
        (a later batch, or :meth:`flush_latest`, takes them along)."""
        await self._persist_or_exit("a batch", result, ahead)
        if hold:
            self._held.append(on_durable)
        else:
            self._release_held()  # (a batch that took them along; none held otherwise)
            on_durable()
        self.last_batch_s = time.perf_counter() - started
        metrics.BATCH_LATENCY.observe(self.last_batch_s)
        self._observe(result)

    async def _wait_inflight(self) -> None:
        """Return once every persist queued is done (raise what one raised)."""
        task, self._inflight, self._before_inflight = self._inflight, None, None
        if task is not None:
            await task  # (each persist awaits the one before it)

    # -- hq.quotes.latest ----------------------------------------------------

    def _carry_latest(self, result: BatchResult, force: bool = False) -> bool:
        """Add ``result``'s ``hq.quotes.latest`` records to those waiting (a stock's newer
        record replaces its older one); once their interval is over (or ``force``),
        move them all into ``result``'s Kafka outputs. True if ``result`` takes them.

        The compacted topic needs each stock's newest quote, not every one:
        sent with every batch, they cost a partition batch per partition and
        flush, about as many as the normalized topic's (at 1,667 ticks/s the
        broker and the worker 1.17x and 1.23x the CPU; docs/benchmarks.md,
        "hq.quotes.latest in one request a second"). The batches in
        between are acked once the batch (or :meth:`flush_latest`) that takes
        their records along is durable, so a crash replays them and nothing of
        the topic is lost.
        """
        pending = self._latest
        for out in result.latest:
            pending[out.key] = out  # batches come in order: the later quote is the newer
        result.latest = []
        if not pending:
            return False
        if not (force or self._hand_over) and self._clock() < self._latest_due:
            return False
        result.kafka += pending.values()
        self._latest = {}
        self._latest_due = self._clock() + self.settings.latest_interval_s
        return True

    async def hand_over_acks(self) -> None:
        """A rebalance or a stop commits what is acked: from now to the next assignment
        each batch takes the latest quotes along (holds no ack), those waiting are
        sent now, and this returns once every batch taken so far is acked.

        faust's wait for the acks does not wait for a batch in flight here: a
        batch whose ack came after it was replayed by the partitions' next owner
        (4,904 ticks published twice when a worker joined, in a fault run)."""
        self._hand_over = True
        held, waiting = len(self._held), len(self._latest)
        await self.flush_latest(force=True)
        async with self._caught_up():  # the batch in flight acks (and releases what it took)
            await self._wait_inflight()
        if held or waiting:
            logger.info("worker %s: acks handed over (%d held, %d latest quotes sent)",
                        self.worker_id, held, waiting)  # fmt: skip

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for on_durable in held:
            on_durable()

    async def flush_latest(self, force: bool = False) -> None:
        """Send the waiting ``hq.quotes.latest`` records if their interval is over (or
        ``force``: a rebalance or a stop waits for the acks they hold), when no batch
        comes to take them along; returns once they are durable. Never raises.

        While batches wait for their rest (quotes first), it leaves the records
        to them: the first finished takes them along (after a rebalance or a
        stop began, each does; :meth:`hand_over_acks` finishes them). The
        timer must not finish a burst's batches before its next one is parsed."""
        try:
            async with self._lock:
                if self._pending:
                    return
                result = BatchResult(sink=SinkBatch(quotes=[], candles=[], alerts=[]),
                                     kafka=[], dlq=[])  # fmt: skip
                if not self._carry_latest(result, force):
                    return
                task = await self._queue_persist(
                    result, functools.partial(self._persist_latest, result)
                )
            await task
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # what the persist raised: fatal() was called there
            logger.error("latest quotes not flushed: %r", exc)

    async def _persist_latest(self, result: BatchResult, ahead: SentAhead | None) -> None:
        await self._persist_or_exit("latest quotes", result, ahead)
        self._release_held()

    async def _persist_or_exit(
        self, what: str, result: BatchResult, ahead: SentAhead | None
    ) -> None:
        """:meth:`_persist_queued`; what fails there is not an outage (those are retried):
        the acks it holds could never be given, so nothing after it would be
        committed: the worker must restart."""
        try:
            await self._persist_queued(result, ahead)
        except Exception as exc:
            fatal(f"{what} could not be persisted: {exc!r}", exc)
            raise

    async def _queue_persist(
        self,
        result: BatchResult,
        persist: Callable[[SentAhead | None], Coroutine[Any, Any, object]],
        pending: Pending | None = None,
    ) -> asyncio.Task[object]:
        """Send ``result``'s outputs ahead, then queue ``persist(ahead)``: it starts once
        the persist before it is done (persists run in batch order); returns its task.
        ``pending``: the batch's parse, whose quotes may have been sent already.

        Two persists may be queued at a time: the worker
        derives the next batch (or slice) while the one before is written,
        not after. Waiting for it held the parse of new input for ~RTT a
        slice, 0.3 s a second at a minute's close at --steal 0.6
        (docs/benchmarks.md, "The catch-up by time")."""
        ahead = await self._send_ahead(result, pending)
        before = self._inflight
        try:
            if self._before_inflight is not None:  # as many in flight as may be
                await self._before_inflight
        except BaseException:  # one in flight failed: this persist never runs
            self._never_persisted(ahead)
            raise
        self._before_inflight = before
        task = self._inflight = asyncio.create_task(self._persist_after(before, persist, ahead))
        return task

    async def _persist_after(
        self,
        before: asyncio.Task[object] | None,
        persist: Callable[[SentAhead | None], Coroutine[Any, Any, object]],
        ahead: SentAhead | None,
    ) -> object:
        """``persist(ahead)`` once ``before`` is done (what it returns); never if that failed."""
        if before is not None:
            try:
                await before
            except BaseException:
                self._never_persisted(ahead)
                raise
        return await persist(ahead)

    def _never_persisted(self, ahead: SentAhead | None) -> None:
        """A batch whose persist will not run (one before it failed) is no longer unsent."""
        if ahead is None:
            self._unsent -= 1
        else:
            ahead.delivered.cancel()  # nobody will await it

    async def _send_ahead(
        self, result: BatchResult, pending: Pending | None = None
    ) -> SentAhead | None:
        """Queue ``result``'s Kafka outputs and start their delivery now, before the
        batch in flight is durable (None: not sent; its persist sends them).

        Its Redis write no longer holds up the next batch's ticks on their way to
        the gateway: a burst's last batch waited 86-157 ms for the previous
        one's (2,000 ticks; docs/benchmarks.md, "Outputs sent ahead, and the
        minute's closes with the ticks"). Kafka keeps batch order: while a
        batch that could not be sent ahead waits for its persist to send it,
        no later batch is sent ahead; and a persist that sends its batch
        again (a failed delivery) bumps ``_resends``, so a batch sent ahead of
        that is sent again after it.

        ``pending``'s quotes (the first ``n_quotes`` outputs) may have gone
        already (:meth:`_publish_quotes`): the rest joins them, and the batch
        counts as sent when they were; a batch not sent ahead sends them again.
        """
        quotes = pending.quotes if pending is not None else None
        if pending is not None and pending.unsent:
            return None  # counted in _unsent since its parse
        if self._unsent:  # a batch before it sends its own outputs first
            self._unsent += 1
            if quotes is not None:
                _outcome_ignored(quotes.delivered)
            return None
        try:
            for out in result.kafka[pending.n_quotes if pending is not None else 0 :]:
                await self.outbox.send(out.topic, out.key, out.value, out.headers)
        except KafkaOutputError:
            self._unsent += 1
            if quotes is not None:
                _outcome_ignored(quotes.delivered)
            return None
        flushed = asyncio.ensure_future(self.outbox.flush())
        if quotes is None:
            ahead = SentAhead(flushed, self._resends)
        else:
            both = asyncio.ensure_future(_all_delivered(quotes.delivered, flushed))
            ahead = SentAhead(both, quotes.resends)
        await asyncio.sleep(0)  # its flush takes these records before anything else is queued
        return ahead

    async def drain(self) -> None:
        """Send the latest quotes waiting; return once every batch taken is durable and acked."""
        await self.hand_over_acks()

    async def _persist_queued(self, result: BatchResult, ahead: SentAhead | None) -> None:
        """:meth:`_persist` of a batch :meth:`_send_ahead` was given."""
        try:
            await self._persist(result, ahead)
        finally:
            if ahead is None:
                self._unsent -= 1  # sent (or the worker stops): later batches may go ahead

    async def _persist(self, result: BatchResult, ahead: SentAhead | None = None) -> None:
        """Kafka and Redis get the batch at the same time; retried until both have it.

        The produce request leaves before the Redis write is sent (or was sent
        ahead, :meth:`_send_ahead`) and is awaited after it: a tick reaches
        the gateway without waiting for Redis.
        """
        sent = False
        redis_done = result.sink.empty  # Kafka outputs only
        attempt = 0
        delivered: asyncio.Future[None] | None = None  # the flush of what was sent
        if ahead is not None:
            if ahead.resends == self._resends:
                sent, delivered = True, ahead.delivered
            else:  # a batch before it was sent again after it: so is this one
                with contextlib.suppress(Exception):
                    await ahead.delivered
        try:
            while True:
                try:
                    if not sent:
                        self._resends += 1  # what was sent ahead of these goes again after
                        for out in result.kafka:
                            await self.outbox.send(out.topic, out.key, out.value, out.headers)
                        sent = True
                        delivered = asyncio.ensure_future(self.outbox.flush())
                    if not redis_done:
                        started = time.perf_counter()
                        write = await self._write_redis(result)
                        metrics.REDIS_LATENCY.observe(time.perf_counter() - started)
                        metrics.STALE.inc(write.stale)
                        redis_done = True
                        self._redis_ok(attempt)
                    if delivered is not None:
                        flushing, delivered = delivered, None
                        await flushing
                    await self.outbox.flush()  # what the Redis write dead-lettered, if anything
                    if result.feed_winners:  # never ahead of the normalized topic
                        # (their records leave with the next batch's flush)
                        for out in self.processor.feed_winner_outputs(result.feed_winners):
                            await self.outbox.send(out.topic, out.key, out.value, out.headers)
                        await self.sink.write_feed_winners(result.feed_winners)
                        result.feed_winners = {}
                    return
                except KafkaOutputError as exc:
                    attempt += 1
                    sent = False
                    metrics.KAFKA_RETRIES.inc()
                    await self._backoff(
                        attempt, f"kafka produce failed, resending the batch: {exc}"
                    )
                except Exception as exc:
                    attempt = await self._redis_outage(
                        exc, attempt, "redis write failed, retrying the batch"
                    )
        finally:
            if delivered is not None:  # leaving on an error that is not retried
                delivered.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await delivered

    async def _write_redis(self, result: BatchResult) -> WriteResult:
        """Write the batch to Redis; if Redis refuses it (not an outage), quote by quote."""
        try:
            return await self.sink.write(result.sink)
        except Exception as exc:
            if is_redis_error(exc) or len(result.sources) != len(result.sink.quotes):
                raise
            logger.error("redis refused a batch of %d quotes (%r): writing them one by one",
                         len(result.sink.quotes), exc)  # fmt: skip
        batch = result.sink
        derived = await self.sink.write(replace(batch, quotes=[], data=None))  # derived only
        won = same = stale = 0
        data = batch.data if batch.data is not None else [None] * len(batch.quotes)
        dlq_topic = self.settings.topic_names.dlq
        now = now_ms()
        for i, (quote, blob, source) in enumerate(
            zip(batch.quotes, data, result.sources, strict=True)
        ):
            if i in result.refused:
                continue  # dead-lettered on an earlier try of this batch
            one = SinkBatch(quotes=[quote], candles=[], alerts=[],
                            data=None if blob is None else [blob])  # fmt: skip
            try:
                write = await self.sink.write(one)
            except Exception as exc:
                if is_redis_error(exc):
                    raise
                dead = unprocessable(source, exc, now)
                result.refused.add(i)
                result.dlq.append(dead)
                if self.processor.publish_normalized:
                    out = KafkaOut(dlq_topic, dead.key, dead.value, dead.headers)
                    result.kafka.append(out)  # sent again with the batch if Kafka fails
                    await self.outbox.send(out.topic, out.key, out.value, out.headers)
                continue
            won, same, stale = won + write.won, same + write.same, stale + write.stale
        return WriteResult(won, same, stale, derived.alerts_new)

    async def _with_retry(self, what: str, fn: Any, *args: Any) -> Any:
        attempt = 0
        while True:
            try:
                result = await fn(*args)
                self._redis_ok(attempt)
                return result
            except Exception as exc:
                attempt = await self._redis_outage(exc, attempt, f"redis unavailable during {what}")

    async def _redis_outage(self, exc: Exception, attempt: int, what: str) -> int:
        """After ``exc``: back off if it is a Redis outage and return the next attempt's
        number; raise anything else."""
        if not is_redis_error(exc):
            raise exc
        attempt += 1
        self._redis_down()
        await self._backoff(attempt, f"{what}: {exc!r}", redis_down=True)
        return attempt

    def _redis_down(self) -> None:
        self._state_check_at = self._clock()  # it may have come back empty: check first
        self._state_epoch += 1
        metrics.REDIS_RETRIES.inc()
        metrics.REDIS_UP.set(0)
        metrics.HEALTH.redis_ok = False

    def _redis_ok(self, attempts: int) -> None:
        if attempts:
            logger.warning("redis is back after %d failed attempts; nothing was lost", attempts)
        metrics.REDIS_UP.set(1)
        metrics.HEALTH.redis_ok = True

    async def _backoff(self, attempt: int, message: str, *, redis_down: bool = False) -> None:
        """Wait before the next try: 0.1 s, doubling up to ``redis_retry_max_s``.

        When Redis was the trouble, the wait ends as soon as it answers a PING
        (tried every :data:`REDIS_POLL_S`): a Redis back after a restart is
        written to at once, not up to ``redis_retry_max_s`` later.
        """
        delay = min(self.settings.redis_retry_max_s, 0.1 * 2 ** min(attempt - 1, 10))
        if attempt == 1 or attempt % 10 == 0:
            logger.error("%s (attempt %d; offsets are not committed; next try in %.1fs)",
                         message, attempt, delay)  # fmt: skip
        if not redis_down:
            await asyncio.sleep(delay)
            return
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(REDIS_POLL_S, left))
            if await self.sink.answers(timeout_s=REDIS_POLL_S):
                return

    def _observe(self, result: BatchResult) -> None:
        self.batches += 1
        metrics.RECORDS_IN.inc(result.n_in)
        metrics.BATCH_SIZE.observe(result.n_in)
        metrics.NORMALIZED.inc(len(result.sink.quotes))
        for dead in result.dlq:
            metrics.DLQ.labels(dead.reason).inc()
        for alert in result.sink.alerts:
            metrics.ALERTS.labels(alert.kind).inc()
        metrics.CANDLES.inc(len(result.sink.candles))  # closed bars (the open ones apart)
        after_close = self.processor.candles.counters.after_close
        if after_close > self._after_close_seen:
            metrics.CANDLE_TICKS_AFTER_CLOSE.inc(after_close - self._after_close_seen)
        self._after_close_seen = after_close  # (a reset builder starts again from 0)
        self._feed_metrics.update(self.processor.arbiter)
        now = time.time()
        # a sample (at most E2E_SAMPLES per batch): one observe costs ~1 us
        stride = max(1, len(result.receive_ts) // E2E_SAMPLES)
        for ts in result.receive_ts[::stride]:
            metrics.E2E_LATENCY.observe(max(0.0, now - ts / 1000))

    # -- market statistics ------------------------------------------------------

    async def flush_candles(self, fetched_to_end_ms: Mapping[int, int] | None = None) -> int:
        """Close, write and produce the candles whose minute is over. Never raises.

        Returns how many bars closed. See :meth:`Processor.flush_candles` for
        the clock and ``fetched_to_end_ms`` (what the consumer last heard from
        the broker). At a minute's end a worker may have thousands to close:
        they close :data:`CANDLE_SLICE` at a time, each slice persisted like a
        batch (in flight while the next one is processed), and the batches
        waiting for the worker go between two slices, so no tick waits for
        the whole minute's candles. Returns once the last slice is durable.

        Batches whose rest waits (quotes first) are finished first: this
        round gives way to the agent (every round while it catches up:
        :meth:`catch_up` finishes them as input comes), the next finishes
        them a slice at a time (:meth:`finish_next`), input parsed between
        two slices; all at once, they held the parse for seconds at a
        minute's close on a slow host (docs/benchmarks.md, "The catch-up by
        time").
        """
        total = 0
        quiet_ms = int(self.settings.candle_quiet_s * 1000)
        persisting: asyncio.Task[object] | None = None
        try:
            while True:
                if self._pending and self._candles_put_off and not self._catching_up:
                    await self.finish_next()  # (it yields: the agent parses the input between)
                    continue
                async with self._lock:
                    if self._pending:  # batches wait for their rest (quotes first)
                        if not self._candles_put_off or self._catching_up:
                            self._candles_put_off = True  # they go first, for one round
                            return total
                        continue  # (more came while this round finished the others)
                    self._candles_put_off = False
                    # an assignment while no tick comes (lunch): seeded now, not at the next batch
                    await self._maybe_reseed()
                    closed, done = self.processor.flush_candle_slice(
                        now_ms(), quiet_ms, fetched_to_end_ms, CANDLE_SLICE
                    )
                    if closed:
                        bars = self.processor.take_bar_states()
                        result = BatchResult(
                            sink=SinkBatch(quotes=[], candles=closed, alerts=[], bars=bars),
                            kafka=self.processor.candle_outputs(closed)
                            + self.processor.bar_state_outputs(bars),
                            dlq=[],
                        )
                        persisting = await self._queue_persist(
                            result, functools.partial(self._persist_candles, result)
                        )
                total += len(closed)
                if done:
                    if persisting is not None:
                        await persisting  # (a batch may await it too) returns once durable
                    return total
                await asyncio.sleep(CANDLE_SLICE_PAUSE_S)  # the batches waiting go first
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("candles not flushed this round: %r", exc)
            return total

    async def _persist_round(self, what: str, result: BatchResult, ahead: SentAhead | None) -> bool:
        """Persist a timer round's outputs (closed bars, market stats); True if done.

        A failure that is not an outage (those are retried until they pass)
        is logged as this round's: the task ends cleanly, so the next batch's
        persist, which waits for it, never fails for it."""
        try:
            await self._persist_queued(result, ahead)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("%s not persisted this round: %r", what, exc)
            return False
        return True

    async def _persist_candles(self, result: BatchResult, ahead: SentAhead | None) -> None:
        closed = len(result.sink.candles)
        if await self._persist_round(f"{closed} closed bars", result, ahead):
            metrics.CANDLES.inc(closed)

    async def publish_stats(self) -> dict[str, dict[str, Any]] | None:
        """Write this worker's partial; if it leads, merge and publish (None when it does
        not lead, or nothing changed since it last did). Never raises.

        While every partial is as it was at the last publish, the merge is
        published again only after ``stats_quiet_interval_s``: a market at
        lunch or after the close kept the leader merging, encoding and writing
        the same statistics every second (a third of an idle worker's CPU).

        The batches wait only while the partial is taken and stored (a walk of
        the worker's stocks and one Redis round trip; a revocation rewrites it
        under the same lock): reading and merging the partials runs beside
        them, and the merged records go out in batch order, as a batch's.
        Holding the lock for all of it, after the batch in flight, stalled
        the next batch 10-40 ms every second (docs/benchmarks.md, "The steady
        rate's tail").
        """
        try:
            await self.check_state()
            async with self._lock:
                if not self._pending:  # (else the next batch checks, as submit does)
                    await self._ensure_state()  # also when no batch comes (a quiet feed, the close)
                    await self._maybe_reseed()
                # without the ticks of batches waiting for their rest (quotes first): the
                # round must not finish a burst's batches before its next one is parsed
                now = now_ms()
                partial = self.processor.stats.partial_state(self.settings.stats_top_n, now_ms=now)
                await self.sink.write_partial(self.worker_id, partial, now)
            merging = await self._merge_stats(now)
            if merging is None:
                return None
            merged, inputs = merging
            if await self._publish_merged(merged, now):
                self._published_stats = (inputs, now)  # (else the next round tries again)
            return merged
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("market stats not published this round: %r", exc)
            return None

    async def _merge_stats(self, now: int) -> tuple[dict[str, dict[str, Any]], StatsInputs] | None:
        """The merged statistics and what they were merged from, if this worker leads (the
        smallest live id) and they are due (see :meth:`publish_stats`); else None."""
        partials = await self.sink.read_partials()
        ttl_ms = int(self.settings.partial_ttl_s * 1000)
        live = {w: state for w, (ts, state) in partials.items() if now - ts <= ttl_ms}
        dead = [w for w in partials if w not in live]
        metrics.WORKERS_LIVE.set(len(live))
        if dead:
            logger.info("dropping stats partials of dead workers %s", dead)
            await self.sink.delete_partials(dead)
        if min(live) != self.worker_id:
            return None
        inputs: StatsInputs = {w: (state.top_n, state.markets) for w, state in live.items()}
        if self._published_stats is not None:
            published, at = self._published_stats
            if inputs == published and now - at < self.settings.stats_quiet_interval_s * 1000:
                return None
        merged = merge_partials(
            list(live.values()), MARKETS_AND_ALL, self.settings.stats_top_n, now_ms=now
        )
        return merged, inputs

    async def _publish_merged(self, merged: dict[str, dict[str, Any]], now: int) -> bool:
        """Kafka and Redis get ``merged``; False if its records failed (logged)."""
        topic = self.settings.topic_names.market_stats
        result = BatchResult(
            sink=SinkBatch(quotes=[], candles=[], alerts=[]),
            kafka=[
                KafkaOut(topic, market.encode(), self.stats_codec.encode(record), None)
                for market, record in merged.items()
            ],
            dlq=[],
        )
        async with self._lock:  # (before the rest of batches waiting: a round of its own)
            persisting = await self._queue_persist(
                result, functools.partial(self._persist_round, "market stats", result)
            )
        await self.sink.write_market(merged, now)
        return bool(await persisting)
