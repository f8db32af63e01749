"""Replay-to-live on the real stack, with the simulator (issue 20).

Simulator -> receiver -> Kafka -> stream worker -> Redis and the normalized
topic -> gateway, each a separate process. The simulator's exchange clock
runs hours apart from the machine's (its day starts at 09:30 Shanghai and
moves 3 s per snapshot, 40 snapshots a second here), so a replay works only if
``since`` is taken on the exchange clock throughout. A client subscribes with
``since`` 30 s and 30 minutes before the stock's current exchange time and
must get: the replay oldest first, nothing older than ``since``, then
``replay_done``, then live; exchange timestamps strictly increasing across the
join; every update the normalized topic holds for the stock in that range, and
none twice.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from schemas import topics
from schemas.serde import make_codec
from tests.conftest import KafkaEndpoint
from tests.kafka_utils import consume_all
from tests.replay_client import replay_then_live
from tests.stack_procs import gateway_ready, pipeline_env, process, wait_until

pytestmark = pytest.mark.integration

STOCKS = 40
SNAPSHOT_MS = 3_000


def _exchange_ts(port: int, code: str) -> int:
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}/api/realtime/stock/{code}", timeout=2)
    except httpx.HTTPError:
        return 0
    return int(resp.json()["exchange_ts"]) if resp.status_code == 200 else 0


async def _replay(url: str, code: str, since: int) -> dict[str, Any]:
    async with websockets.connect(url, max_size=None) as ws:
        return await replay_then_live(ws, code, since, lambda live: len(live) >= 20)


def test_replay_30s_and_30min_back_on_the_simulators_clock(
    kafka: KafkaEndpoint, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"rp{uuid.uuid4().hex[:8]}."
    sent_log = tmp_path / "sent.log"
    env, (_, metrics_port, gw_port) = pipeline_env(kafka, redis_url, tmp_path, prefix)
    # a past day: at 40x the exchange clock would otherwise overtake the machine's
    # during a Shanghai morning, and quotes from the future are dead-lettered
    simulate = ["simulate", "--stocks", str(STOCKS), "--interval", "3", "--rate", "40",
                "--start", "2026-06-17T09:30:00", "--snapshots", "4000", "--seed", "20",
                "--sent-log", str(sent_log)]  # fmt: skip
    with (
        process("gateway", ["gateway", "--port", str(gw_port)], env, tmp_path),
        process("streams", ["streams"], env, tmp_path),
        process("produce", ["produce", "--metrics-port", str(metrics_port)], env, tmp_path),
        process("simulate", simulate, env, tmp_path),
    ):
        wait_until(lambda: gateway_ready(gw_port), 90, "the gateway to be ready")
        wait_until(lambda: sent_log.exists() and sent_log.stat().st_size > 0, 60, "the feed")
        first_line = sent_log.read_bytes().split(b"\n", 1)[0]
        code = first_line.decode().split("$", 1)[0][2:] if b"$" in first_line else ""
        code = code or json.loads(first_line)["symbol"][2:]
        wait_until(lambda: _exchange_ts(gw_port, code) > 0, 90, f"a quote of {code} in Redis")
        opened = _exchange_ts(gw_port, code)
        # 31 minutes of the simulator's day (about 15 s of real time at 40 snapshots/s)
        wait_until(
            lambda: _exchange_ts(gw_port, code) >= opened + 31 * 60_000, 240, "31 simulated minutes"
        )
        url = f"ws://127.0.0.1:{gw_port}/api/realtime/ws"
        runs: dict[int, tuple[int, dict[str, Any]]] = {}
        for back_ms in (30_000, 30 * 60_000):
            since = _exchange_ts(gw_port, code) - back_ms
            runs[back_ms] = (since, asyncio.run(_replay(url, code, since)))

    codec = make_codec("quote")
    stored = sorted(
        {
            ts
            for m in consume_all(kafka.bootstrap, prefix + topics.NORMALIZED, idle=2.0)
            if m.key() == code.encode()
            for ts in [int(codec.decode(m.value())["exchange_ts"])]  # type: ignore[arg-type]
        }
    )
    for back_ms, (since, got) in runs.items():
        replayed, live = got["replayed"], got["live"]
        joined = replayed + live
        assert got["order"][0] == "ack" and got["done"]["replayed"] == len(replayed)
        assert joined == sorted(set(joined)), f"not strictly increasing ({back_ms} ms back)"
        assert joined[0] >= since, f"older than since ({back_ms} ms back)"
        # the replay (with the updates held while it was read) is every stored update
        expected = [ts for ts in stored if since <= ts <= replayed[-1]]
        assert replayed == expected, f"gap or duplicate in the replay ({back_ms} ms back)"
        assert len(replayed) >= back_ms // SNAPSHOT_MS - 1
        # live updates are conflated per flush (40 snapshots a second here), never stale
        assert set(live) <= set(stored) and live[0] > replayed[-1]
