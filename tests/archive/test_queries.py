"""The DuckDB analyses of docs/archive.md, run on a test archive of two days.

The SQL is read from the doc itself, so the documented queries are the tested
ones. The archive is written by the archiver (fed by hand) and compacted for
the first day, so the queries run over live and compacted files alike.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

from archive.archiver import Archiver
from archive.compact import compact_day
from hqcore.parquet_archive.storage import open_storage
from schemas import topics
from schemas.serde import make_codec
from tests.archive.fakes import FakeClock, FakeMessage, feed, settings
from tests.archive.records import LIMIT_UP_CODES, STOCKS, trading_day

DOC = Path(__file__).resolve().parents[2] / "docs" / "archive.md"
DAYS = ("2026-11-23", "2026-11-24")


def doc_queries() -> dict[str, str]:
    text = DOC.read_text()
    blocks = re.findall(r"```sql\n-- name: (\w+)\n(.*?)```", text, flags=re.S)
    return {name: sql for name, sql in blocks}


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    archiver = Archiver(settings(str(root), roll_bytes=40_000), clock=FakeClock())
    codec = make_codec("quote")
    offsets = [0, 0, 0]
    for date in DAYS:
        messages = []
        for q in trading_day(date, 400, seed=int(date[-2:])).quotes:
            p = int(q["code"]) % 3
            messages.append(FakeMessage(topics.NORMALIZED, p, offsets[p], codec.encode(q)))
            offsets[p] += 1
        feed(archiver, messages)
        archiver.flush_due(force=True)
    compact_day(
        open_storage(str(root)), "ticks", DAYS[0],
        today=DAYS[1], max_rows=10_000_000, row_group_rows=1_000, zstd_level=3,
    )  # fmt: skip
    return root


def run(root: Path, name: str) -> list[dict[str, Any]]:
    sql = doc_queries()[name].replace("/data/hq-archive", str(root))
    rel = duckdb.connect().sql(sql)
    return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def test_the_doc_has_the_three_analyses() -> None:
    assert set(doc_queries()) == {"stock_day", "minute_vwap", "limit_up_by_board"}


def test_a_stocks_day_of_ticks(archive_root: Path) -> None:
    rows = run(archive_root, "stock_day")
    expected = [q for q in trading_day(DAYS[0], 400, seed=23).quotes if q["code"] == "300750"]
    assert [r["price"] for r in rows] == [q["price"] for q in expected]
    assert str(rows[0]["time_cst"]) == f"{DAYS[0]} 09:30:00"
    assert rows[-1]["at_limit_up"]


def test_minute_vwap_equals_the_candles(archive_root: Path) -> None:
    rows = run(archive_root, "minute_vwap")
    day = trading_day(DAYS[0], 400, seed=23)
    candles = {
        (c["code"], c["minute_ts"]): c["amount"] / c["volume"]
        for c in day.candles
        if c["market"] == "SH"
    }
    assert len(rows) == len(candles) == 3 * 20  # 3 SH stocks, 400 snapshots * 3 s = 20 min
    for r in rows:
        minute_ts = int(r["minute_cst"].timestamp() * 1000) - 8 * 3600 * 1000
        assert r["vwap"] == pytest.approx(candles[(r["code"], minute_ts)], rel=1e-9)


def test_limit_up_counts_by_board_per_day(archive_root: Path) -> None:
    rows = run(archive_root, "limit_up_by_board")
    boards = sorted({b for _, _, b, _, _ in STOCKS})
    assert [(str(r["trade_date"]), r["board"]) for r in rows] == [
        (d, b) for d in DAYS for b in boards
    ]
    closing = {b: 0 for b in boards}
    for code, _, board, _, _ in STOCKS:
        closing[board] += code in LIMIT_UP_CODES
    for r in rows:
        assert r["closed_limit_up"] == closing[r["board"]]
        assert r["touched_limit_up"] == closing[r["board"]]
    assert sum(r["stocks"] for r in rows) == 2 * len(STOCKS)
