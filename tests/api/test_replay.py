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
from typing import Any

import pytest
import redis
import websockets
from websockets.asyncio.client import ClientConnection

from api.murmur2 import partition_for
from api.replay import SHANGHAI, window_start
from tests.api import helpers as h
from tests.api.conftest import push_settings
from tests.api.server import run_gateway
from tests.api.test_ws_push import QuoteProducer, _recv
from tests.conftest import KafkaEndpoint

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


def test_window_is_the_trading_day_of_the_newest_quote_or_seconds_before_it() -> None:
    at_1400 = OPEN + (4 * 3600 + 30 * 60) * 1000
    midnight = int(dt.datetime(2026, 6, 17, tzinfo=SHANGHAI).timestamp() * 1000)
    assert window_start(at_1400, "day") == midnight  # 14:00 may ask for 09:30
    assert window_start(at_1400, 3600) == at_1400 - 3_600_000


async def _replay_then_live(ws: ClientConnection, since: int, live_until: int) -> dict[str, Any]:
    """Subscribes with ``since``; collects the replay, then live quotes of CODE
    until one at ``live_until`` or later has arrived."""
    await ws.send(json.dumps({"type": "subscribe_stock", "stock_code": CODE, "since": since}))
    out: dict[str, Any] = {"order": [], "replayed": [], "live": [], "done": None}
    while not out["live"] or out["live"][-1] < live_until:
        msg = await _recv(ws, timeout=30)
        out["order"].append(msg["type"])
        if msg["type"] == "replay":
            assert out["done"] is None, "replay after replay_done"
            out["replayed"] += [q["exchange_ts"] for q in msg["data"]]
        elif msg["type"] == "replay_done":
            out["done"] = msg
        elif msg["type"] == "quotes":
            assert out["done"] is not None, "a live update before replay_done"
            out["live"] += [q["exchange_ts"] for q in msg["data"] if q["code"] == CODE]
        elif msg["type"] == "error":
            raise AssertionError(msg)
    return out


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
                    results[back_ms] = (
                        since,
                        await _replay_then_live(ws, since, live_until=next_live[0] + 10 * STEP),
                    )
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
