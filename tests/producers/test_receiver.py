"""Receiver -> Kafka on real sockets and a real broker."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from producers.errors import FeedAuthRejected
from producers.forwarder import Forwarder
from producers.journal import Journal
from producers.receiver import Backoff, Receiver, Silence
from producers.settings import ReceiverSettings
from schemas import dlq, topics
from tests.conftest import KafkaEndpoint
from tests.feed_lines import bj_line, sh_line
from tests.kafka_utils import consume_all
from tests.producers.feed_server import ScriptedFeed

pytestmark = pytest.mark.integration


@dataclass
class Harness:
    settings: ReceiverSettings
    forwarder: Forwarder
    receiver: Receiver
    task: asyncio.Task[None]

    async def wait_acked(self, raw: int, dlq_count: int = 0, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                self.forwarder.acked(self.settings.raw_topic) >= raw
                and self.forwarder.acked(self.settings.dlq_topic) >= dlq_count
            ):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"acked raw={self.forwarder.acked(self.settings.raw_topic)}/{raw} "
            f"dlq={self.forwarder.acked(self.settings.dlq_topic)}/{dlq_count}"
        )


def make_settings(
    bootstrap: str, port: int, tmp_path: Path, raw: str, dlq_topic: str, **extra: object
) -> ReceiverSettings:
    return ReceiverSettings(
        kafka_bootstrap=bootstrap,
        feed_addr=f"127.0.0.1:{port}",
        feed_token="s3cret-token",
        raw_topic=raw,
        dlq_topic=dlq_topic,
        journal_dir=tmp_path / "journal",
        backoff_initial_s=0.1,
        backoff_max_s=0.5,
        **extra,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(settings: ReceiverSettings) -> AsyncIterator[Harness]:
    journal = Journal.from_settings(settings)
    forwarder = Forwarder(settings, journal)
    forwarder.start()
    receiver = Receiver(settings, forwarder)
    task = asyncio.create_task(receiver.run())
    try:
        yield Harness(settings, forwarder, receiver, task)
    finally:
        receiver.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await asyncio.get_running_loop().run_in_executor(None, forwarder.stop)


@pytest.fixture
async def feed() -> AsyncIterator[ScriptedFeed]:
    server = ScriptedFeed(token="s3cret-token")
    await server.start()
    yield server
    await server.stop()


async def test_framing_faults_are_handled_as_specified(
    kafka: KafkaEndpoint, feed: ScriptedFeed, tmp_path: Path
) -> None:
    raw, dead = kafka.topic("raw", 6), kafka.topic("dlq", 1)
    settings = make_settings(kafka.bootstrap, feed.port, tmp_path, raw, dead)
    good = [sh_line(f"{i:06d}") for i in range(1, 40)] + [bj_line("920819")]
    overlong = b"sh600000$" + b"9" * (70 * 1024)
    not_utf8 = sh_line("000777").replace("平安银行".encode(), b"\xff\xfe\xfd")
    async with running(settings) as h:
        w = await feed.client()
        blob = b"".join(line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(good[:20]))
        # Split across packets at awkward places, including inside a UTF-8 character.
        cuts = [0, 1, 7, 33, 200, 201, 1000, len(blob)]
        await feed.send(w, *(blob[a:b] for a, b in itertools.pairwise(cuts)), pause=0.02)
        await feed.send(w, b'{"op":"heartbeat","ts":1763877597000}\n')
        await feed.send(w, overlong[:40_000], overlong[40_000:] + b"\n", pause=0.02)
        await feed.send(w, not_utf8 + b"\n")
        await feed.send(w, b"".join(line + b"\n" for line in good[20:]))
        await h.wait_acked(raw=len(good), dlq_count=2)
        assert h.receiver.stats.connects == 1, "the connection must stay up"
        assert h.receiver.stats.heartbeats == 1

    records = consume_all(kafka.bootstrap, raw, expected=len(good))
    assert sorted(m.value() for m in records) == sorted(good)
    for m in records:
        value = m.value()
        assert value is not None
        assert m.key() == (value[2:8] if value[:1] != b"{" else b"920819")
        headers = dict(m.headers() or [])
        assert headers[topics.H_FORMAT] == (b"bse_json" if value[:1] == b"{" else b"sse_szse")
        assert abs(int(headers[topics.H_RECEIVE_TS]) - time.time() * 1000) < 120_000
    dead_records = consume_all(kafka.bootstrap, dead, expected=2)
    reasons = sorted((dict(m.headers() or [])[dlq.REASON]) for m in dead_records)
    assert reasons == [b"invalid_utf8", b"line_too_long"]
    utf8_rec = next(
        m for m in dead_records if dict(m.headers() or [])[dlq.REASON] == b"invalid_utf8"
    )
    assert utf8_rec.value() == not_utf8


async def test_wrong_token_fails_fast_with_a_clear_message(
    kafka: KafkaEndpoint, feed: ScriptedFeed, tmp_path: Path
) -> None:
    settings = make_settings(kafka.bootstrap, feed.port, tmp_path, "unused", "unused")
    settings = settings.model_copy(
        update={"feed_token": ReceiverSettings(feed_token="wrong-token").feed_token}
    )
    journal = Journal(tmp_path / "j", 1 << 20, 1 << 16)
    forwarder = Forwarder(settings, journal)
    receiver = Receiver(settings, forwarder)
    started = time.monotonic()
    with pytest.raises(FeedAuthRejected) as info:
        await asyncio.wait_for(receiver.run(), 5)
    assert time.monotonic() - started < 2
    assert "invalid token" in str(info.value) and "HQ_FEED_TOKEN" in str(info.value)
    assert "wrong-token" not in str(info.value)
    assert feed.connections == 1, "a rejected token is not retried"


async def test_silent_connection_is_declared_dead_and_reconnected(
    kafka: KafkaEndpoint, feed: ScriptedFeed, tmp_path: Path
) -> None:
    raw, dead = kafka.topic("raw", 3), kafka.topic("dlq", 1)
    settings = make_settings(
        kafka.bootstrap, feed.port, tmp_path, raw, dead, heartbeat_timeout_s=1.0
    )
    async with running(settings) as h:
        await feed.client()  # first connection: says nothing
        second = await feed.client(timeout=10)
        await feed.send(second, sh_line("000001") + b"\n")
        await h.wait_acked(raw=1)
        assert h.receiver.stats.connects >= 2


async def test_a_stop_ends_a_silent_connection_at_once(
    kafka: KafkaEndpoint, feed: ScriptedFeed, tmp_path: Path
) -> None:
    """A stop must not wait for the heartbeat timeout of a read in progress (5 min
    here): the read ends as the stream's end would, and the receiver returns."""
    raw, dead = kafka.topic("raw", 3), kafka.topic("dlq", 1)
    settings = make_settings(
        kafka.bootstrap, feed.port, tmp_path, raw, dead, heartbeat_timeout_s=300
    )
    async with running(settings) as h:
        writer = await feed.client()
        await feed.send(writer, sh_line("000001") + b"\n")
        await h.wait_acked(raw=1)  # the session reads; now the feed says nothing
        h.receiver.stop()
        await asyncio.wait_for(h.task, 5)  # raises if the read held the stop
    assert h.receiver.stats.connects == 1, "a stop is not a lost connection"


