"""A simulated A-share market day for the dashboard browser test.

:class:`MarketSim` holds ~5,300 stocks with a clock inside the morning session
(running ``SPEED`` times real time) and writes the state the stream workers
would have materialized to Redis (schemas/redis_keys.py layout).
:class:`LiveFeed` then produces live Avro quotes, market stats, alerts and
1-minute candles (schemas.serde codecs) to prefixed topics, as the stream
workers would. Test support only: it never talks to anything but the Kafka
and Redis it is given.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import Producer

from schemas import redis_keys as keys
from schemas import topics
from schemas.exchange import MARKETS_AND_ALL, SHANGHAI_TZ
from schemas.market_rules import board_of, limit_prices
from schemas.serde import SingleObjectCodec
from streams.bars import TimeframeBars

WATCH = ("000001", "600519", "300750", "688981", "920819", "601318", "000858", "002594", "600036",
         "300059")  # fmt: skip
NAMED: dict[str, tuple[str, float]] = {
    "000001": ("平安银行", 11.52), "000002": ("万科A", 7.85), "000858": ("五粮液", 128.40),
    "002594": ("比亚迪", 268.30), "300750": ("宁德时代", 215.60), "300059": ("东方财富", 22.15),
    "002415": ("海康威视", 31.20), "000333": ("美的集团", 72.80), "600519": ("贵州茅台", 1688.00),
    "601318": ("中国平安", 52.30), "600036": ("招商银行", 39.80), "601012": ("隆基绿能", 18.90),
    "688981": ("中芯国际", 88.50), "688111": ("金山办公", 285.00), "600900": ("长江电力", 29.40),
    "601899": ("紫金矿业", 17.60), "920819": ("颖泰生物", 4.26),
}  # fmt: skip
HEADS = "华中国天新金长东海恒宏科泰瑞鼎信安富博盛景万汇德嘉联凯航"
TAILS = (
    "科技",
    "电子",
    "股份",
    "医药",
    "材料",
    "能源",
    "智能",
    "生物",
    "控股",
    "精工",
    "通信",
    "电气",
)
SPEED = 10.0  # simulated exchange seconds per real second: a new candle every 6 s
# A fixed trade date (a Wednesday): the page and the gateway must follow the
# exchange's day in the data, never the date of the machine running the test.
TRADE_DATE = dt.date(2026, 6, 17)


@dataclass
class Stock:
    code: str
    name: str
    market: str
    board: str
    prev_close: float
    price: float
    volume: int
    amount: float
    limit_up: float
    limit_down: float
    suspended: bool = False


class MarketSim:
    """A seeded A-share market: ~5,300 stocks, a clock inside the morning session."""

    def __init__(
        self,
        seed: int = 7,
        stocks_per_market: tuple[int, int, int] = (2250, 2800, 260),
        trade_date: dt.date = TRADE_DATE,
    ) -> None:
        self.rng = random.Random(seed)
        today = trade_date
        self.trade_date = today.isoformat()
        self.open_ms = int(
            dt.datetime.combine(today, dt.time(9, 30), SHANGHAI_TZ).timestamp() * 1e3
        )
        self.start_ms = self.open_ms + 78 * 60_000
        self.t0 = time.monotonic()
        self.stocks: dict[str, Stock] = {}
        codes = [c for c in NAMED]
        for market, count in zip(("SH", "SZ", "BJ"), stocks_per_market, strict=True):
            first, second = {"SH": (600000, 688000), "SZ": (1, 300001), "BJ": (920001, 920001)}[
                market
            ]
            half = count // 2 if market != "BJ" else 0
            codes += [f"{first + i:06d}" for i in range(count - half)]
            codes += [f"{second + i:06d}" for i in range(half)]
        for code in dict.fromkeys(codes):
            self._add(code)
        self.candles: dict[str, dict[int, dict[str, Any]]] = {c: {} for c in WATCH}
        for code in WATCH:
            self._history(self.stocks[code])

    def now_ms(self) -> int:
        return self.start_ms + int((time.monotonic() - self.t0) * 1000 * SPEED)

    def _add(self, code: str) -> None:
        market = "SH" if code[0] == "6" else "BJ" if code.startswith("920") else "SZ"
        board = board_of(market, code)  # type: ignore[arg-type]
        name, prev = NAMED.get(code, ("", 0.0))
        r = self.rng
        if not name:
            name = r.choice(HEADS) + r.choice(HEADS) + r.choice(TAILS)
            prev = round(math.exp(r.gauss(2.7, 0.7)), 2)
        up, down = limit_prices(prev, board, False, dt.date.fromisoformat(self.trade_date))
        pct = max(-0.095, min(0.095, r.gauss(0.004, 0.022)))
        price = round(prev * (1 + pct), 2)
        if r.random() < 0.012:
            price = up
        elif r.random() < 0.004:
            price = down
        price = min(up, max(down, price))
        amount = math.exp(r.gauss(17.6, 1.1)) * (20 if code in NAMED else 1)
        self.stocks[code] = Stock(
            code, name, market, board, prev, price, int(amount / price), amount, up, down,
            suspended=code not in NAMED and r.random() < 0.004,
        )  # fmt: skip

    def _history(self, s: Stock) -> None:
        price = s.prev_close
        for minute in range(78):
            o = price
            closes = [o * (1 + self.rng.gauss(0.0002, 0.0016)) for _ in range(4)]
            price = closes[-1]
            vol = int(s.volume / 78 * self.rng.uniform(0.4, 1.8))
            self.candles[s.code][self.open_ms + minute * 60_000] = self._candle(
                s, self.open_ms + minute * 60_000, [o, *closes], vol, True
            )
        s.price = round(price, 2)

    def _candle(
        self, s: Stock, minute: int, prices: list[float], vol: int, closed: bool
    ) -> dict[str, Any]:
        return {
            "code": s.code, "market": s.market, "trade_date": self.trade_date, "minute_ts": minute,
            "open": round(prices[0], 2), "high": round(max(prices), 2),
            "low": round(min(prices), 2), "close": round(prices[-1], 2), "volume": vol,
            "amount": round(vol * prices[-1], 2), "ticks": len(prices), "closed": closed,
        }  # fmt: skip

    def quote(self, s: Stock, ts: int) -> dict[str, Any]:
        p = s.price
        tick = 0.01
        bids = [round(p - tick * i, 2) for i in range(1, 6)] if not s.suspended else []
        asks = [round(p + tick * i, 2) for i in range(0, 5)] if not s.suspended else []
        vols = [self.rng.randrange(100, 90_000, 100) for _ in range(len(bids))]
        change = 0.0 if s.suspended else round(p - s.prev_close, 2)
        return {
            "symbol": s.market.lower() + s.code, "code": s.code, "market": s.market,
            "board": s.board, "name": s.name, "is_st": False, "exchange_ts": ts,
            "trade_date": self.trade_date, "open": s.prev_close, "prev_close": s.prev_close,
            "price": p, "high": max(p, s.prev_close), "low": min(p, s.prev_close),
            "bid": bids[0] if bids else 0.0, "ask": asks[0] if asks else 0.0,
            "volume": s.volume, "amount": round(s.amount, 2), "bid_prices": bids,
            "bid_volumes": vols, "ask_prices": asks, "ask_volumes": list(reversed(vols)),
            "change": change, "change_pct": round(100 * change / s.prev_close, 2),
            "limit_up": s.limit_up, "limit_down": s.limit_down, "traded": not s.suspended,
            "suspended": s.suspended, "at_limit_up": p >= s.limit_up,
            "at_limit_down": p <= s.limit_down, "receive_ts": ts, "process_ts": ts,
        }  # fmt: skip

    def move(self, s: Stock, ts: int) -> list[dict[str, Any]]:
        """One trade on ``s``; returns the candles it touched (watchlist stocks only)."""
        if s.suspended:
            return []
        step = self.rng.choice((-3, -2, -1, -1, 1, 1, 2, 3)) * max(0.01, round(s.price * 4e-4, 2))
        s.price = round(min(s.limit_up, max(s.limit_down, s.price + step)), 2)
        vol = self.rng.randrange(100, 50_000, 100)
        s.volume += vol
        s.amount += vol * s.price
        book = self.candles.get(s.code)
        if book is None:
            return []
        minute = ts - ts % 60_000
        touched = []
        cur = book.get(minute)
        if cur is None:
            for prev in book.values():
                if not prev["closed"]:
                    prev["closed"] = True
                    touched.append(dict(prev))
            cur = book[minute] = self._candle(s, minute, [s.price], 0, False)
        cur["high"], cur["low"] = max(cur["high"], s.price), min(cur["low"], s.price)
        cur["close"], cur["ticks"] = s.price, cur["ticks"] + 1
        cur["volume"] += vol
        cur["amount"] = round(cur["amount"] + vol * s.price, 2)
        touched.append(dict(cur))
        return touched

    def stats(self, ts: int) -> list[dict[str, Any]]:
        out = []
        for market in MARKETS_AND_ALL:
            group = [s for s in self.stocks.values() if market in ("ALL", s.market)]
            live = [s for s in group if not s.suspended]
            pct = {s.code: 100 * (s.price - s.prev_close) / s.prev_close for s in live}

            def entry(s: Stock, pct: dict[str, float] = pct) -> dict[str, Any]:
                p = round(pct[s.code], 2)
                return {"code": s.code, "name": s.name, "price": s.price, "change_pct": p,
                        "amount": round(s.amount, 2)}  # fmt: skip

            by_pct = sorted(live, key=lambda s: pct[s.code])
            out.append({
                "market": market, "ts": ts, "stocks": len(group),
                "advancers": sum(1 for s in live if s.price > s.prev_close),
                "decliners": sum(1 for s in live if s.price < s.prev_close),
                "unchanged": sum(1 for s in live if s.price == s.prev_close),
                "limit_up": sum(1 for s in live if s.price >= s.limit_up),
                "limit_down": sum(1 for s in live if s.price <= s.limit_down),
                "suspended": len(group) - len(live),
                "volume": sum(s.volume for s in group), "amount": sum(s.amount for s in group),
                "avg_change_pct": round(sum(pct.values()) / max(1, len(pct)), 4),
                "top_gainers": [entry(s) for s in by_pct[::-1][:10]],
                "top_losers": [entry(s) for s in by_pct[:10]],
                "top_turnover": [entry(s) for s in sorted(live, key=lambda s: -s.amount)[:10]],
            })  # fmt: skip
        return out

    def alert(self, s: Stock, ts: int) -> dict[str, Any]:
        """An alert consistent with the stock's state."""
        pct = round(100 * (s.price - s.prev_close) / s.prev_close, 2)
        move = round(self.rng.uniform(2.0, 4.5), 1)
        if s.price >= s.limit_up:
            kind, value, msg = "LIMIT_UP_TOUCH", pct, "触及涨停"
        elif s.price <= s.limit_down:
            kind, value, msg = "LIMIT_DOWN_TOUCH", pct, "触及跌停"
        elif abs(pct) > 2.5 and self.rng.random() < 0.7:
            value = move if pct > 0 else -move
            kind, msg = "FAST_MOVE", f"5分钟{'涨' if pct > 0 else '跌'}幅 {move}%"
        else:
            kind, value, msg = "VOLUME_SPIKE", move, f"量比 {move}"
        return {"code": s.code, "name": s.name, "market": s.market, "kind": kind,
                "exchange_ts": ts, "price": s.price, "change_pct": pct, "value": value,
                "message": msg}  # fmt: skip

    def alert_pool(self) -> list[Stock]:
        """Stocks worth an alert: at a limit or moving more than 2.5%."""
        return [
            s
            for s in self.stocks.values()
            if not s.suspended and abs(s.price / s.prev_close - 1) > 0.025
        ]

    def seed_redis(self, url: str) -> None:
        """The state the stream workers would have materialized by now."""
        client = redis.Redis.from_url(url)
        ts = self.now_ms()
        try:
            pipe = client.pipeline(transaction=False)
            for s in self.stocks.values():
                q = self.quote(s, ts)
                pipe.hset(keys.quote(s.code), mapping={
                    "ts": ts, "data": json.dumps(q, ensure_ascii=False), "price": q["price"],
                    "change_pct": q["change_pct"], "volume": q["volume"], "amount": q["amount"],
                })  # fmt: skip
                pipe.sadd(keys.codes(s.market), s.code)  # type: ignore[arg-type]
                for metric in keys.RANK_METRICS:
                    pipe.zadd(keys.rank(s.market, metric), {s.code: q[metric]})  # type: ignore[arg-type]
            for code, book in self.candles.items():
                for minute, c in book.items():
                    pipe.hset(keys.candles(code, self.trade_date), str(minute), json.dumps(c))
            # what the workers write as the minutes close: every timeframe's bars with
            # their indicators, and the series the gateway shows the open bars from
            frames = TimeframeBars()
            for code, book in self.candles.items():
                closed = [book[m] for m in sorted(book) if book[m]["closed"]]
                for bar in frames.add_minute_records(closed):
                    key = keys.candles(code, self.trade_date, bar["tf"])
                    pipe.hset(key, str(bar["minute_ts"]), json.dumps(bar))
            for code, series in frames.take_changed().items():
                pipe.hset(keys.bars(code), mapping=series)  # type: ignore[arg-type]
            for st in self.stats(ts):
                pipe.hset(keys.market_summary(st["market"]), mapping={
                    "ts": ts, "data": json.dumps(st, ensure_ascii=False)})  # fmt: skip
            pool = self.alert_pool()
            for i in range(40):
                a = self.alert(self.rng.choice(pool), ts - (40 - i) * 7_000)
                pipe.xadd(keys.ALERTS, {"data": json.dumps(a, ensure_ascii=False)})
            pipe.execute()
        finally:
            client.close()


