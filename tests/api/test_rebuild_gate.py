"""Issue 21, item 2: while stream workers rebuild Redis, REST answers 503 with Retry-After.

A real uvicorn gateway on a real broker and Redis; the rebuild's entry is
written by the workers' own writer (``RedisSink.announce_rebuild``). The
gateway's wall clock is frozen, so the Retry-After it derives from the
progress is exact; its 0.5 s cache is waited out on conditions.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis

from schemas import redis_keys as rk
from streams.redis_sink import RedisSink
from tests.api import helpers as h
from tests.api.conftest import push_settings
from tests.api.server import run_gateway
from tests.conftest import KafkaEndpoint
from tests.waits import until

pytestmark = pytest.mark.integration

NOW = 1_795_000_000_000  # the gateway's frozen wall clock (epoch ms)


def announce(url: str, worker: str, progress: float, started: int, at: int) -> None:
    async def write() -> None:
        sink = RedisSink.from_url(url)
        try:
            await sink.announce_rebuild(worker, progress, started, at)
        finally:
            await sink.close()

    asyncio.run(write())


def end(url: str, worker: str) -> None:
    async def delete() -> None:
        sink = RedisSink.from_url(url)
        try:
            await sink.end_rebuild(worker)
        finally:
            await sink.close()

    asyncio.run(delete())


def test_rest_is_503_with_retry_after_while_workers_rebuild(
    kafka: KafkaEndpoint, redis_url: str, r: redis.Redis
) -> None:
    h.write_quote(r, h.quote("000001", NOW))
    with (
        run_gateway(push_settings(kafka, redis_url)) as gw,
        httpx.Client(base_url=gw.http_url, timeout=30) as client,
    ):
        gw.app.state.rebuild_watch.wall_ms = lambda: NOW
        last: list[httpx.Response] = []

        def stock_is(status: int) -> bool:
            last[:] = [client.get("/api/realtime/stock/000001")]
            return last[0].status_code == status

        assert stock_is(200)
        # 25 % done in 3 s: 9 s to go at that pace (the slowest worker's)
        announce(redis_url, "w1", 0.25, NOW - 3000, NOW)
        announce(redis_url, "w2", 0.5, NOW - 2000, NOW)
        until(lambda: stock_is(503), "REST refused while rebuilding")
        assert last[0].headers["Retry-After"] == "9"
        body = last[0].json()
        assert body["error"] == "rebuilding" and "25%" in body["message"]
        status = client.get("/api/realtime/status").json()
        assert status["ok"] is False
        assert status["rebuilding"] == {"progress": 0.25, "started": NOW - 3000, "workers": 2}
        assert "hq_gateway_state_rebuild_progress_ratio 0.25" in client.get("/metrics").text

        # a dead worker's entry (not refreshed within the TTL) is ignored
        stale = NOW - rk.REBUILDING_TTL_S * 1000 - 1
        announce(redis_url, "w2", 0.5, NOW - 20_000, stale)
        end(redis_url, "w1")
        until(lambda: stock_is(200), "REST served once the rebuild is over")
        assert client.get("/api/realtime/status").json()["rebuilding"] is None
        assert "hq_gateway_state_rebuild_progress_ratio 1.0" in client.get("/metrics").text
