"""Open bars with their indicator values, pushed live over the WebSocket (issue 16).

A real uvicorn gateway, real Kafka and Redis. The stream worker's own code
(:class:`streams.pipeline.Processor` and its :class:`streams.redis_sink.RedisSink`)
processes vendor lines the test writes, one tick at a time, and the test
produces the worker's Kafka records itself: so it decides when Redis and when
Kafka get each tick. A subscriber of 5-minute bars must get the open bar after
every tick with the values REST returns at that moment, and the closed bar
with its final values when the bar closes; when Redis is behind Kafka the
gateway waits for it instead of pushing a bar without the tick.

Deterministic: a fixed past day (exchange time only; the gateway never looks
at the wall clock for bars), and every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
import websockets
from confluent_kafka import Producer
from prometheus_client import REGISTRY

from api.settings import GatewaySettings
from schemas.exchange import exchange_ts_of
from schemas.topics import H_RECEIVE_TS
from streams.pipeline import BatchResult, Processor, RawRecord
from streams.redis_sink import RedisSink
from streams.settings import StreamsSettings
from tests.api.conftest import push_settings
from tests.api.server import RunningGateway, run_gateway
from tests.conftest import KafkaEndpoint
from tests.feed_lines import FLAT_BOOK, book_fields, sse_line
from tests.waits import eventually

pytestmark = pytest.mark.integration

CODE = "000001"
DAY = dt.date(2026, 11, 23)  # a Monday
TICK_S = 20
HISTORY_MINUTES = 40  # 09:30 ... 10:09: eight closed 5-minute bars (RSI6 defined, MA5 too)
INDICATORS = "rsi,ma"


def at(minute: int, second: int = 0) -> dt.time:
    """The time ``minute`` trading minutes after 09:30 (morning session only)."""
    total = 9 * 60 + 30 + minute
    return dt.time(total // 60, total % 60, second)


class Ticks:
    """Vendor lines of one stock: a seeded random walk, cumulative volume and amount."""

    def __init__(self) -> None:
        self.rng = random.Random(16)
        self.price = 11.0
        self.high = self.low = self.price
        self.volume = 0
        self.amount = 0.0

    def line(self, when: dt.time) -> tuple[bytes, int]:
        self.price = round(self.price * (1 + self.rng.gauss(0, 0.004)), 2)
        self.high, self.low = max(self.high, self.price), min(self.low, self.price)
        traded = self.rng.randint(1, 50) * 100
        self.volume += traded
        self.amount = round(self.amount + traded * self.price, 2)
        line = sse_line(
            symbol=f"sz{CODE}", open="11.00", prev_close="11.00", price=f"{self.price:.2f}",
            high=f"{self.high:.2f}", low=f"{self.low:.2f}", bid=f"{self.price - 0.01:.2f}",
            ask=f"{self.price:.2f}", volume=str(self.volume), amount=f"{self.amount:.2f}",
            date=DAY.isoformat(), time=when.strftime("%H:%M:%S"), **book_fields(FLAT_BOOK),
        )  # fmt: skip
        return line, exchange_ts_of(DAY, when)


class Worker:
    """The stream worker's processing, with the test deciding when Redis and Kafka get it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.processor = Processor(
            StreamsSettings(metrics_port=0, topic_prefix=settings.topic_prefix)  # type: ignore[call-arg]
        )
        self.sink = RedisSink.from_url(settings.redis_url)
        self.producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 0,
             "enable.idempotence": True}
        )  # fmt: skip
        self.offset = 0

    async def process(self, line: bytes, ts: int) -> BatchResult:
        headers = [(H_RECEIVE_TS, str(ts).encode())]
        record = RawRecord(CODE.encode(), line, headers, "raw", 0, self.offset, ts)
        self.offset += 1
        return await self.processor.process([record], None)

    async def to_redis(self, result: BatchResult) -> None:
        await self.sink.write(result.sink)

    def to_kafka(self, result: BatchResult) -> None:
        for out in result.kafka:
            self.producer.produce(out.topic, out.value, key=out.key, headers=out.headers)
        assert self.producer.flush(10) == 0

    async def tick(self, line: bytes, ts: int) -> None:
        """One tick as a worker persists it: Redis, then Kafka."""
        result = await self.process(line, ts)
        await self.to_redis(result)
        self.to_kafka(result)

    async def close(self) -> None:
        await self.sink.close()


