"""The forwarder's hand-off to the journal, without a broker (delivery reports are faked)."""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from hqcore.host import CORE_WAIT_PERIOD_S, CoreWait
from hqstream.local_runner import free_port
from producers import metrics
from producers.forwarder import (
    CORE_WAIT_BUSY,
    CORE_WAIT_IDLE,
    Forwarder,
    _Lines,
    producer_config,
)
from producers.journal import DlqCause, Journal, JournalRecord, RecordKind
from producers.settings import ReceiverSettings
from tests.hqcore.host_fakes import ManualClock, ManualRunDelay

TS = 1_700_000_000_000


@dataclass
class FakeMessage:
    """What a delivery report carries, as far as the forwarder reads it: no headers
    (confluent-kafka's delivery reports have none, checked on a real broker)."""

    _value: bytes
    _topic: str = "raw"
    _partition: int = 0

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return self._partition

    def topic(self) -> str:
        return self._topic

    def headers(self) -> None:
        return None


@pytest.fixture
def forwarder(tmp_path: Path) -> Iterator[Forwarder]:
    settings = ReceiverSettings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",  # nothing listens
        raw_topic="raw",
        dlq_topic="dlq",
        journal_dir=tmp_path / "journal",
    )
    fwd = Forwarder(settings, Journal.from_settings(settings))
    yield fwd
    fwd.journal.close()
    del fwd  # librdkafka stops retrying the dead port now
    gc.collect()


def _journaled(journal: Journal) -> list[bytes]:
    out: list[bytes] = []
    while (seq := journal.oldest_segment()) is not None:
        out.extend(r.payload for r in journal.read_segment(seq))
        journal.release(seq)
    return out


def test_failed_records_are_journaled_in_arrival_order_not_report_order(
    forwarder: Forwarder,
) -> None:
    first = forwarder._next_batch(
        TS,
        [
            ("sse_szse", b"sh600000$a"),
            ("sse_szse", b"sh600000$b"),
            ("sse_szse", b"sh600001$c"),
            ("sse_szse", b"sh600000$b"),
        ],
    )
    second = forwarder._next_batch(TS, [("sse_szse", b"sh600000$d"), ("sse_szse", b"sh600001$e")])
    purged = KafkaError(KafkaError._PURGE_QUEUE)
    # librdkafka reports a purge newest batch first (seen with a paused broker)
    for batch, value in [
        (second, b"sh600001$e"),
        (second, b"sh600000$d"),
        (first, b"sh600000$b"),
        (first, b"sh600001$c"),
        (first, b"sh600000$a"),
        (first, b"sh600000$b"),
    ]:
        batch(purged, FakeMessage(value))  # type: ignore[arg-type]
    assert forwarder.spooling
    assert forwarder.journal.records_written == 0, "nothing journaled until librdkafka is empty"
    forwarder._journal_failed()
    assert _journaled(forwarder.journal) == [
        b"sh600000$a",
        b"sh600000$b",
        b"sh600001$c",
        b"sh600000$b",
        b"sh600000$d",
        b"sh600001$e",
    ]


def test_a_timed_out_record_purges_the_rest_a_purged_one_does_not(forwarder: Forwarder) -> None:
    batch = forwarder._next_batch(TS, [("sse_szse", b"sh600000$a"), ("sse_szse", b"sh600000$b")])
    batch(KafkaError(KafkaError._PURGE_QUEUE), FakeMessage(b"sh600000$b"))  # type: ignore[arg-type]
    assert not forwarder._purge_pending
    batch(KafkaError(KafkaError._MSG_TIMED_OUT), FakeMessage(b"sh600000$a"))  # type: ignore[arg-type]
    assert forwarder._purge_pending, "newer records must not reach Kafka after this one"
    assert not forwarder.kafka_up


def test_a_failed_replayed_record_is_not_journaled_again(forwarder: Forwarder) -> None:
    forwarder._replaying = True
    rec = JournalRecord(TS, RecordKind.SSE_SZSE, 0, b"sh600000$x")
    forwarder._on_replay_delivery(
        KafkaError(KafkaError._MSG_TIMED_OUT), FakeMessage(b"sh600000$x"), rec
    )  # type: ignore[arg-type]
    assert forwarder._replay_failed and forwarder._purge_pending
    assert not forwarder._failed, "its segment stays on disk and is replayed from its start"
    assert len(forwarder._in_doubt) == 1, "it had a partition: the broker may have written it"


def test_a_failed_line_keeps_its_kind_and_receive_time(forwarder: Forwarder) -> None:
    bse = b'{"code":"830799","price":"10.01"}'
    batch = forwarder._next_batch(TS, [("sse_szse", b"sh600000$a"), ("bse_json", bse)])
    batch(KafkaError(KafkaError._PURGE_INFLIGHT), FakeMessage(bse))  # type: ignore[arg-type]
    forwarder._journal_failed()
    seq = forwarder.journal.oldest_segment()
    assert seq is not None
    assert list(forwarder.journal.read_segment(seq)) == [
        JournalRecord(TS, RecordKind.BSE_JSON, 0, bse)
    ]


