"""Bars of every timeframe with indicators over REST and the WebSocket, against a real Redis.

The data is what a stream worker writes: 1-minute candles folded by
streams.bars.TimeframeBars and stored by the worker's own RedisSink (its Lua
scripts), for 100 minutes of a fixed past day; the 101st minute is still
open. The open 5-minute bar served must be the one the bars will close with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from schemas.bar_series import BarSeries
from schemas.indicators import GROUPS
from schemas.timeframes import minute_ts_of
from streams.bars import TimeframeBars
from streams.redis_sink import RedisSink, SinkBatch
from tests.api import helpers as h

pytestmark = pytest.mark.integration

CODE = "000001"
DAY = dt.date(2026, 11, 23)
DAY_START = int(dt.datetime(2026, 11, 23, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp())
URL = f"/api/realtime/stock/{CODE}/candles"
WS = "/api/realtime/ws"


def minutes(n: int) -> list[dict[str, Any]]:
    rng = random.Random(5)
    price, out = 10.0, []
    for i in range(n):
        close = round(price * (1 + rng.gauss(0, 0.003)), 2)
        volume = rng.randint(1, 90) * 100
        out.append({
            "code": CODE, "market": "SZ", "trade_date": DAY.isoformat(),
            "minute_ts": minute_ts_of(DAY_START * 1000, i), "open": price,
            "high": max(price, close) + 0.01, "low": min(price, close) - 0.01, "close": close,
            "volume": volume, "amount": round(volume * close, 2), "ticks": 20, "closed": True,
            "tf": "1m", "indicators": None,
        })  # fmt: skip
        price = close
    return out


@pytest.fixture
def stored(redis_url: str, r: redis.Redis) -> dict[str, Any]:
    """100 closed minutes and an open one, written as a worker writes them: a minute at a
    time (the series of a higher timeframe as a whole when its bar closes, else only its
    open bar's part)."""
    day = minutes(101)
    bars = TimeframeBars()
    closed: list[dict[str, Any]] = []
    open_minute = dict(day[100], closed=False)
    h.write_quote(r, h.quote(CODE, open_minute["minute_ts"] + 30_000, trade_date=DAY.isoformat()))

    async def write() -> None:
        sink = RedisSink.from_url(redis_url)
        try:
            for minute in day[:100]:
                done = bars.add_minute_records([minute])
                closed.extend(done)
                batch = SinkBatch(quotes=[], candles=done, alerts=[], bars=bars.take_changed())
                await sink.write(batch)
            await sink.write(SinkBatch(quotes=[], candles=[open_minute], alerts=[]))
        finally:
            await sink.close()

    asyncio.run(write())
    assert r.hexists(f"hq:bars:{{{CODE}}}", "1d:open")  # what the open bars are read from
    return {"closed": closed, "open": open_minute, "bars": bars}


def test_five_minute_bars_with_macd_and_rsi(client: TestClient, stored: dict[str, Any]) -> None:
    resp = client.get(URL, params={"tf": "5m", "indicators": "macd,rsi"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["tf"] == "5m" and body["date"] == DAY.isoformat()
    served = body["candles"]
    expected_closed = [b for b in stored["closed"] if b["tf"] == "5m"]
    assert len(expected_closed) == 20 and len(served) == 21  # 100 minutes, and the open 101st
    wanted = (*GROUPS["macd"], *GROUPS["rsi"])
    for got, bar in zip(served, expected_closed, strict=False):
        assert got["closed"] and got["minute_ts"] == bar["minute_ts"]
        assert got["indicators"] == {k: bar["indicators"][k] for k in wanted}
    # the open bar starts with the open minute (a new 5-minute bucket)
    open_bar = served[-1]
    assert not open_bar["closed"] and open_bar["minute_ts"] == stored["open"]["minute_ts"]
    [shown] = stored["bars"].series_of(CODE)["5m"].view(stored["open"])
    assert open_bar["indicators"] == {k: shown["indicators"][k] for k in wanted}
    # 21 bars: RSI12 is defined, MACD (34 bars) not yet
    assert open_bar["indicators"]["rsi12"] is not None and open_bar["indicators"]["macd"] is None


def test_open_bar_values_are_the_closing_ones(client: TestClient, stored: dict[str, Any]) -> None:
    """The open 1m candle's indicators equal what the 1m series gives it when it closes."""
    served = client.get(URL, params={"tf": "1m"}).json()["candles"]
    assert len(served) == 101 and served[-1]["closed"] is False
    series = BarSeries.from_json(stored["bars"].series_of(CODE)["1m"].to_json())
    [closed] = series.add_minute(dict(stored["open"], closed=True))
    assert served[-1]["indicators"] == closed["indicators"]
    assert set(served[-1]["indicators"]) == {n for names in GROUPS.values() for n in names}
    assert served[-2]["indicators"]["ma60"] is not None  # 100 bars: MA60 defined


def test_daily_and_sixty_minute_bars(client: TestClient, stored: dict[str, Any]) -> None:
    hourly = client.get(URL, params={"tf": "60m", "indicators": "ma"}).json()["candles"]
    starts = [dt.datetime.fromtimestamp(b["minute_ts"] / 1000, dt.UTC) for b in hourly]
    assert [f"{(s.hour + 8) % 24:02d}:{s.minute:02d}" for s in starts] == ["09:30", "10:30"]
    assert [b["closed"] for b in hourly] == [True, False]
    assert set(hourly[0]["indicators"]) == set(GROUPS["ma"])
    daily = client.get(URL, params={"tf": "1d", "indicators": "none"}).json()["candles"]
    [today] = daily
    assert today["closed"] is False and today["indicators"] is None
    assert today["volume"] == sum(m["volume"] for m in minutes(101))


@pytest.mark.parametrize(
    ("params", "message"),
    [({"tf": "7m"}, "tf must be one of"), ({"indicators": "macd,foo"}, "unknown indicators")],
)
def test_bad_timeframe_or_indicator_is_422(
    client: TestClient, stored: dict[str, Any], params: dict[str, str], message: str
) -> None:
    resp = client.get(URL, params=params)
    assert resp.status_code == 422 and message in resp.json()["message"]


def test_ws_subscribe_candles_with_timeframe_and_indicators(
    client: TestClient, stored: dict[str, Any]
) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_json({"type": "subscribe_candles", "stock_code": CODE, "tf": "15m",
                      "indicators": ["kdj", "boll"]})  # fmt: skip
        ack = ws.receive_json()
        assert ack["type"] == "ack" and ack["subscriptions"]["candles"] == [CODE]
        assert ack["subscriptions"]["candle_streams"] == {
            CODE: {"tf": "15m", "indicators": ["boll", "kdj"]}
        }
        snap = ws.receive_json()
        assert snap["type"] == "snapshot" and snap["tf"] == "15m"
        rest = client.get(URL, params={"tf": "15m", "indicators": "kdj,boll"}).json()
        assert snap["candles"] == rest["candles"] and len(snap["candles"]) == 7
        ws.send_json({"type": "subscribe_candles", "stock_code": CODE, "tf": "2h"})
        err = ws.receive_json()
        assert err["type"] == "error" and err["code"] == "bad_request"
