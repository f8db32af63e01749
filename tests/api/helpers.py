"""Builders for gateway tests: records per the Avro schemas, written per the Redis layout."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from schemas import redis_keys as keys


def quote(code: str, ts: int, price: float = 10.0, **over: Any) -> dict[str, Any]:
    market = "SH" if code.startswith("6") else "BJ" if code.startswith("9") else "SZ"
    prefix = market.lower()
    rec: dict[str, Any] = {
        "symbol": f"{prefix}{code}",
        "code": code,
        "market": market,
        "board": "BJ" if market == "BJ" else "MAIN",
        "name": f"N{code}",
        "is_st": False,
        "exchange_ts": ts,
        "trade_date": time.strftime("%Y-%m-%d", time.gmtime(ts / 1000 + 8 * 3600)),
        "open": 10.0,
        "prev_close": 10.0,
        "price": price,
        "high": max(price, 10.0),
        "low": min(price, 10.0),
        "bid": price - 0.01,
        "ask": price + 0.01,
        "volume": 1000,
        "amount": 10000.0,
        "bid_prices": [price - 0.01] * 5,
        "bid_volumes": [100] * 5,
        "ask_prices": [price + 0.01] * 5,
        "ask_volumes": [100] * 5,
        "change": round(price - 10.0, 2),
        "change_pct": round((price - 10.0) * 10, 2),
        "limit_up": 11.0,
        "limit_down": 9.0,
        "traded": True,
        "suspended": False,
        "at_limit_up": False,
        "at_limit_down": False,
        "receive_ts": ts,
        "process_ts": ts,
    }
    rec.update(over)
    return rec


def market_stats(market: str, ts: int) -> dict[str, Any]:
    entry = {"code": "600000", "name": "N600000", "price": 10.5, "change_pct": 5.0, "amount": 1e6}
    return {
        "market": market,
        "ts": ts,
        "stocks": 3,
        "advancers": 2,
        "decliners": 1,
        "unchanged": 0,
        "limit_up": 0,
        "limit_down": 0,
        "suspended": 0,
        "volume": 3000,
        "amount": 3e4,
        "avg_change_pct": 1.5,
        "top_gainers": [entry],
        "top_losers": [entry],
        "top_turnover": [entry],
    }


def candle(code: str, minute_ts: int, closed: bool = True) -> dict[str, Any]:
    return {
        "code": code,
        "market": "SZ",
        "trade_date": time.strftime("%Y-%m-%d", time.gmtime(minute_ts / 1000 + 8 * 3600)),
        "minute_ts": minute_ts,
        "open": 10.0,
        "high": 10.2,
        "low": 9.9,
        "close": 10.1,
        "volume": 500,
        "amount": 5050.0,
        "ticks": 20,
        "closed": closed,
    }


def alert(code: str, ts: int) -> dict[str, Any]:
    return {
        "code": code,
        "name": f"N{code}",
        "market": "SZ",
        "kind": "FAST_MOVE",
        "exchange_ts": ts,
        "price": 10.5,
        "change_pct": 5.0,
        "value": 2.1,
        "message": "fast move",
    }


def write_quote(r: redis.Redis, q: dict[str, Any], tick: bool = True) -> None:
    """What the stream workers write for one quote (the documented layout)."""
    data = json.dumps(q)
    r.hset(
        keys.quote(q["code"]),
        mapping={"ts": q["exchange_ts"], "data": data, "price": q["price"], "name": q["name"]},
    )
    if tick:
        r.xadd(keys.ticks(q["code"]), {"data": data}, id=f"{q['exchange_ts']}-0")
    r.sadd(keys.codes(q["market"]), q["code"])
    for metric in keys.RANK_METRICS:
        r.zadd(keys.rank(q["market"], metric), {q["code"]: q[metric]})


def write_stats(r: redis.Redis, s: dict[str, Any]) -> None:
    r.hset(keys.market_summary(s["market"]), mapping={"ts": s["ts"], "data": json.dumps(s)})


def write_candle(r: redis.Redis, c: dict[str, Any]) -> None:
    r.hset(keys.candles(c["code"], c["trade_date"]), str(c["minute_ts"]), json.dumps(c))


def write_alert(r: redis.Redis, a: dict[str, Any]) -> None:
    r.xadd(keys.ALERTS, {"data": json.dumps(a)})