# Keys go to partitions as the stream workers put them (Kafka's murmur2), so
# a replay finds a stock's quotes where the gateway looks for them.
#: murmur2 as the Java client; idempotent, so a retried request never lands behind a later one
PARTITIONING = {"partitioner": "murmur2_random", "enable.idempotence": True}


class LiveFeed(threading.Thread):
    """Produces live Avro records the way the stream workers would, until stopped."""

    def __init__(self, sim: MarketSim, bootstrap: str, prefix: str) -> None:
        super().__init__(name="dashboard-live-feed", daemon=True)
        self.sim, self.bootstrap, self.prefix = sim, bootstrap, prefix
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.produced = 0
        self._extra: queue.SimpleQueue[tuple[str, str, bytes]] = queue.SimpleQueue()

    def send_alert(self, alert: dict[str, Any]) -> None:
        """Produces ``alert`` (an Alert record) with the next batch."""
        self._extra.put((topics.ALERTS, alert["code"], SingleObjectCodec("alert").encode(alert)))

    def send_history(self, code: str, minutes: int) -> None:
        """Quotes of ``code`` every 20 s of the ``minutes`` before the sim's start, in
        Kafka only (no candles in Redis): what a replay of the day finds. Call it
        before :meth:`start`: a stock's quotes reach Kafka in exchange-time order."""
        s, codec = self.sim.stocks[code], SingleObjectCodec("quote")
        producer = Producer({"bootstrap.servers": self.bootstrap, **PARTITIONING})
        base = self.sim.start_ms - minutes * 60_000
        for i in range(minutes * 3):
            self.sim.move(s, base + i * 20_000)
            q = self.sim.quote(s, base + i * 20_000)
            self._send(producer, topics.NORMALIZED, code, codec.encode(q))
        assert producer.flush(30) == 0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _run(self) -> None:
        sim, rng = self.sim, random.Random(11)
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 10, **PARTITIONING})
        codec = {n: SingleObjectCodec(n) for n in ("quote", "market_stats", "alert", "candle")}
        others = [s for s in sim.stocks.values() if s.code not in WATCH]
        pool = sim.alert_pool()
        next_stats = 0.0
        try:
            while not self.halt.is_set():
                ts = sim.now_ms()
                movers = [sim.stocks[c] for c in WATCH] + rng.sample(others, 60)
                for s in movers:
                    for candle in sim.move(s, ts):
                        self._send(
                            producer, topics.CANDLES_1M, s.code, codec["candle"].encode(candle)
                        )
                    if not s.suspended:
                        self._send(
                            producer,
                            topics.NORMALIZED,
                            s.code,
                            codec["quote"].encode(sim.quote(s, ts)),
                        )
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + 1.0
                    for st in sim.stats(ts):
                        self._send(
                            producer,
                            topics.MARKET_STATS,
                            st["market"],
                            codec["market_stats"].encode(st),
                        )
                    s = rng.choice(movers + pool)
                    self._send(
                        producer, topics.ALERTS, s.code, codec["alert"].encode(sim.alert(s, ts))
                    )
                while not self._extra.empty():
                    self._send(producer, *self._extra.get())
                producer.poll(0)
                self.halt.wait(0.3)
        finally:
            producer.flush(10)

    def _send(self, producer: Producer, topic: str, key: str, value: bytes) -> None:
        producer.produce(self.prefix + topic, key=key.encode(), value=value)
        self.produced += 1
