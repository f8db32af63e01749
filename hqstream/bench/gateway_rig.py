"""The load side of the gateway benchmarks: the gateway under test, its feed, its clients.

:func:`gateway_process` runs the gateway as a subprocess (``python -m api``) on
a loopback port with uuid-prefixed topics, created here and deleted afterwards.
:func:`produce_quotes` is the feed: normalized quotes whose ``receive_ts`` is
their send time, in a process of its own, evenly or in universe-sized bursts.
:func:`light_client` (:mod:`hqstream.wsclient`, cheap per frame) and
:func:`websockets_client` (the ``websockets`` library) are the WebSocket clients;
both report into a :class:`~hqstream.bench.gateway_measure.Tally`.

Never touches topics other than the ones it created.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from hqstream import wsclient
from hqstream.bench.gateway_measure import Tally
from hqstream.local_runner import free_port
from hqstream.stack_checks import gateway_ready
from schemas import topics

ClientKind = Literal["light", "websockets"]
GATEWAY_TOPICS = (topics.NORMALIZED, topics.MARKET_STATS, topics.ALERTS, *topics.CANDLES.values())


def stock_codes(n: int) -> list[str]:
    """``n`` distinct codes: the first half Shenzhen (000001...), the rest Shanghai (600000...)."""
    sz = [f"{i:06d}" for i in range(1, n // 2 + 1)]
    sh = [f"{600000 + i:06d}" for i in range(n - len(sz))]
    return sz + sh


def produce_quotes(bootstrap: str, topic: str, codes: list[str], rate: int, seconds: float,
                   burst: bool) -> None:  # fmt: skip
    """Producer process: ``rate`` quotes/s for ``seconds``, receive_ts = send time.

    ``burst``: every ``len(codes) / rate`` seconds all codes at once (a snapshot).
    """
    from confluent_kafka import Producer

    from schemas.serde import make_codec

    codec = make_codec("quote")
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 2,
            "enable.idempotence": True,
        }
    )
    base = int(time.time() * 1000)
    template = _quote_template()
    sent = 0
    start = time.monotonic()
    i = 0
    period = len(codes) / rate
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) + 1
        if burst:
            due = (int(elapsed / period) + 1) * len(codes)
        while sent < due:
            code = codes[i % len(codes)]
            now = int(time.time() * 1000)
            rec = dict(template, code=code, symbol=("sh" if code[0] == "6" else "sz") + code)
            rec.update(market="SH" if code[0] == "6" else "SZ", exchange_ts=base + i)
            rec.update(receive_ts=now, process_ts=now, price=10 + (i % 100) / 100)
            producer.produce(topic, codec.encode(rec), key=code.encode())
            sent += 1
            i += 1
            if sent % 1000 == 0:
                producer.poll(0)
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(10)


def _quote_template() -> dict[str, Any]:
    return {
        "symbol": "", "code": "", "market": "SZ", "board": "MAIN", "name": "平安银行",
        "is_st": False, "exchange_ts": 0, "trade_date": time.strftime("%Y-%m-%d"),
        "open": 10.0, "prev_close": 10.0, "price": 10.0, "high": 10.5, "low": 9.8,
        "bid": 10.0, "ask": 10.01, "volume": 123456, "amount": 1.23e6,
        "bid_prices": [10.0, 9.99, 9.98, 9.97, 9.96], "bid_volumes": [100, 200, 300, 400, 500],
        "ask_prices": [10.01, 10.02, 10.03, 10.04, 10.05],
        "ask_volumes": [100, 200, 300, 400, 500], "change": 0.0, "change_pct": 0.0,
        "limit_up": 11.0, "limit_down": 9.0, "traded": True, "suspended": False,
        "at_limit_up": False, "at_limit_down": False, "receive_ts": 0, "process_ts": 0,
        "limit_free": False, "not_traded_yet": False, "phase": "continuous",
        "avg_price": 9.97, "amplitude": 7.0, "order_imbalance": 0.0,
    }  # fmt: skip


@dataclass
class Gateway:
    """A running gateway subprocess: whose CPU and memory to read, where to connect."""

    pid: int
    port: int
    prefix: str
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/realtime/ws"


@contextlib.contextmanager
def gateway_process(bootstrap: str, redis_url: str, flush_ms: int,
                    profile: str | None = None) -> Iterator[Gateway]:  # fmt: skip
    """A gateway subprocess on uuid-prefixed topics (created and deleted here).

    ``profile``: run it under cProfile, stats written to that path on exit.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [prefix + t for t in GATEWAY_TOPICS]
    parts = {prefix + s.name: s.partitions for s in topics.topic_specs()}
    for fut in admin.create_topics([NewTopic(n, parts[n], 1) for n in names]).values():
        fut.result(30)
    port = free_port()
    env = dict(
        os.environ,
        HQ_KAFKA_BOOTSTRAP=bootstrap,
        HQ_REDIS_URL=redis_url,
        HQ_TOPIC_PREFIX=prefix,
        HQ_GATEWAY_FLUSH_INTERVAL_MS=str(flush_ms),
        HQ_GATEWAY_MAX_CONNECTIONS_PER_KEY="100000",
        HQ_LOG_LEVEL="WARNING",
        HQ_GATEWAY_AUTH="off",  # loopback only; the clients send no key
    )
    env.pop("HQ_GATEWAY_API_KEYS", None)
    env.pop("HQ_GATEWAY_ADMIN_KEYS", None)
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    proc = subprocess.Popen(
        [sys.executable, *prof, "-m", "api", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not gateway_ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not become ready")
            time.sleep(0.3)
        yield Gateway(proc.pid, port, prefix, proc)
    finally:
        # uvicorn re-raises SIGTERM after its shutdown (killing cProfile before it
        # writes); SIGINT becomes a KeyboardInterrupt, and cProfile writes on the way out.
        proc.send_signal(signal.SIGINT if profile else signal.SIGTERM)
        try:
            proc.wait(60 if profile else 15)
        except subprocess.TimeoutExpired:
            proc.kill()
        for fut in admin.delete_topics(names).values():
            with contextlib.suppress(Exception):
                fut.result(30)


async def light_client(gw: Gateway, subscribe: list[bytes], tally: Tally, stop: asyncio.Event,
                       compression: bool) -> None:  # fmt: skip
    """One :class:`~hqstream.wsclient.LightClient`: subscribe, hold until ``stop``."""
    try:
        client = await asyncio.wait_for(
            wsclient.connect(
                "127.0.0.1", gw.port, "/api/realtime/ws", tally.on_message, compression
            ),
            60,
        )
    except Exception as exc:
        tally.failed(type(exc).__name__, exc)
        return
    for msg in subscribe:
        client.send_text(msg)
    tally.connected += 1
    stopping = asyncio.ensure_future(stop.wait())
    waiters: list[asyncio.Future[Any]] = [stopping, client.closed]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        tally.connected -= 1
    if client.closed.done():
        tally.failed(f"closed({client.closed.result()})")
        tally.closed += 1
    else:
        client.close()


async def websockets_client(gw: Gateway, subscribe: list[bytes], tally: Tally,
                            stop: asyncio.Event, compression: bool) -> None:  # fmt: skip
    """One ``websockets`` connection: subscribe, receive until ``stop``."""
    import websockets

    try:
        async with websockets.connect(
            gw.ws_url,
            compression="deflate" if compression else None,
            open_timeout=60,
            max_size=2**24,
        ) as ws:
            for msg in subscribe:
                await ws.send(msg.decode())
            tally.connected += 1
            try:
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(decode=False), 0.5)
                    except TimeoutError:
                        continue
                    tally.on_message(raw)
            finally:
                tally.connected -= 1
    except Exception as exc:
        rcvd = getattr(exc, "rcvd", None)
        tally.failed(type(exc).__name__ + (f"({rcvd.code})" if rcvd is not None else ""), exc)
        tally.closed += 1
