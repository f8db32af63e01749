"""The Kafka side of the receiver: a thread that drains the in-memory queue
into confluent-kafka, or into the on-disk journal while Kafka is unreachable,
and replays the journal in order once the broker is back.

Nothing is lost: every line handed to :meth:`Forwarder.submit` ends up
acknowledged by Kafka, in the journal, or counted in ``hq_receiver_dropped_total``
with a loud log line (only when the queue is full, or the journal is full or
its disk refuses writes). Until then it is in the write-ahead log
(:mod:`producers.wal`), so a killed receiver's successor finds it there.
This thread never touches the socket, so reading never waits on Kafka, and
nothing the journal does (a full disk, a corrupt segment) stops it.

Order per key holds across a hand-off to the journal: a record waits in
librdkafka at most ``HQ_PRODUCER_DELIVERY_TIMEOUT_S``; on the first failure
everything still in librdkafka is purged and journaled in order, and newer
records wait in memory until librdkafka holds nothing, so they are journaled
after every older one. A replayed segment that fails half-way is not
re-journaled but replayed again from its start (duplicates, never a gap).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from hqcore.host import CORE_WAIT_PERIOD_S, BusyNotice, CoreWait
from hqcore.kafka_client import librdkafka_config
from producers import metrics
from producers.errors import JournalError
from producers.in_doubt import InDoubt, RecordId, Skips
from producers.journal import (
    CorruptCause,
    DlqCause,
    Journal,
    JournalRecord,
    JournalRefused,
    RecordKind,
)
from producers.protocol import code_of
from producers.settings import ReceiverSettings
from producers.wal import Unsettled, WriteAheadLog
from schemas import dlq, topics
from schemas.dlq import dlq_headers
from schemas.topics import LINE_KINDS, LineKind

logger = logging.getLogger(__name__)

_LATENCY_SAMPLE: Final = 64  # one ack in N feeds the latency histogram
_PROBE_INTERVAL_S: Final = 1.0
_DROP_LOG_INTERVAL_S: Final = 10.0  # one error line per reason per interval
_PURGE_WAIT_S: Final = 5.0
_IN_DOUBT_CHECK_S: Final = 5.0
_IN_DOUBT_RETRY_S: Final = 0.2
#: how long lines read during a replay wait in memory before they are journaled
_REPLAY_HOLD_MS: Final = 500
#: How busy the host is for the receiver (hqcore.host.CoreWait): the shares of the
#: time its main thread waits for a core up to which the host has cores to spare,
#: and from which it has none. Measured at the full market's steady rate: 2.5 % on
#: an idle 2-core host, 14-17 % with 60 % of each core taken (``hqstream bench
#: --steal 0.6``; docs/benchmarks.md, "The receiver's linger on a busy host").
CORE_WAIT_IDLE: Final = 0.05
CORE_WAIT_BUSY: Final = 0.12


#: A quote line as the receiver classified it.
KindLine = tuple[LineKind, bytes]
_LINE_RECORD_KINDS: Final = frozenset({RecordKind.SSE_SZSE, RecordKind.BSE_JSON})


class _Lines(NamedTuple):
    """A queue item: feed lines read at ``receive_ts``, batch ``wal`` of the
    write-ahead log (0: not logged)."""

    receive_ts: int
    lines: list[KindLine]
    wal: int = 0

    @property
    def size(self) -> int:
        return sum(len(line) for _, line in self.lines)


class _Dlq(NamedTuple):
    """A queue item: one line the reader dead-letters."""

    record: JournalRecord
    wal: int = 0

    @property
    def receive_ts(self) -> int:
        return self.record.receive_ts

    @property
    def size(self) -> int:
        return len(self.record.payload)


_Item = _Lines | _Dlq


def _age_ms(item: _Item) -> int:
    """How long ago a queued item was read (its receive time, epoch ms)."""
    return time.time_ns() // 1_000_000 - item.receive_ts


def _records_in(item: _Item) -> int:
    return len(item.lines) if isinstance(item, _Lines) else 1


class _Batch:
    """The delivery callback of one batch produced directly: it knows the batch's place
    in arrival order and, should records fail, each one's place and journal record.

    librdkafka's delivery reports of a purge do not come in produce order (observed:
    the newest queued batch first), so failed records are sorted by (batch, position)
    before they are journaled. A delivery report carries no headers, so the batch
    holds what they said (receive time, each line's kind) while any line is in flight.
    A DLQ record is a batch of its own (``record``).

    An ack is only counted here: the forwarder settles a batch's acks together
    once the poll that reported them is over (:meth:`Forwarder._settle_acks`).
    Settled one report at a time, four Python calls a record took ~30 ms of
    the receiver's CPU per 5,000-line burst, beside its produce of the lines
    (docs/benchmarks.md, "A batch's acks settled together").
    """

    __slots__ = (
        "_forwarder", "_lines", "_positions", "acks", "receive_ts", "record", "seq", "topic", "wal"
    )  # fmt: skip

    def __init__(
        self,
        forwarder: Forwarder,
        seq: int,
        receive_ts: int,
        lines: list[KindLine],
        record: JournalRecord | None = None,
        wal: int = 0,
    ) -> None:
        self._forwarder = forwarder
        self.seq = seq
        self.receive_ts = receive_ts
        self._lines = lines
        self.record = record
        self.wal = wal
        self._positions: dict[bytes, list[int]] | None = None
        self.acks = 0  # reported, not settled yet
        self.topic = ""  # where its records went (the first ack says)

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._forwarder._on_failed_delivery(err, msg, self)
        elif self.acks:
            self.acks += 1
        else:
            self.acks = 1
            self.topic = msg.topic() or ""
            self._forwarder._acking.append(self)

    def failed(self, value: bytes) -> tuple[tuple[int, int], JournalRecord]:
        """Where a record Kafka did not take goes in arrival order, and its journal record."""
        if self.record is not None:
            return (self.seq, 0), self.record
        i = self.position(value)
        kind: LineKind = self._lines[i][0] if i < len(self._lines) else "sse_szse"
        return (self.seq, i), JournalRecord(
            self.receive_ts, RecordKind.of_line(kind), DlqCause.NONE, value
        )

    def position(self, value: bytes) -> int:
        """Where ``value`` is in the batch (equal lines get their places in turn)."""
        if self._positions is None:
            self._positions = {}
            for i, (_, line) in enumerate(self._lines):
                self._positions.setdefault(line, []).append(i)
            for indices in self._positions.values():
                indices.reverse()
        places = self._positions.get(value)
        return places.pop() if places else len(self._lines)


class _Replayed:
    """The delivery callback of one replayed journal record."""

    __slots__ = ("_forwarder", "record")

    def __init__(self, forwarder: Forwarder, record: JournalRecord) -> None:
        self._forwarder = forwarder
        self.record = record

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self._forwarder._on_replay_delivery(err, msg, self.record)


def producer_config(settings: ReceiverSettings) -> dict[str, Any]:
    """Idempotent, acks=all, compressed, batched, no Nagle; murmur2 like the Java client."""
    return {
        **librdkafka_config(settings),  # bootstrap servers and TLS/SASL from the settings
        "client.id": "hqstream-receiver",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.compression,
        "linger.ms": settings.linger_ms,
        "batch.size": settings.batch_size,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.timeout.ms": int(settings.producer_delivery_timeout_s * 1000),
        "partitioner": "murmur2_random",
        "socket.send.buffer.bytes": 4 * 1024 * 1024,
        # a produce request leaves at once, not after the broker's ACK of the one
        # before (Nagle): the receive -> normalized tail, docs/benchmarks.md
        "socket.nagle.disable": True,
        "reconnect.backoff.max.ms": 2000,
    }


class Forwarder:
    """Owns the Kafka producer, the journal and the write-ahead log (``wal``; None:
    lines in memory are lost with the process); runs in its own thread."""

    def __init__(
        self, settings: ReceiverSettings, journal: Journal, wal: WriteAheadLog | None = None
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.wal = wal
        self._unsettled = Unsettled()
        self._source = settings.feed_source.encode()
        self._queue: collections.deque[_Item] = collections.deque()
        self._queue_bytes = 0
        # On a busy host lines wait for more before they go to librdkafka (hold_s).
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep
        self._first_at = 0.0  # when the oldest item in the queue came (0: take it at once)
        self._most_hold_s = max(0, settings.linger_busy_ms - settings.linger_ms) / 1000
        self._core_wait = CoreWait(idle=CORE_WAIT_IDLE, busy=CORE_WAIT_BUSY)
        self._busy_notice = BusyNotice()
        self.hold_s = 0.0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hq-forwarder", daemon=True)
        self._producer = Producer(
            {
                **producer_config(settings),
                "error_cb": self._on_error,
            }
        )
        self.kafka_up = True
        self._last_probe = 0.0
        self._acked: collections.Counter[str] = collections.Counter()
        self._reported_acked: collections.Counter[str] = collections.Counter()
        self._acking: list[_Batch] = []  # batches with acks reported, not settled yet
        self._ack_seq = 0
        self._purge_pending = False
        self._batch_seq = 0
        self._failed: list[tuple[tuple[int, int], JournalRecord, int]] = []
        self._replaying = False
        self._replay_failed = False
        # records that may be in Kafka although not acked, and those known to be there
        self._in_doubt = InDoubt()
        self._in_doubt_since = 0.0
        self._skips = Skips()
        self._replay_delivered: collections.Counter[RecordId] = collections.Counter()
        self._drop_lock = threading.Lock()
        self._unlogged_drops: collections.Counter[str] = collections.Counter()
        self._last_drop_log: dict[str, float] = {}
        self._drop_why: dict[str, str] = {}
        self.dropped = 0
        self.journaled_while_replaying = 0  # records (lines) older than _REPLAY_HOLD_MS
        self.failure: BaseException | None = None
        self.recovered = 0  # lines of a killed predecessor, from the write-ahead log
        if wal is not None:
            self._recover(wal)
        # Spooling: every record goes to the journal until it is replayed empty.
        self.spooling = not journal.empty

    def _recover(self, wal: WriteAheadLog) -> None:
        """Journal what a killed predecessor had read and not settled, in doubt: the
        replay checks Kafka for each first (in_doubt.py)."""
        found = wal.recover()
        if found.records:
            self._spool(found.records)
            self.journal.sync()
            started_ms = time.time_ns() // 1_000_000
            for rec in found.records:
                if rec.kind != RecordKind.JOURNAL_CORRUPT:
                    self._in_doubt.add_anywhere(self._record_id(rec), started_ms)
            self.recovered = len(found.records)
            metrics.WAL_RECOVERED.inc(self.recovered)
            logger.warning(
                "the write-ahead log holds %d record(s) in %d batch(es) an earlier run read "
                "but did not settle (killed?): journaled, checked against Kafka before the "
                "replay",
                len(found.records),
                found.batches,
            )
        wal.forget_old()

    # -- called from the reader (event loop thread): never blocks on Kafka ---------

    def submit(self, receive_ts: int, lines: list[KindLine]) -> None:
        """Hand over quote lines read at ``receive_ts``, each with its kind: logged
        ahead first, so a crash from here on loses none of them."""
        size = sum(len(line) for _, line in lines)
        if self._queue_bytes + size > self.settings.queue_max_bytes:  # only this thread adds
            self._drop(len(lines), "queue_full")
            return
        wal = self.wal.append_lines(receive_ts, [line for _, line in lines]) if self.wal else 0
        self._enqueue(_Lines(receive_ts, lines, wal), size)

    def submit_dlq(self, receive_ts: int, cause: DlqCause, payload: bytes) -> None:
        rec = JournalRecord(receive_ts, RecordKind.DLQ, cause, payload)
        self._enqueue(_Dlq(rec, self.wal.append_dlq(rec) if self.wal else 0), len(payload))

    def _enqueue(self, item: _Item, size: int) -> None:
        with self._cond:
            if not self._queue:
                self._first_at = self._clock()
            self._queue.append(item)
            self._queue_bytes += size
            self._cond.notify()

    @property
    def queue_bytes(self) -> int:
        return self._queue_bytes

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Drain the queue, flush Kafka; journal whatever Kafka did not take."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout + 30)
        remaining = self._producer.flush(timeout if self.kafka_up else 1.0)
        self._settle_acks()
        if remaining:
            logger.warning("%d record(s) not acked at shutdown: journaling them", remaining)
            self._purge()
        self._journal_failed()
        self.journal.close()
        if self.wal is not None:
            self.wal.close(self._unsettled.through())
        self._report()
        del self._producer  # librdkafka closes its connections now, not at interpreter exit
        logger.info("forwarder stopped; journal holds %d bytes", self.journal.size_bytes)

    # -- the forwarder thread -----------------------------------------------------

    def _run(self) -> None:
        last_report = 0.0
        try:
            while True:
                if self._purge_pending:
                    self._purge()
                holding = self._holding()
                if holding and self._stopping:
                    # Shutting down: journal what librdkafka holds, then the newer records.
                    self._purge()
                    holding = False
                if not holding:
                    self._journal_failed()
                self._follow_the_host()
                items = [] if holding else self._take(0.05)
                self._route_all(items)
                self._producer.poll(0.05 if holding else 0)
                self.journal.sync_if_due()
                self._settle_wal()
                if self.spooling and not holding:
                    self._maybe_replay()
                now = time.monotonic()
                if now - last_report > 0.5:
                    self._report()
                    last_report = now
                if not items and not holding and self._stopping and not self._queue:
                    break
        except BaseException as exc:  # surfaced by the receiver, never swallowed
            logger.exception("forwarder thread failed")
            self.failure = exc
        finally:
            self.journal.flush()

    def _settle_wal(self) -> None:
        """Tell the write-ahead log how far every batch is settled."""
        self._settle_acks()
        if self.wal is not None:
            self.wal.settle(self._unsettled.through())

    def _settled(self, wal: int, records: int = 1) -> None:
        if wal:
            self._unsettled.settle(wal, records)

    def _holding(self) -> bool:
        """While spooling, new records wait in memory until librdkafka holds none of the
        older ones (acked, or failed and journaled), so the journal stays in order."""
        return self.spooling and not self._replaying and len(self._producer) > 0

    def _journal_failed(self) -> None:
        """Journal the records Kafka did not take, in arrival order, once librdkafka has
        reported on all of them (before any newer record is journaled)."""
        if self._failed:
            self._failed.sort(key=lambda failed: failed[0])
            records = [rec for _, rec, _ in self._failed]
            batches = [wal for _, _, wal in self._failed]
            self._failed = []
            self._spool(records)
            for wal in batches:
                self._settled(wal)

    def _next_batch(
        self,
        receive_ts: int,
        lines: list[KindLine],
        record: JournalRecord | None = None,
        wal: int = 0,
    ) -> _Batch:
        self._batch_seq += 1
        return _Batch(self, self._batch_seq, receive_ts, lines, record, wal)

    def _purge(self) -> None:
        """Fail everything still in librdkafka now (its delivery reports journal it, in
        order) so no newer record reaches Kafka after an older one failed. In-flight
        records may have been written by the broker: duplicates, never a gap."""
        self._purge_pending = False
        self._producer.purge(in_queue=True, in_flight=True, blocking=True)
        deadline = time.monotonic() + _PURGE_WAIT_S
        self._producer.poll(0)
        while len(self._producer) and time.monotonic() < deadline:
            self._producer.poll(0.05)

    def _follow_the_host(self) -> None:
        """On a busy host, lines wait up to ``linger_busy_ms`` in all before they go to
        Kafka (``hold_s`` here, then librdkafka's ``linger.ms``), in proportion to how
        busy it is.

        librdkafka cannot change ``linger.ms`` once the producer exists, so the
        lines read meanwhile wait in the queue, and go to librdkafka together:
        its linger puts them in one produce request. Each request costs the
        receiver, the broker and the stream worker's next fetch a fixed part
        whatever it holds: at ``--steal 0.6`` 20 ms instead of 5 took 7-9 % of
        the pipeline's CPU per tick (docs/benchmarks.md, "The receiver's linger
        on a busy host"). An idle host keeps ``linger_ms`` alone.
        """
        busy = self._core_wait.busy()  # measured whatever the settings: a metric
        self.hold_s = self._most_hold_s * busy
        if not self._most_hold_s:
            return
        tell = self._busy_notice.update(busy)
        if tell:
            logger.warning(
                "the host is busy: the receiver's main thread waited for a core %.0f%% of "
                "the last %.0f s; lines wait up to %.0f ms for Kafka (fewer, larger requests)",
                self._core_wait.share * 100, CORE_WAIT_PERIOD_S,
                (self.hold_s * 1000 + self.settings.linger_ms),
            )  # fmt: skip
        elif tell is False:
            logger.info(
                "the host is not busy any more: the receiver's main thread waited for a core "
                "%.0f%% of the last %.0f s; lines wait up to %.0f ms for Kafka",
                self._core_wait.share * 100, CORE_WAIT_PERIOD_S,
                (self.hold_s * 1000 + self.settings.linger_ms),
            )  # fmt: skip

    def _take(self, timeout: float) -> list[_Item]:
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(timeout)
            hold = self._first_at + self.hold_s - self._clock() if self._queue else 0.0
        if hold > 0 and not self._stopping:
            self._sleep(hold)  # the lines read meanwhile go along (_follow_the_host)
        with self._cond:
            items = list(self._queue)
            self._queue.clear()
            self._queue_bytes = 0
        for item in items:
            if item.wal:
                self._unsettled.take(item.wal, _records_in(item))
        return items

    def _route_all(self, items: list[_Item]) -> None:
        for i, item in enumerate(items):
            rest = self._route(item)
            if rest is not None:
                # librdkafka is full: this and every later item wait in memory (in order)
                # until it has sent what it holds; then they go to the journal.
                self._requeue([rest, *items[i + 1 :]])
                return

    def _requeue(self, items: list[_Item]) -> None:
        with self._cond:
            self._first_at = 0.0  # they waited already
            for item in reversed(items):
                self._queue.appendleft(item)
                self._queue_bytes += item.size

    def _route(self, item: _Item) -> _Item | None:
        """Produce or journal one item; returns what librdkafka had no room for."""
        if isinstance(item, _Dlq):
            rec = item.record
            if self.spooling:
                self._spool([rec])
                self._settled(item.wal)
            elif not self._produce_record(rec, self._next_batch(rec.receive_ts, [], rec, item.wal)):
                self._start_spooling("producer queue full")
                return item
            return None
        receive_ts, lines, wal = item
        if self.spooling:
            self._spool(self._records(receive_ts, lines))
            self._settled(wal, len(lines))
            return None
        ts = str(receive_ts).encode()
        headers = {kind: topics.raw_headers(kind, ts, self._source) for kind in LINE_KINDS}
        produce = self._producer.produce
        raw_topic = self.settings.raw_topic
        batch = self._next_batch(receive_ts, lines, wal=wal)
        for i, (kind, line) in enumerate(lines):
            try:
                produce(
                    raw_topic,
                    value=line,
                    key=code_of(line, kind),
                    headers=headers[kind],
                    on_delivery=batch,
                )
            except BufferError:
                self._start_spooling("producer queue full")
                return _Lines(receive_ts, lines[i:], wal)
        return None

    @staticmethod
    def _records(receive_ts: int, lines: Iterable[KindLine]) -> list[JournalRecord]:
        return [
            JournalRecord(receive_ts, RecordKind.of_line(kind), DlqCause.NONE, line)
            for kind, line in lines
        ]

    def _produce_record(self, rec: JournalRecord, batch: _Batch | None = None) -> bool:
        """Produce one journaled/DLQ record; False when the producer queue is full.
        ``batch``: produced directly (not replayed), with its place in arrival order."""
        ts = str(rec.receive_ts).encode()
        if batch is None and len(self._skips) and self._skips.take(rid := self._record_id(rec)):
            # the broker had written it before it went away: it counts as acknowledged
            self._acked[rid.topic] += 1
            metrics.REPLAY_SKIPPED.inc()
            return True
        cb: dict[str, Any] = {"on_delivery": batch or _Replayed(self, rec)}
        try:
            if rec.kind in _LINE_RECORD_KINDS:
                kind = RecordKind(rec.kind).line_kind
                self._producer.produce(
                    self.settings.raw_topic,
                    value=rec.payload,
                    **cb,
                    key=code_of(rec.payload, kind),
                    headers=topics.raw_headers(kind, ts, self._source),
                )
            elif rec.kind == RecordKind.DLQ:
                cause = DlqCause.of(rec.reason)
                self._produce_dlq(rec, cause.reason, cause.detail(rec.payload), ts, ts, cb)
            else:
                self._produce_corrupt(rec, ts, cb)
        except BufferError:
            return False
        return True

    def _record_id(self, rec: JournalRecord) -> RecordId:
        """What tells ``rec`` apart on its topic (in_doubt.py)."""
        lines = rec.kind in _LINE_RECORD_KINDS
        topic = self.settings.raw_topic if lines else self.settings.dlq_topic
        return RecordId(topic, rec.payload, str(rec.receive_ts).encode(), self._source)

    def _produce_corrupt(self, rec: JournalRecord, ts: bytes, cb: dict[str, Any]) -> None:
        """Journal bytes that failed their CRC/framing (or a kind this version does not
        know) go to the DLQ as ``journal_corrupt``, unchanged."""
        if rec.kind == RecordKind.JOURNAL_CORRUPT:
            try:
                cause = CorruptCause(rec.reason).name.lower()
            except ValueError:
                cause = CorruptCause.BAD_RECORD.name.lower()
            detail = f"{cause}: {len(rec.payload)} byte(s) of the receiver's journal"
        else:
            detail = (
                f"bad_record: a journal record of unknown kind {rec.kind} "
                f"({len(rec.payload)} byte(s) of payload)"
            )
        now_ms = str(time.time_ns() // 1_000_000).encode()
        self._produce_dlq(rec, "journal_corrupt", detail, now_ms, ts, cb)

    def _produce_dlq(
        self,
        rec: JournalRecord,
        reason: dlq.DlqReason,
        detail: str,
        dlq_ts: bytes,
        receive_ts: bytes,
        cb: dict[str, Any],
    ) -> None:
        """The receiver's DLQ record: the DLQ headers, then the raw topic's receive time
        and source."""
        headers = dlq_headers(reason=reason, detail=detail, stage="receiver", ts_ms=dlq_ts)
        headers += [(topics.H_RECEIVE_TS, receive_ts), (topics.H_SOURCE, self._source)]
        self._producer.produce(self.settings.dlq_topic, value=rec.payload, **cb, headers=headers)

    # -- spooling and replay ------------------------------------------------------

    def _start_spooling(self, why: str, purge: bool = False) -> None:
        """From now on records go to the journal. ``purge``: also fail everything
        librdkafka still holds (done by the thread's loop, never inside a callback)."""
        if not self.spooling:
            logger.warning(
                "Kafka not taking records (%s): spooling to journal %s", why, self.journal.directory
            )
            self.spooling = True
        if purge:
            self._purge_pending = True

    def _spool(self, records: list[JournalRecord]) -> None:
        try:
            self.journal.append_many(records)
        except JournalRefused as exc:
            self._drop(exc.not_written, exc.reason, str(exc))
            metrics.JOURNALED.inc(len(records) - exc.not_written)
        except (JournalError, OSError) as exc:  # never let the journal stop the receiver
            self._drop(len(records), "journal_error", str(exc))
        else:
            metrics.JOURNALED.inc(len(records))

    def _drop(self, count: int, reason: str, why: str = "") -> None:
        """Count lost lines at once; log them as one error line per reason per interval."""
        if count <= 0:
            return
        metrics.DROPPED.labels(reason).inc(count)
        with self._drop_lock:
            self.dropped += count
            self._unlogged_drops[reason] += count
            if why:
                self._drop_why[reason] = why
            self._log_drops(time.monotonic())

    def _log_drops(self, now: float) -> None:
        """Caller holds _drop_lock."""
        for reason, count in list(self._unlogged_drops.items()):
            if not count or now - self._last_drop_log.get(reason, -1e9) < _DROP_LOG_INTERVAL_S:
                continue
            self._last_drop_log[reason] = now
            self._unlogged_drops[reason] = 0
            logger.error(
                "LOST %d feed line(s) since the last report: %s%s (queue %d bytes, journal "
                "%d of %d bytes). Kafka has been unreachable too long, or the journal's disk "
                "is full or failing; raise HQ_JOURNAL_MAX_BYTES / HQ_QUEUE_MAX_BYTES, free "
                "space under HQ_JOURNAL_DIR or restore Kafka.",
                count,
                reason,
                f" ({self._drop_why[reason]})" if reason in self._drop_why else "",
                self._queue_bytes,
                self.journal.size_bytes,
                self.settings.journal_max_bytes,
            )

    def _maybe_replay(self) -> None:
        now = time.monotonic()
        if now - self._last_probe < _PROBE_INTERVAL_S:
            return
        self._last_probe = now
        try:
            self._producer.list_topics(self.settings.raw_topic, timeout=0.5)
        except KafkaException:
            return
        if len(self._producer):
            return  # earlier records still in flight: keep order, wait for them
        self._journal_failed()  # librdkafka is empty: every failure is known, journal it first
        if len(self._in_doubt) and not self._check_in_doubt(now):
            # Kafka answers but cannot tell yet (a restarted broker's leader epochs
            # lag its metadata for a moment): ask again soon, not a probe later
            self._last_probe = now - _PROBE_INTERVAL_S + _IN_DOUBT_RETRY_S
            return
        self.kafka_up = True
        while self.spooling and not self._stopping:
            seq = self.journal.oldest_segment()
            if seq is None:
                logger.info("journal replayed: Kafka is back, producing directly")
                self.spooling = False
                self._skips.clear()
                return
            try:
                replayed = self._replay_segment(seq)
            except JournalError as exc:
                logger.error("%s: moving the segment aside, not replayed", exc)
                self.journal.quarantine(seq)
                continue
            if replayed is None:
                return  # Kafka went away again; the segment stays for later
            self.journal.release(seq)
            logger.info("replayed journal segment %d (%d records)", seq, replayed)
            if not self.kafka_up:
                return

    def _check_in_doubt(self, now: float) -> bool:
        """Find the records in doubt that Kafka holds (they are not replayed); False
        to try again at the next probe. Gives up after ``_IN_DOUBT_CHECK_S``: a
        replay that waits longer costs more than a few duplicates."""
        self._in_doubt_since = self._in_doubt_since or now
        budget = max(_PROBE_INTERVAL_S, _IN_DOUBT_CHECK_S - (now - self._in_doubt_since))
        try:
            self._skips.add(self._in_doubt.find_in_kafka(librdkafka_config(self.settings), budget))
        except (KafkaException, TimeoutError) as exc:
            if now - self._in_doubt_since < _IN_DOUBT_CHECK_S:
                logger.info("records in doubt not checked yet (%s): trying again", exc)
                return False
            logger.warning(
                "%d record(s) in doubt replayed unchecked (%s): some may now be in Kafka twice",
                len(self._in_doubt),
                exc,
            )
        self._in_doubt.clear()
        self._in_doubt_since = 0.0
        return True

    def _replay_segment(self, seq: int) -> int | None:
        """Produce one segment; the count once every record is acked, None when one
        failed (the segment stays whole and is replayed from its start later)."""
        self._replaying, self._replay_failed = True, False
        self._replay_delivered.clear()
        count = 0
        try:
            for rec in self.journal.read_segment(seq):
                while not self._produce_record(rec) and not self._replay_failed:
                    self._serve_while_waiting()
                if self._replay_failed:
                    break
                count += 1
            while len(self._producer):
                self._serve_while_waiting()
        finally:
            self._replaying = False
        if self._replay_failed:
            logger.warning("replay of journal segment %d failed: it stays for the next try", seq)
            self._skips.add(self._replay_delivered)  # replayed again from its start
            return None
        return count

    def _serve_while_waiting(self) -> None:
        """While replay waits on Kafka, the lines read meanwhile wait in memory for up to
        ``_REPLAY_HOLD_MS``; older ones go to the journal.

        Journaling them at once made a replay chase its own tail: each segment's
        replay waited for its acks while new lines filled the next segment, so a
        replay at 1,600 lines/s went on for 96 rounds (3 s) and ended only in a gap
        of the feed. Held a moment, they follow the journal's last segment straight
        to Kafka, in order, once it is replayed; a long replay still journals them,
        so a receiver that dies meanwhile loses at most that moment of lines.
        """
        if self._purge_pending:
            self._purge()
        self._producer.poll(0.05)
        with self._cond:
            oldest = self._queue[0] if self._queue else None
        if oldest is not None and _age_ms(oldest) > _REPLAY_HOLD_MS:
            items = self._take(0)
            self.journaled_while_replaying += sum(map(_records_in, items))
            self._route_all(items)
        self.journal.sync_if_due()
        self._settle_wal()
        self._report()

    # -- librdkafka callbacks (run inside poll/flush on this thread) --------------

    def _on_error(self, err: KafkaError) -> None:
        self._settle_acks()  # those reported before it first: kafka_up follows report order
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.kafka_up:
                logger.warning("Kafka unreachable (%s)", err.str())
            self.kafka_up = False
            self._start_spooling(err.str(), purge=True)
        elif err.code() == KafkaError._TRANSPORT:
            # One connection dropped: librdkafka retries (idempotently) on its own;
            # records it cannot deliver in time fail into the journal.
            if self.kafka_up:
                logger.warning("Kafka connection problem (%s)", err.str())
        elif err.fatal():
            logger.critical("fatal Kafka producer error: %s", err.str())
            self.failure = KafkaException(err)
        else:
            logger.warning("Kafka producer error: %s", err.str())

    def _settle_acks(self) -> None:
        """Count and settle the acks reported since the last time, a batch at a time."""
        if not self._acking:
            return
        acking, self._acking = self._acking, []
        now = time.time()
        for batch in acking:
            acks, batch.acks = batch.acks, 0
            seq = self._ack_seq
            self._delivered(batch.topic, acks)
            self._settled(batch.wal, acks)
            if seq // _LATENCY_SAMPLE != self._ack_seq // _LATENCY_SAMPLE:
                metrics.ACK_LATENCY.observe(max(0.0, now - batch.receive_ts / 1000))

    def _on_failed_delivery(self, err: KafkaError, msg: Message, batch: _Batch) -> None:
        self._settle_acks()  # those reported before it first: kafka_up follows report order
        purged = self._delivery_failed(err)
        place, rec = batch.failed(msg.value() or b"")
        self._note_in_doubt(msg, rec)
        self._start_spooling(f"delivery failed: {err.str()}", purge=not purged)
        # journaled, sorted, once librdkafka is empty
        self._failed.append((place, rec, batch.wal))

    def _on_replay_delivery(self, err: KafkaError | None, msg: Message, rec: JournalRecord) -> None:
        if err is None:
            self._delivered(msg.topic() or "")
            self._replay_delivered[self._record_id(rec)] += 1
            return
        self._delivery_failed(err)
        self._note_in_doubt(msg, rec)
        # Its segment is still on disk and is replayed again from the start; fail the
        # rest of this replay so nothing after it is delivered.
        if not self._replay_failed:
            self._replay_failed = True
            self._purge_pending = True

    def _delivered(self, topic: str, records: int = 1) -> None:
        """``records`` acked on ``topic``: Kafka is up."""
        self._acked[topic] += records
        self.kafka_up = True
        self._ack_seq += records

    def _delivery_failed(self, err: KafkaError) -> bool:
        """Count a failed delivery; True if it was purged (by us) rather than refused."""
        metrics.DELIVERY_ERRORS.inc()
        purged = err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
        if not purged:
            self.kafka_up = False
        return purged

    def _note_in_doubt(self, msg: Message, rec: JournalRecord) -> None:
        """A failed record that was given a partition may be in Kafka anyway (in_doubt.py):
        even one purged from librdkafka's queue may be a retry the broker wrote."""
        partition = msg.partition()
        if partition is not None and partition >= 0:
            self._in_doubt.add(partition, self._record_id(rec))

    def _report(self) -> None:
        with self._drop_lock:
            self._log_drops(time.monotonic())
        for topic, n in self._acked.items():
            delta = n - self._reported_acked[topic]
            if delta:
                metrics.PRODUCED.labels(topic).inc(delta)
                self._reported_acked[topic] = n
        metrics.QUEUE_DEPTH.set(self._queue_bytes)
        metrics.JOURNAL_BYTES.set(self.journal.size_bytes)
        metrics.KAFKA_UP.set(1 if self.kafka_up else 0)
        metrics.INFLIGHT.set(len(self._producer))
        metrics.CORE_WAIT.set(self._core_wait.share)
        metrics.PRODUCE_HOLD.set(self.hold_s)

    def acked(self, topic: str) -> int:
        return self._acked[topic]
