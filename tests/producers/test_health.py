"""The receiver's /metrics, /healthz and /readyz over a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pydantic import SecretStr

from producers import metrics
from producers.health import serve_health
from producers.receiver import run_receiver
from producers.settings import ReceiverSettings


async def test_metrics_health_and_readiness() -> None:
    state = {"ready": False}

    def status() -> tuple[bool, bool, dict[str, Any]]:
        return True, state["ready"], {"feed_connected": state["ready"]}

    metrics.LINES.labels("sse_szse").inc(3)
    server = await serve_health("127.0.0.1", 0, status)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            body = (await client.get("/metrics")).text
            assert 'hq_receiver_lines_total{format="sse_szse"}' in body
            assert "hq_receiver_journal_bytes" in body
            assert (await client.get("/healthz")).status_code == 200
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["ok"] is False
            state["ready"] = True
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/nope")).status_code == 404
    finally:
        server.close()
        await server.wait_closed()


async def test_missing_token_is_a_clear_configuration_error(caplog: Any) -> None:
    settings = ReceiverSettings(feed_token=SecretStr(""), metrics_port=0)
    code = await asyncio.wait_for(run_receiver(settings), 5)
    assert code == 2
    assert "HQ_FEED_TOKEN is not set" in caplog.text
