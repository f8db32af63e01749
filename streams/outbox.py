"""Kafka producers for the stream workers' outputs, behind one small interface.

``send`` queues a record; ``flush`` waits until every queued record is
acknowledged by the broker and raises :class:`KafkaOutputError` if any
failed, so the caller retries the batch and never commits offsets of records
whose outputs are not durable. Keys are partitioned with murmur2 (the Java
client's partitioner) everywhere.

* :class:`BatchOutbox` (aiokafka; the faust worker's default): a flush sends
  every partition's records in **one** produce request per broker. A worker
  flushes once per batch, and a batch's ticks fall on most partitions, so
  this is 1 request per batch where librdkafka sends one per partition
  (librdkafka#1700): about 20x fewer requests at a steady 1,667 ticks/s, and
  the broker's cost per tick of these writes about halves
  (docs/benchmarks.md, "One produce request per batch").
* :class:`ConfluentOutbox` (librdkafka: the rebuild, the benchmark's plain
  loop, ``HQ_STREAMS_PRODUCER=confluent``).

Both compress with LZ4's fast mode (librdkafka's default; :func:`lz4_fast`
for aiokafka, whose own encoder asks for level 9, LZ4's high-compression
mode: 4-10x the CPU for 0-3 % fewer bytes on these records; docs/benchmarks.md,
"Where the rest goes, and what did not pay").
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Final, Protocol

import aiokafka.record.default_records
import cramjam
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from confluent_kafka import KafkaError, Message, Producer

from hqcore.kafka_client import close_within
from schemas.topics import Headers
from streams.errors import StreamsError

logger = logging.getLogger(__name__)


#: LZ4 frame compression level: 1 is LZ4's fast mode, librdkafka's default;
#: 3 and above are its high-compression mode (aiokafka's encoder uses 9)
LZ4_LEVEL: Final = 1


def lz4_fast(payload: bytes) -> bytes:
    """A Kafka LZ4 frame (independent blocks, no content checksum: KIP-57) in LZ4's fast mode."""
    compressor = cramjam.lz4.Compressor(level=LZ4_LEVEL, content_checksum=False, block_linked=False)
    compressor.compress(payload)
    return bytes(compressor.finish())


def use_fast_lz4() -> None:
    """Make aiokafka's record batch builders (the compiled one and the pure-Python
    fallback) compress LZ4 batches with :func:`lz4_fast`.

    aiokafka has no setting for the level; both builders look its encoder up in
    their module's globals when they build a batch, so this swaps it there.
    Only batches this process builds change; any LZ4 reader decodes them.
    """
    aiokafka.record.default_records.lz4_encode = lz4_fast  # type: ignore[attr-defined]
    try:
        from aiokafka.record._crecords import default_records as compiled
    except ImportError:  # aiokafka without its C extension: the fallback is patched
        return
    compiled.lz4_encode = lz4_fast  # type: ignore[attr-defined]


class KafkaOutputError(StreamsError):
    """At least one output record was not acknowledged by Kafka."""


