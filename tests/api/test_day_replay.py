"""``replay_day``: a private replay of an archived day over WebSocket (api.day_replay).

The archive is written by the real archiver (fake Kafka messages, a real
directory). Pacing runs on a clock that moves only when the replay sleeps;
the protocol tests go through TestClient with a real Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import day_replay
from api.app import create_app
from api.day_replay import DayReader, DayReplayError, DayReplayRequest, stream_day
from api.settings import GatewaySettings
from api.ws_session import Session
from archive.archiver import Archiver
from schemas import topics
from tests.archive.fakes import FakeClock, feed, record_messages, settings
from tests.archive.records import trading_day
from tests.archive.test_replay import VirtualTime as SyncVirtualTime

DATE = "2026-11-23"
SNAPSHOTS = 100
WS = "/api/realtime/ws"
DAY = trading_day(DATE, SNAPSHOTS)


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    archiver = Archiver(settings(str(root), roll_bytes=20_000), clock=FakeClock())
    feed(archiver, record_messages(topics.NORMALIZED, "quote", DAY.quotes))
    archiver.flush_due(force=True)
    return root


class VirtualTime(SyncVirtualTime):
    """A clock that moves only when the replay sleeps (asynchronously here)."""

    async def sleep(self, seconds: float) -> None:  # type: ignore[override]
        super().sleep(seconds)
        await asyncio.sleep(0)


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, text: bytes) -> None:
        self.messages.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        pass

    async def done(self, timeout: float = 30.0) -> None:
        """Until the session's sender has sent ``day_replay_done``."""
        async with asyncio.timeout(timeout):
            while not (self.messages and self.messages[-1]["type"] == "day_replay_done"):
                await asyncio.sleep(0.001)


async def _replay(
    root: Path, request: DayReplayRequest
) -> tuple[list[dict[str, Any]], VirtualTime]:
    sent = Sent()
    session = Session(1, "k", sent.send, sent.close, flush_interval_s=0.001, max_pending_quotes=10)
    session.start()
    vt = VirtualTime()
    reader = await asyncio.to_thread(DayReader, str(root), request)
    await stream_day(session, reader, clock=vt.clock, sleep=vt.sleep)
    await sent.done()
    await session.stop()
    return sent.messages, vt


async def test_a_stocks_day_comes_whole_in_order_at_its_pace(archive_root: Path) -> None:
    messages, vt = await _replay(archive_root, DayReplayRequest(DATE, 10.0, code="600519"))
    *data, done = messages
    assert {m["type"] for m in data} == {"day_replay"}
    assert all(m["stock_code"] == "600519" and m["date"] == DATE for m in data)
    got = [q for m in data for q in m["data"]]
    assert got == [q for q in DAY.quotes if q["code"] == "600519"]  # every field, in order
    assert done == {"type": "day_replay_done", "date": DATE, "stock_code": "600519",
                    "replayed": SNAPSHOTS}  # fmt: skip
    assert vt.sleeps == [pytest.approx(0.3)] * (SNAPSHOTS - 1)  # 3 s apart at 10x


async def test_a_market_replay_sends_what_is_due_together_in_one_message(
    archive_root: Path,
) -> None:
    messages, vt = await _replay(archive_root, DayReplayRequest(DATE, 1000.0, market="SH"))
    data = [m for m in messages if m["type"] == "day_replay"]
    sh = [q for q in DAY.quotes if q["market"] == "SH"]
    assert sorted((q["exchange_ts"], q["code"]) for m in data for q in m["data"]) == sorted(
        (q["exchange_ts"], q["code"]) for q in sh
    )
    assert len(data) == SNAPSHOTS  # the three SH stocks of a snapshot share a message
    assert all(len({q["exchange_ts"] for q in m["data"]}) == 1 for m in data)
    assert sum(vt.sleeps) == pytest.approx((SNAPSHOTS - 1) * 3.0 / 1000)


