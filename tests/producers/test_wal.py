"""The receiver's write-ahead log: what a killed receiver had not settled comes back,
nothing else does; settled segments are deleted; a failing disk never stops the feed.
(Against a real broker and real SIGKILLs: tests/bench/test_journal_faults.py.)"""

from __future__ import annotations

import errno
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from hqstream.local_runner import free_port
from producers import wal as wal_module
from producers.forwarder import Forwarder
from producers.journal import DlqCause, Journal, JournalRecord, RecordKind
from producers.settings import ReceiverSettings
from producers.wal import Unsettled, WriteAheadLog, newest_line_read

TS = 1_700_000_000_000
BJ = b'{"symbol":"bj920819","lastPrice":4.87}'


def _lines(first: int, n: int) -> list[bytes]:
    return [f"sh{600000 + i}$line{i}".encode() for i in range(first, first + n)]


def test_only_the_batches_not_settled_come_back_with_their_kinds(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    numbers = [log.append_lines(TS + i, _lines(10 * i, 10)) for i in range(5)]
    bj = log.append_lines(TS + 5, [BJ])
    dead = log.append_dlq(JournalRecord(TS + 6, RecordKind.DLQ, DlqCause.INVALID_UTF8, b"\xff"))
    assert numbers == [1, 2, 3, 4, 5] and (bj, dead) == (6, 7)
    log.settle(3)  # batches 1-3 acknowledged; the process dies without closing the log

    found = WriteAheadLog(tmp_path).recover()

    assert found.batches == 4
    assert [r.payload for r in found.records] == [*_lines(30, 20), BJ, b"\xff"]
    assert [r.kind for r in found.records] == [RecordKind.SSE_SZSE] * 20 + [
        RecordKind.BSE_JSON,
        RecordKind.DLQ,
    ]
    assert found.records[-1].reason == DlqCause.INVALID_UTF8
    assert {r.receive_ts for r in found.records[:10]} == {TS + 3}


def test_forget_old_leaves_a_fresh_log(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    log.append_lines(TS, _lines(0, 3))
    log.settle(0)
    again = WriteAheadLog(tmp_path)
    assert len(again.recover().records) == 3
    again.forget_old()
    assert list(tmp_path.iterdir()) == []
    assert WriteAheadLog(tmp_path).recover().records == []


def test_a_damaged_frame_goes_to_the_dlq_and_the_batches_after_it_are_in_doubt(
    tmp_path: Path,
) -> None:
    log = WriteAheadLog(tmp_path, roll_after_s=3600)  # one segment, however slow the machine
    for i in range(4):
        log.append_lines(TS + i, _lines(10 * i, 10))
    log.settle(4)  # all settled, but numbers after damage cannot be trusted
    (segment,) = tmp_path.glob("wal-*.log")
    data = bytearray(segment.read_bytes())
    first_frame_end = data.index(b"\xffJR\xfe", 17)
    data[30] ^= 0x5A  # inside the first frame: its CRC fails
    segment.write_bytes(bytes(data) + b"\xffJR\xfe\x00")  # and a torn tail

    found = WriteAheadLog(tmp_path).recover()

    corrupt = [r for r in found.records if r.kind == RecordKind.JOURNAL_CORRUPT]
    assert len(corrupt) == 2  # the damaged frame and the torn tail
    assert len(corrupt[0].payload) == first_frame_end - 16
    assert found.batches == 3  # 2-4: settled, but their numbers are unknown now
    assert [r.payload for r in found.records if r.kind == RecordKind.SSE_SZSE] == _lines(10, 30)


def test_settled_segments_are_deleted_when_the_log_rolls(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, roll_after_s=3600, segment_bytes=2_000)
    for i in range(30):
        log.append_lines(TS, _lines(10 * i, 10))  # ~200 bytes a batch: a segment per 10
    assert log.segments == 3
    log.settle(25)
    log.append_lines(TS, _lines(300, 10))  # the next roll deletes what is settled
    for _ in range(10):
        log.append_lines(TS, _lines(310, 10))
    assert log.segments == 2
    # batches 1-22 settled: their two segments are gone; 23-33 hold 26-33, unsettled
    assert sorted(int(p.stem[4:]) for p in tmp_path.glob("wal-*.log")) == [23, 34]


def test_a_clean_stop_leaves_no_file_an_unclean_one_keeps_the_unsettled(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    log.append_lines(TS, _lines(0, 5))
    log.append_lines(TS, _lines(5, 5))
    log.close(settled_through=2)
    assert list(tmp_path.iterdir()) == []

    log = WriteAheadLog(tmp_path)
    log.append_lines(TS, _lines(0, 5))
    log.append_lines(TS, _lines(5, 5))
    log.close(settled_through=1)
    assert [r.payload for r in WriteAheadLog(tmp_path).recover().records] == _lines(5, 5)


def test_a_log_that_cannot_be_written_never_stops_the_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = WriteAheadLog(tmp_path)

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wal_module.os, "write", full)
    assert log.append_lines(TS, _lines(0, 3)) == 1
    assert log.append_lines(TS, _lines(3, 3)) == 2
    assert log.write_errors == 2


def test_unsettled_moves_on_only_past_batches_settled_whole() -> None:
    u = Unsettled()
    assert u.through() == 0
    u.take(1, 3)
    u.take(2, 1)
    u.take(3, 2)
    u.settle(2)
    u.settle(3, 2)
    assert u.through() == 0  # 1 still has 3 records in flight
    u.settle(1, 2)
    u.take(1, 1)  # put back (librdkafka full) and taken again: counted once
    assert u.through() == 0
    u.settle(1)
    assert u.through() == 3
    u.settle(9)  # a batch never taken (no log): ignored
    u.take(4, 1)
    assert u.through() == 3


# -- the forwarder with a log, no broker -------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> ReceiverSettings:
    return ReceiverSettings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",  # nothing listens
        raw_topic="raw",
        dlq_topic="dlq",
        journal_dir=tmp_path / "journal",
    )


def _forwarder(settings: ReceiverSettings) -> Forwarder:
    return Forwarder(
        settings, Journal.from_settings(settings), WriteAheadLog(settings.journal_dir / "wal")
    )


@pytest.fixture
def killed(settings: ReceiverSettings) -> Iterator[Forwarder]:
    """A forwarder whose process 'dies': no stop(), its files are left as they are."""
    fwd = _forwarder(settings)
    yield fwd
    del fwd
    gc.collect()


def test_a_killed_forwarders_lines_in_memory_are_journaled_in_doubt_by_its_successor(
    settings: ReceiverSettings, killed: Forwarder
) -> None:
    acked = [("sse_szse", line) for line in _lines(0, 4)]
    in_memory = [("sse_szse", line) for line in _lines(4, 4)]
    killed.submit(TS, acked)
    killed.submit(TS + 1, in_memory)
    batches = killed._take(0)
    assert len(batches) == 2
    first = killed._next_batch(TS, acked, wal=batches[0].wal)
    for _, line in acked:  # what librdkafka reports for the first batch
        first(None, _Acked(line))  # type: ignore[arg-type]
    killed._settle_wal()
    killed.journal.close()

    successor = _forwarder(settings)
    try:
        assert successor.recovered == 4
        assert successor.spooling
        assert len(successor._in_doubt) == 4
        journaled = [r.payload for r in successor.journal.read_segment(1)]
        assert journaled == [line for _, line in in_memory]
        assert not list((settings.journal_dir / "wal").glob("wal-*.log"))  # handed over
    finally:
        successor.journal.close()
        del successor
        gc.collect()


class _Acked:
    """A successful delivery report."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "raw"

    def partition(self) -> int:
        return 0


def test_the_newest_line_read_is_the_last_line_of_the_last_batch(tmp_path: Path) -> None:
    assert newest_line_read(tmp_path) is None
    log = WriteAheadLog(tmp_path, roll_after_s=3600, segment_bytes=500)
    for i in range(10):
        log.append_lines(TS, _lines(5 * i, 5))
    log.append_dlq(JournalRecord(TS, RecordKind.DLQ, DlqCause.INVALID_UTF8, b"\xff"))
    assert len(list(tmp_path.glob("wal-*.log"))) > 1
    assert newest_line_read(tmp_path) == _lines(49, 1)[0]
