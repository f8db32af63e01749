"""The live dashboard in a real browser, against the real gateway, Redis and Kafka.

The test seeds Redis (per schemas/redis_keys.py) with a realistic A-share day,
starts the gateway (api.app via uvicorn) on a free loopback port with a topic
prefix and an API key, produces live Avro quotes / market stats / alerts /
candles to uuid topics from a background thread, opens the page in Debian's
headless Chromium (never a downloaded browser) and checks what a person would
see: summaries render, prices change and flash, the candlestick canvas is drawn.
It saves a full-page screenshot to test-artifacts/ only (`make screenshot` copies
it to docs/images/ for the README). It never talks to anything but loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas import topics
from schemas.exchange import MARKETS_AND_ALL
from tests.api.dashboard_market import WATCH, LiveFeed, MarketSim
from tests.conftest import KafkaEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "dashboard.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Gateway:
    """The real gateway app in a uvicorn subprocess; ``stop``/``start`` keep the port."""

    def __init__(self, env: dict[str, str], port: int, api_key: str, log: Path) -> None:
        self.env, self.port, self.api_key, self.log = env, port, api_key, log
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.prefix = env.get("HQ_TOPIC_PREFIX", "")

    def start(self) -> None:
        app = ["--factory", "api.app:create_app", "--log-level", "warning"]
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            *app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                resp = httpx.get(
                    f"{self.base_url}/api/realtime/status", headers={"X-API-Key": self.api_key}
                )
                consumer = resp.json().get("components", {}).get("gateway_consumer", {})
                if resp.status_code == 200 and consumer.get("ok"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, "gateway not ready in 60 s: " + self.log.read_text()
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def gateway(kafka: KafkaEndpoint, redis_url: str, tmp_path: Path) -> Iterator[Gateway]:
    """The gateway on its own uuid-prefixed topics, Redis database, port and API key."""
    prefix = f"dash{uuid.uuid4().hex[:10]}."
    for spec in topics.topic_specs(partitions=3):
        kafka.create(prefix + spec.name, spec.partitions)
    port, key = _free_port(), uuid.uuid4().hex
    env = {
        **os.environ,
        "HQ_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "HQ_REDIS_URL": redis_url,
        "HQ_TOPIC_PREFIX": prefix,
        "HQ_GATEWAY_API_KEYS": key,
        "HQ_GATEWAY_STATIC_DIR": str(ROOT / "api" / "static"),
        "PYTHONFAULTHANDLER": "1",  # a crash leaves its traceback in the log
    }
    gw = Gateway(env, port, key, tmp_path / "gateway.log")
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


HAS_INDICATOR = """name => [...window.hqDashboard.state.candles.values()].some(
  c => c.indicators && Number.isFinite(c.indicators[name]))"""
MA5_COLOR = [240, 185, 11]  # api/static/chart.js MA_LINES
CANVAS_COLOR = """([r0, g0, b0]) => {
  const c = document.getElementById("chart");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
    if (Math.abs(r - r0) < 30 && Math.abs(g - g0) < 30 && Math.abs(b - b0) < 30) n++;
  }
  return n;
}"""
CANVAS_PIXELS = """() => {
  const c = document.getElementById("chart");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let up = 0, down = 0, ink = 0;
  for (let i = 0; i < d.length; i += 4) {
    const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
    if (r > 200 && g < 90 && b < 110) up++;
    else if (g > 150 && r < 60 && b > 90) down++;
    if (Math.abs(r - 17) + Math.abs(g - 23) + Math.abs(b - 34) > 30) ink++;
  }
  return { up, down, ink, width: c.width, height: c.height };
}"""


def test_dashboard_renders_live_data(
    gateway: Gateway, redis_url: str, kafka: KafkaEndpoint
) -> None:
    from playwright.sync_api import sync_playwright

    sim = MarketSim()
    sim.seed_redis(redis_url)
    live = LiveFeed(sim, kafka.bootstrap, gateway.prefix)
    live.send_history("000002", HISTORY_MINUTES)
    live.start()
    errors: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            try:
                _check_page(page, gateway, sim, live)
            finally:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            _check_market_feed(page, gateway)
            _check_reconnect(page, gateway)
            browser.close()
    finally:
        live.halt.set()
        live.join(20)
    assert live.error is None, repr(live.error)
    assert errors == [], errors


HISTORY_MINUTES = 30
TEXT_CHANGED = "([sel, t]) => (document.querySelector(sel)?.textContent ?? t) !== t"
HAS_DIGIT = "sel => /\\d/.test(document.querySelector(sel)?.textContent || '')"
CONN_IS = "s => document.getElementById('conn').dataset.state === s"


ALERTS_SHOWN = """key => {
  const shown = [...document.querySelectorAll('#alerts li[data-key]')].map(li => li.dataset.key);
  const kept = window.hqDashboard.state.alerts.map(a => [a.code, a.kind, a.exchange_ts].join('|'));
  return kept.length >= 40 && shown.length === kept.length && shown.every((k, i) => k === kept[i])
    && document.getElementById('alerts-count').textContent === String(kept.length)
    && shown.includes(key);
}"""


def _price(code: str) -> str:
    return f'#watch-body tr[data-code="{code}"] td.c-price'


def _check_page(page: Any, gw: Gateway, sim: MarketSim, live: LiveFeed) -> None:
    # without #api_key= the gateway refuses: the page says so instead of spinning
    page.goto(f"{gw.base_url}/dashboard", wait_until="domcontentloaded")
    page.wait_for_function(CONN_IS, arg="auth")
    page.wait_for_selector("#banner:not([hidden])")
    assert "api_key" in page.locator("#banner").inner_text()

    page.goto(f"{gw.base_url}/#api_key={gw.api_key}", wait_until="domcontentloaded")
    page.wait_for_function(CONN_IS, arg="open")

    # market summaries: REST first, then live stats messages
    for market in MARKETS_AND_ALL:
        count = sum(1 for s in sim.stocks.values() if market in ("ALL", s.market))
        card = f'.card[data-market="{market}"]'
        page.wait_for_function(
            "([sel, n]) => document.querySelector(sel)?.textContent.replace(/,/g, '') === n",
            arg=[f"{card} .card-avg-label .num", str(count)],
        )
        assert page.locator(f"{card} .card-avg").inner_text().endswith("%")
        amount_yi = page.locator(f"{card} .kv .v").nth(3).inner_text()
        assert float(amount_yi.replace(",", "")) > 0

    # the live table: values arrive, then change, and the changed cell flashes
    page.wait_for_function(HAS_DIGIT, arg=_price("600519"))
    first = page.locator(_price("600519")).inner_text()
    page.wait_for_function(TEXT_CHANGED, arg=[_price("600519"), first], timeout=20_000)
    page.wait_for_selector("#watch-body .flash-up, #watch-body .flash-down", state="attached")
    assert page.locator("#watch-body tr").count() == len(WATCH)
    assert "贵州茅台" in page.locator('#watch-body tr[data-code="600519"] .c-name').inner_text()

    # rankings and alerts are populated; the header shows the server clock and rates
    page.wait_for_function("document.querySelectorAll('.rank li[data-code]').length >= 30")
    # alerts: the 40 seeded in Redis (REST) and live ones (WebSocket) arrive in any
    # order; the list always shows exactly the page's alerts, newest first, and an
    # alert this test sends appears in it
    mine = sim.alert(sim.stocks["600519"], sim.now_ms())
    mine["message"] = "test alert " + uuid.uuid4().hex[:8]
    live.send_alert(mine)
    page.wait_for_function(ALERTS_SHOWN, arg=f"{mine['code']}|{mine['kind']}|{mine['exchange_ts']}")
    page.wait_for_function(HAS_DIGIT, arg="#server-time")
    page.wait_for_function("Number(document.getElementById('upd-rate').textContent) > 0")

    # candlestick chart: REST history plus live candles, drawn on the canvas
    page.wait_for_function(
        "m => [...window.hqDashboard.state.candles.keys()].some(k => k >= m)",
        arg=sim.start_ms + 60_000,
        timeout=30_000,
    )
    pixels = page.evaluate(CANVAS_PIXELS)
    assert pixels["up"] > 300 and pixels["down"] > 300, pixels
    assert pixels["ink"] > 0.02 * pixels["width"] * pixels["height"], pixels

    # indicators: MA overlays and the MACD pane from the bars' values (REST, then live)
    page.wait_for_function(HAS_INDICATOR, arg="macd")
    assert page.evaluate(CANVAS_COLOR, MA5_COLOR) > 100  # the MA5 line is drawn
    # the timeframe switch: 5-minute bars with their MAs, then the RSI pane
    page.click('#tf-tabs button[data-tf="5m"]')
    page.wait_for_function(
        "() => window.hqDashboard.state.tf === '5m' && window.hqDashboard.state.candles.size >= 15"
    )
    page.wait_for_function(HAS_INDICATOR, arg="ma10")
    starts = page.evaluate("() => [...window.hqDashboard.state.candles.keys()]")
    assert all((t - sim.open_ms) % 300_000 == 0 for t in starts), starts
    page.click('#pane-tabs button[data-pane="rsi"]')
    page.wait_for_function("() => window.hqDashboard.state.pane === 'rsi'")
    page.wait_for_function(HAS_INDICATOR, arg="rsi6")
    page.wait_for_timeout(300)  # a frame
    assert page.evaluate(CANVAS_COLOR, MA5_COLOR) > 50  # MA5 and RSI6 share the colour
    page.click('#pane-tabs button[data-pane="macd"]')
    page.click('#tf-tabs button[data-tf="1m"]')
    page.wait_for_function("window.hqDashboard.state.candles.size > 60")

    # keyboard: select another stock with Enter; the chart follows it
    row = page.locator('#watch-body tr[data-code="300750"]')
    row.focus()
    page.keyboard.press("Enter")
    assert row.get_attribute("aria-selected") == "true"
    page.wait_for_function("window.hqDashboard.state.candles.size > 60")
    assert "宁德时代" in page.locator("#chart-quote").inner_text()

    # the add box rejects a bad code and adds a good one
    page.fill("#add-code", "12345")
    page.press("#add-code", "Enter")
    assert page.locator("#add-code").get_attribute("aria-invalid") == "true"
    page.fill("#add-code", "000002")
    page.press("#add-code", "Enter")
    page.wait_for_function(HAS_DIGIT, arg=_price("000002"))
    # 000002 has no candles in Redis, only its day's quotes in Kafka: selecting it
    # back-fills the chart from a replay (one candle per minute of history)
    page.locator('#watch-body tr[data-code="000002"]').click()
    page.wait_for_function(
        "n => window.hqDashboard.state.candles.size >= n", arg=HISTORY_MINUTES, timeout=30_000
    )
    assert "万科A" in page.locator("#chart-quote").inner_text()
    page.locator('#watch-body tr[data-code="000002"] .rm').click()
    assert page.locator('#watch-body tr[data-code="000002"]').count() == 0

    # sorting by a header: Chg% descending, then back to the watchlist order
    header = page.locator('th[data-sort="change_pct"]')
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    # quotes keep moving, so the table re-sorts (at most once a second): wait for a sorted frame
    page.wait_for_function(
        """() => {
          const cells = document.querySelectorAll('#watch-body .c-pct');
          const v = [...cells].map(c => parseFloat(c.textContent));
          return v.length > 5 && v.every((x, i) => i === 0 || v[i - 1] >= x);
        }"""
    )
    header.click()
    header.click()
    assert header.get_attribute("aria-sort") == "none"

    # the colour convention is a visible toggle
    page.click("#conv-toggle")
    assert "conv-us" in (page.locator("body").get_attribute("class") or "")
    page.click("#conv-toggle")
    assert "conv-cn" in (page.locator("body").get_attribute("class") or "")

    # back to the first stock for the screenshot, with live data flowing a moment
    page.locator('#watch-body tr[data-code="000001"]').click()
    page.wait_for_function("window.hqDashboard.state.candles.size > 60")
    page.mouse.move(0, 0)
    page.wait_for_timeout(2000)


def _check_reconnect(page: Any, gw: Gateway) -> None:
    """The gateway goes away and comes back: the page backs off, then resumes live."""
    gw.stop()
    page.wait_for_function(CONN_IS, arg="reconnecting")
    assert "Reconnecting" in page.locator("#conn-text").inner_text()
    gw.start()
    page.wait_for_function(CONN_IS, arg="open", timeout=45_000)
    before = page.locator(_price("000001")).inner_text()
    page.wait_for_function(TEXT_CHANGED, arg=[_price("000001"), before], timeout=20_000)


def _check_market_feed(page: Any, gw: Gateway) -> None:
    """``?market=SZ`` streams a whole market: its codes join the table, capped at 200 rows."""
    page.goto(f"{gw.base_url}/?market=SZ#api_key={gw.api_key}", wait_until="domcontentloaded")
    page.wait_for_function("document.querySelectorAll('#watch-body tr').length === 200")
    page.wait_for_timeout(1500)
    assert page.locator("#watch-body tr").count() == 200
    codes = page.locator("#watch-body tr").evaluate_all("rows => rows.map(r => r.dataset.code)")
    assert set(WATCH) <= set(codes)
    assert sum(1 for c in codes if c[0] in "03") > 190
