"""``HQ_STREAMS_FETCH_INTERVAL_MS`` reaches the consumer whose fetch loop it paces,
and :class:`FetchWindow` has the broker collect a live feed's records per fetch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer

from streams.app import create_app
from streams.faust_transport import WINDOW_MIN_BYTES, FastConsumer, FetchWindow
from streams.settings import StreamsSettings
from tests.conftest import KafkaEndpoint


def _interval(settings: StreamsSettings) -> float:
    async def build() -> float:
        streams_app = create_app(settings, worker_id="pacing")
        await streams_app.runtime.outbox.close()  # no producer left retrying 127.0.0.1:1
        consumer = streams_app.app.consumer
        assert isinstance(consumer, FastConsumer)
        return consumer.fetch_interval_s

    return asyncio.run(build())


def test_interval_from_the_settings(tmp_path: Path) -> None:
    settings = StreamsSettings(
        kafka_bootstrap="127.0.0.1:1", metrics_port=0, datadir=str(tmp_path), fetch_interval_ms=25
    )
    assert _interval(settings) == 0.025


def test_zero_fetches_again_at_once(tmp_path: Path) -> None:
    settings = StreamsSettings(
        kafka_bootstrap="127.0.0.1:1", metrics_port=0, datadir=str(tmp_path), fetch_interval_ms=0
    )
    assert _interval(settings) == 0.0


# -- FetchWindow: what a live feed's records wait for -------------------------------


OnePartition = tuple[AIOKafkaConsumer, Producer, TopicPartition]
WINDOW_S = 3.0  # long enough that a windowed and an immediate answer are told apart


@pytest.fixture
async def one_partition(kafka: KafkaEndpoint) -> AsyncIterator[OnePartition]:
    topic = kafka.topic("pacing", partitions=1)
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([tp])
    try:
        yield consumer, Producer({"bootstrap.servers": kafka.bootstrap}), tp
    finally:
        await consumer.stop()


def _produce(producer: Producer, tp: TopicPartition, value: bytes) -> None:
    producer.produce(tp.topic, value)
    assert producer.flush(30) == 0


async def _next(consumer: AIOKafkaConsumer, tp: TopicPartition) -> list[bytes]:
    """The values of the next fetch that brings records (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = await consumer.getmany(tp, timeout_ms=1000)
        if got.get(tp):
            return [r.value for r in got[tp] if r.value is not None]
    raise AssertionError("no record fetched within 30 s")


async def test_a_live_feeds_records_come_in_one_fetch_at_the_windows_end(
    one_partition: OnePartition,
) -> None:
    """Live, the broker answers once the window is over, with all that arrived in it
    (real broker). With the defaults it answers at the first record."""
    consumer, producer, tp = one_partition
    window = FetchWindow(lambda: consumer._fetcher, WINDOW_S)
    assert await consumer.getmany(tp, timeout_ms=10) == {}  # a default fetch is waiting
    window.fetched(True)  # the fetch sent after the next take is windowed

    _produce(producer, tp, b"r1")  # answered at once: the waiting fetch is the default one
    assert await _next(consumer, tp) == [b"r1"]
    taken = time.monotonic()  # the windowed fetch leaves after this
    _produce(producer, tp, b"r2")
    _produce(producer, tp, b"r3")
    assert await _next(consumer, tp) == [b"r2", b"r3"]  # one fetch, not one per record
    assert time.monotonic() - taken >= WINDOW_S - 0.1  # the broker held it for the window

    window.fetched(False)  # quiet: the defaults again, from the fetch after the next take
    _produce(producer, tp, b"r4")
    assert await _next(consumer, tp) == [b"r4"]  # the fetch in flight was still windowed
    produced = time.monotonic()
    _produce(producer, tp, b"r5")
    assert await _next(consumer, tp) == [b"r5"]
    waited = time.monotonic() - produced
    assert waited < WINDOW_S / 2, f"a quiet feed's record waited {waited:.2f} s"  # at once


def test_the_window_switches_only_on_a_change_and_restores_the_defaults() -> None:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=500, _fetch_min_bytes=1)
    window = FetchWindow(lambda: fetcher, 0.015)
    window.fetched(False)
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (500, 1)
    window.fetched(True)
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (15, WINDOW_MIN_BYTES)
    fetcher._fetch_max_wait_ms = 15  # (as set: a second True changes nothing)
    window.fetched(True)
    window.fetched(False)
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (500, 1)


def test_a_consumer_made_anew_gets_the_window_too() -> None:
    first = SimpleNamespace(_fetch_max_wait_ms=500, _fetch_min_bytes=1)
    second = SimpleNamespace(_fetch_max_wait_ms=500, _fetch_min_bytes=1)
    current = [first]
    window = FetchWindow(lambda: current[0], 0.015)
    window.fetched(True)
    current[0] = second  # faust started its consumer again
    window.fetched(True)
    assert (second._fetch_max_wait_ms, second._fetch_min_bytes) == (15, WINDOW_MIN_BYTES)
    window.fetched(False)
    assert (second._fetch_max_wait_ms, second._fetch_min_bytes) == (500, 1)


def test_no_window_with_a_zero_interval_or_before_the_consumer_started() -> None:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=500, _fetch_min_bytes=1)
    FetchWindow(lambda: fetcher, 0.0).fetched(True)
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (500, 1)
    window = FetchWindow(lambda: None, 0.015)
    window.fetched(True)  # nothing to set yet: tried again at the next fetch
    assert not window.live