async def test_a_client_that_does_not_read_stops_the_reading(
    archive_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backpressure: past a bound of queued bytes no further chunk is read."""
    monkeypatch.setattr(day_replay, "CHUNK_ROWS", 10)
    monkeypatch.setattr(day_replay, "QUEUED_BYTES_BEFORE_NEXT_CHUNK", 20_000)
    sent = Sent()
    session = Session(1, "k", sent.send, sent.close, flush_interval_s=0.001, max_pending_quotes=10)
    reader = await asyncio.to_thread(
        DayReader, str(archive_root), DayReplayRequest(DATE, 1e6, market="SZ")
    )
    chunks = 0
    read_chunk = reader.read_chunk

    def counted() -> list[tuple[int, bytes]]:
        nonlocal chunks
        chunks += 1
        return read_chunk()

    reader.read_chunk = counted  # type: ignore[method-assign]
    vt = VirtualTime()
    task = asyncio.create_task(stream_day(session, reader, clock=vt.clock, sleep=vt.sleep))
    for _ in range(200):
        await asyncio.sleep(0.005)
    assert not task.done() and session.queued_bytes < 20_000 + 10 * 1000
    assert chunks <= 20_000 // (10 * 600) + 2  # 200 SZ quotes in 20 chunks: most never read
    session.start()  # the client reads again: the replay goes on to the end
    await asyncio.wait_for(task, 30)
    await sent.done()
    await session.stop()
    assert sent.messages[-1]["replayed"] == 2 * SNAPSHOTS


def test_a_day_not_archived_is_no_such_day(archive_root: Path) -> None:
    with pytest.raises(DayReplayError) as err:
        DayReader(str(archive_root), DayReplayRequest("2026-11-20", 1.0, code="600000"))
    assert err.value.code == "no_such_day"


def _errors(ws: Any, request: dict[str, Any]) -> str:
    ws.send_json(request)
    msg = ws.receive_json()
    assert msg["type"] == "error", msg
    return str(msg["code"])


@pytest.mark.integration
def test_replay_day_over_websocket(rest_settings: GatewaySettings, archive_root: Path) -> None:
    settings = rest_settings.model_copy(
        update={"archive_root": str(archive_root), "day_replay_max_speed": 1e6}
    )
    with (
        TestClient(create_app(settings, consume=False)) as client,
        client.websocket_connect(WS) as ws,
    ):
        bad = {"type": "replay_day", "date": DATE, "code": "600000"}
        assert _errors(ws, {**bad, "date": "2026-13-01"}) == "bad_request"
        assert _errors(ws, {**bad, "speed": 1e7}) == "bad_request"  # over the cap
        assert _errors(ws, {**bad, "speed": 0}) == "bad_request"
        assert _errors(ws, {**bad, "code": "60000x"}) == "bad_code"
        assert _errors(ws, {**bad, "date": "2026-11-20"}) == "no_such_day"
        ws.send_json({**bad, "speed": 1e6})
        assert ws.receive_json()["request"] == "replay_day"
        assert _errors(ws, {**bad, "speed": 1e6}) == "rate_limited"  # one per key at once
        ws.send_json({"type": "ping", "id": 7})  # live requests are served meanwhile
        got: list[dict[str, Any]] = []
        types: list[str] = []
        while "day_replay_done" not in types:
            msg = ws.receive_json()
            types.append(msg["type"])
            got += msg.get("data", []) if msg["type"] == "day_replay" else []
        assert "pong" in types
        assert got == [q for q in DAY.quotes if q["code"] == "600000"]
        ws.send_json({**bad, "speed": 1e6})  # the slot is free again
        assert ws.receive_json()["request"] == "replay_day"
        # read to its end: leaving mid-replay is the next test (left here, the test
        # client cancels the app task if the server is still ending the replay)
        while ws.receive_json()["type"] != "day_replay_done":
            pass


@pytest.mark.integration
def test_leaving_mid_replay_ends_the_replay_and_frees_its_slot(
    rest_settings: GatewaySettings, archive_root: Path
) -> None:
    settings = rest_settings.model_copy(update={"archive_root": str(archive_root)})
    app = create_app(settings, consume=False)
    with TestClient(app) as client, client.websocket_connect(WS) as ws:
        # at the real pace: the day takes hours, so it is running when the client leaves
        ws.send_json({"type": "replay_day", "date": DATE, "code": "600000", "speed": 1})
        assert ws.receive_json()["request"] == "replay_day"
        limits = app.state.day_replay_limits
        assert limits.running, "the replay holds its slot"
        ws.close()
        deadline = time.monotonic() + 30
        while limits.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert limits.running == {}, "the replay ended with the connection"


@pytest.mark.integration
def test_replay_day_without_an_archive_is_no_archive(rest_settings: GatewaySettings) -> None:
    with (
        TestClient(create_app(rest_settings, consume=False)) as client,
        client.websocket_connect(WS) as ws,
    ):
        assert _errors(ws, {"type": "replay_day", "date": DATE, "code": "600000"}) == "no_archive"
