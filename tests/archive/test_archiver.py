"""The archiver's batches, files and recovery, fed by hand (no broker).

Crashes are simulated at each step of a batch: before any rename, between
two renames of one batch, between the renames and the commit. After each, a
new archiver recovers from the files alone and the archive holds every
record exactly once.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from archive.archiver import Archiver
from hqcore.parquet_archive import layout
from hqcore.parquet_archive.arrow_schema import OFFSET_COLUMN, PARTITION_COLUMN
from hqcore.parquet_archive.storage import open_storage
from schemas import topics
from tests.archive.fakes import FakeClock, FakeMessage, feed, quote_messages, settings
from tests.archive.records import trading_day

DATE = "2026-11-23"


def _rows(root: Path) -> list[tuple[str, int]]:
    table = ds.dataset(str(root / "ticks"), format="parquet", partitioning="hive").to_table(
        columns=["code", "exchange_ts"]
    )
    return list(zip(table["code"].to_pylist(), table["exchange_ts"].to_pylist(), strict=True))


def _archiver(root: Path, clock: FakeClock | None = None, **over: object) -> Archiver:
    a = Archiver(settings(str(root), **over), clock=clock or FakeClock())
    for p in (0, 1):
        a.archived[(topics.NORMALIZED, p)] = a.recover(topics.NORMALIZED, p)
    return a


def test_batches_split_by_date_and_market_and_roll_by_size_and_time(tmp_path: Path) -> None:
    day = trading_day(DATE, 40)
    clock = FakeClock()
    archiver = _archiver(tmp_path, clock, roll_bytes=20_000, roll_seconds=60)
    messages = quote_messages(day.quotes)
    feed(archiver, messages[:10])
    archiver.flush_due()
    assert archiver.figures.files == 0  # neither big nor old enough
    clock.now += 60
    archiver.flush_due()
    assert archiver.figures.rows == 10
    feed(archiver, messages[10:])
    archiver.flush_due()  # by size
    archiver.flush_due(force=True)
    assert archiver.figures.rows == len(day.quotes)
    rows = _rows(tmp_path)
    assert sorted(rows) == sorted((q["code"], q["exchange_ts"]) for q in day.quotes)
    dirs = {p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")}
    assert dirs == {f"ticks/trade_date={DATE}/market={m}" for m in ("SH", "SZ", "BJ")}
    for path in tmp_path.rglob("*.parquet"):
        name = layout.parse_live(path.name)
        assert name.range.topic == topics.NORMALIZED


def test_restart_after_rename_before_commit_skips_what_is_archived(tmp_path: Path) -> None:
    day = trading_day(DATE, 20)
    messages = quote_messages(day.quotes)
    first = _archiver(tmp_path)
    feed(first, messages[:50])
    first.flush_due(force=True)  # files durable; no consumer, so nothing was committed
    # the restarted archiver reads everything again from offset 0
    second = _archiver(tmp_path)
    assert second.archived[(topics.NORMALIZED, 0)] >= 0
    feed(second, messages)
    second.flush_due(force=True)
    assert second.figures.skipped == 50
    rows = _rows(tmp_path)
    assert len(rows) == len(set(rows)) == len(day.quotes)


def test_crash_between_two_renames_of_a_batch_is_undone(tmp_path: Path) -> None:
    day = trading_day(DATE, 20)
    messages = quote_messages(day.quotes)
    first = _archiver(tmp_path)
    feed(first, messages[:40])
    first.flush_due(force=True)
    feed(first, messages[40:80])
    batch = next(b for b in first.batches.values() if b.row_count > 0 and b.partition == 0)
    written = first.writer.write(batch)
    assert len(written) > 1
    Path(written[-1]).unlink()  # the crash: the last part never got its rename
    Path(written[0]).with_name(Path(written[0]).name + ".1234abcd.tmp").write_bytes(b"junk")
    second = _archiver(tmp_path)
    assert second.archived[(topics.NORMALIZED, 0)] == batch.first - 1
    assert not list(tmp_path.rglob("*.tmp"))
    feed(second, messages)
    second.flush_due(force=True)
    rows = _rows(tmp_path)
    assert len(rows) == len(set(rows)) == len(day.quotes)


def test_undecodable_records_are_counted_and_covered_by_the_range(tmp_path: Path) -> None:
    day = trading_day(DATE, 2)
    messages = quote_messages(day.quotes, partitions=1)
    messages.insert(3, FakeMessage(topics.NORMALIZED, 0, 999, b"not avro"))
    for i, m in enumerate(messages):
        m._offset = i
    archiver = _archiver(tmp_path)
    feed(archiver, messages)
    archiver.flush_due(force=True)
    assert archiver.figures.undecodable == 1
    assert archiver.archived[(topics.NORMALIZED, 0)] == len(messages) - 1
    table = ds.dataset(str(tmp_path / "ticks"), format="parquet").to_table()
    assert table.num_rows == len(day.quotes)
    assert set(table[PARTITION_COLUMN].to_pylist()) == {0}
    assert 3 not in table[OFFSET_COLUMN].to_pylist()


def test_object_store_urls_write_through_fsspec(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    root = "memory://hq-archive-test"
    storage = open_storage(root)
    assert not storage.local
    archiver = Archiver(settings(root), storage=storage, clock=FakeClock())
    feed(archiver, quote_messages(trading_day(DATE, 5).quotes))
    archiver.flush_due(force=True)
    files = storage.list_files("ticks")
    assert files and all(f.endswith(".parquet") for f in files)
    assert sum(storage.num_rows(f) for f in files) == len(trading_day(DATE, 5).quotes)
    assert layout.scan(storage, "ticks").archived_through(topics.NORMALIZED, 0) >= 0


def test_a_batch_of_many_chunks_keeps_every_row_in_its_directory(tmp_path: Path) -> None:
    from archive.writer import CHUNK_ROWS

    quotes = trading_day(DATE, 1500).quotes
    archiver = _archiver(tmp_path, roll_bytes=1 << 30)
    feed(archiver, quote_messages(quotes, partitions=1), chunk=len(quotes))
    (batch,) = archiver.batches.values()
    assert batch.row_count == len(quotes) > 2 * CHUNK_ROWS
    archiver.flush_due(force=True)
    for path in tmp_path.rglob("*.parquet"):
        table = pq.ParquetFile(path).read(columns=["market", "trade_date", OFFSET_COLUMN])
        assert set(table["market"].to_pylist()) == {path.parent.name.split("=")[1]}
        offsets = table[OFFSET_COLUMN].to_pylist()
        assert offsets == sorted(offsets)
    rows = _rows(tmp_path)
    assert sorted(rows) == sorted((q["code"], q["exchange_ts"]) for q in quotes)


def test_a_revoked_partition_is_written_and_a_lost_one_dropped(tmp_path: Path) -> None:
    from confluent_kafka import TopicPartition

    archiver = _archiver(tmp_path)
    feed(archiver, quote_messages(trading_day(DATE, 10).quotes))
    assert {p for _, p in archiver.batches} == {0, 1}
    archiver.on_lost(None, [TopicPartition(topics.NORMALIZED, 0)])  # type: ignore[arg-type]
    archiver.on_revoke(None, [TopicPartition(topics.NORMALIZED, 1)])  # type: ignore[arg-type]
    assert not archiver.batches
    parts = {layout.parse_live(p.name).range.partition for p in tmp_path.rglob("*.parquet")}
    assert parts == {1}
