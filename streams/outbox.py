"""Kafka producers for the stream workers' outputs, behind one small interface.

:class:`ConfluentOutbox` (librdkafka, the default: fastest, used by the faust
worker, the rebuild and the benchmark) and :class:`FaustOutbox` (the faust
app's own aiokafka producer). ``send`` queues a record; ``flush`` waits until
every queued record is acknowledged by the broker and raises
:class:`KafkaOutputError` if any failed, so the caller retries the batch and
never commits offsets of records whose outputs are not durable.
Keys are partitioned with murmur2 (the Java client's partitioner) everywhere.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from hqcore.kafka_client import close_within
from schemas.topics import Headers
from streams.errors import StreamsError


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


class FaustOutbox:
    """The faust app's producer (aiokafka); ``flush`` awaits the send futures."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._pending: list[asyncio.Future[Any]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers | None
    ) -> None:
        fut = await self._app.producer.send(
            topic, key, value, partition=None, timestamp=None, headers=headers
        )
        self._pending.append(fut)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        results = await asyncio.gather(*pending, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise KafkaOutputError(f"{len(errors)} outputs not delivered, first: {errors[0]!r}")

    async def close(self) -> None:
        await self.flush()
