from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from producers import journal as journal_mod
from producers.errors import JournalError
from producers.journal import (
    CorruptCause,
    Journal,
    JournalDiskFull,
    JournalFull,
    JournalRecord,
    RecordKind,
    encode_record,
)


def _rec(i: int, size: int = 10) -> JournalRecord:
    return JournalRecord(1_700_000_000_000 + i, i % 2, 0, bytes([65 + i % 26]) * size)


def _drain(journal: Journal) -> list[JournalRecord]:
    seen: list[JournalRecord] = []
    while (seq := journal.oldest_segment()) is not None:
        seen.extend(journal.read_segment(seq))
        journal.release(seq)
    return seen


def _good(records: list[JournalRecord]) -> list[JournalRecord]:
    return [r for r in records if r.kind != RecordKind.JOURNAL_CORRUPT]


def _corrupt(records: list[JournalRecord]) -> list[JournalRecord]:
    return [r for r in records if r.kind == RecordKind.JOURNAL_CORRUPT]


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("journal-*.log"))


HEADER = 16  # segment header
FRAME = 22  # record header


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    records = [_rec(i) for i in range(50)]
    journal.append_many(records)
    assert len(_segments(tmp_path)) > 5
    assert _drain(journal) == records
    assert journal.empty and journal.size_bytes == 0


def test_full_journal_refuses_and_says_how_many(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=110, segment_bytes=1000)
    with pytest.raises(JournalFull) as info:
        journal.append_many([_rec(i, 20) for i in range(10)])
    assert info.value.not_written == 8  # header 16 + 2 frames of 42 bytes fit in 110
    assert info.value.reason == "journal_full"
    assert journal.records_written == 2


def test_survives_a_restart(tmp_path: Path) -> None:
    first = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    first.append_many([_rec(i) for i in range(5)])
    first.close()
    second = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert not second.empty
    assert [r.receive_ts for r in _drain(second)] == [_rec(i).receive_ts for i in range(5)]


# -- durability ---------------------------------------------------------------------


def test_every_append_is_in_the_file_before_it_returns(tmp_path: Path) -> None:
    """No userspace buffer: what append_many accepted is in the OS (survives SIGKILL)."""
    journal = Journal(tmp_path, max_bytes=1 << 30, segment_bytes=1 << 26, fsync_interval_ms=60_000)
    records = [_rec(i, 100) for i in range(200)]
    journal.append_many(records)
    (seg,) = _segments(tmp_path)
    assert seg.stat().st_size == HEADER + sum(FRAME + len(r.payload) for r in records)
    assert list(journal.read_segment(1)) == records  # read while still open for writing


_CHILD = """
import os, sys, time
from pathlib import Path
from producers.journal import Journal, JournalRecord
j = Journal(Path(sys.argv[1]), 1 << 30, 1 << 20, fsync_interval_ms=60_000)
for b in range(int(sys.argv[2])):
    j.append_many([JournalRecord(b, 0, 0, b"%08d-%08d" % (b, i)) for i in range(100)])
print("appended", flush=True)
time.sleep(60)
"""