async def test_silence_ends_the_stream_only_after_its_timeout_since_the_last_read() -> None:
    """The timer checks at the timeout; a read since then moves it on, a silence of the
    timeout ends the stream (its own clock here: nothing depends on the machine's speed)."""
    now = 0.0
    reader = asyncio.StreamReader()
    silence = Silence(reader, 0.05, clock=lambda: now)
    try:
        now = 0.045
        silence.heard()
        reader.feed_data(b"x\n")
        now = 0.06  # past the timeout since the start, not since the read
        await asyncio.sleep(0.15)  # the checks came (if the machine let them): 15 ms quiet
        assert not silence.fired and not reader.at_eof()
        now = 1.0  # 0.96 s since the last read
        deadline = time.monotonic() + 10
        while not silence.fired and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert silence.fired
        assert await reader.read(100) == b"x\n" and await reader.read(100) == b""
    finally:
        silence.cancel()


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(initial=0.5, maximum=8.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert max(delays[6:]) > 2.0
    backoff.reset()
    assert backoff.next_delay() <= 0.5


async def test_broker_outage_of_twenty_seconds_loses_nothing(
    own_kafka: object, feed: ScriptedFeed, tmp_path: Path
) -> None:
    from hqstream.local_runner import LocalKafka

    assert isinstance(own_kafka, LocalKafka)
    endpoint = KafkaEndpoint(own_kafka.bootstrap)
    raw, dead = endpoint.topic("raw", 6), endpoint.topic("dlq", 1)
    settings = make_settings(
        own_kafka.bootstrap,
        feed.port,
        tmp_path,
        raw,
        dead,
        producer_delivery_timeout_s=10,
        heartbeat_timeout_s=300,  # the feed is silent while the broker restarts (30+ s loaded)
    )
    sent: list[bytes] = []
    async with running(settings) as h:
        w = await feed.client()

        async def pump(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                batch = [
                    sh_line(f"{len(sent) + i:06d}"[-6:], name=uuid.uuid4().hex[:8])
                    for i in range(50)
                ]
                sent.extend(batch)
                await feed.send(w, b"".join(line + b"\n" for line in batch))
                await asyncio.sleep(0.05)

        await pump(3)
        own_kafka.kill()
        await pump(22)  # >= 20 s with the broker gone
        assert h.forwarder.spooling, "the receiver must spool while Kafka is down"
        assert h.forwarder.journal.records_written > 0
        await asyncio.get_running_loop().run_in_executor(None, own_kafka.restart)
        await pump(3)
        await h.wait_acked(raw=len(sent), timeout=120)
        assert h.forwarder.dropped == 0
        assert h.receiver.stats.connects == 1, "the feed connection never dropped"

    records = consume_all(own_kafka.bootstrap, raw, expected=len(sent), timeout=60)
    values = [m.value() for m in records]
    assert len(values) == len(sent), "every line exactly once"
    assert sorted(v for v in values if v is not None) == sorted(sent)


async def test_simulator_lines_arrive_exactly_once_across_a_simulator_restart(
    kafka: KafkaEndpoint, tmp_path: Path
) -> None:
    from producers.simulator import FeedSimulator, SimConfig

    token = "s3cret-token"
    first = FeedSimulator(
        SimConfig(
            token=token,
            stocks=300,
            interval_s=0.2,
            max_snapshots=3,
            seed=1,
            malformed_fraction=0.02,
            sent_log=tmp_path / "sent1.log",
        )
    )
    await first.start()
    raw, dead = kafka.topic("raw", 6), kafka.topic("dlq", 1)
    settings = make_settings(kafka.bootstrap, first.port, tmp_path, raw, dead)
    async with running(settings) as h:
        await first.wait_done(timeout=60)
        await first.stop()  # the vendor restarts ...
        second = FeedSimulator(
            SimConfig(
                token=token,
                port=first.port,
                stocks=300,
                interval_s=0.2,
                max_snapshots=3,
                seed=2,
                sent_log=tmp_path / "sent2.log",
            )
        )
        await second.start()  # ... and the receiver reconnects by itself
        try:
            await second.wait_done(timeout=60)
            sent = [
                line
                for name in ("sent1.log", "sent2.log")
                for line in (tmp_path / name).read_bytes().split(b"\n")
                if line
            ]
            await h.wait_acked(raw=len(sent))
            assert h.receiver.stats.connects == 2
        finally:
            await second.stop()
    records = consume_all(kafka.bootstrap, raw, expected=len(sent))
    assert collections.Counter(m.value() for m in records) == collections.Counter(sent)
    for m in records:
        value = m.value() or b""
        symbol = value.split(b"$", 1)[0]
        if value[:1] != b"{" and len(symbol) == 8 and symbol[2:].isdigit():
            assert m.key() == symbol[2:]
        elif value[:1] != b"{":
            assert m.key() is None, "an unreadable symbol is produced unkeyed, not dropped"
