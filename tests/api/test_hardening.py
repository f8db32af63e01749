"""Gateway hardening (issue 11) with TestClient: hostile input, keys, auth defaults, errors.

Every test here failed before the fix it covers. The same limits under a real
uvicorn server (frame size on the wire, unread data, keys in log lines) are in
test_hardening_server.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from api.errors import Misconfigured
from api.limits import FairSlots, TokenBucket
from api.settings import GatewaySettings
from api.wire import SharedDeflate
from api.ws_session import Session
from hqcore.settings import env_alias
from tests.api import helpers as h

pytestmark = pytest.mark.integration

WS = "/api/realtime/ws"
NOW = int(time.time() * 1000)


def _keyed(base: GatewaySettings, **over: Any) -> GatewaySettings:
    fields = {**base.model_dump(), "auth": "on", "api_keys": "k-client", "admin_keys": "k-admin"}
    return GatewaySettings(**{**fields, **over})


def _pong(ws: Any) -> None:
    ws.send_json({"type": "ping", "id": 1})
    msg = ws.receive_json()
    assert msg["type"] == "pong", msg


# ---- 1. binary frames ------------------------------------------------------------------


def test_binary_frames_get_an_error_and_the_connection_stays(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_bytes(b"\x00\x01")
        err = ws.receive_json()
        assert err["type"] == "error" and err["code"] == "bad_request"
        _pong(ws)


def test_binary_frames_before_and_after_auth(rest_settings: GatewaySettings) -> None:
    with (
        TestClient(create_app(_keyed(rest_settings), consume=False)) as c,
        c.websocket_connect(WS) as ws,
    ):
        ws.send_bytes(b"\x00\x01")  # before auth: an error, still waiting for the key
        assert ws.receive_json()["code"] == "bad_request"
        ws.send_json({"type": "auth", "api_key": "k-client"})
        _pong(ws)
        ws.send_bytes(b"\xff" * 10)  # after auth
        assert ws.receive_json()["code"] == "bad_request"
        _pong(ws)


# ---- 2. message size and echoed fields -------------------------------------------------


def test_oversized_message_closes_1009(rest_settings: GatewaySettings) -> None:
    settings = rest_settings.model_copy(update={"max_message_bytes": 1024})
    with TestClient(create_app(settings, consume=False)) as c, c.websocket_connect(WS) as ws:
        _pong(ws)
        ws.send_json({"type": "ping", "id": "x" * 2000})
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
        assert exc.value.code == 1009


def test_oversized_auth_message_closes_1009(rest_settings: GatewaySettings) -> None:
    settings = _keyed(rest_settings, max_message_bytes=1024)
    with TestClient(create_app(settings, consume=False)) as c, c.websocket_connect(WS) as ws:
        ws.send_json({"type": "auth", "api_key": "k" * 5000})
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
        assert exc.value.code == 1009


@pytest.mark.parametrize("ping_id", ["x" * 65, {"a": 1}, [1, 2], 2**60, 1.5])
def test_echoed_ping_id_is_capped(client: TestClient, ping_id: Any) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_json({"type": "ping", "id": ping_id})
        assert ws.receive_json()["code"] == "bad_request"
        ws.send_json({"type": "ping", "id": "y" * 64})
        assert ws.receive_json()["id"] == "y" * 64


# ---- 3. rate limit, queued bytes, cached market snapshots ------------------------------


def test_requests_are_rate_limited_per_connection(rest_settings: GatewaySettings) -> None:
    settings = rest_settings.model_copy(update={"request_burst": 5, "requests_per_second": 0.01})
    with TestClient(create_app(settings, consume=False)) as c:
        with c.websocket_connect(WS) as ws:
            for _ in range(5):
                _pong(ws)
            ws.send_json({"type": "ping"})
            err = ws.receive_json()
            assert err["type"] == "error" and err["code"] == "rate_limited"
        with c.websocket_connect(WS) as other:  # the bucket is per connection
            _pong(other)


def test_subscribe_all_costs_more_than_a_ping(rest_settings: GatewaySettings) -> None:
    settings = rest_settings.model_copy(update={"request_burst": 60, "requests_per_second": 0.01})
    with TestClient(create_app(settings, consume=False)) as c, c.websocket_connect(WS) as ws:
        ws.send_json({"type": "subscribe_all"})
        assert ws.receive_json()["type"] == "ack"
        assert ws.receive_json()["type"] == "snapshot"
        ws.send_json({"type": "subscribe_all"})
        assert ws.receive_json()["code"] == "rate_limited"
        _pong(ws)  # cheap requests still fit


def test_token_bucket_refills() -> None:
    bucket = TokenBucket(rate=1000.0, burst=2)
    assert bucket.take() and bucket.take() and not bucket.take()
    time.sleep(0.01)
    assert bucket.take()
    assert not TokenBucket(rate=1.0, burst=10).take(11)


async def test_control_bytes_past_the_cap_mark_the_session_overflowed() -> None:
    async def send(_: bytes) -> None:
        raise AssertionError("nothing is sent here")

    async def close(_: int, __: str) -> None:
        return None

    s = Session(
        1, "k", send, close, flush_interval_s=1, max_pending_quotes=10, max_queued_bytes=1000
    )
    s._notify = lambda: None  # no sender task: nothing is read, as with a client that never reads
    big = b"x" * 400
    s.control(big)
    s.control(big)
    assert not s.overflowed and s.queued_bytes == 800
    s.control(big)
    assert s.overflowed and s.queued_bytes == 0  # queue dropped: memory is given back
    s.control(big)
    assert s.queued_bytes == 0


def test_market_snapshots_are_read_once_per_flush_interval(
    rest_settings: GatewaySettings, r: redis.Redis
) -> None:
    for i in range(20):
        h.write_quote(r, h.quote(f"{600000 + i}", NOW + i), tick=False)
    settings = rest_settings.model_copy(update={"market_snapshot_max_age_s": 60.0})
    with (
        TestClient(create_app(settings, consume=False)) as c,
        c.websocket_connect(WS) as a,
        c.websocket_connect(WS) as b,
        c.websocket_connect(WS) as d,
    ):
        for request in ({"type": "subscribe_all"}, {"type": "subscribe_market", "market": "SH"}):
            for ws in (a, b, d):
                ws.send_json(request)
            for ws in (a, b, d):
                assert ws.receive_json()["type"] == "ack"
                assert len(ws.receive_json()["quotes"]) == 20
        snapshots = c.app.state.snapshots  # type: ignore[attr-defined]
        assert snapshots.market_reads == 2  # one per market, not one per subscriber


async def test_a_market_read_holds_the_loop_one_chunk_at_a_time(redis_url: str) -> None:
    """5,000 quotes read and decoded in one step held the loop up to 160 ms (every client
    waited): a market read is pipelined MARKET_READ_CHUNK codes at a time."""
    from api.snapshots import MARKET_READ_CHUNK, SnapshotReads
    from api.store import Store

    with redis.Redis.from_url(redis_url) as r:
        for i in range(2 * MARKET_READ_CHUNK + 7):
            h.write_quote(r, h.quote(f"{600000 + i}", NOW + i), tick=False)
    store = Store(redis_url)
    asked: list[int] = []
    read = store.quote_events

    async def counted(codes: list[str]) -> list[Any]:
        asked.append(len(codes))
        return await read(codes)

    store.quote_events = counted  # type: ignore[method-assign]
    try:
        events = await SnapshotReads(store, max_age_s=60).market_events("SH")
    finally:
        await store.close()
    assert len(events) == 2 * MARKET_READ_CHUNK + 7
    assert asked == [MARKET_READ_CHUNK, MARKET_READ_CHUNK, 7]


# ---- 4. keys never in URLs --------------------------------------------------------------


def test_api_key_in_the_url_is_refused(rest_settings: GatewaySettings) -> None:
    with TestClient(create_app(_keyed(rest_settings), consume=False)) as c:
        resp = c.get("/api/realtime/alerts?api_key=k-client")
        assert resp.status_code == 400 and resp.json()["error"] == "bad_request"
        assert "k-client" not in resp.text and "X-API-Key" in resp.json()["message"]
        for query in ("API_KEY=k-client", "x=1&api%5Fkey=k-client", "apikey=k-client"):
            assert c.get(f"/?{query}").status_code == 400, query
        assert c.get("/?apis=1").status_code == 200  # other parameters are left alone
        with c.websocket_connect(f"{WS}?api_key=k-client") as ws:
            err = ws.receive_json()
            assert err["code"] == "not_authenticated" and "URL" in err["message"]
            with pytest.raises(WebSocketDisconnect) as exc:
                ws.receive_json()
            assert exc.value.code == 1008


# ---- 5. not open by default ------------------------------------------------------------


def test_refuses_to_start_without_keys_unless_auth_is_off(
    rest_settings: GatewaySettings, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(Misconfigured, match="HQ_GATEWAY_AUTH=off"):
        create_app(rest_settings.model_copy(update={"auth": "on"}), consume=False)
    with caplog.at_level(logging.WARNING), TestClient(create_app(rest_settings, consume=False)):
        pass
    assert any("HQ_GATEWAY_AUTH=off" in r.getMessage() for r in caplog.records)


def test_auth_off_admin_key_still_makes_an_admin(rest_settings: GatewaySettings) -> None:
    settings = rest_settings.model_copy(update={"admin_keys": "k-admin"})
    with TestClient(create_app(GatewaySettings(**settings.model_dump()), consume=False)) as c:
        assert c.post("/api/realtime/stop").status_code == 403
        ok = c.post("/api/realtime/stop", headers={"X-API-Key": "k-admin"})
        assert ok.json() == {"pushing": False}


def test_only_hq_names_configure_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PORT": "9",
        "HOST": "0.0.0.0",
        "API_KEYS": "bare",
        "ADMIN_KEYS": "bare",
        "STATIC_DIR": "/etc",
        "AUTH": "off",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("HQ_GATEWAY_PORT", "HQ_GATEWAY_HOST", "HQ_GATEWAY_STATIC_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HQ_GATEWAY_API_KEYS", "HQ_GATEWAY_ADMIN_KEYS", "HQ_GATEWAY_AUTH"):
        monkeypatch.delenv(name, raising=False)
    s = GatewaySettings()  # type: ignore[call-arg]
    assert (s.port, s.host, s.static_dir, s.auth) == (8000, "127.0.0.1", None, "on")
    assert s.client_keys() == ()
    monkeypatch.setenv("HQ_GATEWAY_PORT", "8123")
    assert GatewaySettings().port == 8123  # type: ignore[call-arg]
    assert GatewaySettings(port=8124).port == 8124  # by field name in code
    with pytest.raises(ValueError, match="HQ_"):
        env_alias("HQ_X_", "name", "PORT")
    with pytest.raises(ValidationError):
        GatewaySettings(auth="maybe")


# ---- 6. errors ----------------------------------------------------------------------------


def test_redis_down_is_503_without_traceback(
    rest_settings: GatewaySettings, caplog: pytest.LogCaptureFixture
) -> None:
    down = rest_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with caplog.at_level(logging.WARNING), TestClient(create_app(down, consume=False)) as c:
        for path in ("/api/realtime/stock/600000", "/api/realtime/alerts"):
            resp = c.get(path)
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"] == "unavailable"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize(
    "code",
    [
        "600000%0A",
        "%EF%BC%96%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%90",
        "%D9%A6%D9%A0%D9%A0%D9%A0%D9%A0%D9%A0",
    ],
)
def test_codes_are_ascii_digits_only(client: TestClient, r: redis.Redis, code: str) -> None:
    h.write_quote(r, h.quote("600000", NOW), tick=False)
    resp = client.get(f"/api/realtime/stock/{code}")
    assert resp.status_code == 422 and resp.json()["error"] == "bad_code"
    with client.websocket_connect(WS) as ws:
        for bad in ("600000\n", "６０００００", "٦٠٠٠٠٠"):
            ws.send_json({"type": "subscribe_stock", "stock_code": bad})
            assert ws.receive_json()["code"] == "bad_code"


def test_replay_while_kafka_is_down_answers_unavailable(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:  # Kafka at 127.0.0.1:1: nothing answers
        ws.send_json({"type": "subscribe_stock", "stock_code": "600000", "since": NOW - 1000})
        assert ws.receive_json()["type"] == "ack"
        err = ws.receive_json()
        assert err["type"] == "error" and err["code"] == "unavailable", err
        assert ws.receive_json()["type"] == "replay_done"
        _pong(ws)  # still open


# ---- 7. readiness and replay fairness ------------------------------------------------------


def test_readiness_needs_redis_not_kafka_and_is_cached(
    rest_settings: GatewaySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(rest_settings, consume=False)) as c:
        probe = c.app.state.probe  # type: ignore[attr-defined]
        calls = 0
        real = probe.redis

        async def counted() -> Any:
            nonlocal calls
            calls += 1
            return await real()

        monkeypatch.setattr(probe, "redis", counted)
        monkeypatch.setattr(probe, "kafka", lambda: pytest.fail("readiness must not ask Kafka"))
        for _ in range(5):
            assert c.get("/readyz").status_code == 200  # Kafka is unreachable: still ready
        assert calls == 1
    down = rest_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down, consume=False)) as c:
        resp = c.get("/readyz")
        assert resp.status_code == 503 and resp.json()["checks"]["redis"] is False


async def test_replay_slots_are_fair_between_keys() -> None:
    slots = FairSlots(total=4, per_key=1)
    order: list[str] = []
    release = asyncio.Event()

    async def replay(key: str) -> None:
        async with slots.slot(key):
            order.append(key)
            await release.wait()

    hostile = [asyncio.create_task(replay("hostile")) for _ in range(4)]
    await asyncio.sleep(0.01)
    assert slots.running == {"hostile": 1}  # one key never holds every slot
    polite = asyncio.create_task(replay("polite"))
    await asyncio.sleep(0.01)
    assert slots.running == {"hostile": 1, "polite": 1}
    release.set()
    await asyncio.gather(*hostile, polite)
    assert order.count("hostile") == 4 and not slots.running


def test_shared_deflate_keeps_the_latest_pieces_across_a_turnover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A market snapshot's pieces (the latest quote of each code) stay compressed.

    Emptying the cache when full made the next subscribe_all compress 5,000
    quotes again (~65 ms of the event loop, every client waiting).
    """
    shared = SharedDeflate(max_cached=3)
    compressed: list[bytes] = []
    real = shared.compress
    monkeypatch.setattr(shared, "compress", lambda data: compressed.append(data) or real(data))
    for item in (b"a", b"b", b"c", b"d"):  # "d" turns the cache over
        shared.piece(item)
    assert compressed == [b"a", b"b", b"c", b"d"]
    for item in (b"a", b"b", b"c", b"d"):
        shared.piece(item)
    assert compressed == [b"a", b"b", b"c", b"d"]  # nothing compressed twice
