"""``HQ_STREAMS_FETCH_INTERVAL_MS`` reaches the consumer whose fetch loop it paces,
and :class:`FetchWindow` has the broker collect a live feed's records per fetch."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer

from hqcore.host import BUSY_LOG_EVERY_S, CORE_WAIT_PERIOD_S, CoreWait
from streams import metrics
from streams.app import create_app
from streams.faust_transport import (
    RATE_PERIOD_S,
    WINDOW_MIN_BYTES,
    FastConsumer,
    FetchPacing,
    FetchWindow,
)
from streams.settings import StreamsSettings
from tests.conftest import KafkaEndpoint
from tests.hqcore.host_fakes import ManualClock, ManualRunDelay


def _pacing(settings: StreamsSettings) -> FetchPacing:
    async def build() -> FetchPacing:
        streams_app = create_app(settings, worker_id="pacing")
        await streams_app.runtime.outbox.close()  # no producer left retrying 127.0.0.1:1
        consumer = streams_app.app.consumer
        assert isinstance(consumer, FastConsumer)
        return consumer.fetch_pacing

    return asyncio.run(build())


def test_the_pacing_from_the_settings(tmp_path: Path) -> None:
    settings = StreamsSettings(
        kafka_bootstrap="127.0.0.1:1",
        metrics_port=0,
        datadir=str(tmp_path),
        fetch_interval_ms=25,
        fetch_interval_max_ms=60,
        fetch_batch_ticks=20,
        fetch_interval_busy_ms=45,
    )
    assert _pacing(settings) == FetchPacing(0.025, 0.06, 20, 0.045)


def test_zero_fetches_again_at_once(tmp_path: Path) -> None:
    settings = StreamsSettings(
        kafka_bootstrap="127.0.0.1:1", metrics_port=0, datadir=str(tmp_path), fetch_interval_ms=0
    )
    assert _pacing(settings).min_s == 0.0


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
    window = FetchWindow(lambda: consumer._fetcher, FetchPacing(WINDOW_S))
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
    window = FetchWindow(lambda: fetcher, FetchPacing(0.015))
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
    window = FetchWindow(lambda: current[0], FetchPacing(0.015))
    window.fetched(True)
    current[0] = second  # faust started its consumer again
    window.fetched(True)
    assert (second._fetch_max_wait_ms, second._fetch_min_bytes) == (15, WINDOW_MIN_BYTES)
    window.fetched(False)
    assert (second._fetch_max_wait_ms, second._fetch_min_bytes) == (500, 1)


def test_no_window_with_a_zero_interval_or_before_the_consumer_started() -> None:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=500, _fetch_min_bytes=1)
    FetchWindow(lambda: fetcher, FetchPacing(0.0)).fetched(True)
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (500, 1)
    window = FetchWindow(lambda: None, FetchPacing(0.015))
    window.fetched(True)  # nothing to set yet: tried again at the next fetch
    assert not window.live


# -- the window follows the input rate ----------------------------------------------

PACING = FetchPacing(min_s=0.015, max_s=0.040, batch_ticks=12)


@pytest.mark.parametrize(
    ("rate", "window_ms"),
    [(None, 15), (5_000.0, 15), (1_667.0, 15), (600.0, 20), (333.0, 36), (100.0, 40), (1.0, 40)],
)
def test_the_window_holds_about_the_target_records_within_its_bounds(
    rate: float | None, window_ms: int
) -> None:
    assert round(PACING.window_s(rate) * 1000) == window_ms


@pytest.mark.parametrize(
    "pacing", [FetchPacing(0.015, 0.015, 12), FetchPacing(0.015, 0.040, 0), FetchPacing(0.015)]
)
def test_a_fixed_window_without_a_longer_bound_or_a_target(pacing: FetchPacing) -> None:
    assert pacing.window_s(10.0) == 0.015


def _feed(window: FetchWindow, clock: ManualClock, rate: float, seconds: float) -> None:
    """Fetches of ``rate`` records/s, one each window, for ``seconds``."""
    end = clock.now + seconds
    while clock.now < end:
        step = window.window_s
        clock.now += step
        window.fetched(max(1, round(rate * step)))


def test_a_slow_feed_gets_the_longer_window_and_a_fast_one_the_shortest() -> None:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=500, _fetch_min_bytes=1)
    clock = ManualClock()
    window = FetchWindow(lambda: fetcher, PACING, clock)
    window.fetched(5)  # a live spell starts at the shortest window: its rate is not known
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (15, WINDOW_MIN_BYTES)
    _feed(window, clock, 333.0, 2 * RATE_PERIOD_S)
    assert window.rate is not None and 300 < window.rate < 370
    assert fetcher._fetch_max_wait_ms == 36  # 12 records at 333/s
    _feed(window, clock, 100.0, 2 * RATE_PERIOD_S)
    assert fetcher._fetch_max_wait_ms == 40  # at most the longer bound
    _feed(window, clock, 1_667.0, 2 * RATE_PERIOD_S)
    assert fetcher._fetch_max_wait_ms == 15  # a busy feed: never longer than it needs


def test_a_quiet_spell_forgets_the_rate() -> None:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=500, _fetch_min_bytes=1)
    clock = ManualClock()
    window = FetchWindow(lambda: fetcher, PACING, clock)
    window.fetched(5)
    _feed(window, clock, 100.0, 2 * RATE_PERIOD_S)
    assert fetcher._fetch_max_wait_ms == 40
    clock.now += 30
    window.fetched(0)  # quiet: the defaults, answered at the first record
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (500, 1)
    assert window.rate is None
    window.fetched(3000)  # a burst after the quiet spell: the shortest window first
    assert fetcher._fetch_max_wait_ms == 15


# -- the window follows the host: a busy host batches more -------------------------

BUSY_PACING = FetchPacing(min_s=0.015, max_s=0.040, batch_ticks=12, busy_s=0.030)


@pytest.mark.parametrize(
    ("rate", "busy", "window_ms"),
    [
        (1_667.0, 0.0, 15),  # cores to spare: as before
        (1_667.0, 0.5, 22.5),  # in proportion
        (1_667.0, 1.0, 30),
        (1_667.0, 3.0, 30),  # never past the busy window
        (None, 1.0, 30),  # a live spell's first window too
        (333.0, 1.0, 36),  # a slow feed's longer window is not shortened
        (100.0, 1.0, 40),
    ],
)
def test_a_busy_host_lengthens_the_shortest_window(
    rate: float | None, busy: float, window_ms: float
) -> None:
    assert BUSY_PACING.window_s(rate, busy) * 1000 == pytest.approx(window_ms, abs=0.05)


def test_a_busy_host_changes_nothing_without_a_busy_window_or_any_window() -> None:
    assert PACING.window_s(1_667.0, 1.0) == 0.015
    assert FetchPacing(0.0, 0.0, 0, busy_s=0.030).window_s(1_667.0, 1.0) == 0.0
    assert FetchPacing(0.015, busy_s=0.030).window_s(1_667.0, 1.0) == 0.030  # a fixed one grows


def _waiting(window: FetchWindow, clock: ManualClock, delay: ManualRunDelay, share: float) -> None:
    """Two periods of a steady feed while the main thread waits ``share`` of the time."""
    assert delay.ns is not None
    start, ns = clock.now, delay.ns
    while clock.now - start < 2 * CORE_WAIT_PERIOD_S:
        _feed(window, clock, 1_667.0, 0.1)
        delay.ns = ns + round((clock.now - start) * share * 1e9)


def test_the_window_follows_the_host_while_the_feed_is_live(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=500, _fetch_min_bytes=1)
    clock, delay = ManualClock(), ManualRunDelay()
    window = FetchWindow(lambda: fetcher, BUSY_PACING, clock, CoreWait(delay, clock))
    window.fetched(5)
    caplog.set_level("INFO", logger="streams.faust_transport")
    _waiting(window, clock, delay, 0.0)
    assert fetcher._fetch_max_wait_ms == 15 and not caplog.records  # the thread never waited
    _waiting(window, clock, delay, 0.4)
    assert window.busy == 1.0 and fetcher._fetch_max_wait_ms == 30
    assert metrics.FETCH_WINDOW._value.get() == 0.030
    assert metrics.CORE_WAIT._value.get() == pytest.approx(0.4, abs=0.05)
    _waiting(window, clock, delay, 0.0)
    assert window.busy == 0.0 and fetcher._fetch_max_wait_ms == 15
    _waiting(window, clock, delay, 0.4)  # busy again within the minute: no second warning
    _waiting(window, clock, delay, 0.0)
    told = [(r.levelname, re.sub(r"\d+%", "N%", r.getMessage())) for r in caplog.records]
    assert told == [
        ("WARNING", "the host is busy: the worker's main thread waited for a core N% of the "
                    "last 2 s; the fetch window is 30 ms (fewer, larger batches)"),
        ("INFO", "the host is not busy any more: the worker's main thread waited for a core "
                 "N% of the last 2 s; the fetch window is 15 ms"),
    ]  # fmt: skip
    clock.now += BUSY_LOG_EVERY_S
    _waiting(window, clock, delay, 0.4)
    assert len(caplog.records) == 3 and caplog.records[-1].levelname == "WARNING"
    window.fetched(0)  # the feed goes quiet: no window
    assert metrics.FETCH_WINDOW._value.get() == 0
