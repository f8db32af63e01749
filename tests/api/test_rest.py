"""REST endpoints against a real Redis with data written per the documented layout."""

from __future__ import annotations

import time

import pytest
import redis
from fastapi.testclient import TestClient

from tests.api import helpers as h
from tests.conftest import ON_BOTH_REDIS

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)


@ON_BOTH_REDIS
def test_stock_returns_the_stored_quote(client: TestClient, r: redis.Redis) -> None:
    h.write_quote(r, h.quote("000001", NOW, price=10.5))
    resp = client.get("/api/realtime/stock/000001")
    assert resp.status_code == 200
    body = resp.json()
    assert body["code"] == "000001" and body["price"] == 10.5 and body["exchange_ts"] == NOW


@pytest.mark.parametrize("bad", ["12345", "1234567", "abcdef", "00000a"])
def test_non_six_digit_code_is_422(client: TestClient, bad: str) -> None:
    resp = client.get(f"/api/realtime/stock/{bad}")
    assert resp.status_code == 422
    assert resp.json()["error"] == "bad_code"
    assert "6 digits" in resp.json()["message"]


def test_unknown_code_is_404(client: TestClient) -> None:
    resp = client.get("/api/realtime/stock/123456")
    assert resp.status_code == 404
    assert resp.json() == {"error": "not_found", "message": "no quote for stock 123456"}


def test_unknown_market_is_404_listing_valid_ones(client: TestClient) -> None:
    resp = client.get("/api/realtime/market/HK/summary")
    assert resp.status_code == 404
    body = resp.json()
    assert body["error"] == "unknown_market"
    for m in ("SH", "SZ", "BJ", "ALL"):
        assert m in body["message"]


@ON_BOTH_REDIS
def test_market_summary(client: TestClient, r: redis.Redis) -> None:
    h.write_stats(r, h.market_stats("SZ", NOW))
    resp = client.get("/api/realtime/market/sz/summary")
    assert resp.status_code == 200
    assert resp.json()["market"] == "SZ" and resp.json()["top_gainers"][0]["code"] == "600000"
    assert client.get("/api/realtime/market/BJ/summary").status_code == 404


@ON_BOTH_REDIS
def test_quotes_many(client: TestClient, r: redis.Redis) -> None:
    h.write_quote(r, h.quote("000001", NOW))
    h.write_quote(r, h.quote("600519", NOW, price=11.0))
    resp = client.get("/api/realtime/quotes", params={"codes": "000001,600519,300750"})
    assert resp.status_code == 200
    body = resp.json()
    assert [q["code"] for q in body["quotes"]] == ["000001", "600519"]
    assert body["missing"] == ["300750"]
    bad = client.get("/api/realtime/quotes", params={"codes": "000001,12"})
    assert bad.status_code == 422 and bad.json()["error"] == "bad_code"


@ON_BOTH_REDIS
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_the_all_ranking_is_the_markets_merged_as_one_zset_would_order_them(
    client: TestClient, r: redis.Redis, order: str
) -> None:
    """ALL has no ZSET of its own: its rows are the markets' first ones merged, ties
    in code order as in a ZSET (reversed when descending); one ZSET of every stock is
    the reference."""
    prices = (10.5, 9.5, 10.9, 10.5, 9.0, 11.0, 10.5, 9.5)  # ties across markets
    codes = ("600001", "000002", "900003", "000004", "600005", "900006", "600007", "000008")
    for code, price in zip(codes, prices, strict=True):
        h.write_quote(r, h.quote(code, NOW, price=price))
        r.zadd("{reference}:rank", {code: h.quote(code, NOW, price=price)["change_pct"]})
    for limit in (1, 3, 4, 8, 20):
        got = client.get(
            "/api/realtime/rank/ALL/change_pct", params={"limit": limit, "order": order}
        )
        assert got.status_code == 200
        expected = r.zrange("{reference}:rank", 0, limit - 1, desc=order == "desc", withscores=True)
        assert [(i["code"], i["value"]) for i in got.json()["items"]] == [
            (code.decode(), score) for code, score in expected
        ]


@ON_BOTH_REDIS
def test_rank(client: TestClient, r: redis.Redis) -> None:
    for i, price in enumerate((10.5, 9.5, 10.9)):
        h.write_quote(r, h.quote(f"00000{i + 1}", NOW, price=price))
    resp = client.get("/api/realtime/rank/SZ/change_pct", params={"limit": 2})
    assert resp.status_code == 200
    items = resp.json()["items"]
    assert [(i["rank"], i["code"]) for i in items] == [(1, "000003"), (2, "000001")]
    assert items[0]["value"] == pytest.approx(9.0) and items[0]["name"] == "N000003"
    asc = client.get("/api/realtime/rank/ALL/change_pct", params={"order": "asc", "limit": 1})
    assert asc.json()["items"][0]["code"] == "000002"
    unknown = client.get("/api/realtime/rank/SZ/pe_ratio")
    assert unknown.status_code == 404 and "change_pct" in unknown.json()["message"]
    assert client.get("/api/realtime/rank/XX/amount").status_code == 404
    assert client.get("/api/realtime/rank/SZ/amount", params={"order": "up"}).status_code == 422


