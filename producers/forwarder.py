"""The Kafka side of the receiver: a thread that drains the in-memory queue
into confluent-kafka, or into the on-disk journal while Kafka is unreachable,
and replays the journal in order once the broker is back.

Nothing is lost: every line handed to :meth:`Forwarder.submit` ends up
acknowledged by Kafka, in the journal, or counted in ``hq_receiver_dropped_total``
with a loud log line (only when both the queue and the journal are full).
This thread never touches the socket, so reading never waits on Kafka.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producers import metrics
from producers.journal import Journal, JournalFull, JournalRecord
from producers.protocol import code_of
from producers.settings import ReceiverSettings
from schemas import dlq, topics

logger = logging.getLogger(__name__)

_LATENCY_SAMPLE: Final = 64  # one ack in N feeds the latency histogram
_PROBE_INTERVAL_S: Final = 1.0


class RecordKind(enum.IntEnum):
    SSE_SZSE = 0
    BSE_JSON = 1
    DLQ = 2


class DlqCause(enum.IntEnum):
    NONE = 0
    LINE_TOO_LONG = 1
    INVALID_UTF8 = 2


_CAUSE_REASON: Final[dict[int, dlq.DlqReason]] = {
    DlqCause.LINE_TOO_LONG: "line_too_long",
    DlqCause.INVALID_UTF8: "invalid_utf8",
}
_FORMAT: Final = {
    RecordKind.SSE_SZSE: topics.FORMAT_SSE_SZSE.encode(),
    RecordKind.BSE_JSON: topics.FORMAT_BSE_JSON.encode(),
}

# A queue item: (receive_ts, lines) for feed lines, or a single DLQ record.
_Item = tuple[int, list[bytes]] | JournalRecord


def producer_config(settings: ReceiverSettings) -> dict[str, Any]:
    """Idempotent, acks=all, compressed, batched; murmur2 like the Java client."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": "hqstream-receiver",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.compression,
        "linger.ms": settings.linger_ms,
        "batch.size": settings.batch_size,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.timeout.ms": settings.message_timeout_ms,
        "partitioner": "murmur2_random",
        "socket.send.buffer.bytes": 4 * 1024 * 1024,
        "reconnect.backoff.max.ms": 2000,
    }


def _header(msg: Message, name: str) -> bytes | None:
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    for key, value in pairs:
        if key == name:
            return value if isinstance(value, bytes) else None
    return None


