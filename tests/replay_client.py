"""A WebSocket client of ``subscribe_stock`` with ``since``: replay, then live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection


async def replay_then_live(
    ws: ClientConnection, code: str, since: int, enough: Callable[[list[int]], bool]
) -> dict[str, Any]:
    """Subscribes to ``code`` from ``since`` and collects the exchange timestamps of
    the replay and of the live quotes that follow, until ``enough(live)``.

    Fails on an ``error``, on a replay after ``replay_done`` and on a live update
    before it. Returns ``order`` (message types), ``replayed``, ``live``, ``done``."""
    await ws.send(json.dumps({"type": "subscribe_stock", "stock_code": code, "since": since}))
    out: dict[str, Any] = {"order": [], "replayed": [], "live": [], "done": None}
    while not enough(out["live"]):
        msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
        out["order"].append(msg["type"])
        if msg["type"] == "error":
            raise AssertionError(msg)
        if msg["type"] == "replay":
            assert out["done"] is None, "replay after replay_done"
            out["replayed"] += [q["exchange_ts"] for q in msg["data"]]
        elif msg["type"] == "replay_done":
            out["done"] = msg
        elif msg["type"] == "quotes":
            assert out["done"] is not None, "a live update before replay_done"
            out["live"] += [q["exchange_ts"] for q in msg["data"] if q["code"] == code]
    return out
