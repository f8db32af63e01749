"""Compaction: a closed day's files merged into one per market, atomically and idempotently."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from archive.archiver import Archiver
from archive.compact import DayNotClosed, compact_day
from hqcore.parquet_archive import layout
from hqcore.parquet_archive.storage import open_storage
from schemas import topics
from tests.archive.fakes import FakeClock, feed, quote_messages, settings
from tests.archive.records import trading_day

DATE = "2026-11-23"


def _archive(root: Path, snapshots: int = 200) -> int:
    archiver = Archiver(settings(str(root), roll_bytes=30_000), clock=FakeClock())
    quotes = trading_day(DATE, snapshots).quotes
    feed(archiver, quote_messages(quotes))
    archiver.flush_due(force=True)
    return len(quotes)


def _rows(root: Path) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for path in root.rglob("*.parquet"):
        t = pq.ParquetFile(path).read(columns=["code", "exchange_ts"])
        out += zip(t["code"].to_pylist(), t["exchange_ts"].to_pylist(), strict=True)
    return out


def _compact(root: Path, **over: object) -> object:
    options: dict[str, object] = {
        "today": "2026-11-24", "max_rows": 10_000_000, "row_group_rows": 500, "zstd_level": 3,
    }  # fmt: skip
    options.update(over)
    return compact_day(open_storage(str(root)), "ticks", DATE, **options)  # type: ignore[arg-type]


def test_compaction_merges_a_day_into_one_file_per_market(tmp_path: Path) -> None:
    total = _archive(tmp_path)
    before = sorted(_rows(tmp_path))
    assert len(list(tmp_path.rglob("*.parquet"))) > 6
    _compact(tmp_path)
    files = sorted(tmp_path.rglob("*.parquet"))
    assert [f.parent.name for f in files] == ["market=BJ", "market=SH", "market=SZ"]
    assert all(layout.is_compacted(f.name) for f in files)
    assert sorted(_rows(tmp_path)) == before and len(before) == total
    sh = pq.ParquetFile(next(f for f in files if f.parent.name == "market=SH"))
    assert sh.metadata.num_row_groups == -(-sh.metadata.num_rows // 500)  # full row groups
    # the names inside the compacted files still say what is archived
    index = layout.scan(open_storage(str(tmp_path)), "ticks")
    assert index.archived_through(topics.NORMALIZED, 0) >= 0
    # idempotent
    report = _compact(tmp_path)
    assert report.files_out == 0  # type: ignore[attr-defined]
    assert sorted(tmp_path.rglob("*.parquet")) == files


def test_a_crash_before_sources_are_deleted_leaves_nothing_twice(tmp_path: Path) -> None:
    _archive(tmp_path)
    before = sorted(_rows(tmp_path))
    saved = tmp_path.parent / f"{tmp_path.name}-saved"
    shutil.copytree(tmp_path, saved)
    _compact(tmp_path)
    # bring the sources back, as if the crash came after the rename, before the deletes
    for src in saved.rglob("*.parquet"):
        shutil.copy(src, tmp_path / src.relative_to(saved))
    assert len(_rows(tmp_path)) == 2 * len(before)
    report = _compact(tmp_path)
    assert report.leftovers_deleted > 0  # type: ignore[attr-defined]
    assert sorted(_rows(tmp_path)) == before
    # the archiver's recovery deletes them too
    for src in saved.rglob("*.parquet"):
        shutil.copy(src, tmp_path / src.relative_to(saved))
    Archiver(settings(str(tmp_path)), clock=FakeClock()).recover(topics.NORMALIZED, 0)
    assert sorted(_rows(tmp_path)) == before


def test_late_files_merge_with_the_compacted_file(tmp_path: Path) -> None:
    archiver = Archiver(settings(str(tmp_path), roll_bytes=30_000), clock=FakeClock())
    messages = quote_messages(trading_day(DATE, 100).quotes)
    feed(archiver, messages[:300])
    archiver.flush_due(force=True)
    _compact(tmp_path)
    feed(archiver, messages[300:])
    archiver.flush_due(force=True)
    _compact(tmp_path)
    files = list(tmp_path.rglob("*.parquet"))
    assert len(files) == 3 and all(layout.is_compacted(f.name) for f in files)
    rows = _rows(tmp_path)
    assert len(rows) == len(set(rows)) == len(messages)


def test_an_open_day_is_refused(tmp_path: Path) -> None:
    _archive(tmp_path, 5)
    with pytest.raises(DayNotClosed):
        _compact(tmp_path, today=DATE)
