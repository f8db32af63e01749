"""Replay-to-live on one socket, on the exchange clock (issue 20).

The quotes here live on a trading day months before the machine's date (as
with the simulator, a replayed day, or a backlog): ``since`` is compared with
exchange timestamps only. Real Kafka, Redis and uvicorn; the history shares its
partition with other stocks, one of them halted with a stale vendor time, so
the start offset must be found on the records' own exchange times.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable

import pytest
import redis
import websockets

from api.murmur2 import partition_for
from api.replay import window_start
from schemas.exchange import SHANGHAI_TZ as SHANGHAI
from tests.api import helpers as h
from tests.api.conftest import push_settings
from tests.api.server import run_gateway
from tests.api.test_ws_push import QuoteProducer, _recv
from tests.conftest import KafkaEndpoint
from tests.replay_client import replay_then_live

STEP = 3_000  # a snapshot every 3 s of exchange time
OPEN = int(dt.datetime(2026, 6, 17, 9, 30, tzinfo=SHANGHAI).timestamp() * 1000)
HISTORY = 800  # 40 minutes of snapshots already in Kafka
CODE = "000001"


def _same_partition(code: str, partitions: int, n: int) -> list[str]:
    """``n`` other codes whose quotes share ``code``'s partition."""
    want = partition_for(code.encode(), partitions)
    found = [
        c
        for c in (f"{i:06d}" for i in range(2, 5000))
        if partition_for(c.encode(), partitions) == want
    ]
    return found[:n]


def _past(ts: int) -> Callable[[list[int]], bool]:
    """Enough live updates once one at ``ts`` or later has arrived."""
    return lambda live: live[-1:] >= [ts]


def test_window_is_the_trading_day_of_the_newest_quote_or_seconds_before_it() -> None:
    at_1400 = OPEN + (4 * 3600 + 30 * 60) * 1000
    midnight = int(dt.datetime(2026, 6, 17, tzinfo=SHANGHAI).timestamp() * 1000)
    assert window_start(at_1400, "day") == midnight  # 14:00 may ask for 09:30
    assert window_start(at_1400, 3600) == at_1400 - 3_600_000


@pytest.mark.integration
async def test_replay_since_30s_and_30min_on_the_exchange_clock_then_live(
    kafka: KafkaEndpoint, redis_url: str
) -> None:
    settings = push_settings(kafka, redis_url, flush_interval_ms=5)
    producer = QuoteProducer(settings)
    neighbours = _same_partition(CODE, 3, 3)
    halted = neighbours.pop()  # its vendor time stays at the pre-open: a stale stamp
    for i in range(HISTORY):
        ts = OPEN + i * STEP
        for code in (CODE, *neighbours):
            producer.send(h.quote(code, ts))
        producer.send(h.quote(halted, OPEN - 5 * 60_000))
    producer.flush()
    newest = OPEN + (HISTORY - 1) * STEP
    r = redis.Redis.from_url(redis_url)
    h.write_quote(r, h.quote(CODE, newest))  # what the workers materialized
    r.close()

    stop = threading.Event()
    live_from = OPEN + HISTORY * STEP
    next_live = [live_from]

    def live() -> None:  # the feed goes on: a snapshot every 50 ms of real time
        while not stop.is_set():
            for code in (CODE, *neighbours):
                producer.send(h.quote(code, next_live[0]))
            producer.flush()
            next_live[0] += STEP
            stop.wait(0.05)

    with run_gateway(settings) as gw:
        thread = threading.Thread(target=live)
        thread.start()
        try:
            results = {}
            for back_ms in (30_000, 30 * 60_000):
                async with websockets.connect(gw.ws_url) as ws:
                    since = newest - back_ms
                    got = await replay_then_live(ws, CODE, since, _past(next_live[0] + 10 * STEP))
                    results[back_ms] = (since, got)
            async with websockets.connect(gw.ws_url) as ws:
                day_before = OPEN - 24 * 3600 * 1000
                await ws.send(
                    json.dumps({"type": "subscribe_stock", "stock_code": CODE, "since": day_before})
                )
                while (msg := await _recv(ws))["type"] != "error":
                    pass
                assert msg["code"] == "bad_request" and "exchange clock" in msg["message"]
                assert "2026-06-17 00:00:00" in msg["message"]  # where the window starts
        finally:
            stop.set()
            thread.join()

    for back_ms, (since, got) in results.items():
        replayed, live_ts = got["replayed"], got["live"]
        assert got["order"][0] == "ack" and "snapshot" not in got["order"]
        assert got["done"]["replayed"] == len(replayed)
        assert replayed[0] == since, (back_ms, replayed[:3])  # nothing older, nothing missed
        joined = replayed + live_ts
        assert joined == list(range(since, joined[-1] + 1, STEP)), (
            f"gap or duplicate across the join ({back_ms} ms back)"
        )
        assert len(replayed) >= back_ms // STEP
