"""The whole pipeline as users run it: every component is its own process.

simulator -> receiver -> Kafka -> stream worker -> Redis / Kafka -> gateway ->
a WebSocket client. Real sockets, a real broker, a real Redis. Proves by
counting that every line the feed sent is accounted for (Kafka raw topic,
Redis, or the DLQ with a reason), and that a WebSocket client gets exactly the
stocks it subscribed to, snapshot first.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis
import websockets

from hqcore.redis_client import sync_client
from hqstream.local_runner import port_open
from schemas import dlq, redis_keys, topics
from streams.errors import BadRecord
from streams.parse import parse_record
from tests.conftest import ON_BOTH_REDIS, KafkaEndpoint
from tests.kafka_utils import consume_all
from tests.stack_procs import gateway_ready, pipeline_env, process, wait_until

pytestmark = pytest.mark.integration

STOCKS = 400
SNAPSHOTS = 4


@ON_BOTH_REDIS
def test_every_tick_is_accounted_for_end_to_end(
    kafka: KafkaEndpoint, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    sent_log = tmp_path / "sent.log"
    env, (feed_port, metrics_port, gw_port) = pipeline_env(kafka, redis_url, tmp_path, prefix)
    with (
        process("gateway", ["gateway", "--port", str(gw_port)], env, tmp_path),
        process("streams", ["streams"], env, tmp_path),
    ):
        wait_until(lambda: gateway_ready(gw_port), 60, "the gateway to be ready")
        # Subscribe before the feed starts: the client must see the first ticks.
        watched = ("000001", "600519")
        messages: list[dict[str, object]] = []
        subscribed, stop = threading.Event(), threading.Event()
        client = threading.Thread(
            target=lambda: asyncio.run(_watch(gw_port, watched, messages, subscribed, stop))
        )
        client.start()
        wait_until(subscribed.is_set, 30, "the WebSocket client's subscriptions")
        with (
            process(
                "simulate",
                [
                    "simulate",
                    "--stocks",
                    str(STOCKS),
                    "--interval",
                    "1.5",
                    "--snapshots",
                    str(SNAPSHOTS),
                    "--malformed-fraction",
                    "0.02",
                    "--sent-log",
                    str(sent_log),
                    "--seed",
                    "11",
                ],
                env,
                tmp_path,
            ),
            process("produce", ["produce", "--metrics-port", str(metrics_port)], env, tmp_path),
        ):
            wait_until(lambda: port_open(feed_port), 30, "the simulator")
            expected_lines = STOCKS * SNAPSHOTS
            wait_until(lambda: _count_lines(sent_log) >= expected_lines, 90, "the feed")
            sent = [line for line in sent_log.read_bytes().split(b"\n") if line]
            valid: dict[str, int] = {}
            bad: Counter[str] = Counter()
            for line in sent:
                try:
                    quote = parse_record(line, receive_ts=0)
                except BadRecord as exc:
                    bad[exc.reason] += 1
                else:
                    valid[quote["code"]] = max(valid.get(quote["code"], 0), quote["exchange_ts"])
            assert bad, "the feed should contain malformed lines"

            raw = consume_all(kafka.bootstrap, prefix + topics.RAW, expected=len(sent))
            assert Counter(m.value() for m in raw) == Counter(sent), "raw topic == sent, exactly"

            n_valid = len(sent) - sum(bad.values())
            dead = consume_all(kafka.bootstrap, prefix + topics.DLQ, expected=sum(bad.values()))
            got_reasons = Counter(dict(m.headers() or [])[dlq.REASON].decode() for m in dead)
            assert got_reasons == bad, "every bad line is in the DLQ with its reason"
            normalized = consume_all(kafka.bootstrap, prefix + topics.NORMALIZED, expected=n_valid)
            assert len(normalized) == n_valid

            r = sync_client(redis_url)
            wait_until(
                lambda: all(_stored_ts(r, c) == ts for c, ts in valid.items()),
                60,
                "Redis to hold the newest quote of every stock",
            )
            wait_until(
                lambda: any(m["type"] == "quotes" for m in messages), 30, "live quotes pushed"
            )
        stop.set()
        client.join(60)

    for name in ("streams", "produce"):  # every count above was made on the default loop
        assert "event loop: uvloop" in (tmp_path / f"{name}.log").read_text(), name
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "ack"
    assert "snapshot" in kinds and kinds.index("snapshot") < kinds.index("quotes")
    codes = {q["code"] for m in messages if m["type"] == "quotes" for q in m["data"]}
    assert codes == set(watched), f"exactly the subscribed stocks, got {codes}"


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _stored_ts(r: redis.Redis, code: str) -> int:
    value = r.hget(redis_keys.quote(code), "ts")
    return int(value) if value else 0


async def _watch(
    port: int,
    codes: tuple[str, ...],
    out: list[dict[str, object]],
    subscribed: threading.Event,
    stop: threading.Event,
) -> None:
    """Subscribes to ``codes``, sets ``subscribed`` once every snapshot is in, then
    collects messages into ``out`` until ``stop``."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/api/realtime/ws") as ws:
        for code in codes:
            await ws.send(orjson.dumps({"type": "subscribe_stock", "stock_code": code}).decode())
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.2)
            except TimeoutError:
                continue
            out.append(orjson.loads(raw))
            if sum(1 for m in out if m["type"] == "snapshot") == len(codes):
                subscribed.set()
