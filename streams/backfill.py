"""``hqstream backfill --bars FILE``: bars and indicators of history before the platform started.

The input is a CSV or Parquet file of bars, one per row:

* ``code`` (6 digits), ``open``, ``high``, ``low``, ``close``, ``volume``
  (shares), ``amount`` (yuan); optional ``market`` (SH/SZ/BJ, else derived
  from the code's board prefix);
* ``date`` (``YYYY-MM-DD``) for **daily** bars, or ``datetime``
  (``YYYY-MM-DD HH:MM[:SS]``, Asia/Shanghai) for **1-minute** bars. Minute
  bars are taken as labelled by their end (``09:31`` ... ``15:00``, as
  terminals and most vendors export them); ``--label start`` for files
  labelled by the start (``09:30`` ... ``14:59``, hqstream's own).

Rows are sorted per stock, oldest first. Daily rows feed the stock's ``1d``
series; minute rows feed every timeframe (1m to 1d) through the same
:class:`streams.bars.TimeframeBars` the workers run. The results go to Redis
the way a worker writes them (its :class:`RedisSink`): closed bars with their
indicators into ``hq:candles:...``, the series into ``hq:bars:{code}``, from
where the workers go on live. A series only moves forward: rows not newer than
what is stored for the stock (the live series, an earlier backfill) are
skipped and counted, so a backfill can be rerun, or continued with a later
file, without counting a bar twice; history older than a live series needs
``--replace`` (which starts the stock's series from the file). Nothing is
published to Kafka: the topics carry what happens live.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from schemas.bar_series import Bar
from schemas.exchange import SHANGHAI_TZ
from schemas.market_rules import BOARD_PREFIXES
from schemas.timeframes import AM_START, MINUTE_MS
from streams.bars import TimeframeBars
from streams.errors import StreamsError
from streams.redis_sink import RedisSink, SinkBatch

Label = Literal["end", "start"]
PRICE_COLUMNS = ("open", "high", "low", "close", "volume", "amount")
#: stocks written to Redis per pipeline
WRITE_EVERY = 50


class BackfillError(StreamsError):
    """The bars file cannot be used (format, columns, values)."""


@dataclass(slots=True)
class BackfillSummary:
    stocks: int = 0
    rows: int = 0
    bars_written: int = 0
    skipped_not_newer: int = 0

    def __str__(self) -> str:
        return (f"backfill: {self.rows} rows of {self.stocks} stocks, {self.bars_written} bars "
                f"written, {self.skipped_not_newer} rows not newer than the stored series "
                "skipped")  # fmt: skip


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of a CSV or Parquet file as a dict (pyarrow reads both)."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif path.suffix.lower() == ".csv":
        import pyarrow.csv as pcsv

        table = pcsv.read_csv(
            path, convert_options=pcsv.ConvertOptions(column_types={"code": "string"})
        )
    else:
        raise BackfillError(f"{path.name}: a .csv or .parquet file is expected")
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def market_of(code: str) -> str:
    for market, prefixes in BOARD_PREFIXES.items():
        if any(code.startswith(prefix) for prefix, _ in prefixes):
            return market
    raise BackfillError(f"{code}: on no known board; give a market column")


def _local_ms(day: dt.date, time: dt.time) -> int:
    return int(dt.datetime.combine(day, time, SHANGHAI_TZ).timestamp() * 1000)


def to_bar(row: dict[str, Any], label: Label) -> tuple[Bar, bool]:
    """(the bar, whether it is a minute bar) of one row; BackfillError when it is not one."""
    code = str(row.get("code", "")).zfill(6)
    if not (len(code) == 6 and code.isdigit()):
        raise BackfillError(f"bad code {row.get('code')!r}")
    try:
        bar: Bar = {name: float(row[name]) for name in PRICE_COLUMNS}
    except (KeyError, TypeError, ValueError) as exc:
        raise BackfillError(
            f"{code}: columns {', '.join(PRICE_COLUMNS)} are needed: {exc}"
        ) from None
    bar["volume"] = int(bar["volume"])
    bar["amount"] = round(bar["amount"], 2)
    if (
        not bar["low"]
        <= min(bar["open"], bar["close"])
        <= max(bar["open"], bar["close"])
        <= bar["high"]
    ):
        raise BackfillError(f"{code}: not a bar (low <= open, close <= high): {row!r}")
    bar.update(code=code, market=str(row.get("market") or market_of(code)).upper(), ticks=0,
               closed=True)  # fmt: skip
    if row.get("datetime") is not None:
        at = row["datetime"]
        stamp = at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(str(at))
        ts = _local_ms(stamp.date(), stamp.time().replace(second=0, microsecond=0))
        if label == "end":
            ts -= MINUTE_MS
        bar.update(trade_date=stamp.date().isoformat(), minute_ts=ts, tf="1m")
        return bar, True
    if row.get("date") is not None:
        day = row["date"] if isinstance(row["date"], dt.date) else dt.date.fromisoformat(
            str(row["date"])[:10])  # fmt: skip
        start = _local_ms(day, dt.time()) + AM_START  # the day's 09:30
        bar.update(trade_date=day.isoformat(), minute_ts=start, tf="1d")
        return bar, False
    raise BackfillError(f"{code}: a date (daily bars) or datetime (minute bars) column is needed")


def by_stock(rows: list[dict[str, Any]], label: Label) -> Iterator[tuple[str, list[Bar], bool]]:
    """(code, its bars oldest first, minute bars?) per stock."""
    grouped: dict[str, list[Bar]] = {}
    minute_bars: dict[str, bool] = {}
    for row in rows:
        bar, is_minute = to_bar(row, label)
        if minute_bars.setdefault(bar["code"], is_minute) != is_minute:
            raise BackfillError(f"{bar['code']}: daily and minute rows mixed in one file")
        grouped.setdefault(bar["code"], []).append(bar)
    for code in sorted(grouped):
        bars = sorted(grouped[code], key=lambda b: b["minute_ts"])
        yield code, bars, minute_bars[code]


def backfill_stock(
    code: str, bars: list[Bar], minute_bars: bool, stored: dict[str, bytes], replace: bool
) -> tuple[list[Bar], dict[str, bytes], int]:
    """(closed bars, series to store, rows skipped) of one stock."""
    frames = TimeframeBars()
    if not replace:
        frames.restore(code, stored)
    series = frames.series_of(code)
    if minute_bars:
        through = series["1m"].through
        fresh = [b for b in bars if b["minute_ts"] > through]
        closed = frames.add_minute_records(fresh)
    else:
        fresh, closed = [], []
        for bar in bars:
            done = series["1d"].add_bar(bar)
            if done is not None:
                fresh.append(bar)
                closed.append(done)
    changed = {str(tf): s.dumps() for tf, s in series.items()}
    return closed, changed, len(bars) - len(fresh)


async def backfill(
    rows: list[dict[str, Any]],
    redis_url: str,
    label: Label = "end",
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
) -> BackfillSummary:
    """Write every stock's bars and series of ``rows`` (:func:`read_rows`) to Redis."""
    summary = BackfillSummary(rows=len(rows))
    sink = RedisSink.from_url(redis_url)
    try:
        pending: list[tuple[str, list[Bar], bool]] = []
        for stock in by_stock(rows, label):
            pending.append(stock)
            if len(pending) >= WRITE_EVERY:
                await _write(sink, pending, replace, summary, progress)
                pending = []
        await _write(sink, pending, replace, summary, progress)
    finally:
        await sink.close()
    return summary