class Outbox(Protocol):
    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None
    ) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class ConfluentOutbox:
    """librdkafka producer; delivery reports are collected in :meth:`flush`."""

    def __init__(self, bootstrap: str = "", **extra: Any) -> None:
        """``extra`` are librdkafka options (e.g. hqcore.kafka_client.librdkafka_config)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 500_000,
            "batch.size": 1_000_000,
            "socket.nagle.disable": True,  # as the receiver's producer
            # only failures call back (a success is "gone from the queue at flush")
            "delivery.report.only.error": True,
        }
        conf.update(extra)
        self._producer = Producer(conf)
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    headers=headers,  # type: ignore[arg-type]
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.05)
                await asyncio.sleep(0)

    async def flush(self) -> None:
        producer = self._producer
        producer.poll(0)
        while len(producer) > 0:
            await asyncio.to_thread(producer.flush, 0.5)
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaOutputError(f"{len(errors)} outputs not delivered, first: {errors[0]}")

    async def close(self) -> None:
        """Deliver what is queued (10 s at most), then destroy the producer."""

        def close() -> None:
            self._producer.flush(10)
            self._producer.close()

        await close_within(close, "the outputs' Kafka producer", timeout_s=15)


class BatchOutbox:
    """aiokafka producer fed whole record batches: one produce request per flush and broker.

    ``send`` appends the record to its partition's batch (murmur2 of the key,
    as librdkafka's and Java's partitioners; a record without a key goes to a
    random partition); ``flush`` hands every batch to the producer at once,
    without yielding in between, so its sender drains them into one request,
    and waits for the acknowledgements. Idempotent, ``acks=all``. After any
    failed delivery the producer is replaced by a new one (a new producer id:
    an idempotent producer whose sequence numbers the broker lost, e.g. after
    an unclean broker restart, never recovers, aiokafka#1017), and the caller
    sends the batch again.
    """

    #: uncompressed bytes per partition batch: a whole fetch's quotes (2,000, ~660 KB of
    #: Avro) in one, so one produce request carries them (aiokafka sends one batch per
    #: partition a request: at 512 KB a burst's fetch went in two, the second ~15-20 ms
    #: after the first; docs/benchmarks.md, "The hold counted from the newest batch, and a
    #: fetch in one produce request"); LZ4 makes it ~a third of that, below the topics'
    #: 1 MB message limit
    MAX_BATCH_BYTES = 960 * 1024

    def __init__(self, **kwargs: Any) -> None:
        """``kwargs`` are aiokafka producer arguments (hqcore.kafka_client.aiokafka_kwargs)."""
        self._kwargs: dict[str, Any] = {
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": "lz4",
            "linger_ms": 0,  # flush() is the only sender: it adds every batch at once
            "max_batch_size": self.MAX_BATCH_BYTES,
            **kwargs,
        }
        use_fast_lz4()
        self._producer: AIOKafkaProducer | None = None
        self._batches: dict[tuple[str, int], BatchBuilder] = {}
        self._full: list[tuple[str, int, BatchBuilder]] = []  # filled up before the flush
        self._partition_of: dict[str, dict[bytes, int]] = {}  # topic -> key -> partition
        self._partitions: dict[str, int] = {}
        self._handing_over = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**self._kwargs)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    def _create_batch(self) -> BatchBuilder:
        assert self._producer is not None  # _partition() started it
        return self._producer.create_batch()

    async def _partition(self, topic: str, key: bytes | None) -> int:
        count = self._partitions.get(topic)
        if count is None:
            producer = await self._started()
            count = self._partitions[topic] = len(await producer.partitions_for(topic))
            self._partition_of[topic] = {}
        if key is None:
            return random.randrange(count)
        known = self._partition_of[topic]
        partition = known.get(key)
        if partition is None:
            partition = known[key] = (murmur2(key) & 0x7FFFFFFF) % count
        return partition

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None
    ) -> None:
        try:
            partition = await self._partition(topic, key)
        except Exception as exc:  # no broker yet (start, metadata): the caller retries the batch
            self._full, self._batches = [], {}
            await self._replace_producer()
            raise KafkaOutputError(f"{topic}: no producer: {exc!r}") from exc
        batch = self._batches.get((topic, partition))
        if batch is None:
            batch = self._batches[(topic, partition)] = self._create_batch()
        fields = _header_bytes(headers) if headers else []
        if batch.append(timestamp=None, key=key, value=value, headers=fields) is None:
            # full: it goes with the flush, a new batch takes this record
            self._full.append((topic, partition, batch))
            batch = self._batches[(topic, partition)] = self._create_batch()
            if batch.append(timestamp=None, key=key, value=value, headers=fields) is None:
                # aiokafka's empty batch takes any record, so not today; if it ever
                # refuses one, fail as every other send does: nothing queued is kept
                self._full, self._batches = [], {}
                raise KafkaOutputError(f"{topic}: a record larger than a whole batch")

    async def flush(self) -> None:
        batches = [*self._full, *((t, p, b) for (t, p), b in self._batches.items())]
        self._full, self._batches = [], {}
        if not batches:
            return
        errors: list[str] = []
        pending: list[asyncio.Future[Any]] = []
        # Flushes hand their batches over in the order they were called: one that
        # waits (the producer's start, a full accumulator) would otherwise let a
        # later flush's batch of a partition go before its own, out of order
        # (the normalized topic in a backlog, with the quotes sent first).
        async with self._handing_over:
            producer = await self._started()
            for topic, partition, batch in batches:
                try:
                    # no yield while nothing waits: the sender task sees them all at once
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                except Exception as exc:
                    errors.append(f"{topic}[{partition}]: {exc!r}")
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, BaseException):
                errors.append(repr(result))
        if errors:
            await self._replace_producer()
            raise KafkaOutputError(
                f"{len(errors)} output batches not delivered, first: {errors[0]}"
            )

    async def _replace_producer(self) -> None:
        producer, self._producer = self._producer, None
        self._partitions.clear()  # read again: the topics may have grown
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 10)
            except Exception as exc:
                logger.warning("stopping the failed outputs' producer: %r", exc)

    async def close(self) -> None:
        """Deliver what is queued (10 s at most), then stop the producer."""
        try:
            await asyncio.wait_for(self.flush(), 10)
        except Exception as exc:  # KafkaOutputError, TimeoutError: the outputs are logged lost
            logger.warning("outputs not delivered at close: %r", exc)
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.wait_for(producer.stop(), 15)


def _header_bytes(headers: Headers) -> list[tuple[str, bytes | None]]:
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]
