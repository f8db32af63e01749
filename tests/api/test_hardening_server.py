"""Gateway hardening (issue 11) under a real uvicorn server: frames on the wire, logs.

What TestClient cannot show: permessage-deflate messages that inflate past the
limit (refused by uvicorn's ``ws_max_size`` before the gateway parses them), a
client that asks for snapshots without reading (its socket backs up), the
command's refusal to start without keys, and every log line of a gateway run
(uvicorn's included) free of the API keys used during it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from hqstream import wsclient
from schemas import topics
from tests.api import helpers as h
from tests.api.conftest import push_settings
from tests.api.server import free_port, run_gateway
from tests.conftest import KafkaEndpoint

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
ROOT = Path(__file__).resolve().parents[2]


async def _limits_on_the_wire(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/api/realtime/ws"
    async with websockets.connect(url, compression="deflate") as bystander:
        # binary frames: an error, the connection stays
        async with websockets.connect(url, compression="deflate") as ws:
            await ws.send(b"\x00\x01")
            assert b'"code":"bad_request"' in await asyncio.wait_for(ws.recv(decode=False), 5)
            await ws.send('{"type":"ping","id":2}')
            assert b'"pong"' in await asyncio.wait_for(ws.recv(decode=False), 5)
        # 1 MiB of zeros compresses to ~1 KiB on the wire: refused (1009) by size after inflation
        async with websockets.connect(url, compression="deflate", max_size=None) as ws:
            await ws.send('{"type":"ping","id":"' + "0" * (1 << 20) + '"}')
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await bystander.send('{"type":"ping","id":3}')
        assert b'"id":3' in await asyncio.wait_for(bystander.recv(decode=False), 5)


async def _subscribe_all_without_reading(port: int) -> tuple[int, int]:
    got: list[bytes] = []
    client = await wsclient.connect("127.0.0.1", port, "/api/realtime/ws", got.append, True)
    assert client.transport is not None
    client.transport.pause_reading()
    sent = 0
    while sent < 200 and not client.transport.is_closing():
        client.send_text(b'{"type":"subscribe_all"}')
        sent += 1
        await asyncio.sleep(0.002)
    await asyncio.sleep(1.0)
    client.transport.resume_reading()
    code = await asyncio.wait_for(client.closed, 15)
    return code, len(got)


def test_limits_under_uvicorn(kafka: KafkaEndpoint, redis_url: str, r: redis.Redis) -> None:
    for i in range(3000):  # a whole-market snapshot of ~2.5 MB
        h.write_quote(r, h.quote(f"{600000 + i}", NOW + i), tick=False)
    settings = push_settings(kafka, redis_url, max_queued_bytes=1 << 20)
    with run_gateway(settings) as gw:
        asyncio.run(_limits_on_the_wire(gw.port))
        code, received = asyncio.run(_subscribe_all_without_reading(gw.port))
        assert code == 4008, (code, received)
        hub = gw.app.state.hub
        deadline = time.monotonic() + 10
        while hub.sessions and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not hub.sessions  # the hostile connection is gone, its buffers with it


def test_the_command_refuses_to_start_without_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HQ_GATEWAY_")}
    env["API_KEYS"] = "bare-names-do-not-count"
    done = subprocess.run(
        [sys.executable, "-m", "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "HQ_GATEWAY_AUTH=off" in done.stderr


async def _use_the_keys(port: int, client_key: str, admin_key: str) -> None:
    url = f"ws://127.0.0.1:{port}/api/realtime/ws"
    async with websockets.connect(f"{url}?api_key={client_key}") as ws:  # refused
        assert b"not_authenticated" in await asyncio.wait_for(ws.recv(decode=False), 5)
    async with websockets.connect(url, compression="deflate") as ws:
        await ws.send(f'{{"type":"auth","api_key":"{client_key}"}}')
        await ws.send('{"type":"ping","id":1}')
        assert b'"pong"' in await asyncio.wait_for(ws.recv(decode=False), 5)
    async with websockets.connect(url) as ws:
        await ws.send(f'{{"type":"auth","api_key":"{client_key}-wrong"}}')
        assert b"not_authenticated" in await asyncio.wait_for(ws.recv(decode=False), 5)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        assert (
            await http.get("/api/realtime/alerts", headers={"X-API-Key": client_key})
        ).is_success
        bad = await http.get(f"/api/realtime/alerts?api_key={client_key}")
        assert bad.status_code == 400
        assert (await http.get(f"/?api_key={admin_key}&x=1")).status_code == 400
        ok = await http.post("/api/realtime/stop", headers={"X-API-Key": admin_key})
        assert ok.json() == {"pushing": False}
        await http.post("/api/realtime/start", headers={"X-API-Key": admin_key})


def test_api_keys_never_reach_a_log_line(
    kafka: KafkaEndpoint, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"{KafkaEndpoint.group('gwlog')}."
    for spec in topics.topic_specs(partitions=3):
        if spec.name in (topics.NORMALIZED, topics.MARKET_STATS, topics.ALERTS,
                         *topics.CANDLES.values()):  # fmt: skip
            kafka.create(prefix + spec.name, spec.partitions)
    client_key, admin_key = f"ck{uuid.uuid4().hex}", f"ak{uuid.uuid4().hex}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HQ_GATEWAY_")}
    env.update(
        HQ_KAFKA_BOOTSTRAP=kafka.bootstrap,
        HQ_REDIS_URL=redis_url,
        HQ_TOPIC_PREFIX=prefix,
        HQ_GATEWAY_API_KEYS=client_key,
        HQ_GATEWAY_ADMIN_KEYS=admin_key,
        HQ_GATEWAY_PRODUCER_METRICS_URL="http://127.0.0.1:1/metrics",
        HQ_LOG_LEVEL="DEBUG",  # everything uvicorn and websockets would ever say
    )
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).is_success:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            asyncio.run(_use_the_keys(port, client_key, admin_key))
        finally:
            proc.terminate()
            proc.wait(20)
    lines = log.read_text().splitlines()
    assert any("[accepted]" in line for line in lines), "uvicorn's log lines were not captured"
    assert any("api_key" in line for line in lines)  # the lines that would carry it are there
    leaked = [line for line in lines if client_key in line or admin_key in line]
    assert not leaked, leaked