def test_a_failed_dlq_record_is_journaled_as_it_was(forwarder: Forwarder) -> None:
    rec = JournalRecord(TS, RecordKind.DLQ, DlqCause.of_reason("oversized_line"), b"x" * 10)
    batch = forwarder._next_batch(rec.receive_ts, [], rec)
    batch(KafkaError(KafkaError._MSG_TIMED_OUT), FakeMessage(rec.payload, "dlq"))  # type: ignore[arg-type]
    forwarder._journal_failed()
    seq = forwarder.journal.oldest_segment()
    assert seq is not None
    assert list(forwarder.journal.read_segment(seq)) == [rec]


def test_acks_are_counted_and_settled_a_batch_at_a_time_and_once(forwarder: Forwarder) -> None:
    """A success is counted in its batch and settled with the others of its poll; a
    record that fails is journaled instead, so each record is settled exactly once."""
    forwarder.submit(TS, [("sse_szse", b"sh600000$a"), ("sse_szse", b"sh600001$b")])
    forwarder.submit(TS + 1, [("sse_szse", b"sh600000$c")])
    forwarder.submit(TS + 2, [("sse_szse", b"sh600001$d"), ("sse_szse", b"sh600002$e")])
    first, second, third = forwarder._take(0)
    batches = [forwarder._next_batch(item.receive_ts, item.lines, wal=item.wal)
               for item in (first, second, third)]  # fmt: skip
    forwarder.kafka_up = False
    batches[0](None, FakeMessage(b"sh600000$a"))  # type: ignore[arg-type]
    batches[1](None, FakeMessage(b"sh600000$c"))  # type: ignore[arg-type]
    batches[0](None, FakeMessage(b"sh600001$b"))  # type: ignore[arg-type]
    assert forwarder.acked("raw") == 0, "counted once the poll is over"
    forwarder._settle_acks()
    assert forwarder.acked("raw") == 3 and forwarder.kafka_up
    assert [b.acks for b in batches] == [0, 0, 0]
    batches[2](None, FakeMessage(b"sh600001$d"))  # type: ignore[arg-type]
    forwarder._settle_acks()  # the same batch again, one ack later
    assert forwarder.acked("raw") == 4
    forwarder._settle_acks()
    assert forwarder.acked("raw") == 4, "an ack is settled once"
    batches[2](KafkaError(KafkaError._PURGE_QUEUE), FakeMessage(b"sh600002$e"))  # type: ignore[arg-type]
    forwarder._settle_acks()
    assert forwarder.acked("raw") == 4 and forwarder._failed
    batches[0](None, FakeMessage(b"sh600000$a"))  # type: ignore[arg-type]
    batches[1](KafkaError(KafkaError._MSG_TIMED_OUT), FakeMessage(b"sh600000$c"))  # type: ignore[arg-type]
    assert forwarder.acked("raw") == 5, "an ack reported before a failure is counted before it"
    assert not forwarder.kafka_up, "and Kafka is down after both, as they were reported"
    forwarder._journal_failed()
    assert _journaled(forwarder.journal) == [b"sh600000$c", b"sh600002$e"]  # arrival order


def test_delivery_timeout_is_bounded_and_configurable() -> None:
    assert producer_config(ReceiverSettings())["message.timeout.ms"] == 10_000
    settings = ReceiverSettings(producer_delivery_timeout_s=2.5)
    assert producer_config(settings)["message.timeout.ms"] == 2_500


def test_produce_requests_are_not_held_back_by_nagle() -> None:
    """With Nagle, a small request waited for the broker's ACK of the one before:
    the receive -> normalized tail (docs/benchmarks.md, "The worker's fetch window")."""
    assert producer_config(ReceiverSettings())["socket.nagle.disable"] is True


def test_lines_read_during_a_replay_wait_a_moment_instead_of_refilling_the_journal(
    forwarder: Forwarder,
) -> None:
    """Journaled at once, they made each replayed segment's wait fill the next one (96
    rounds in a fault-suite run); held, they follow the replay straight to Kafka."""
    forwarder.spooling, forwarder._replaying = True, True
    now_ms = time.time_ns() // 1_000_000
    # read "now": a minute ahead, so no stall of a loaded machine ages it past the hold
    forwarder.submit(now_ms + 60_000, [("sse_szse", b"sh600000$new")])
    forwarder._serve_while_waiting()
    assert forwarder.journal.oldest_segment() is None and forwarder.queue_bytes > 0
    assert forwarder.journaled_while_replaying == 0

    # a long replay: once the oldest waited longer than the hold, all go to the journal
    forwarder._take(0)
    forwarder.submit(now_ms - 2_000, [("sse_szse", b"sh600000$old")])
    forwarder.submit(now_ms, [("sse_szse", b"sh600000$new")])
    forwarder._serve_while_waiting()
    assert _journaled(forwarder.journal) == [b"sh600000$old", b"sh600000$new"]
    assert forwarder.journaled_while_replaying == 2 and forwarder.queue_bytes == 0


