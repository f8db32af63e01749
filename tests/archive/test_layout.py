"""File names, trade dates and what an archive's names say about archived offsets."""

from __future__ import annotations

import pytest

from hqcore.parquet_archive import layout
from hqcore.parquet_archive.errors import BadFileName
from schemas.exchange import trade_date_of


def test_live_names_round_trip() -> None:
    name = layout.live_name("p1.hq.ticks.normalized", 7, 1200, 1799, 2, 3)
    assert name == "p1.hq.ticks.normalized+7+000000001200-000000001799+2of3.parquet"
    parsed = layout.parse_live(name)
    assert parsed.range == layout.Range("p1.hq.ticks.normalized", 7, 1200, 1799, 3)
    assert parsed.part == 2
    assert str(parsed) == name
    big = layout.live_name("t", 0, 10**13, 10**13 + 5, 1, 1)
    assert layout.parse_live(big).range.first == 10**13


@pytest.mark.parametrize(
    "name",
    [
        "t+1+000000000005-000000000001+1of1.parquet",  # first > last
        "t+1+000000000001-000000000005+3of2.parquet",  # part > parts
        "t+1+000000000001-000000000005+1of1.parquet.tmp",
        "t+compacted+abc.parquet",
        "notes.txt",
    ],
)
def test_other_names_are_not_live_files(name: str) -> None:
    with pytest.raises(BadFileName):
        layout.parse_live(name)


def test_trade_date_is_the_shanghai_date() -> None:
    assert trade_date_of(1_795_363_200_000) == "2026-11-23"  # 2026-11-22T16:00Z
    assert trade_date_of(1_795_363_199_999) == "2026-11-22"


def test_partition_dirs_are_hive_style_and_safe() -> None:
    assert layout.partition_dir("ticks", "2026-11-23", "SH") == (
        "ticks", "trade_date=2026-11-23", "market=SH",
    )  # fmt: skip
    assert layout.partition_dir("ticks", "../x", "S/H") == (
        "ticks", "trade_date=unknown", "market=unknown",
    )  # fmt: skip


def test_a_range_is_archived_only_when_all_its_parts_exist() -> None:
    index = layout.ArchiveIndex()
    for part in (1, 2):
        index.add_part(layout.parse_live(layout.live_name("t", 0, 0, 99, part, 2)))
        index.live[layout.live_name("t", 0, 0, 99, part, 2)] = f"/a/{part}"
    index.add_part(layout.parse_live(layout.live_name("t", 0, 100, 199, 1, 2)))
    index.live[layout.live_name("t", 0, 100, 199, 1, 2)] = "/b/1"
    assert index.archived_through("t", 0) == 99
    assert index.archived_through("t", 1) == -1
    assert index.incomplete_paths("t", 0) == ["/b/1"]
