"""The whole pipeline as users run it: every component is its own process.

simulator -> receiver -> Kafka -> stream worker -> Redis / Kafka -> gateway ->
a WebSocket client. Real sockets, a real broker, a real Redis. Proves by
counting that every line the feed sent is accounted for (Kafka raw topic,
Redis, or the DLQ with a reason), and that a WebSocket client gets exactly the
stocks it subscribed to, snapshot first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
import websockets

from hqstream.local_runner import create_topics, free_port, port_open
from schemas import dlq, redis_keys, topics
from streams.errors import BadRecord
from streams.parse import parse_record
from tests.conftest import KafkaEndpoint
from tests.kafka_utils import consume_all

pytestmark = pytest.mark.integration

STOCKS = 400
SNAPSHOTS = 4


@contextlib.contextmanager
def process(name: str, args: list[str], env: dict[str, str], logs: Path) -> Iterator[None]:
    log = (logs / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hqstream.cli", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield
        assert proc.poll() is None, f"{name} died: {(logs / f'{name}.log').read_text()[-3000:]}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_tick_is_accounted_for_end_to_end(
    kafka: KafkaEndpoint, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    create_topics(kafka.bootstrap, topics.topic_specs(4), prefix=prefix)
    feed_port, metrics_port, gw_port = free_port(), free_port(), free_port()
    sent_log = tmp_path / "sent.log"
    env = {
        **os.environ,
        "HQ_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "HQ_REDIS_URL": redis_url,
        "HQ_PARTITIONS": "4",
        "HQ_TOPIC_PREFIX": prefix,
        "HQ_FEED_ADDR": f"127.0.0.1:{feed_port}",
        "HQ_FEED_TOKEN": secrets.token_urlsafe(16),
        "HQ_JOURNAL_DIR": str(tmp_path / "journal"),
        "HQ_STREAMS_GROUP_ID": f"{prefix}streams",
        "HQ_STREAMS_METRICS_PORT": str(free_port()),
        "HQ_STREAMS_DATADIR": str(tmp_path / "streams"),
        "HQ_GATEWAY_STREAMS_GROUP": f"{prefix}streams",
        "HQ_GATEWAY_PRODUCER_METRICS_URL": f"http://127.0.0.1:{metrics_port}/metrics",
        "HQ_GATEWAY_AUTH": "off",  # the test's client sends no key
    }
    with (
        process("gateway", ["gateway", "--port", str(gw_port)], env, tmp_path),
        process("streams", ["streams"], env, tmp_path),
    ):
        wait_until(lambda: _ready(gw_port), 60, "the gateway to be ready")
        # Subscribe before the feed starts: the client must see the first ticks.
        watched = ("000001", "600519")
        messages: list[dict[str, object]] = []
        client = threading.Thread(
            target=lambda: messages.extend(asyncio.run(_watch(gw_port, watched, seconds=40)))
        )
        client.start()
        time.sleep(1.0)
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

            r = redis.Redis.from_url(redis_url)
            wait_until(
                lambda: all(_stored_ts(r, c) == ts for c, ts in valid.items()),
                60,
                "Redis to hold the newest quote of every stock",
            )
        client.join(60)

    kinds = [m["type"] for m in messages]
    assert kinds[0] == "ack"
    assert "snapshot" in kinds and kinds.index("snapshot") < kinds.index("quotes")
    codes = {q["code"] for m in messages if m["type"] == "quotes" for q in m["data"]}
    assert codes == set(watched), f"exactly the subscribed stocks, got {codes}"


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _stored_ts(r: redis.Redis, code: str) -> int:
    value = r.hget(redis_keys.quote(code), "ts")
    return int(value) if value else 0


async def _watch(port: int, codes: tuple[str, ...], seconds: float) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/api/realtime/ws") as ws:
        for code in codes:
            await ws.send(orjson.dumps({"type": "subscribe_stock", "stock_code": code}).decode())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=1)
            except TimeoutError:
                continue
            out.append(orjson.loads(raw))
    return out
