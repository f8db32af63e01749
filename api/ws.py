"""The WebSocket endpoint ``/api/realtime/ws``: the protocol of docs/websocket.md.

Reads client requests, updates the hub's index, answers every request with an
``ack`` carrying the full subscription set (or an ``error`` with a code), and
sends snapshots (Redis + the hub's latest) and replays (Kafka) around holds so
no update is lost or duplicated. All outbound traffic goes through the
session (written by the hub's flush timer when :mod:`api.wire` offers a direct
writer, else by the session's sender task); this module never sends a live
update itself, and never awaits a slow client's socket while handling another
client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import deque
from typing import Any

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError

from api import metrics
from api.auth import check_key
from api.hub import Hub
from api.replay import ReplayError, ReplayUnavailable, describe_ms, replay_quotes, window_start
from api.session import CLOSE_POLICY, CLOSE_TRY_AGAIN, QuoteEvent, Session, frame
from api.settings import GatewaySettings
from api.snapshots import SnapshotReads
from api.store import Store
from api.wire import writer_for
from schemas.redis_keys import MARKETS, MARKETS_AND_ALL

logger = logging.getLogger(__name__)

CODE_RE = re.compile(r"^\d{6}$")
_ids = itertools.count(1)


class ProtocolError(Exception):
    """A client request that is answered with an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Connection:
    """One client: request handling on top of a :class:`Session`."""

    def __init__(
        self, ws: WebSocket, session: Session, hub: Hub, store: Store, settings: GatewaySettings
    ) -> None:
        self.ws = ws
        self.s = session
        self.hub = hub
        self.store = store
        self.settings = settings
        self._invalid: deque[float] | None = None  # created on the first invalid message
        self._replays: asyncio.Semaphore = ws.app.state.replay_slots
        self.snapshots: SnapshotReads = ws.app.state.snapshots

    def subscriptions(self) -> dict[str, Any]:
        s = self.s
        return {
            "stocks": sorted(s.stocks),
            "markets": sorted(s.markets),
            "all": s.all,
            "stats": s.stats,
            "alerts": s.alerts,
            "candles": sorted(s.candles),
        }

    def ack(self, request: str) -> None:
        self.s.control(frame("ack", request=request, subscriptions=self.subscriptions()))

    def error(self, code: str, message: str) -> None:
        metrics.WS_ERRORS.labels(code).inc()
        self.s.control(frame("error", code=code, message=message))

    def too_many_invalid(self) -> bool:
        now = time.monotonic()
        if self._invalid is None:
            self._invalid = deque()
        self._invalid.append(now)
        while self._invalid and now - self._invalid[0] > 1.0:
            self._invalid.popleft()
        return len(self._invalid) > self.settings.invalid_per_second

    async def run(self) -> None:
        while True:
            text = await self.ws.receive_text()
            try:
                await self.handle(text)
            except ProtocolError as exc:
                self.error(exc.code, exc.message)
                if self.too_many_invalid():
                    self.error("rate_limited", "too many invalid messages; closing")
                    await self.s.flush_and_close(CLOSE_POLICY, "too many invalid messages")
                    return

    async def handle(self, text: str) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ProtocolError("bad_request", "message is not valid JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise ProtocolError("bad_request", 'message must be an object with a "type"')
        kind: str = msg["type"]
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise ProtocolError("unknown_type", f"unknown message type {kind[:40]!r}")
        try:
            await handler(self, msg)
        except RedisError as exc:
            logger.warning("redis read failed for ws client %d: %s", self.s.sid, type(exc).__name__)
            raise ProtocolError("unavailable", "quote store unavailable; try again") from None

    # ---- helpers -------------------------------------------------------------------

    def _code(self, msg: dict[str, Any]) -> str:
        code = msg.get("stock_code")
        if not isinstance(code, str) or not CODE_RE.match(code):
            raise ProtocolError("bad_code", f"stock_code must be 6 digits, got {str(code)[:20]!r}")
        return code

    def _market(self, msg: dict[str, Any]) -> str:
        market = msg.get("market")
        if not isinstance(market, str) or market.upper() not in MARKETS:
            raise ProtocolError(
                "bad_market",
                f"market must be one of {', '.join(MARKETS)}, got {str(market)[:20]!r}",
            )
        return market.upper()

    def _room_for(self, code: str) -> None:
        s = self.s
        used = len(s.stocks | s.candles)
        if code not in s.stocks and code not in s.candles:
            used += 1
        if used > self.settings.max_stocks_per_connection:
            raise ProtocolError(
                "too_many_subscriptions",
                f"at most {self.settings.max_stocks_per_connection} stock codes per connection",
            )

    async def _snapshot(self, codes: list[str]) -> list[QuoteEvent]:
        """For each code the newer of Redis and the hub's last routed quote."""
        stored = await self.snapshots.quote_events(codes)
        out: list[QuoteEvent] = []
        for code, from_redis in zip(codes, stored, strict=True):
            routed = self.hub.latest.get(code)
            best = from_redis
            if routed is not None and (best is None or routed.ts > best.ts):
                best = routed
            if best is not None:
                out.append(best)
        return out

    # ---- handlers ------------------------------------------------------------------

    async def subscribe_stock(self, msg: dict[str, Any]) -> None:
        code = self._code(msg)
        since = msg.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            raise ProtocolError("bad_request", "since must be epoch milliseconds (integer)")
        if since is not None:
            await self._check_replay_window(code, since)
        self._room_for(code)
        # Register first (live updates of the code are held), then read, then release.
        hold = self.s.start_hold(codes=[code], ordered=since is not None)
        self.hub.subscribe_stock(self.s, code)
        self.ack("subscribe_stock")
        if since is None:
            snapshot: list[QuoteEvent] = []
            try:
                snapshot = await self._snapshot([code])
            finally:
                self.s.release_snapshot(hold, snapshot)
            return
        replayed: list[QuoteEvent] = []
        try:
            async with self._replays:
                replayed = await asyncio.to_thread(replay_quotes, self.settings, code, since)
            metrics.REPLAYS.inc()
        except ReplayUnavailable as exc:
            self.error("unavailable", f"replay failed: {exc}")
        except ReplayError as exc:
            self.error("bad_request", f"replay failed: {exc}")
        finally:
            self.s.release_replay(hold, code, replayed)

    async def _check_replay_window(self, code: str, since: int) -> None:
        """``since`` is on the exchange clock: it is checked against the newest quote
        the gateway knows (routed live, or the code's in Redis), never the server's clock."""
        newest = self.hub.exchange_now
        routed = self.hub.latest.get(code)
        if routed is None:
            stored = (await self.snapshots.quote_events([code]))[0]
            if stored is not None:
                newest = max(newest, stored.ts)
        if newest == 0:  # no quote known yet: the server's clock is the best estimate
            newest = int(time.time() * 1000)
        oldest = window_start(newest, self.settings.replay_window)
        if since < oldest:
            raise ProtocolError(
                "bad_request",
                f"since ({describe_ms(since)}) is before the replay window, which starts at "
                f"{describe_ms(oldest)} on the exchange clock (HQ_GATEWAY_REPLAY_WINDOW)",
            )

    async def unsubscribe_stock(self, msg: dict[str, Any]) -> None:
        self.hub.unsubscribe_stock(self.s, self._code(msg))
        self.ack("unsubscribe_stock")

    async def subscribe_market(self, msg: dict[str, Any]) -> None:
        market = self._market(msg)
        hold = self.s.start_hold(markets=[market])
        self.hub.subscribe_market(self.s, market)
        self.ack("subscribe_market")
        snapshot: list[QuoteEvent] = []
        try:
            snapshot = await self._snapshot(await self.store.market_codes(market))  # type: ignore[arg-type]
        finally:
            self.s.release_snapshot(hold, snapshot, market=market)

    async def unsubscribe_market(self, msg: dict[str, Any]) -> None:
        self.hub.unsubscribe_market(self.s, self._market(msg))
        self.ack("unsubscribe_market")

    async def subscribe_all(self, msg: dict[str, Any]) -> None:
        hold = self.s.start_hold(everything=True)
        self.hub.set_all(self.s, True)
        self.ack("subscribe_all")
        snapshot: list[QuoteEvent] = []
        try:
            snapshot = await self._snapshot(await self.store.market_codes("ALL"))
        finally:
            self.s.release_snapshot(hold, snapshot)

    async def unsubscribe_all(self, msg: dict[str, Any]) -> None:
        self.hub.set_all(self.s, False)
        self.ack("unsubscribe_all")

    async def subscribe_stats(self, msg: dict[str, Any]) -> None:
        self.hub.set_stats(self.s, True)
        self.ack("subscribe_stats")
        stats: list[bytes] = []
        for market in MARKETS_AND_ALL:
            raw = await self.store.market_stats_raw(market)
            routed = self.hub.latest_stats.get(market)
            pick = routed if routed is not None else raw
            if raw is not None and routed is not None:
                pick = routed if orjson.loads(routed)["ts"] >= orjson.loads(raw)["ts"] else raw
            if pick is not None:
                stats.append(pick)
        self.s.control(b'{"type":"snapshot","stats":[' + b",".join(stats) + b"]}")

    async def unsubscribe_stats(self, msg: dict[str, Any]) -> None:
        self.hub.set_stats(self.s, False)
        self.ack("unsubscribe_stats")

    async def subscribe_alerts(self, msg: dict[str, Any]) -> None:
        self.hub.set_alerts(self.s, True)
        self.ack("subscribe_alerts")

    async def unsubscribe_alerts(self, msg: dict[str, Any]) -> None:
        self.hub.set_alerts(self.s, False)
        self.ack("unsubscribe_alerts")

    async def subscribe_candles(self, msg: dict[str, Any]) -> None:
        code = self._code(msg)
        self._room_for(code)
        self.hub.subscribe_candles(self.s, code)
        self.ack("subscribe_candles")
        raws = await self.store.candles_raw(code, await self.store.trade_date(code))
        self.s.control(
            b'{"type":"snapshot","stock_code":"'
            + code.encode()
            + b'","candles":['
            + b",".join(raws)
            + b"]}"
        )

    async def unsubscribe_candles(self, msg: dict[str, Any]) -> None:
        self.hub.unsubscribe_candles(self.s, self._code(msg))
        self.ack("unsubscribe_candles")

    async def ping(self, msg: dict[str, Any]) -> None:
        self.s.control(frame("pong", id=msg.get("id"), ts=int(time.time() * 1000)))

    async def auth(self, msg: dict[str, Any]) -> None:
        raise ProtocolError("bad_request", "already authenticated")


_HANDLERS = {
    name: getattr(Connection, name)
    for name in (
        "subscribe_stock",
        "unsubscribe_stock",
        "subscribe_market",
        "unsubscribe_market",
        "subscribe_all",
        "unsubscribe_all",
        "subscribe_stats",
        "unsubscribe_stats",
        "subscribe_alerts",
        "unsubscribe_alerts",
        "subscribe_candles",
        "unsubscribe_candles",
        "ping",
        "auth",
    )
}


async def _authenticate(ws: WebSocket, settings: GatewaySettings) -> str | None:
    """The caller's key id, or None after closing the socket (1008)."""
    key = ws.query_params.get("api_key")
    if key is None and settings.auth_enabled:
        try:
            text = await asyncio.wait_for(ws.receive_text(), settings.auth_deadline_s)
            msg = orjson.loads(text)
            if isinstance(msg, dict) and msg.get("type") == "auth":
                key = msg.get("api_key") if isinstance(msg.get("api_key"), str) else None
        except (TimeoutError, orjson.JSONDecodeError):
            key = None
    found = check_key(settings, key)
    if found is None:
        metrics.WS_ERRORS.labels("not_authenticated").inc()
        await ws.send_text(
            frame("error", code="not_authenticated", message="a valid api_key is required").decode()
        )
        await ws.close(CLOSE_POLICY, "not authenticated")
        return None
    return found[0]


async def websocket_endpoint(ws: WebSocket) -> None:
    app = ws.app
    settings: GatewaySettings = app.state.settings
    hub: Hub = app.state.hub
    await ws.accept()
    try:
        kid = await _authenticate(ws, settings)
    except WebSocketDisconnect:
        return
    if kid is None:
        return
    if settings.auth_enabled and hub.per_key.get(kid, 0) >= settings.max_connections_per_key:
        await ws.close(CLOSE_TRY_AGAIN, "too many connections for this key")
        return

    async def send(message: bytes) -> None:
        await ws.send_text(message.decode())

    async def close(code: int, reason: str) -> None:
        await ws.close(code, reason)

    session = Session(
        next(_ids),
        kid,
        send,
        close,
        flush_interval_s=settings.flush_interval_ms / 1000,
        max_pending_quotes=settings.max_pending_quotes,
    )
    writer = writer_for(ws.scope)
    if writer is not None:
        hub.attach_writer(session, writer)
    hub.add(session)
    session.start()
    conn = Connection(ws, session, hub, app.state.store, settings)
    try:
        await conn.run()
    except (WebSocketDisconnect, RuntimeError):
        pass  # client went away, or we closed the socket (slow / abusive client)
    finally:
        hub.remove(session)
        await session.stop()
