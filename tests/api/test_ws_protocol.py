"""The WebSocket protocol with TestClient: acks, snapshots, every error code, limits, auth."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from api.settings import GatewaySettings
from tests.api import helpers as h

pytestmark = pytest.mark.integration

WS = "/api/realtime/ws"
NOW = int(time.time() * 1000)


def _ack(ws: Any, request: str) -> dict[str, Any]:
    msg = ws.receive_json()
    assert msg["type"] == "ack", msg
    assert msg["request"] == request
    subs: dict[str, Any] = msg["subscriptions"]
    return subs


def test_ack_carries_the_full_subscription_set(client: TestClient, r: redis.Redis) -> None:
    h.write_quote(r, h.quote("000001", NOW, price=10.3))
    with client.websocket_connect(WS) as ws:
        ws.send_json({"type": "subscribe_stock", "stock_code": "000001"})
        assert _ack(ws, "subscribe_stock")["stocks"] == ["000001"]
        snap = ws.receive_json()
        assert snap["type"] == "snapshot"
        assert [q["code"] for q in snap["quotes"]] == ["000001"]
        assert snap["quotes"][0]["price"] == 10.3
        ws.send_json({"type": "subscribe_market", "market": "sh"})
        subs = _ack(ws, "subscribe_market")
        assert subs["markets"] == ["SH"] and subs["stocks"] == ["000001"]
        assert ws.receive_json() == {"type": "snapshot", "market": "SH", "quotes": []}
        ws.send_json({"type": "subscribe_stats"})
        assert _ack(ws, "subscribe_stats")["stats"] is True
        assert ws.receive_json() == {"type": "snapshot", "stats": []}
        ws.send_json({"type": "subscribe_alerts"})
        assert _ack(ws, "subscribe_alerts")["alerts"] is True
        ws.send_json({"type": "subscribe_all"})
        assert _ack(ws, "subscribe_all")["all"] is True
        assert [q["code"] for q in ws.receive_json()["quotes"]] == ["000001"]
        ws.send_json({"type": "unsubscribe_stock", "stock_code": "000001"})
        subs = _ack(ws, "unsubscribe_stock")
        assert subs == {
            "stocks": [],
            "markets": ["SH"],
            "all": True,
            "stats": True,
            "alerts": True,
            "candles": [],
            "candle_streams": {},
        }
        ws.send_json({"type": "ping", "id": 7})
        pong = ws.receive_json()
        assert (
            pong["type"] == "pong"
            and pong["id"] == 7
            and abs(pong["ts"] - time.time() * 1000) < 5000
        )


def test_candles_and_stats_snapshots(client: TestClient, r: redis.Redis) -> None:
    minute = NOW - NOW % 60000
    h.write_candle(r, h.candle("000001", minute, closed=False))
    h.write_candle(r, h.candle("000001", minute - 60000))
    h.write_stats(r, h.market_stats("SZ", NOW))
    with client.websocket_connect(WS) as ws:
        ws.send_json({"type": "subscribe_candles", "stock_code": "000001"})
        assert _ack(ws, "subscribe_candles")["candles"] == ["000001"]
        snap = ws.receive_json()
        assert [c["minute_ts"] for c in snap["candles"]] == [minute - 60000, minute]
        ws.send_json({"type": "subscribe_stats"})
        _ack(ws, "subscribe_stats")
        assert [s["market"] for s in ws.receive_json()["stats"]] == ["SZ"]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "bad_request"),
        ([1, 2], "bad_request"),
        ({"type": "fly"}, "unknown_type"),
        ({"type": "subscribe_stock", "stock_code": "12345"}, "bad_code"),
        ({"type": "subscribe_stock"}, "bad_code"),
        ({"type": "subscribe_candles", "stock_code": "abcdef"}, "bad_code"),
        ({"type": "subscribe_market", "market": "HK"}, "bad_market"),
        ({"type": "subscribe_stock", "stock_code": "000001", "since": "yesterday"}, "bad_request"),
        ({"type": "subscribe_stock", "stock_code": "000001", "since": 1}, "bad_request"),
        ({"type": "auth", "api_key": "x"}, "bad_request"),
    ],
)
def test_errors_have_a_code_and_keep_the_connection(
    client: TestClient, message: Any, code: str
) -> None:
    with client.websocket_connect(WS) as ws:
        if isinstance(message, str):
            ws.send_text(message)
        else:
            ws.send_json(message)
        err = ws.receive_json()
        assert err["type"] == "error" and err["code"] == code and err["message"]
        ws.send_json({"type": "ping", "id": 1})
        assert ws.receive_json()["type"] == "pong"  # still open


def test_too_many_subscriptions(rest_settings: GatewaySettings) -> None:
    settings = rest_settings.model_copy(update={"max_stocks_per_connection": 2})
    with TestClient(create_app(settings, consume=False)) as c, c.websocket_connect(WS) as ws:
        for code in ("000001", "000002"):
            ws.send_json({"type": "subscribe_stock", "stock_code": code})
            _ack(ws, "subscribe_stock")
            ws.receive_json()  # snapshot
        ws.send_json({"type": "subscribe_candles", "stock_code": "000001"})  # same code: ok
        _ack(ws, "subscribe_candles")
        ws.receive_json()
        ws.send_json({"type": "subscribe_stock", "stock_code": "000003"})
        err = ws.receive_json()
        assert err["code"] == "too_many_subscriptions" and "2" in err["message"]


def test_abusive_client_is_closed_1008(rest_settings: GatewaySettings) -> None:
    settings = rest_settings.model_copy(update={"invalid_per_second": 3})
    with TestClient(create_app(settings, consume=False)) as c, c.websocket_connect(WS) as ws:
        for _ in range(4):
            ws.send_text("garbage")
        codes = [ws.receive_json()["code"] for _ in range(5)]
        assert codes == ["bad_request"] * 4 + ["rate_limited"]
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
        assert exc.value.code == 1008


def _keyed(rest_settings: GatewaySettings, **over: Any) -> GatewaySettings:
    return GatewaySettings(
        **{
            **rest_settings.model_dump(),
            "auth": "on",
            "api_keys": "k-client",
            "admin_keys": "k-admin",
            **over,
        }
    )


def _auth(ws: Any, key: str) -> None:
    ws.send_json({"type": "auth", "api_key": key})


def test_rest_auth(rest_settings: GatewaySettings) -> None:
    with TestClient(create_app(_keyed(rest_settings), consume=False)) as c:
        resp = c.get("/api/realtime/alerts")
        assert resp.status_code == 401 and resp.json()["error"] == "not_authenticated"
        assert c.get("/api/realtime/alerts", headers={"X-API-Key": "nope"}).status_code == 401
        assert c.get("/api/realtime/alerts", headers={"X-API-Key": "k-client"}).status_code == 200
        assert c.get("/api/realtime/alerts", headers={"X-API-Key": "k-admin"}).status_code == 200
        stop = c.post("/api/realtime/stop", headers={"X-API-Key": "k-client"})
        assert stop.status_code == 403 and stop.json()["error"] == "forbidden"
        assert "k-client" not in stop.text
        ok = c.post("/api/realtime/stop", headers={"X-API-Key": "k-admin"})
        assert ok.json() == {"pushing": False}
        assert c.get("/healthz").status_code == 200  # probes stay open


def test_ws_auth_by_first_message(rest_settings: GatewaySettings) -> None:
    settings = _keyed(rest_settings, auth_deadline_s=0.5)
    with TestClient(create_app(settings, consume=False)) as c:
        with c.websocket_connect(WS) as ws:
            ws.send_json({"type": "auth", "api_key": "k-admin"})
            ws.send_json({"type": "ping"})
            assert ws.receive_json()["type"] == "pong"
        with c.websocket_connect(WS) as ws:
            ws.send_json({"type": "auth", "api_key": "wrong"})
            assert ws.receive_json()["code"] == "not_authenticated"
            with pytest.raises(WebSocketDisconnect) as exc:
                ws.receive_json()
            assert exc.value.code == 1008
        with c.websocket_connect(WS) as ws:  # says nothing: deadline
            assert ws.receive_json()["code"] == "not_authenticated"
            with pytest.raises(WebSocketDisconnect) as exc:
                ws.receive_json()
            assert exc.value.code == 1008


def test_connections_per_key(rest_settings: GatewaySettings) -> None:
    settings = _keyed(rest_settings, max_connections_per_key=1)
    with (
        TestClient(create_app(settings, consume=False)) as c,
        c.websocket_connect(WS) as first,
    ):
        _auth(first, "k-client")
        first.send_json({"type": "ping"})
        first.receive_json()
        with c.websocket_connect(WS) as second:
            _auth(second, "k-client")
            with pytest.raises(WebSocketDisconnect) as exc:
                second.receive_json()
            assert exc.value.code == 1013
        with c.websocket_connect(WS) as other_key:
            _auth(other_key, "k-admin")
            other_key.send_json({"type": "ping"})
            assert other_key.receive_json()["type"] == "pong"