class Client:
    """A WebSocket client that keeps every candle message it gets, in order."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.bars: list[dict[str, Any]] = []  # every bar received live, in order
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for text in self.ws:
            msg = json.loads(text)
            self.messages.append(msg)
            if msg["type"] == "candles":
                self.bars += msg["data"]

    def latest(self, minute_ts: int) -> dict[str, Any] | None:
        found = [b for b in self.bars if b["minute_ts"] == minute_ts]
        return found[-1] if found else None


@dataclass
class Stack:
    """A gateway with a client subscribed to 5-minute bars, after 40 minutes of history."""

    worker: Worker
    ticks: Ticks
    gateway: RunningGateway
    http: httpx.AsyncClient  # REST of the same gateway
    client: Client


@asynccontextmanager
async def stack(kafka: KafkaEndpoint, redis_url: str) -> AsyncIterator[Stack]:
    settings = push_settings(kafka, redis_url, flush_interval_ms=10, open_bar_interval_ms=10)
    worker, ticks = Worker(settings), Ticks()
    try:
        with run_gateway(settings) as gw:
            for minute in range(HISTORY_MINUTES):
                for second in range(0, 60, TICK_S):
                    await worker.tick(*ticks.line(at(minute, second)))
            async with (
                httpx.AsyncClient(base_url=gw.http_url) as http,
                websockets.connect(gw.ws_url) as ws,
            ):
                client = Client(ws)
                await ws.send(json.dumps({"type": "subscribe_candles", "stock_code": CODE,
                                          "tf": "5m", "indicators": INDICATORS}))  # fmt: skip
                await eventually(
                    lambda: any(m["type"] == "snapshot" for m in client.messages),
                    "the candle snapshot",
                )
                try:
                    yield Stack(worker, ticks, gw, http, client)
                finally:
                    client.task.cancel()
    finally:
        await worker.close()


def shows(client: Client, bar: dict[str, Any]) -> bool:
    """Whether the newest update of ``bar``'s start has its close and volume."""
    got = client.latest(bar["minute_ts"])
    return got is not None and (got["close"], got["volume"]) == (bar["close"], bar["volume"])


async def rest_bars(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    resp = await http.get(
        f"/api/realtime/stock/{CODE}/candles", params={"tf": "5m", "indicators": INDICATORS}
    )
    assert resp.status_code == 200, resp.text
    bars: list[dict[str, Any]] = resp.json()["candles"]
    return bars


async def test_open_bar_follows_every_tick_then_closes_with_its_last_values(
    kafka: KafkaEndpoint, redis_url: str
) -> None:
    async with stack(kafka, redis_url) as st:
        client, http = st.client, st.http
        [snapshot] = [m for m in client.messages if m["type"] == "snapshot"]
        assert snapshot["candles"] == await rest_bars(http)
        assert snapshot["candles"][-1]["indicators"]["rsi6"] is not None
        bar_start = exchange_ts_of(DAY, at(40))  # the 10:10 bar: minutes 40..44
        last_open: dict[str, Any] | None = None
        for minute in range(40, 45):
            for second in range(0, 60, TICK_S):
                line, ts = st.ticks.line(at(minute, second))
                await st.worker.tick(line, ts)
                rest_open = (await rest_bars(http))[-1]
                assert rest_open["minute_ts"] == bar_start and not rest_open["closed"]
                await eventually(
                    partial(shows, client, rest_open), f"the open bar after the tick {ts}"
                )
                last_open = client.latest(bar_start)
                assert last_open == rest_open  # indicator values included
        assert last_open is not None and last_open["indicators"]["rsi6"] is not None
        # 10:15:00 closes the 10:14 minute, and with it the 10:10 bar
        await st.worker.tick(*st.ticks.line(at(45)))
        await eventually(
            lambda: any(b["closed"] for b in client.bars if b["minute_ts"] == bar_start),
            "the closed 10:10 bar",
        )
        closed = next(b for b in client.bars if b["minute_ts"] == bar_start and b["closed"])
        assert closed == dict(last_open, closed=True)  # final = the last values shown
        assert closed in await rest_bars(http)
        # the next bar is open, and nothing older came after the closed one
        await eventually(lambda: client.latest(bar_start + 5 * 60_000) is not None, "10:15 bar")
        after = client.bars[client.bars.index(closed) + 1 :]
        assert all(b["minute_ts"] > bar_start for b in after)


def behind_reads() -> float:
    """Open-bar reads that found Redis behind the routed quote (the gateway's metric)."""
    return REGISTRY.get_sample_value("hq_gateway_open_bar_behind_total") or 0.0


async def test_redis_behind_kafka_the_gateway_waits_for_the_tick(
    kafka: KafkaEndpoint, redis_url: str
) -> None:
    """The quote reaches the gateway before Redis has it: the pushed bar still includes it."""
    async with stack(kafka, redis_url) as st:
        hub = st.gateway.app.state.hub
        line, ts = st.ticks.line(at(40, 30))
        result = await st.worker.process(line, ts)
        behind_before = behind_reads()
        st.worker.to_kafka(result)  # Kafka first: the gateway routes the quote ...
        await eventually(
            lambda: (
                (quote := hub.latest.get(CODE)) is not None
                and quote.ts == ts
                and behind_reads() > behind_before
            ),
            "the gateway to route the quote and find Redis behind it",
        )
        bar_start = exchange_ts_of(DAY, at(40))
        assert st.client.latest(bar_start) is None  # nothing pushed without the tick
        await st.worker.to_redis(result)  # ... then Redis catches up
        await eventually(
            lambda: (
                (bar := st.client.latest(bar_start)) is not None and bar["close"] == st.ticks.price
            ),
            "the open bar with the tick",
        )
        assert st.client.latest(bar_start) == (await rest_bars(st.http))[-1]
