"""The WebSocket endpoint ``/api/realtime/ws``: the protocol of docs/websocket.md.

Reads client requests, updates the hub's index, answers every request with an
``ack`` carrying the full subscription set (or an ``error`` with a code), and
sends snapshots (Redis + the hub's latest) and replays (Kafka) around holds so
no update is lost or duplicated. All outbound traffic goes through the
session (written by the hub's flush timer when :mod:`api.wire` offers a direct
writer, else by the session's sender task); this module never sends a live
update itself, and never awaits a slow client's socket while handling another
client.

Hostile input costs little and harms only its sender: binary frames and bad
messages get an ``error``; messages over ``max_message_bytes`` close the
connection (1009; uvicorn's ``ws_max_size`` stops them before they are even
parsed); every request spends tokens of a per-connection bucket (``rate_limited``
when empty; market snapshots and replays cost more); a client whose unsent
control messages pass ``max_queued_bytes`` is closed (4008); replays are
shared fairly between keys (:class:`api.limits.FairSlots`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from confluent_kafka import KafkaException
from fastapi import WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError

from api import bars, metrics
from api.auth import check_key
from api.day_replay import (
    DayReader,
    DayReplayError,
    DayReplayLimits,
    DayReplayRequest,
    parse_date,
    stream_day,
)
from api.errors import KEY_IN_URL, BadRequest
from api.hub import Hub
from api.limits import FairSlots, TokenBucket
from api.replay import ReplayError, ReplayUnavailable, replay_quotes, window_start
from api.settings import GatewaySettings
from api.snapshots import SnapshotReads
from api.store import Store
from api.wire import writer_for
from api.ws_session import (
    CLOSE_POLICY,
    CLOSE_TOO_SLOW,
    CLOSE_TRY_AGAIN,
    CandleStream,
    Hold,
    QuoteEvent,
    Session,
    Snapshot,
    frame,
)
from hqcore.parquet_archive.errors import ArchiveError
from schemas.exchange import MARKETS, MARKETS_AND_ALL, describe_ms, is_stock_code

logger = logging.getLogger(__name__)

CLOSE_TOO_BIG = 1009
MAX_ECHO_CHARS = 64
#: tokens a request spends (default 1): what it makes the gateway read and send
REQUEST_COST = {
    "subscribe_all": 50.0,
    "subscribe_market": 20.0,
    "replay": 20.0,
    "replay_day": 20.0,
}
_ids = itertools.count(1)


class BinaryFrame(Exception):
    """The client sent a binary message (the protocol is JSON text)."""


class TooBig(Exception):
    """The client sent a message over ``max_message_bytes``."""


async def receive_text(ws: WebSocket, max_chars: int) -> str:
    """The next text message; raises :class:`BinaryFrame`, :class:`TooBig` or a disconnect.

    uvicorn enforces the byte limit (``ws_max_size``) before a message is read;
    this check covers servers without one (TestClient).
    """
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    if text is None:
        raise BinaryFrame
    if len(text) > max_chars:
        raise TooBig
    return str(text)


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
        self._replays: FairSlots = ws.app.state.replay_slots
        self.snapshots: SnapshotReads = ws.app.state.snapshots
        self.bucket = TokenBucket(settings.requests_per_second, settings.request_burst)
        self.day_replays: set[asyncio.Task[None]] = set()

    def subscriptions(self) -> dict[str, Any]:
        s = self.s
        return {
            "stocks": sorted(s.stocks),
            "markets": sorted(s.markets),
            "all": s.all,
            "stats": s.stats,
            "alerts": s.alerts,
            "candles": sorted(s.candles),
            "candle_streams": {
                code: {
                    "tf": stream.tf,
                    "indicators": "all" if stream.groups is None else sorted(stream.groups),
                }
                for code, stream in sorted(s.candles.items())
            },
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
        limit = self.settings.max_message_bytes
        while True:
            exc: ProtocolError | None = None
            try:
                text = await receive_text(self.ws, limit)
                await self.handle(text)
            except BinaryFrame:
                exc = ProtocolError("bad_request", "binary messages are not accepted: use text")
            except TooBig:
                await self.s.kill(CLOSE_TOO_BIG, f"message over {limit} bytes")
                return
            except ProtocolError as err:
                exc = err
            if self.s.overflowed:  # asked for more than it reads (snapshots, replays)
                metrics.WS_CLOSED_SLOW.inc()
                await self.s.kill(CLOSE_TOO_SLOW, "client too slow: too much unread data")
                return
            if exc is None:
                continue
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
        cost = REQUEST_COST.get("replay" if msg.get("since") is not None else kind, 1.0)
        if not self.bucket.take(cost):
            raise ProtocolError(
                "rate_limited",
                f"too many requests: {self.settings.requests_per_second:g}/s per connection",
            )
        try:
            await handler(self, msg)
        except RedisError as exc:
            logger.warning("redis read failed for ws client %d: %s", self.s.sid, type(exc).__name__)
            raise ProtocolError("unavailable", "quote store unavailable; try again") from None
        except DayReplayError as exc:
            raise ProtocolError(exc.code, exc.message) from None

    # ---- helpers -------------------------------------------------------------------

    def _code(self, msg: dict[str, Any]) -> str:
        code = msg.get("stock_code")
        if not isinstance(code, str) or not is_stock_code(code):
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
        used = len(s.stocks | s.candles.keys())
        if code not in s.stocks and code not in s.candles:
            used += 1
        if used > self.settings.max_stocks_per_connection:
            raise ProtocolError(
                "too_many_subscriptions",
                f"at most {self.settings.max_stocks_per_connection} stock codes per connection",
            )

    async def _market_snapshot(self, market: str, hold: Hold) -> Snapshot:
        """The market's (or ALL) stored quotes (cached read) merged with the hub's latest."""
        stored = await self.snapshots.market_events(market)  # type: ignore[arg-type]
        return self.hub.market_snapshot(market, stored, hold)

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
            async with self._replays.slot(self.s.key_id):
                replayed = await asyncio.to_thread(replay_quotes, self.settings, code, since)
            metrics.REPLAYS.inc()
        except ReplayUnavailable as exc:
            self.error("unavailable", f"replay failed: {exc}")
        except ReplayError as exc:
            self.error("bad_request", f"replay failed: {exc}")
        except KafkaException as exc:
            logger.warning("replay for ws client %d: kafka unavailable: %s", self.s.sid, exc)
            self.error("unavailable", "replay unavailable (Kafka); try again")
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
        snapshot: list[QuoteEvent] | Snapshot = []
        try:
            snapshot = await self._market_snapshot(market, hold)
        finally:
            self.s.release_snapshot(hold, snapshot, market=market)

    async def unsubscribe_market(self, msg: dict[str, Any]) -> None:
        self.hub.unsubscribe_market(self.s, self._market(msg))
        self.ack("unsubscribe_market")

    async def subscribe_all(self, msg: dict[str, Any]) -> None:
        hold = self.s.start_hold(everything=True)
        self.hub.set_all(self.s, True)
        self.ack("subscribe_all")
        snapshot: list[QuoteEvent] | Snapshot = []
        try:
            snapshot = await self._market_snapshot("ALL", hold)
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
        try:
            tf = bars.timeframe(str(msg.get("tf", "1m")))
            indicators = msg.get("indicators")
            if indicators is not None and not isinstance(indicators, str | list):
                raise BadRequest("indicators must be a list or a comma-separated string")
            groups = bars.indicator_groups(indicators)
        except BadRequest as exc:
            raise ProtocolError("bad_request", exc.message) from None
        self._room_for(code)
        # Register first (closed bars routed meanwhile are parked), read, then release.
        self.s.start_candle_snapshot(code)
        self.hub.subscribe_candles(self.s, code, CandleStream(tf, groups))
        self.ack("subscribe_candles")
        snapshot = None
        try:
            closed, series, minutes = await self.store.bar_parts(
                code, tf, await self.store.trade_date(code)
            )
            limit = bars.DAILY_LIMIT if tf == "1d" else 0
            rows = bars.compose(tf, closed, series, minutes, groups, limit)
            snapshot = frame("snapshot", stock_code=code, tf=tf, candles=rows)
        finally:
            self.s.release_candle_snapshot(code, snapshot)
        self.hub.refresh_open_bars(code)  # open bars are pushed from now on

    async def unsubscribe_candles(self, msg: dict[str, Any]) -> None:
        self.hub.unsubscribe_candles(self.s, self._code(msg))
        self.ack("unsubscribe_candles")

    async def ping(self, msg: dict[str, Any]) -> None:
        ping_id = msg.get("id")  # echoed: only small values
        if not (
            ping_id is None
            or (isinstance(ping_id, int) and abs(ping_id) <= 2**53)
            or (isinstance(ping_id, str) and len(ping_id) <= MAX_ECHO_CHARS)
        ):
            raise ProtocolError(
                "bad_request",
                f"id must be an integer or a string of at most {MAX_ECHO_CHARS} characters",
            )
        self.s.control(frame("pong", id=ping_id, ts=int(time.time() * 1000)))

    async def auth(self, msg: dict[str, Any]) -> None:
        raise ProtocolError("bad_request", "already authenticated")

    async def replay_day(self, msg: dict[str, Any]) -> None:
        """A private replay of an archived day (:mod:`api.day_replay`), beside live updates."""
        request = self._day_replay_request(msg)
        if not self.settings.archive_root:
            raise ProtocolError("no_archive", "this gateway has no archive to replay from")
        limits: DayReplayLimits = self.ws.app.state.day_replay_limits
        key = self.s.key_id
        limits.acquire(key)
        try:
            reader = await asyncio.to_thread(DayReader, self.settings.archive_root, request)
        except BaseException:
            limits.release(key)
            raise
        self.ack("replay_day")
        task = asyncio.get_running_loop().create_task(
            self._stream_day(reader, partial(limits.release, key)),
            name=f"day-replay-{self.s.sid}",
        )
        self.day_replays.add(task)
        task.add_done_callback(self.day_replays.discard)

    async def _stream_day(self, reader: DayReader, release: Callable[[], None]) -> None:
        try:
            await stream_day(self.s, reader, clock=asyncio.get_running_loop().time)
        except (OSError, ArchiveError) as exc:
            logger.warning("day replay for ws client %d failed: %r", self.s.sid, exc)
            self.error("unavailable", "day replay failed reading the archive; try again")
        finally:
            release()

    def _day_replay_request(self, msg: dict[str, Any]) -> DayReplayRequest:
        trade_date = parse_date(msg.get("date"))
        speed = msg.get("speed", 1)
        cap = self.settings.day_replay_max_speed
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed <= cap:
            raise ProtocolError("bad_request", f"speed must be a number above 0, at most {cap:g}")
        if msg.get("market") is not None:
            return DayReplayRequest(trade_date, float(speed), market=self._market(msg))
        if "stock_code" not in msg and "code" in msg:  # the short name is accepted too
            msg = {**msg, "stock_code": msg["code"]}
        return DayReplayRequest(trade_date, float(speed), code=self._code(msg))

    async def stop(self) -> None:
        """The connection is over: cancel its day replays."""
        for task in list(self.day_replays):
            task.cancel()
        await asyncio.gather(*self.day_replays, return_exceptions=True)


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
        "replay_day",
    )
}


async def _refuse(ws: WebSocket, message: str) -> None:
    metrics.WS_ERRORS.labels("not_authenticated").inc()
    await ws.send_text(frame("error", code="not_authenticated", message=message).decode())
    await ws.close(CLOSE_POLICY, "not authenticated")


async def _first_message_key(ws: WebSocket, settings: GatewaySettings) -> str | None:
    """The ``api_key`` of the first message, if it is an ``auth`` (within the deadline).

    Binary frames before it get a ``bad_request`` error and are skipped; a message
    over the size limit closes the connection (1009, raises WebSocketDisconnect).
    """
    deadline = time.monotonic() + settings.auth_deadline_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            text = await asyncio.wait_for(receive_text(ws, settings.max_message_bytes), left)
        except TimeoutError:
            return None
        except BinaryFrame:
            metrics.WS_ERRORS.labels("bad_request").inc()
            await ws.send_text(
                frame(
                    "error",
                    code="bad_request",
                    message='binary messages are not accepted: send {"type":"auth",...} first',
                ).decode()
            )
            continue
        except TooBig:
            await ws.close(CLOSE_TOO_BIG, "message too big")
            raise WebSocketDisconnect(CLOSE_TOO_BIG) from None
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if isinstance(msg, dict) and msg.get("type") == "auth":
            key = msg.get("api_key")
            return key if isinstance(key, str) else None
        return None


async def _authenticate(ws: WebSocket, settings: GatewaySettings) -> str | None:
    """The caller's key id, or None after closing the socket (1008).

    The key comes only in the first message (``{"type":"auth","api_key":...}``);
    a key in the URL is refused whatever it is (it would be in proxy logs).
    """
    if ws.scope.get(KEY_IN_URL):
        await _refuse(
            ws, 'API keys are not accepted in the URL: send {"type":"auth","api_key":...} first'
        )
        return None
    key = await _first_message_key(ws, settings) if settings.auth_enabled else None
    found = check_key(settings, key)
    if found is None:
        await _refuse(ws, "a valid api_key is required")
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
        max_queued_bytes=settings.max_queued_bytes,
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
        await conn.stop()
        await session.stop()