def test_sigkill_after_append_loses_nothing(tmp_path: Path) -> None:
    """A process killed right after append_many returned: every record is on disk."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), "50"],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"appended"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    again = Journal(tmp_path, 1 << 30, 1 << 20)
    got = _drain(again)
    assert len(got) == 5000
    want = [b"%08d-%08d" % (b, i) for b in range(50) for i in range(100)]
    assert [r.payload for r in got] == want


@pytest.mark.parametrize(("interval_ms", "expected"), [(0, 20), (60_000, 0)])
def test_fsync_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval_ms: int, expected: int
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(journal_mod.os, "fdatasync", lambda fd: calls.append(fd))
    journal = Journal(tmp_path, 1 << 30, 1 << 26, fsync_interval_ms=interval_ms)
    for b in range(20):
        journal.append_many([_rec(b)])
    assert len(calls) == expected == journal.fsyncs
    journal.close()  # sealing a segment always syncs
    assert len(calls) == expected + (0 if interval_ms == 0 else 1)


def test_sync_if_due_syncs_an_idle_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(journal_mod.os, "fdatasync", lambda fd: calls.append(fd))
    journal = Journal(tmp_path, 1 << 30, 1 << 26, fsync_interval_ms=50)
    journal.append_many([_rec(1)])
    journal.append_many([_rec(2)])
    before = len(calls)
    journal._last_sync -= 1.0  # the interval has passed with no new append
    journal.sync_if_due()
    assert len(calls) == before + 1
    journal.sync_if_due()
    assert len(calls) == before + 1, "nothing new: no second sync"


# -- corruption ---------------------------------------------------------------------


def _write_and_close(tmp_path: Path, records: list[JournalRecord]) -> Path:
    journal = Journal(tmp_path, 1 << 20, 1 << 20)
    journal.append_many(records)
    journal.close()
    (seg,) = _segments(tmp_path)
    return seg


def _offset_of(i: int, records: list[JournalRecord]) -> int:
    return HEADER + sum(FRAME + len(r.payload) for r in records[:i])


def test_a_flipped_kind_byte_is_skipped_and_kept_for_the_dlq(tmp_path: Path) -> None:
    records = [_rec(i) for i in range(10)]
    seg = _write_and_close(tmp_path, records)
    data = bytearray(seg.read_bytes())
    data[_offset_of(4, records) + 20] ^= 0x40  # kind byte of record 4
    seg.write_bytes(bytes(data))
    journal = Journal(tmp_path, 1 << 20, 1 << 20)
    got = _drain(journal)
    assert _good(got) == records[:4] + records[5:]
    (bad,) = _corrupt(got)
    assert bad.reason == CorruptCause.BAD_RECORD
    assert bad.payload == bytes(data[_offset_of(4, records) : _offset_of(5, records)])
    assert journal.corrupt_records == 1


def test_a_corrupt_length_does_not_drop_the_rest_of_the_segment(tmp_path: Path) -> None:
    records = [_rec(i, 30) for i in range(20)]
    seg = _write_and_close(tmp_path, records)
    data = bytearray(seg.read_bytes())
    struct.pack_into(">I", data, _offset_of(3, records) + 8, 5000)  # length of record 3
    seg.write_bytes(bytes(data))
    journal = Journal(tmp_path, 1 << 20, 1 << 20)
    seq = journal.oldest_segment()
    assert seq is not None
    got = list(journal.read_segment(seq))
    assert _good(got) == records[:3] + records[4:], "resync at the next valid record"
    assert len(_corrupt(got)) == 1
    journal.release(seq)


def test_release_refuses_a_segment_not_read_to_the_end(tmp_path: Path) -> None:
    _write_and_close(tmp_path, [_rec(i) for i in range(10)])
    journal = Journal(tmp_path, 1 << 20, 1 << 20)
    seq = journal.oldest_segment()
    assert seq is not None
    reader = journal.read_segment(seq)
    next(reader)
    with pytest.raises(JournalError, match="not read to the end"):
        journal.release(seq)
    assert _segments(tmp_path), "the segment is still there"


def test_garbage_between_records_is_resynced(tmp_path: Path) -> None:
    records = [_rec(i) for i in range(6)]
    seg = _write_and_close(tmp_path, records)
    data = seg.read_bytes()
    cut = _offset_of(3, records)
    junk = b"\xffJR\xfe" + os.urandom(40)  # even a stray magic must pass the CRC
    seg.write_bytes(data[:cut] + junk + data[cut:])
    got = _drain(Journal(tmp_path, 1 << 20, 1 << 20))
    assert _good(got) == records
    assert [r.payload for r in _corrupt(got)] == [junk]


def test_torn_tail_is_cut_off_at_start_and_its_bytes_kept(tmp_path: Path) -> None:
    records = [_rec(i) for i in range(3)]
    seg = _write_and_close(tmp_path, records)
    seg.write_bytes(seg.read_bytes()[:-4])
    again = Journal(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 16)
    assert seg.stat().st_size == _offset_of(2, records), "the torn record is cut off"
    got = _drain(again)
    assert _good(got) == records[:2]
    (torn,) = _corrupt(got)
    assert torn.reason == CorruptCause.TORN_TAIL
    assert len(torn.payload) == FRAME + 10 - 4
    assert again.corrupt_records == 1


def test_a_segment_that_is_all_garbage_is_dlq_in_pieces(tmp_path: Path) -> None:
    seg = _write_and_close(tmp_path, [_rec(0)])
    seg.write_bytes(seg.read_bytes()[:HEADER] + b"\x00" * (600 * 1024))
    got = _drain(Journal(tmp_path, 1 << 30, 1 << 30))
    assert all(r.kind == RecordKind.JOURNAL_CORRUPT for r in got)
    assert [len(r.payload) for r in got] == [256 * 1024, 256 * 1024, 88 * 1024]


def test_empty_and_header_only_segments_are_harmless(tmp_path: Path) -> None:
    (tmp_path / "journal-000000000001.log").write_bytes(b"")
    (tmp_path / "journal-000000000002.log").write_bytes(b"HQJR")
    (tmp_path / "journal-junk.log").write_bytes(b"whatever")
    journal = Journal(tmp_path, 1 << 20, 1 << 20)
    journal.append_many([_rec(1)])
    assert _drain(journal) == [_rec(1)]


# -- format versions ----------------------------------------------------------------


def _v1_frame(rec: JournalRecord) -> bytes:
    return struct.pack(">IqBB", len(rec.payload), rec.receive_ts, rec.kind, rec.reason) + (
        rec.payload
    )


def test_version_1_segments_are_still_replayed(tmp_path: Path) -> None:
    old = [_rec(i) for i in range(5)]
    (tmp_path / "journal-000000000007.log").write_bytes(b"".join(map(_v1_frame, old)))
    journal = Journal(tmp_path, 1 << 20, 1 << 20)
    journal.append_many([_rec(99)])  # new records go to a new, version-2 segment after it
    assert _drain(journal) == [*old, _rec(99)]


def test_version_1_segment_with_bad_framing_sends_the_rest_to_the_dlq(tmp_path: Path) -> None:
    old = [_rec(i) for i in range(5)]
    data = bytearray(b"".join(map(_v1_frame, old)))
    data[len(_v1_frame(old[0])) * 2 + 12] = 9  # kind of record 2: impossible
    (tmp_path / "journal-000000000001.log").write_bytes(bytes(data))
    got = _drain(Journal(tmp_path, 1 << 20, 1 << 20))
    assert _good(got) == old[:2]
    (rest,) = _corrupt(got)
    assert rest.reason == CorruptCause.V1_FRAMING
    assert len(rest.payload) == len(_v1_frame(old[0])) * 3


def test_a_newer_format_is_moved_aside_not_replayed_nor_deleted(tmp_path: Path) -> None:
    seg = tmp_path / "journal-000000000001.log"
    seg.write_bytes(struct.pack(">8sH6x", b"HQJRNL\x00\x00", 3) + b"future")
    journal = Journal(tmp_path, 1 << 20, 1 << 20)
    assert journal.empty
    assert (tmp_path / "journal-000000000001.log.v3").read_bytes().endswith(b"future")


# -- disk full ----------------------------------------------------------------------


def test_enospc_mid_batch_keeps_whole_records_and_says_how_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, 1 << 30, 1 << 26)
    journal.append_many([_rec(0)])
    real_write = os.write
    budget = [100]  # the disk takes 100 more bytes, then is full

    def write(fd: int, data: bytes | memoryview) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data[: budget[0]]))
        budget[0] -= n
        return n

    monkeypatch.setattr(journal_mod.os, "write", write)
    with pytest.raises(JournalDiskFull) as info:
        journal.append_many([_rec(i) for i in range(1, 11)])
    assert info.value.reason == "disk_full"
    assert info.value.not_written == 7  # 3 frames of 32 bytes fit in 100
    (seg,) = _segments(tmp_path)
    assert seg.stat().st_size == HEADER + 4 * 32, "the partial 4th frame was cut back"
    budget[0] = 1 << 20  # space is back: appends go on
    journal.append_many([_rec(50)])
    assert _drain(journal) == [_rec(i) for i in range(4)] + [_rec(50)]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> object:
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_real_full_disk_refuses_cleanly(tiny_tmpfs: Path) -> None:
    journal = Journal(tiny_tmpfs, 1 << 30, 256 * 1024, fsync_interval_ms=0)
    records = [_rec(i, 1000) for i in range(2000)]  # ~2 MB into 1 MiB
    with pytest.raises(JournalDiskFull) as info:
        for i in range(0, len(records), 50):
            journal.append_many(records[i : i + 50])
    written = journal.records_written
    assert 500 < written < 1100 and info.value.not_written > 0
    got = _drain(journal)
    assert got == records[:written], "every record before the full disk, whole and in order"
    journal.append_many([_rec(1)])  # space is back after the release
    assert _drain(journal) == [_rec(1)]


def test_frame_layout_is_stable() -> None:
    frame = encode_record(JournalRecord(1, 0, 0, b"x"))
    assert frame[:4] == b"\xffJR\xfe" and len(frame) == FRAME + 1
