from __future__ import annotations

from pathlib import Path

import pytest

from producers.journal import Journal, JournalFull, JournalRecord


def _rec(i: int, size: int = 10) -> JournalRecord:
    return JournalRecord(1_700_000_000_000 + i, i % 2, 0, bytes([65 + i % 26]) * size)


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    records = [_rec(i) for i in range(50)]
    journal.append_many(records)
    seen: list[JournalRecord] = []
    while (seq := journal.oldest_segment()) is not None:
        seen.extend(journal.read_segment(seq))
        journal.release(seq)
    assert seen == records
    assert journal.empty and journal.size_bytes == 0


def test_full_journal_refuses_and_says_how_many(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=110, segment_bytes=1000)
    with pytest.raises(JournalFull) as info:
        journal.append_many([_rec(i, 20) for i in range(10)])
    assert info.value.not_written == 7  # 3 frames of 34 bytes fit in 110
    assert journal.records_written == 3


def test_survives_a_restart(tmp_path: Path) -> None:
    first = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    first.append_many([_rec(i) for i in range(5)])
    first.close()
    second = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert not second.empty
    seq = second.oldest_segment()
    assert seq is not None
    assert [r.receive_ts for r in second.read_segment(seq)] == [
        _rec(i).receive_ts for i in range(5)
    ]


def test_torn_last_record_is_skipped_not_fatal(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    journal.append_many([_rec(i) for i in range(3)])
    journal.close()
    seg = next(tmp_path.glob("journal-*.log"))
    seg.write_bytes(seg.read_bytes()[:-4])
    again = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    seq = again.oldest_segment()
    assert seq is not None
    assert len(list(again.read_segment(seq))) == 2
