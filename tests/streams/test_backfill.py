"""``hqstream backfill``: history's bars and indicators into a real Redis, then live on from them.

Daily bars (CSV) and minute bars (Parquet, labelled by their end as vendors
export them) go in; the stored bars carry TA-Lib's values over the whole file;
a rerun adds nothing; and a worker that takes the stock over warms up from the
backfilled series, so its next bars' values are those of a series that never
stopped (no jump, no bar counted twice).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import talib

from schemas import redis_keys as rk
from schemas.timeframes import minute_ts_of
from streams.backfill import BackfillError, backfill, read_rows, to_bar
from streams.bars import TimeframeBars
from streams.redis_sink import RedisSink

pytestmark = pytest.mark.integration

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def daily_rows(code: str, days: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    price, day, rows = 20.0, dt.date(2025, 1, 2), []
    for _ in range(days):
        close = round(price * (1 + rng.gauss(0, 0.02)), 2)
        volume = rng.randint(1000, 90000) * 100
        rows.append({"code": code, "date": day.isoformat(), "open": price,
                     "high": round(max(price, close) * 1.01, 2),
                     "low": round(min(price, close) * 0.99, 2), "close": close,
                     "volume": volume, "amount": round(volume * close, 2)})  # fmt: skip
        price, day = close, day + dt.timedelta(days=1 if day.weekday() < 4 else 3)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(rows: list[dict[str, Any]], redis_url: str, **kw: Any) -> Any:
    return asyncio.run(backfill(rows, redis_url, **kw))


def test_daily_bars_get_ta_lib_values_and_a_rerun_adds_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    rows = daily_rows("600519", 300, 1) + daily_rows("000001", 120, 2)
    path = write_csv(tmp_path / "daily.csv", rows)
    first = run(read_rows(path), redis_url)
    assert (first.stocks, first.bars_written, first.skipped_not_newer) == (2, 420, 0)
    r = redis.Redis.from_url(redis_url)
    stored = sorted((orjson.loads(v) for v in r.hgetall(rk.candles("600519", "", "1d")).values()),
                    key=lambda b: b["minute_ts"])  # fmt: skip
    assert len(stored) == 300 and all(b["tf"] == "1d" and b["closed"] for b in stored)
    first_day = dt.datetime.fromtimestamp(stored[0]["minute_ts"] / 1000, SHANGHAI)
    assert (first_day.date(), first_day.time()) == (dt.date(2025, 1, 2), dt.time(9, 30))
    close = np.array([b["close"] for b in stored])
    _, _, hist = talib.MACD(close, 12, 26, 9)
    assert stored[-1]["indicators"]["macd_hist"] == pytest.approx(hist[-1], rel=1e-9)
    assert stored[-1]["indicators"]["ma60"] == pytest.approx(talib.SMA(close, 60)[-1], rel=1e-9)
    assert stored[-1]["indicators"]["vwap"] == pytest.approx(stored[-1]["amount"] /
                                                              stored[-1]["volume"])  # fmt: skip
    assert r.ttl(rk.candles("600519", "", "1d")) > 300 * 86400
    again = run(read_rows(path), redis_url)
    assert (again.bars_written, again.skipped_not_newer) == (0, 420)
    r.close()


def minute_rows(code: str, day: dt.date, seed: int) -> list[dict[str, Any]]:
    """A day of 1-minute bars labelled by their end (09:31 ... 11:30, 13:01 ... 15:00)."""
    rng = random.Random(seed)
    start = int(dt.datetime.combine(day, dt.time(), SHANGHAI).timestamp() * 1000)
    price, rows = 8.0, []
    for i in range(240):
        end = dt.datetime.fromtimestamp((minute_ts_of(start, i) + 60_000) / 1000, SHANGHAI)
        close = round(price * (1 + rng.gauss(0, 0.002)), 2)
        volume = rng.randint(0, 300) * 100
        rows.append({"code": code, "datetime": end.replace(tzinfo=None), "open": price,
                     "high": max(price, close), "low": min(price, close), "close": close,
                     "volume": volume, "amount": round(volume * close, 2)})  # fmt: skip
        price = close
    return rows


def test_minute_bars_build_every_timeframe_and_the_worker_goes_on_from_them(
    tmp_path: Path, redis_url: str
) -> None:
    code, day = "300750", dt.date(2026, 11, 20)
    rows = minute_rows(code, day, 3) + minute_rows(code, day + dt.timedelta(days=3), 4)
    path = tmp_path / "minutes.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    summary = run(read_rows(path), redis_url)
    # 480 1m + 96 5m + 32 15m + 16 30m + 8 60m + 2 daily
    assert summary.bars_written == 480 + 96 + 32 + 16 + 8 + 2
    r = redis.Redis.from_url(redis_url)
    hourly = sorted(int(k) for k in r.hgetall(rk.candles(code, day.isoformat(), "60m")))
    assert [dt.datetime.fromtimestamp(t / 1000, SHANGHAI).strftime("%H:%M") for t in hourly] == [
        "09:30", "10:30", "13:00", "14:00"]  # fmt: skip
    r.close()

    # the next live day: a worker restores the series from Redis (its warm-up) ...
    async def stored() -> dict[str, bytes]:
        sink = RedisSink.from_url(redis_url)
        try:
            return (await sink.stored_bars([code]))[code]
        finally:
            await sink.close()

    live = TimeframeBars()
    live.restore(code, asyncio.run(stored()))
    next_day = minute_rows(code, day + dt.timedelta(days=4), 5)

    minutes = [to_bar(row, "end")[0] for row in next_day]
    got = live.add_minute_records(minutes)
    # ... and its bars are those of a series that never stopped
    never_stopped = TimeframeBars()
    for row in rows:
        never_stopped.add_minute_records([to_bar(row, "end")[0]])
    assert got == never_stopped.add_minute_records(minutes)
    daily = [b for b in got if b["tf"] == "1d"]
    assert len(daily) == 1 and daily[0]["indicators"]["ma5"] is None  # 3 days so far


def test_a_file_that_is_not_bars_is_refused(tmp_path: Path, redis_url: str) -> None:
    bad = write_csv(tmp_path / "bad.csv", [{"code": "600000", "date": "2025-01-02", "open": 10,
                                             "high": 9, "low": 8, "close": 10, "volume": 1,
                                             "amount": 10}])  # fmt: skip
    with pytest.raises(BackfillError, match="not a bar"):
        run(read_rows(bad), redis_url)
    with pytest.raises(BackfillError, match=r"csv or \.parquet"):
        read_rows(tmp_path / "bars.xlsx")