@ON_BOTH_REDIS
def test_candles(client: TestClient, r: redis.Redis) -> None:
    minute = NOW - NOW % 60000
    h.write_quote(r, h.quote("000001", NOW))
    for m in (minute, minute - 60000):
        h.write_candle(r, h.candle("000001", m, closed=m != minute))
    day = h.candle("000001", minute)["trade_date"]
    resp = client.get("/api/realtime/candles/000001", params={"date": day})
    assert resp.status_code == 200
    got = resp.json()["candles"]
    assert [c["minute_ts"] for c in got] == [minute - 60000, minute]
    assert got[-1]["closed"] is False
    assert (
        client.get("/api/realtime/candles/000001", params={"date": "2024/01/01"}).status_code == 422
    )
    assert client.get("/api/realtime/candles/999999").status_code == 404


@ON_BOTH_REDIS
def test_ticks_range_and_limit(client: TestClient, r: redis.Redis) -> None:
    base = NOW - 100_000
    for i in range(10):
        h.write_quote(r, h.quote("600519", base + i * 3000, price=10 + i / 10))
    resp = client.get("/api/realtime/ticks/600519", params={"limit": 3})
    assert [t["exchange_ts"] for t in resp.json()["ticks"]] == [
        base + 21000,
        base + 24000,
        base + 27000,
    ]
    resp = client.get(
        "/api/realtime/ticks/600519", params={"start": base + 3000, "end": base + 9000}
    )
    assert [t["exchange_ts"] for t in resp.json()["ticks"]] == [
        base + 3000,
        base + 6000,
        base + 9000,
    ]
    assert (
        client.get("/api/realtime/ticks/600519", params={"start": 5, "end": 1}).status_code == 422
    )
    assert client.get("/api/realtime/ticks/123456").status_code == 404


@ON_BOTH_REDIS
def test_alerts_newest_first(client: TestClient, r: redis.Redis) -> None:
    for i in range(5):
        h.write_alert(r, h.alert(f"00000{i}", NOW + i))
    resp = client.get("/api/realtime/alerts", params={"limit": 2})
    assert [a["code"] for a in resp.json()["alerts"]] == ["000004", "000003"]


def test_health_metrics_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    # REST needs Redis only: Kafka at 127.0.0.1:1 (unreachable, not consumed) does not matter
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": True, "consumer": True}
    assert "hq_gateway_ws_connections" in client.get("/metrics").text
    spec = client.get("/openapi.json").json()
    quote_schema = spec["paths"]["/api/realtime/stock/{code}"]["get"]["responses"]["200"]
    assert quote_schema["content"]["application/json"]["schema"]["$ref"].endswith("/Quote")


def test_status_reports_every_component(client: TestClient) -> None:
    resp = client.get("/api/realtime/status")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body["components"]) == {"receiver", "streams", "redis", "kafka", "gateway_consumer"}
    assert body["components"]["redis"]["ok"] is True
    assert body["components"]["receiver"]["ok"] is False
    assert body["ok"] is False


def test_anonymous_callers_are_never_admins(client: TestClient) -> None:
    """Auth off: anyone may read, nobody without an admin key may stop the push."""
    for action in ("stop", "start"):
        resp = client.post(f"/api/realtime/{action}")
        assert resp.status_code == 403 and resp.json()["error"] == "forbidden"
    assert client.get("/api/realtime/alerts").status_code == 200


def test_dashboard_mount_without_static_files(rest_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app

    missing = rest_settings.model_copy(update={"static_dir": str(tmp_path / "none")})
    with TestClient(create_app(missing, consume=False)) as c:
        assert c.get("/").status_code == 404
        assert c.get("/dashboard").status_code == 404
        assert c.get("/healthz").status_code == 200
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("<h1>hq</h1>")
    (tmp_path / "www" / "app.js").write_text("1")
    present = rest_settings.model_copy(update={"static_dir": str(tmp_path / "www")})
    with TestClient(create_app(present, consume=False)) as c:
        assert "<h1>hq</h1>" in c.get("/").text
        assert "<h1>hq</h1>" in c.get("/dashboard").text
        assert c.get("/app.js").text == "1"


def test_candles_default_to_the_stocks_trade_date(client: TestClient, r: redis.Redis) -> None:
    """Without ``date`` the candles are those of the day of the stock's latest quote:
    the exchange's day, whatever the date on the server's clock (a replayed or
    simulated day, or a server past midnight in Shanghai)."""
    past = 1_781_661_600_000  # 2026-06-17 10:00 Shanghai
    minute = past - past % 60_000
    h.write_quote(r, h.quote("000002", past))
    h.write_candle(r, h.candle("000002", minute))
    resp = client.get("/api/realtime/candles/000002")
    assert resp.status_code == 200
    body = resp.json()
    assert body["date"] == "2026-06-17"
    assert [c["minute_ts"] for c in body["candles"]] == [minute]