async def _write(
    sink: RedisSink,
    stocks: list[tuple[str, list[Bar], bool]],
    replace: bool,
    summary: BackfillSummary,
    progress: Callable[[int], None] | None,
) -> None:
    if not stocks:
        return
    stored = await sink.stored_bars([code for code, _, _ in stocks])
    closed: list[Bar] = []
    series: dict[str, dict[str, bytes]] = {}
    for code, bars, minute_bars in stocks:
        done, series[code], skipped = backfill_stock(
            code, bars, minute_bars, stored.get(code, {}), replace
        )
        closed += done
        summary.skipped_not_newer += skipped
        summary.stocks += 1
        if progress is not None:
            progress(len(bars))
    await sink.write(SinkBatch(quotes=[], candles=closed, alerts=[], bars=series))
    summary.bars_written += len(closed)


def run_backfill(path: Path, redis_url: str, label: Label, replace: bool) -> BackfillSummary:
    """:func:`backfill` with a progress bar (rows)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not path.exists():
        raise BackfillError(f"{path}: no such file")
    rows = read_rows(path)
    with Progress(TextColumn("[bold]backfill[/bold]"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn()) as bar:  # fmt: skip
        task = bar.add_task("rows", total=len(rows))

        def advance(n: int) -> None:
            bar.update(task, advance=n)

        return asyncio.run(backfill(rows, redis_url, label, replace, advance))
