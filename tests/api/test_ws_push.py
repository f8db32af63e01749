"""The push path end to end: Avro quotes on a uuid Kafka topic -> gateway -> WebSocket clients.

A real uvicorn server on a loopback port, real Kafka and Redis, the
``websockets`` client library.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import pytest
import redis
import websockets
from confluent_kafka import Producer
from websockets.asyncio.client import ClientConnection

from api.settings import GatewaySettings
from schemas.serde import make_codec
from tests.api import helpers as h
from tests.api.conftest import push_settings
from tests.api.server import run_gateway
from tests.conftest import KafkaEndpoint

pytestmark = pytest.mark.integration


class QuoteProducer:
    """Produces Avro quotes the way the stream workers do (key = code, murmur2)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.topic = settings.normalized_topic
        self.codec = make_codec("quote")
        self.p = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "partitioner": "murmur2_random",
                "linger.ms": 1,
                "enable.idempotence": True,  # a retry never reorders a stock's quotes
            }
        )

    def send(self, q: dict[str, Any]) -> None:
        self.p.produce(self.topic, self.codec.encode(q), key=q["code"].encode())
        self.p.poll(0)

    def flush(self) -> None:
        assert self.p.flush(10) == 0


async def _recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return msg


async def _until(ws: ClientConnection, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    while True:
        msg = await _recv(ws, timeout)
        if msg["type"] == kind:
            return msg


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_two_stocks_snapshot_then_live(kafka: KafkaEndpoint, redis_url: str) -> None:
    settings = push_settings(kafka, redis_url, flush_interval_ms=20)
    r = redis.Redis.from_url(redis_url)
    t0 = now_ms() - 10_000
    h.write_quote(r, h.quote("000001", t0, price=10.1))
    h.write_quote(r, h.quote("600519", t0, price=20.1))
    producer = QuoteProducer(settings)
    with run_gateway(settings) as gw:
        async with websockets.connect(gw.ws_url) as ws:
            seen: list[tuple[str, str, int]] = []
            for code in ("000001", "600519"):
                await ws.send(json.dumps({"type": "subscribe_stock", "stock_code": code}))
                ack = await _recv(ws)
                assert ack["type"] == "ack"
                snap = await _recv(ws)
                assert snap["type"] == "snapshot"
                seen += [("snapshot", q["code"], q["exchange_ts"]) for q in snap["quotes"]]
            codes = ["000001", "600519", "000002", "300750", "688001"]
            for i in range(1, 11):
                for code in codes:
                    producer.send(h.quote(code, t0 + i * 100, receive_ts=now_ms()))
                producer.flush()
                await asyncio.sleep(0.05)
            while sum(1 for s in seen if s[2] == t0 + 1000) < 2:
                msg = await _recv(ws)
                assert msg["type"] == "quotes"
                seen += [("live", q["code"], q["exchange_ts"]) for q in msg["data"]]
    r.close()
    assert seen[:2] == [("snapshot", "000001", t0), ("snapshot", "600519", t0)]
    assert {code for _, code, _ in seen} == {"000001", "600519"}
    for code in ("000001", "600519"):
        stamps = [ts for kind, c, ts in seen if c == code and kind == "live"]
        assert stamps == sorted(set(stamps)) and stamps[-1] == t0 + 1000
        assert all(ts > t0 for ts in stamps)


async def test_replay_since_then_live_without_gap_or_duplicate(
    kafka: KafkaEndpoint, redis_url: str
) -> None:
    settings = push_settings(kafka, redis_url, flush_interval_ms=5)
    producer = QuoteProducer(settings)
    t0 = now_ms() - 60_000
    for i in range(40):  # history, already in Kafka
        producer.send(h.quote("000001", t0 + i * 1000))
        producer.send(h.quote("000002", t0 + i * 1000))
    producer.flush()
    stop = threading.Event()
    produced: list[int] = []

    def keep_producing() -> None:  # live ticks while the replay runs
        ts = t0 + 40 * 1000
        while not stop.is_set():
            producer.send(h.quote("000001", ts))
            producer.flush()
            produced.append(ts)
            ts += 1000
            time.sleep(0.15)  # slower than a flush: live updates are not conflated

    with run_gateway(settings) as gw:
        async with websockets.connect(gw.ws_url) as ws:
            thread = threading.Thread(target=keep_producing)
            thread.start()
            try:
                await asyncio.sleep(0.3)
                since = t0 + 10 * 1000
                await ws.send(
                    json.dumps({"type": "subscribe_stock", "stock_code": "000001", "since": since})
                )
                got: list[int] = []
                order: list[str] = []
                done: dict[str, Any] = {}
                while not done or len(got) < done["replayed"] + 10:
                    msg = await _recv(ws)
                    order.append(msg["type"])
                    if msg["type"] == "replay":
                        assert not done
                        got += [q["exchange_ts"] for q in msg["data"]]
                    elif msg["type"] == "replay_done":
                        done = msg
                        assert done["replayed"] == len(got)
                    elif msg["type"] == "quotes":
                        assert done, "live update before replay_done"
                        got += [q["exchange_ts"] for q in msg["data"] if q["code"] == "000001"]
            finally:
                stop.set()
                thread.join()
    assert order[0] == "ack" and "replay_done" in order
    assert got[0] == since
    n = done["replayed"]
    assert got[:n] == list(range(since, got[n - 1] + 1, 1000)), "gap or duplicate in replay"
    assert got == list(range(since, got[-1] + 1, 1000)), f"gap or duplicate at switch ({n})"
    assert done["replayed"] >= 30


async def test_slow_client_does_not_slow_a_fast_one(kafka: KafkaEndpoint, redis_url: str) -> None:
    settings = push_settings(kafka, redis_url, slow_client_deadline_s=1.5)
    producer = QuoteProducer(settings)
    codes = [f"{i:06d}" for i in range(1, 1001)]
    stop = threading.Event()

    def full_market() -> None:  # ~1,667 quotes/s with fresh receive_ts
        i = 0
        base = now_ms()
        while not stop.is_set():
            start = time.monotonic()
            for _ in range(84):
                code = codes[i % len(codes)]
                producer.send(h.quote(code, base + i, receive_ts=now_ms(), name="x" * 200))
                i += 1
            producer.p.poll(0)
            time.sleep(max(0.0, 0.05 - (time.monotonic() - start)))
        producer.flush()

    # The slow client: tiny receive buffer, no compression, never reads until told.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with run_gateway(settings) as gw:
        sock.connect(("127.0.0.1", gw.port))
        hub = gw.app.state.hub
        slow = await websockets.connect(
            gw.ws_url, sock=sock, compression=None, max_queue=1, ping_interval=None
        )
        fast = await websockets.connect(gw.ws_url)
        await slow.send(json.dumps({"type": "subscribe_all"}))
        await fast.send(json.dumps({"type": "subscribe_stock", "stock_code": "000001"}))
        await fast.send(json.dumps({"type": "subscribe_stock", "stock_code": "000500"}))
        thread = threading.Thread(target=full_market)
        thread.start()
        latencies: list[int] = []
        slow_session = None
        conflated = 0
        try:
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                msg = await _recv(fast)
                if msg["type"] == "quotes":
                    latencies += [now_ms() - q["receive_ts"] for q in msg["data"]]
                if slow_session is None:
                    slow_session = next((s for s in hub.sessions.values() if s.all), None)
                if slow_session is not None:
                    conflated = max(conflated, slow_session.conflated)
                    if slow_session.closing:
                        break
            assert slow_session is not None and slow_session.closing, "slow client never closed"
            # keep measuring the fast client for a while after the close (2 s, and
            # enough samples: the close comes sooner when frames are written directly)
            until = time.monotonic() + 2
            while time.monotonic() < until or (
                len(latencies) <= 20 and time.monotonic() < deadline
            ):
                msg = await _recv(fast)
                if msg["type"] == "quotes":
                    latencies += [now_ms() - q["receive_ts"] for q in msg["data"]]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(slow.recv(), 20)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4008
            assert "too slow" in closed.value.rcvd.reason
        finally:
            stop.set()
            thread.join()
            await fast.close()
            await slow.close()
    latencies.sort()
    assert len(latencies) > 20
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 1000, f"fast client p99 {p99} ms while a slow client stalls"
    assert conflated > 0