class Forwarder:
    """Owns the Kafka producer and the journal; runs in its own thread."""

    def __init__(self, settings: ReceiverSettings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal
        self._source = settings.feed_source.encode()
        self._queue: collections.deque[_Item] = collections.deque()
        self._queue_bytes = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hq-forwarder", daemon=True)
        self._producer = Producer(
            {
                **producer_config(settings),
                "error_cb": self._on_error,
                "on_delivery": self._on_delivery,
            }
        )
        # Spooling: every record goes to the journal until it is replayed empty.
        self.spooling = not journal.empty
        self.kafka_up = True
        self._last_probe = 0.0
        self._acked: collections.Counter[str] = collections.Counter()
        self._reported_acked: collections.Counter[str] = collections.Counter()
        self._ack_seq = 0
        self.delivery_errors = 0
        self.dropped = 0
        self.failure: BaseException | None = None

    # -- called from the reader (event loop thread): never blocks on Kafka ---------

    def submit(self, receive_ts: int, lines: list[bytes]) -> None:
        size = sum(map(len, lines))
        with self._cond:
            if self._queue_bytes + size > self.settings.queue_max_bytes:
                self._drop(len(lines), "queue_full")
                return
            self._queue.append((receive_ts, lines))
            self._queue_bytes += size
            self._cond.notify()

    def submit_dlq(self, receive_ts: int, cause: DlqCause, payload: bytes) -> None:
        with self._cond:
            self._queue.append(JournalRecord(receive_ts, RecordKind.DLQ, cause, payload))
            self._queue_bytes += len(payload)
            self._cond.notify()

    @property
    def queue_bytes(self) -> int:
        return self._queue_bytes

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Drain the queue, flush Kafka; journal whatever Kafka did not take."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout + 30)
        remaining = self._producer.flush(timeout if self.kafka_up else 1.0)
        if remaining:
            logger.warning("%d record(s) not acked at shutdown: journaling them", remaining)
            self._producer.purge(in_queue=True, in_flight=True)
            self._producer.poll(0.5)  # delivers the purge reports -> journal
        self.journal.close()
        self._report()
        del self._producer  # librdkafka closes its connections now, not at interpreter exit
        logger.info("forwarder stopped; journal holds %d bytes", self.journal.size_bytes)

    # -- the forwarder thread -----------------------------------------------------

    def _run(self) -> None:
        last_report = 0.0
        try:
            while True:
                items = self._take(0.05)
                for item in items:
                    self._route(item)
                self._producer.poll(0)
                if self.spooling:
                    self._maybe_replay()
                now = time.monotonic()
                if now - last_report > 0.5:
                    self._report()
                    last_report = now
                if not items and self._stopping and not self._queue:
                    break
        except BaseException as exc:  # surfaced by the receiver, never swallowed
            logger.exception("forwarder thread failed")
            self.failure = exc
        finally:
            self.journal.flush()

    def _take(self, timeout: float) -> list[_Item]:
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(timeout)
            items = list(self._queue)
            self._queue.clear()
            self._queue_bytes = 0
        return items

    def _route(self, item: _Item) -> None:
        if isinstance(item, JournalRecord):
            if self.spooling:
                self._spool([item])
            elif not self._produce_record(item):
                self._start_spooling("producer queue full")
                self._spool([item])
            return
        receive_ts, lines = item
        if self.spooling:
            self._spool(self._records(receive_ts, lines))
            return
        ts = str(receive_ts).encode()
        produce = self._producer.produce
        raw_topic = self.settings.raw_topic
        for i, line in enumerate(lines):
            kind = RecordKind.BSE_JSON if line[:1] == b"{" else RecordKind.SSE_SZSE
            try:
                produce(
                    raw_topic,
                    value=line,
                    key=code_of(line, "bse_json" if kind == RecordKind.BSE_JSON else "sse_szse"),
                    headers=[
                        (topics.H_FORMAT, _FORMAT[kind]),
                        (topics.H_RECEIVE_TS, ts),
                        (topics.H_SOURCE, self._source),
                    ],
                )
            except BufferError:
                self._start_spooling("producer queue full")
                self._spool(self._records(receive_ts, lines[i:]))
                return

    @staticmethod
    def _records(receive_ts: int, lines: Iterable[bytes]) -> list[JournalRecord]:
        return [
            JournalRecord(
                receive_ts,
                RecordKind.BSE_JSON if line[:1] == b"{" else RecordKind.SSE_SZSE,
                DlqCause.NONE,
                line,
            )
            for line in lines
        ]

    def _produce_record(self, rec: JournalRecord) -> bool:
        """Produce one journaled/DLQ record; False when the producer queue is full."""
        ts = str(rec.receive_ts).encode()
        try:
            if rec.kind == RecordKind.DLQ:
                reason = _CAUSE_REASON.get(rec.reason, "line_too_long")
                detail = (
                    f"line of {len(rec.payload)}+ bytes exceeds the 64 KiB limit"
                    if reason == "line_too_long"
                    else "line is not valid UTF-8"
                )
                self._producer.produce(
                    self.settings.dlq_topic,
                    value=rec.payload,
                    headers=[
                        (dlq.REASON, reason.encode()),
                        (dlq.DETAIL, detail.encode()),
                        (dlq.STAGE, b"receiver"),
                        (dlq.TS, ts),
                        (topics.H_RECEIVE_TS, ts),
                        (topics.H_SOURCE, self._source),
                    ],
                )
            else:
                kind = RecordKind(rec.kind)
                self._producer.produce(
                    self.settings.raw_topic,
                    value=rec.payload,
                    key=code_of(
                        rec.payload, "bse_json" if kind == RecordKind.BSE_JSON else "sse_szse"
                    ),
                    headers=[
                        (topics.H_FORMAT, _FORMAT[kind]),
                        (topics.H_RECEIVE_TS, ts),
                        (topics.H_SOURCE, self._source),
                    ],
                )
        except BufferError:
            return False
        return True

    # -- spooling and replay ------------------------------------------------------

    def _start_spooling(self, why: str) -> None:
        if not self.spooling:
            logger.warning(
                "Kafka not taking records (%s): spooling to journal %s", why, self.journal.directory
            )
            self.spooling = True

    def _spool(self, records: list[JournalRecord]) -> None:
        try:
            self.journal.append_many(records)
        except JournalFull as exc:
            self._drop(exc.not_written, "journal_full")
            metrics.JOURNALED.inc(len(records) - exc.not_written)
        else:
            metrics.JOURNALED.inc(len(records))

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        metrics.DROPPED.labels(reason).inc(count)
        logger.error(
            "LOST %d feed line(s): %s (queue %d bytes, journal %d of %d bytes). "
            "Kafka has been unreachable too long or the disk is too slow; "
            "raise HQ_JOURNAL_MAX_BYTES / HQ_QUEUE_MAX_BYTES or restore Kafka.",
            count,
            reason,
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
        self.kafka_up = True
        while self.spooling and not self._stopping:
            seq = self.journal.oldest_segment()
            if seq is None:
                logger.info("journal replayed: Kafka is back, producing directly")
                self.spooling = False
                return
            replayed = self._replay_segment(seq)
            if replayed is None:
                return  # Kafka went away again; the segment stays for later
            self.journal.release(seq)
            logger.info("replayed journal segment %d (%d records)", seq, replayed)
            if not self.kafka_up:
                return

    def _replay_segment(self, seq: int) -> int | None:
        errors_before = self.delivery_errors
        count = 0
        for rec in self.journal.read_segment(seq):
            while not self._produce_record(rec):
                self._serve_while_waiting()
            count += 1
        while len(self._producer):
            self._serve_while_waiting()
            if self.delivery_errors != errors_before and not self.kafka_up:
                # Failed records were re-journaled at the tail by _on_delivery; the
                # rest were acked, so the segment is still fully accounted for.
                break
        return count

    def _serve_while_waiting(self) -> None:
        """While replay waits on Kafka, keep draining the queue into the journal."""
        self._producer.poll(0.05)
        for item in self._take(0):
            self._route(item)
        self._report()

    # -- librdkafka callbacks (run inside poll/flush on this thread) --------------

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if self.kafka_up:
                logger.warning("Kafka unreachable (%s)", err.str())
            self.kafka_up = False
            self._start_spooling(err.str())
        elif err.fatal():
            logger.critical("fatal Kafka producer error: %s", err.str())
            self.failure = KafkaException(err)
        else:
            logger.warning("Kafka producer error: %s", err.str())

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._acked[msg.topic() or ""] += 1
            self.kafka_up = True
            self._ack_seq += 1
            if self._ack_seq % _LATENCY_SAMPLE == 0:
                sent = _header(msg, topics.H_RECEIVE_TS)
                if sent:
                    metrics.ACK_LATENCY.observe(max(0.0, time.time() - int(sent) / 1000))
            return
        self.delivery_errors += 1
        metrics.DELIVERY_ERRORS.inc()
        if err.code() not in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            self.kafka_up = False
        receive_ts = int(_header(msg, topics.H_RECEIVE_TS) or 0)
        value = msg.value() or b""
        if msg.topic() == self.settings.dlq_topic:
            reason = (_header(msg, dlq.REASON) or b"").decode()
            cause = DlqCause.INVALID_UTF8 if reason == "invalid_utf8" else DlqCause.LINE_TOO_LONG
            rec = JournalRecord(receive_ts, RecordKind.DLQ, cause, value)
        else:
            kind = RecordKind.BSE_JSON if value[:1] == b"{" else RecordKind.SSE_SZSE
            rec = JournalRecord(receive_ts, kind, DlqCause.NONE, value)
        self._start_spooling(f"delivery failed: {err.str()}")
        self._spool([rec])

    def _report(self) -> None:
        for topic, n in self._acked.items():
            delta = n - self._reported_acked[topic]
            if delta:
                metrics.PRODUCED.labels(topic).inc(delta)
                self._reported_acked[topic] = n
        metrics.QUEUE_DEPTH.set(self._queue_bytes)
        metrics.JOURNAL_BYTES.set(self.journal.size_bytes)
        metrics.KAFKA_UP.set(1 if self.kafka_up else 0)
        metrics.INFLIGHT.set(len(self._producer))

    def acked(self, topic: str) -> int:
        return self._acked[topic]
