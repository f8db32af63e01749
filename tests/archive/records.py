"""A small, deterministic trading day of quotes, candles and alerts for archive tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# (code, market, board, prev_close, limit ratio)
STOCKS = [
    ("600000", "SH", "MAIN", 10.00, 0.10),
    ("600519", "SH", "MAIN", 1500.00, 0.10),
    ("688001", "SH", "STAR", 50.00, 0.20),
    ("000001", "SZ", "MAIN", 12.00, 0.10),
    ("300750", "SZ", "CHINEXT", 200.00, 0.20),
    ("920001", "BJ", "BJ", 8.00, 0.30),
]
LIMIT_UP_CODES = {"600000", "300750"}  # these close the day at their limit


def open_ms(trade_date: str) -> int:
    """09:30:00 Asia/Shanghai of ``trade_date`` as epoch ms."""
    local = datetime.fromisoformat(f"{trade_date}T09:30:00")
    return int((local - timedelta(hours=8)).replace(tzinfo=UTC).timestamp() * 1000)


def quote(
    code: str, market: str, board: str, prev: float, ratio: float, ts: int, trade_date: str,
    price: float, volume: int, amount: float,
) -> dict[str, Any]:  # fmt: skip
    up, down = round(prev * (1 + ratio), 2), round(prev * (1 - ratio), 2)
    return {
        "symbol": f"{market.lower()}{code}", "code": code, "market": market, "board": board,
        "name": f"S{code}", "is_st": False, "exchange_ts": ts, "trade_date": trade_date,
        "open": prev, "prev_close": prev, "price": price, "high": max(price, prev),
        "low": min(price, prev), "bid": price, "ask": round(price + 0.01, 2),
        "volume": volume, "amount": amount,
        "bid_prices": [price] * 5, "bid_volumes": [100, 200, 300, 400, 500],
        "ask_prices": [round(price + 0.01, 2)] * 5, "ask_volumes": [100] * 5,
        "change": round(price - prev, 2), "change_pct": round((price - prev) / prev * 100, 2),
        "limit_up": up, "limit_down": down, "traded": True, "suspended": False,
        "at_limit_up": price >= up, "at_limit_down": price <= down,
        "receive_ts": ts + 5, "process_ts": ts + 9, "limit_free": False,
        "not_traded_yet": False, "phase": "continuous", "avg_price": round(amount / volume, 3),
        "amplitude": 0.0, "order_imbalance": 0.0,
    }  # fmt: skip


@dataclass
class Day:
    quotes: list[dict[str, Any]]
    candles: list[dict[str, Any]]
    alerts: list[dict[str, Any]]


def trading_day(trade_date: str, snapshots: int, seed: int = 17) -> Day:
    """``snapshots`` quotes per stock, 3 s apart from 09:30; candles per minute; alerts."""
    rng = random.Random(seed)
    start = open_ms(trade_date)
    quotes: list[dict[str, Any]] = []
    candles: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    for code, market, board, prev, ratio in STOCKS:
        up = round(prev * (1 + ratio), 2)
        volume, amount = 0, 0.0
        minute: dict[str, Any] | None = None
        for i in range(snapshots):
            ts = start + i * 3000
            if code in LIMIT_UP_CODES and i >= snapshots * 3 // 4:
                price = up
            else:
                price = round(prev * (1 + rng.uniform(-0.03, 0.05)), 2)
            step = rng.randint(1, 50) * 100
            volume += step
            amount += step * price
            q = quote(code, market, board, prev, ratio, ts, trade_date, price, volume, amount)
            quotes.append(q)
            minute_ts = start + (i * 3000) // 60_000 * 60_000
            if minute is None or minute["minute_ts"] != minute_ts:
                if minute is not None:
                    candles.append(minute)
                minute = {"code": code, "market": market, "trade_date": trade_date,
                          "minute_ts": minute_ts, "open": price, "high": price, "low": price,
                          "close": price, "volume": 0, "amount": 0.0, "ticks": 0,
                          "closed": True, "tf": "1m", "indicators": None}  # fmt: skip
            minute["high"], minute["low"] = max(minute["high"], price), min(minute["low"], price)
            minute["close"] = price
            minute["volume"] += step
            minute["amount"] += step * price
            minute["ticks"] += 1
            if q["at_limit_up"] and (i == 0 or not quotes[-2]["at_limit_up"]):
                alerts.append({"code": code, "name": q["name"], "market": market,
                               "kind": "LIMIT_UP_TOUCH", "exchange_ts": ts, "price": price,
                               "change_pct": q["change_pct"], "value": q["change_pct"],
                               "message": f"{code} touched its limit up"})  # fmt: skip
        assert minute is not None
        candles.append(minute)
    quotes.sort(key=lambda q: (q["exchange_ts"], q["code"]))
    return Day(quotes, candles, alerts)