# -- on a busy host lines wait for more before they go to librdkafka -----------------


def _busy_for(
    forwarder: Forwarder, clock: ManualClock, delay: ManualRunDelay, share: float
) -> None:
    """A period in which the receiver's main thread waited ``share`` of the time."""
    clock.now += CORE_WAIT_PERIOD_S
    delay.wait(share * CORE_WAIT_PERIOD_S)
    forwarder._follow_the_host()


def test_the_hold_follows_the_host_up_to_the_busy_linger(
    forwarder: Forwarder, caplog: pytest.LogCaptureFixture
) -> None:
    clock, delay = ManualClock(), ManualRunDelay()
    forwarder._core_wait = CoreWait(delay, clock, idle=CORE_WAIT_IDLE, busy=CORE_WAIT_BUSY)
    caplog.set_level("INFO", logger="producers.forwarder")
    forwarder._follow_the_host()  # the first reading
    _busy_for(forwarder, clock, delay, 0.025)  # an idle host (measured: 2.5 %)
    assert forwarder.hold_s == 0.0 and not caplog.records
    _busy_for(forwarder, clock, delay, 0.15)  # as slow as issue 22's day (14-17 %)
    assert forwarder.hold_s == pytest.approx(0.015)  # 20 ms in all with librdkafka's 5
    forwarder._report()
    assert metrics.PRODUCE_HOLD._value.get() == pytest.approx(0.015)
    assert metrics.CORE_WAIT._value.get() == pytest.approx(0.15)
    _busy_for(forwarder, clock, delay, (CORE_WAIT_IDLE + CORE_WAIT_BUSY) / 2)
    assert forwarder.hold_s == pytest.approx(0.0075)  # in proportion
    _busy_for(forwarder, clock, delay, 0.0)
    assert forwarder.hold_s == 0.0
    told = [(r.levelname, re.sub(r"\d+%", "N%", r.getMessage())) for r in caplog.records]
    assert told == [
        ("WARNING", "the host is busy: the receiver's main thread waited for a core N% of the "
                    "last 2 s; lines wait up to 20 ms for Kafka (fewer, larger requests)"),
        ("INFO", "the host is not busy any more: the receiver's main thread waited for a core "
                 "N% of the last 2 s; lines wait up to 5 ms for Kafka"),
    ]  # fmt: skip


@pytest.mark.parametrize(("linger_ms", "linger_busy_ms"), [(5, 0), (5, 5), (20, 10)])
def test_no_hold_without_a_longer_busy_linger(
    tmp_path: Path, linger_ms: int, linger_busy_ms: int, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ReceiverSettings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        journal_dir=tmp_path / "journal",
        linger_ms=linger_ms,
        linger_busy_ms=linger_busy_ms,
    )
    fwd = Forwarder(settings, Journal.from_settings(settings))
    try:
        clock, delay = ManualClock(), ManualRunDelay()
        fwd._core_wait = CoreWait(delay, clock, idle=CORE_WAIT_IDLE, busy=CORE_WAIT_BUSY)
        fwd._follow_the_host()
        _busy_for(fwd, clock, delay, 0.5)
        assert fwd.hold_s == 0.0 and not caplog.records  # nothing changes: nothing to tell
        fwd._report()
        assert metrics.CORE_WAIT._value.get() == pytest.approx(0.5)  # still measured
    finally:
        fwd.journal.close()
        del fwd
        gc.collect()


def test_held_lines_go_to_librdkafka_with_those_read_meanwhile(forwarder: Forwarder) -> None:
    clock = ManualClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the forwarder waits; the reader reads on
        slept.append(seconds)
        clock.now += 0.004
        forwarder.submit(TS + 4, [("sse_szse", b"sh600001$later")])
        clock.now += seconds - 0.004

    forwarder._clock, forwarder._sleep = clock, sleep
    forwarder.hold_s = 0.015
    forwarder.submit(TS, [("sse_szse", b"sh600000$first")])
    clock.now += 0.005  # the forwarder comes for it 5 ms after it was read
    items = forwarder._take(0)
    assert slept == [pytest.approx(0.010)]  # it waits what is left of the hold
    assert [line for item in items if isinstance(item, _Lines) for _, line in item.lines] == [
        b"sh600000$first",
        b"sh600001$later",
    ]
    forwarder.hold_s = 0.0  # an idle host: taken at once
    forwarder.submit(TS + 8, [("sse_szse", b"sh600000$next")])
    assert len(forwarder._take(0)) == 1 and len(slept) == 1
    forwarder.hold_s = 0.015
    forwarder.submit(TS + 9, [("sse_szse", b"sh600000$old")])
    clock.now += 0.020  # it waited longer than the hold already
    assert len(forwarder._take(0)) == 1 and len(slept) == 1
