"""``hqstream archive compact`` and ``hqstream replay`` as commands (the paths before Kafka)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from archive.archiver import Archiver
from hqcore.parquet_archive import layout
from hqstream.cli import app
from tests.archive.fakes import FakeClock, feed, quote_messages, settings
from tests.archive.records import trading_day

DATE = "2026-11-23"


def _archive(root: Path) -> None:
    archiver = Archiver(settings(str(root), roll_bytes=20_000), clock=FakeClock())
    feed(archiver, quote_messages(trading_day(DATE, 50).quotes))
    archiver.flush_due(force=True)


def test_compact_command(tmp_path: Path) -> None:
    _archive(tmp_path)
    runner = CliRunner()
    result = runner.invoke(
        app, ["archive", "--root", str(tmp_path), "compact", "--date", DATE, "--dataset", "ticks"]
    )
    assert result.exit_code == 0, result.output
    assert f"ticks {DATE}:" in result.output and "-> 3," in result.output
    assert all(layout.is_compacted(p.name) for p in tmp_path.rglob("*.parquet"))
    again = runner.invoke(app, ["archive", "--root", str(tmp_path), "compact", "--date", DATE])
    assert again.exit_code == 0 and "-> 0," in again.output


def test_compact_refuses_a_day_not_closed(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["archive", "--root", str(tmp_path), "compact", "--date", "2999-01-04"]
    )
    assert result.exit_code == 2
    assert "not closed" in result.output


def test_replay_refuses_the_live_prefix_and_missing_days(tmp_path: Path) -> None:
    _archive(tmp_path)
    runner = CliRunner()
    live = runner.invoke(app, ["replay", "--date", DATE, "--prefix", "", "--root", str(tmp_path)])
    assert live.exit_code == 2 and "live namespace" in live.output
    missing = runner.invoke(
        app, ["replay", "--date", "2026-11-20", "--prefix", "rp.", "--root", str(tmp_path)]
    )
    assert missing.exit_code == 1 and "nothing to replay" in missing.output
