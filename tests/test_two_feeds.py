"""Two vendor feeds, one failing: no gap and no duplicate (issue 18).

Two simulators play the same market on one wall-clock schedule (same seed,
start and epoch); the second has its own jitter, a small delay and leaves
about 2 % of its lines out. One receiver per feed (``HQ_FEEDS``), one stream
worker, the gateway, a WebSocket client: every one a real process on a real
broker and Redis. Mid-session receiver A is SIGKILLed (the lines in its
socket and queue are gone: the protocol has no replay), receiver B is then
stalled (SIGSTOP) for 5 s, resumed, and receiver A is started again. Then:

* the normalized topic has every (stock, exchange second) that reached the
  raw topic from either feed exactly once;
* a client that subscribes with ``since`` the start gets every one of its
  stock's ticks of the run, once (a snapshot the leading feed missed and the
  lagging one delivered late comes after a newer tick of that stock);
* the candles in Redis equal those of one feed carrying the same ticks
  (computed here by the same processor, fed one copy of each, no ``source``);
* the worker counted the second copies per feed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import websockets

from hqstream.local_runner import free_port, port_open
from producers.universe import build_universe
from schemas import redis_keys, topics
from schemas.exchange import SHANGHAI_TZ
from schemas.serde import make_codec
from schemas.topics import H_SOURCE
from streams.errors import BadRecord
from streams.parse import parse_record
from streams.pipeline import Processor, RawRecord
from streams.settings import StreamsSettings
from tests.conftest import KafkaEndpoint
from tests.kafka_utils import consume_all
from tests.stack_procs import gateway_ready, pipeline_env, process, spawn, stop, wait_until

pytestmark = pytest.mark.integration

STOCKS = 200
SNAPSHOTS = 100  # 3 s of exchange time each, one every 0.5 s
RATE = 6
START = "2026-06-17T10:00:00"  # a past morning: nothing is ahead of the wall clock
QUOTE_CODEC = make_codec("quote")


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_a_killed_and_a_stalled_feed_leave_no_gap_and_no_duplicate(
    kafka: KafkaEndpoint, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"ab{uuid.uuid4().hex[:8]}."
    env, (_, _, gw_port) = pipeline_env(kafka, redis_url, tmp_path, prefix)
    ports = {name: (free_port(), free_port()) for name in ("a", "b")}  # feed, receiver metrics
    env["HQ_FEEDS"] = orjson.dumps(
        [
            {"name": name, "addr": f"127.0.0.1:{feed}", "priority": i,
             "metrics_url": f"http://127.0.0.1:{metrics}/metrics"}
            for i, (name, (feed, metrics)) in enumerate(ports.items())
        ]
    ).decode()  # fmt: skip
    # The simulators run 6x the exchange clock: 10 s of exchange time (the default)
    # would be 1.7 s of wall time, which a receiver on a loaded machine may trail
    # by; staleness is tested in tests/streams/test_arbitration.py.
    env["HQ_STREAMS_FEED_STALE_AFTER_S"] = "60"
    # The day is in the past, so a candle clock that follows the wall clock (after
    # HQ_STREAMS_CANDLE_QUIET_S without a newer tick, 5 s by default) closes every
    # open candle at once: feed b's 5 s stall, with a killed, would close them
    # before b's backlog folds its ticks in, and their volume would move to the
    # next minute, depending on when the 1 s flush timer fired. The quiet rule is
    # tested in tests/streams/test_candle_clock.py; here it stays out of the way.
    env["HQ_STREAMS_CANDLE_QUIET_S"] = "60"
    epoch = time.time() + 20  # the receivers are connected by then
    simulate = ["simulate", "--stocks", str(STOCKS), "--interval", "3", "--rate", str(RATE),
                "--start", START, "--snapshots", str(SNAPSHOTS), "--seed", "18",
                "--epoch", str(epoch)]  # fmt: skip
    second = ["--delay", "0.05", "--jitter", "0.1", "--missing-fraction", "0.02"]
    logs = {name: tmp_path / f"sent-{name}.log" for name in ports}

    def receiver(name: str) -> Any:
        metrics = ports[name][1]
        return spawn(f"produce-{name}", ["produce", "--feed", name, "--metrics-port",
                                         str(metrics)], env, tmp_path)  # fmt: skip

    with (
        process("gateway", ["gateway", "--port", str(gw_port)], env, tmp_path),
        process("streams", ["streams"], env, tmp_path),
        process("simulate-a", [*simulate, "--addr", f"127.0.0.1:{ports['a'][0]}",
                               "--sent-log", str(logs["a"])], env, tmp_path),
        process("simulate-b", [*simulate, *second, "--addr", f"127.0.0.1:{ports['b'][0]}",
                               "--sent-log", str(logs["b"])], env, tmp_path),
    ):  # fmt: skip
        wait_until(lambda: all(port_open(f) for f, _ in ports.values()), 30, "the simulators")
        receivers = {name: receiver(name) for name in ports}
        try:
            wait_until(lambda: gateway_ready(gw_port), 90, "the gateway to be ready")
            live = _LiveClient(gw_port, [stock.code for stock in build_universe(STOCKS, 18)[:8]])
            per_snapshot = STOCKS
            wait_until(lambda: _lines(logs["a"]) >= 4 * per_snapshot, 90, "both feeds flowing")
            os.killpg(receivers["a"].pid, signal.SIGKILL)  # its queue and socket are lost
            receivers["a"].wait()
            b_now = _lines(logs["b"])
            wait_until(lambda: _lines(logs["b"]) >= b_now + 2 * per_snapshot, 30, "feed b alone")
            os.killpg(receivers["b"].pid, signal.SIGSTOP)
            time.sleep(5)  # the stall itself (nothing waits on it)
            os.killpg(receivers["b"].pid, signal.SIGCONT)
            a_before = _lines(logs["a"])
            receivers["a"] = receiver("a")
            wait_until(lambda: _lines(logs["a"]) > a_before, 60, "feed a back")
            last = _exchange_ms(START) + (SNAPSHOTS - 1) * 3000
            wait_until(lambda: _last_tick_ms(logs["b"]) >= last, 120, "the last snapshot")
            raw = _settled(kafka.bootstrap, prefix + topics.RAW)
            union = _ticks_of(raw)
            normalized = consume_all(kafka.bootstrap, prefix + topics.NORMALIZED,
                                     expected=len(union), timeout=120)  # fmt: skip
            r = redis.Redis.from_url(redis_url)
            newest = _newest(union)
            wait_until(lambda: _redis_at_newest(r, newest), 60, "Redis at every newest tick")
            wait_until(lambda: live.reached(newest), 60, "the live client at every newest tick")
            live.stop()
            watched = max(newest, key=lambda code: sum(1 for c, _ in union if c == code))
            replayed = asyncio.run(_replay(gw_port, watched, _exchange_ms(START)))
        finally:
            for proc in receivers.values():
                os.killpg(proc.pid, signal.SIGCONT)
                stop(proc)

    published = Counter(_second_of(m.value()) for m in normalized)
    doubled = [tick for tick, n in published.items() if n > 1]
    assert not doubled, f"{len(doubled)} ticks published twice, e.g. {doubled[:3]}"
    assert set(published) == set(union), (
        f"missing {len(set(union) - set(published))}, extra {len(set(published) - set(union))}"
    )
    sources = Counter(dict(m.headers() or [])[H_SOURCE] for m in raw)
    assert set(sources) == {b"a", b"b"}
    assert len(raw) > len(union) * 1.5, "most ticks came twice"

    # A snapshot the leading feed missed and the lagging one delivered late is
    # published late: complete, once, but after a newer tick of that stock.
    replayed_s = [ts // 1000 for ts in replayed]
    assert len(replayed_s) == len(set(replayed_s)), "a replaying client got a tick twice"
    assert set(replayed_s) == {s for c, s in union if c == watched}, "a replay missed ticks"
    assert live.quotes, "the live client got no quotes"
    for code, seconds in live.quotes.items():
        assert len(seconds) == len(set(seconds)), f"live {code}: a tick twice"
        assert max(seconds) == newest[code], f"live {code}: not at its newest tick"

    expected = _single_feed_candles(raw)
    stored = _stored_candles(r, expected)
    assert stored == expected


def _last_tick_ms(log: Path) -> int:
    """The exchange time of the last line a simulator sent."""
    if not log.exists():
        return 0
    lines = log.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)
    try:
        return int(parse_record(lines[-1], receive_ts=0)["exchange_ts"])
    except BadRecord:
        return 0


def _exchange_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).replace(tzinfo=SHANGHAI_TZ).timestamp() * 1000)


class _LiveClient:
    """Subscribed to ``codes`` (no ``since``): collects each one's live exchange seconds.

    Live pushes are conflated per client (the newest quote of a stock per
    flush), so a burst (feed b's 5 s backlog) may skip ticks here by design;
    what a client must never see is a tick twice.
    """

    def __init__(self, port: int, codes: list[str]) -> None:
        self.quotes: dict[str, list[int]] = {}
        self._stop = threading.Event()
        subscribed = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run(port, codes, subscribed)), daemon=True
        )
        self._thread.start()
        wait_until(subscribed.is_set, 30, "the live client's subscriptions")

    async def _run(self, port: int, codes: list[str], subscribed: threading.Event) -> None:
        async with websockets.connect(f"ws://127.0.0.1:{port}/api/realtime/ws") as ws:
            for code in codes:
                await ws.send(
                    orjson.dumps({"type": "subscribe_stock", "stock_code": code}).decode()
                )
            acks = 0
            while not self._stop.is_set():
                try:
                    msg = orjson.loads(await asyncio.wait_for(ws.recv(), timeout=0.2))
                except TimeoutError:
                    continue
                acks += msg["type"] == "ack"
                if acks == len(codes):
                    subscribed.set()
                if msg["type"] == "quotes":
                    for quote in msg["data"]:
                        self.quotes.setdefault(quote["code"], []).append(
                            quote["exchange_ts"] // 1000
                        )

    def reached(self, newest: dict[str, int]) -> bool:
        """Every subscribed stock's live quotes are at its ``newest`` second."""
        quotes = dict(self.quotes)
        return all(max(seconds) >= newest[code] for code, seconds in quotes.items() if seconds)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


async def _replay(port: int, code: str, since: int) -> list[int]:
    """A client subscribing to ``code`` with ``since``: the replayed exchange_ts."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/api/realtime/ws", max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe_stock", "stock_code": code, "since": since}))
        replayed: list[int] = []
        while True:
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            assert msg["type"] != "error", msg
            if msg["type"] == "replay":
                replayed += [q["exchange_ts"] for q in msg["data"]]
            elif msg["type"] == "replay_done":
                return replayed


def _settled(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` once nothing new arrived for a few seconds."""
    return consume_all(bootstrap, topic, expected=None, timeout=120, idle=5.0)


def _second_of(value: bytes) -> tuple[str, int]:
    quote = QUOTE_CODEC.decode(value)
    return str(quote["code"]), int(quote["exchange_ts"]) // 1000


def _ticks_of(raw: list[Any]) -> set[tuple[str, int]]:
    """(code, exchange second) of every valid line on the raw topic, from either feed."""
    out: set[tuple[str, int]] = set()
    for msg in raw:
        try:
            quote = parse_record(msg.value(), receive_ts=0)
        except BadRecord:
            continue
        out.add((quote["code"], quote["exchange_ts"] // 1000))
    return out


def _newest(union: set[tuple[str, int]]) -> dict[str, int]:
    newest: dict[str, int] = {}
    for code, second in union:
        newest[code] = max(newest.get(code, 0), second)
    return newest


def _redis_at_newest(r: redis.Redis, newest: dict[str, int]) -> bool:
    pipe = r.pipeline(transaction=False)
    for code in newest:
        pipe.hget(redis_keys.quote(code), "ts")
    stored = pipe.execute()
    return all(
        ts is not None and int(ts) // 1000 == s
        for ts, s in zip(stored, newest.values(), strict=True)
    )


CANDLE_FIELDS = ("open", "high", "low", "close", "volume", "amount")


def _single_feed_candles(raw: list[Any]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """The candles of one feed carrying each tick once: the first copy, no ``source``."""
    firsts: list[RawRecord] = []
    seen: set[tuple[str, int]] = set()
    for msg in sorted(raw, key=lambda m: (m.partition(), m.offset())):
        try:
            quote = parse_record(msg.value(), receive_ts=0)
        except BadRecord:
            continue
        tick = (quote["code"], quote["exchange_ts"] // 1000)
        if tick in seen:
            continue
        seen.add(tick)
        headers = [(k, v) for k, v in msg.headers() or [] if k != H_SOURCE]
        firsts.append(RawRecord(msg.key(), msg.value(), headers, "raw", msg.partition(),
                                msg.offset(), msg.timestamp()[1]))  # fmt: skip
    processor = Processor(StreamsSettings(metrics_port=0), publish_normalized=False)
    result = asyncio.run(processor.process(firsts, None))
    candles: dict[tuple[str, int], tuple[Any, ...]] = {}
    opened = [c.as_record() for c in result.sink.open_candles]
    for candle in result.sink.candles + opened:
        candles[candle["code"], candle["minute_ts"]] = tuple(candle[f] for f in CANDLE_FIELDS)
    return candles


def _stored_candles(
    r: redis.Redis, expected: dict[tuple[str, int], tuple[Any, ...]]
) -> dict[tuple[str, int], tuple[Any, ...]]:
    out: dict[tuple[str, int], tuple[Any, ...]] = {}
    date = START[:10]
    for code in {code for code, _ in expected}:
        for minute, blob in r.hgetall(redis_keys.candles(code, date)).items():
            candle = orjson.loads(blob)
            out[code, int(minute)] = tuple(candle[f] for f in CANDLE_FIELDS)
    return out
