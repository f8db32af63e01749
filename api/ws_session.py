"""One WebSocket client's outbound side: conflating buffers, flushed at most once per interval.

The fan-out (:mod:`api.hub`) only *offers* updates to a session: a dict write
and a notification, never an await. Two ways to send, chosen per connection:

- a :class:`FrameWriter` (the socket's transport, see :mod:`api.wire`): the
  hub's single flush timer calls :meth:`Session.flush` on the sessions with
  something pending, which writes their frames synchronously; no task, no
  timer per client. A session whose transport is paused (the client does not
  read) is skipped and retried at the next flush; it is "blocked" meanwhile.
- otherwise a sender task of its own (ASGI ``send``, e.g. under TestClient)
  that wakes at most once per flush interval.

Either way a slow client only slows itself: its buffers conflate (latest quote
per stock, latest stats per market, latest bar per stock and bar start: an
open bar's update replaces the previous one, its closed bar replaces both)
and it gets fewer, fresher updates; quotes and bars pending are bounded
(``max_pending_quotes`` each: past it updates are dropped and the slow-client
deadline closes the connection). Control messages (acks, snapshots, replays) cannot be
conflated: their bytes are counted, and past ``max_queued_bytes`` the session
stops queueing and is marked :attr:`Session.overflowed` (its connection closes
it with 4008), so a client that asks for snapshots without reading them
cannot grow the gateway's memory.

Snapshot-then-live uses *holds*: while a subscription's snapshot (or replay) is
being read, live quotes of the held codes are parked in the hold instead of the
buffer; releasing the hold drops what the snapshot already covers (by
``exchange_ts``) and moves the rest to the buffer, after the snapshot message.
A candle snapshot parks the stock's closed bars routed meanwhile (sent after
it) and drops its open bars (the snapshot is at least as new; the hub offers
them again once it is queued).

This module never reads Redis or Kafka and never calls the socket directly:
it is handed ``send``/``close`` callables or a :class:`FrameWriter`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

import orjson

from api import metrics

logger = logging.getLogger(__name__)

SendFn = Callable[[bytes], Awaitable[None]]  # one text frame (UTF-8 JSON)
CloseFn = Callable[[int, str], Awaitable[None]]

CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_TOO_SLOW = 4008
ALERTS_BUFFERED = 500
CLOSE_TIMEOUT_S = 5.0


class FrameWriter(Protocol):
    """Synchronous writes of text frames to one socket (see :mod:`api.wire`)."""

    def writable(self) -> bool:
        """False while the transport's buffer is above its high-water mark."""

    def write(self, message: bytes) -> None:
        """Write one text frame; a no-op once the connection is closing."""

    def write_batch(self, batch: Batch) -> None:
        """Write ``batch`` as one text frame (a writer may reuse work on its items)."""

    def abort(self) -> None:
        """Drop the connection without a closing handshake."""


@dataclass(slots=True)
class QuoteEvent:
    """A decoded quote: routing fields plus its JSON, serialized once for all clients."""

    code: str
    market: str
    ts: int  # exchange_ts
    raw: bytes  # JSON object


@dataclass(slots=True)
class Hold:
    """Live quotes parked while a snapshot or replay of ``codes``/``markets`` is read."""

    codes: frozenset[str] = frozenset()
    markets: frozenset[str] = frozenset()
    everything: bool = False
    ordered: bool = False  # replay: keep every update, in order
    latest: dict[str, QuoteEvent] = field(default_factory=dict)
    seq: list[QuoteEvent] = field(default_factory=list)

    def matches(self, ev: QuoteEvent) -> bool:
        return self.everything or ev.code in self.codes or ev.market in self.markets

    def add_routed_earlier(self, ev: QuoteEvent) -> None:
        """Hold a quote routed before the hold opened (kept only if newer than the held one)."""
        held = self.latest.get(ev.code)
        if held is None or ev.ts > held.ts:
            self.latest[ev.code] = ev

    def add(self, ev: QuoteEvent) -> None:
        if self.ordered:
            self.seq.append(ev)
        else:
            self.latest[ev.code] = ev


@dataclass(slots=True, frozen=True)
class Snapshot:
    """The quotes of a snapshot, with what :meth:`Session.release_snapshot` needs of them.

    Built once and shared by every subscriber of a market (see
    :meth:`api.hub.Hub.market_snapshot`): never modify its parts.
    """

    events: list[QuoteEvent]
    raws: list[bytes]
    ts_by_code: dict[str, int]

    @classmethod
    def of(cls, events: list[QuoteEvent]) -> Snapshot:
        return cls(events, [ev.raw for ev in events], {ev.code: ev.ts for ev in events})


def dumps(obj: object) -> bytes:
    """``obj`` as JSON, in a bytes object of its own size.

    orjson's result keeps the whole buffer it was written into: measured with
    orjson 3.13, 20,000 quotes of 695 bytes held 157 MiB of RSS (8 KiB each),
    their copies 14 MiB. Every JSON the gateway keeps (the latest quote per
    code, conflation buffers, queued control messages) is made here.
    """
    return bytes(memoryview(orjson.dumps(obj)))


def frame(kind: str, **fields: object) -> bytes:
    return dumps({"type": kind, **fields})


_BATCH_HEAD = {
    k: b'{"type":"' + k.encode() + b'","data":[' for k in ("quotes", "stats", "candles", "alerts")
}


BATCH_TAIL: Final = b"]}"


class Batch(NamedTuple):
    """An update message: ``head`` + the items joined by commas + ``]}``.

    Kept in parts until written, so a compressing writer can compress each
    item once for every connection (:class:`api.wire.SharedDeflate`).
    """

    head: bytes
    items: list[bytes]

    def joined(self) -> bytes:
        return self.head + b",".join(self.items) + BATCH_TAIL

    def size(self) -> int:
        """Bytes of :meth:`joined`, without joining."""
        return len(self.head) + sum(map(len, self.items)) + len(self.items) + 1


def snapshot_batch(raws: list[bytes], **extra: object) -> Batch:
    """A ``snapshot`` message of quotes (``extra`` fields first) as a :class:`Batch`.

    Kept in parts like an update batch: no copy of the quotes per client, and a
    compressing writer reuses each quote's compressed piece.
    """
    fields = orjson.dumps(extra)[1:-1] + b"," if extra else b""  # a slice: a copy
    return Batch(b'{"type":"snapshot",' + fields + b'"quotes":[', raws)


def _batch(kind: str, items: Iterable[bytes]) -> Batch:
    return Batch(_BATCH_HEAD[kind], list(items))


def joined(message: bytes | Batch) -> bytes:
    """The bytes of a queued message."""
    return message.joined() if isinstance(message, Batch) else message


class CandleStream(NamedTuple):
    """A candle subscription: the timeframe, and the indicator groups (None: all)."""

    tf: str
    groups: frozenset[str] | None


class Session:
    """Subscriptions and outbound buffers of one connection."""

    def __init__(
        self,
        sid: int,
        key_id: str,
        send: SendFn,
        close: CloseFn,
        *,
        flush_interval_s: float,
        max_pending_quotes: int,
        max_queued_bytes: int = 16 << 20,
    ) -> None:
        self.sid = sid
        self.key_id = key_id
        self._send = send
        self._close = close
        self.flush_interval_s = flush_interval_s
        self.max_pending_quotes = max_pending_quotes
        self.max_queued_bytes = max_queued_bytes
        # subscriptions (the hub indexes them)
        self.stocks: set[str] = set()
        self.markets: set[str] = set()
        self.all = False
        self.stats = False
        self.alerts = False
        self.candles: dict[str, CandleStream] = {}  # code -> its timeframe and indicators
        # outbound
        # (deques and the Event are created on first use: 10,000 idle ones cost ~3 MiB)
        self._control: list[bytes | Batch] = []
        self.queued_bytes = 0  # of _control
        self.overflowed = False  # control past max_queued_bytes: to be closed (4008)
        self._quotes: dict[str, QuoteEvent] = {}
        self._stats: dict[str, bytes] = {}
        self._candles: dict[tuple[str, int], bytes] = {}
        # code -> closed bars routed while its candle snapshot is read (by bar start)
        self._candle_snapshots: dict[str, dict[int, bytes]] = {}
        self._alerts: deque[bytes] | None = None
        self.holds: list[Hold] = []
        self._wake: asyncio.Event | None = None
        self._notify: Callable[[], None] = self._wake_task
        self._writer: FrameWriter | None = None
        self.dirty = False  # queued for a flush by the hub (writer only)
        self.flushed_at = float("-inf")  # loop time of the last flush by the hub
        self.send_started: float | None = None  # monotonic, while a send is blocked
        self.overflow_since: float | None = None
        self.closing = False
        self.on_condemned: Callable[[], None] | None = None  # the hub detaches it (api.hub)
        self.conflated = 0
        self._task: asyncio.Task[None] | None = None

    # ---- what the hub calls (synchronous, never blocks) -----------------------------

    def offer_quote(self, ev: QuoteEvent) -> None:
        if self.holds:
            for hold in self.holds:
                if hold.matches(ev):
                    hold.add(ev)
                    return
        pending = self._quotes
        if ev.code in pending:
            self.conflated += 1
        elif len(pending) >= self.max_pending_quotes:
            if self.overflow_since is None:
                self.overflow_since = time.monotonic()
            return
        pending[ev.code] = ev
        if not self.dirty:  # already queued for the hub's next flush: nothing to do
            self._notify()

    def offer_stats(self, market: str, raw: bytes) -> None:
        self._stats[market] = raw
        self._notify()

    def offer_candle(self, code: str, minute_ts: int, raw: bytes, closed: bool = True) -> None:
        """A bar of ``code`` starting at ``minute_ts``: closed (final), or open (as it stands)."""
        parked = self._candle_snapshots.get(code)
        if parked is not None:
            if closed:
                parked[minute_ts] = raw
            return
        pending = self._candles
        key = (code, minute_ts)
        if key not in pending and len(pending) >= self.max_pending_quotes:
            if self.overflow_since is None:
                self.overflow_since = time.monotonic()
            return
        pending[key] = raw
        if not self.dirty:
            self._notify()

    def offer_alert(self, raw: bytes) -> None:
        if self._alerts is None:
            self._alerts = deque(maxlen=ALERTS_BUFFERED)
        self._alerts.append(raw)
        self._notify()

    def control(self, message: bytes | Batch) -> None:
        """Queue a control message (ack, snapshot, error, pong, replay); sent in order.

        Past ``max_queued_bytes`` of unsent control messages nothing more is
        queued and the session is marked :attr:`overflowed`.
        """
        if self.overflowed or self.closing:
            return
        size = message.size() if isinstance(message, Batch) else len(message)
        if self.queued_bytes + size > self.max_queued_bytes and self._control:
            self.overflowed = True
            self._drop_queued()
            return
        self.queued_bytes += size
        self._control.append(message)
        self._notify()

    # ---- holds: snapshot then live ---------------------------------------------------

    def start_hold(
        self,
        codes: Iterable[str] = (),
        markets: Iterable[str] = (),
        everything: bool = False,
        ordered: bool = False,
    ) -> Hold:
        hold = Hold(frozenset(codes), frozenset(markets), everything, ordered)
        self.holds.append(hold)
        return hold

    def release_snapshot(
        self, hold: Hold, snapshot: list[QuoteEvent] | Snapshot, **extra: object
    ) -> None:
        """Send the snapshot, then every held update newer than it (by exchange_ts)."""
        self.holds.remove(hold)
        if not isinstance(snapshot, Snapshot):
            snapshot = Snapshot.of(snapshot)
        covered = snapshot.ts_by_code
        self._drop_pending_covered(covered)
        self.control(snapshot_batch(snapshot.raws, **extra))
        for ev in hold.latest.values():
            if ev.ts > covered.get(ev.code, -1):
                self.offer_quote(ev)

    def release_replay(self, hold: Hold, code: str, replayed: list[QuoteEvent]) -> None:
        """Send the replayed updates, then the held live ones not replayed, then ``replay_done``.

        Held updates are appended to the replay (not conflated), deduplicated by
        exchange_ts, so the client sees every update from ``since`` on exactly once.
        """
        self.holds.remove(hold)
        merged = list(replayed)
        last = merged[-1].ts if merged else -1
        for ev in hold.seq:
            if ev.ts > last:
                merged.append(ev)
                last = ev.ts
        self._drop_pending_covered({code: last})
        for i in range(0, len(merged), 500):
            chunk = merged[i : i + 500]
            self.control(
                b'{"type":"replay","stock_code":"'
                + code.encode()
                + b'","data":['
                + b",".join(ev.raw for ev in chunk)
                + b"]}"
            )
        self.control(frame("replay_done", stock_code=code, replayed=len(merged)))

    def start_candle_snapshot(self, code: str) -> None:
        """``code``'s candle snapshot is being read: park its bars until it is queued."""
        self._candle_snapshots[code] = {}

    def release_candle_snapshot(self, code: str, snapshot: bytes | None) -> None:
        """Queue the candle ``snapshot`` (None: its read failed), then the closed bars parked."""
        parked = self._candle_snapshots.pop(code, {})
        if snapshot is not None:
            self.control(snapshot)
        for minute_ts, raw in sorted(parked.items()):
            self.offer_candle(code, minute_ts, raw)

    def _drop_pending_covered(self, covered: dict[str, int]) -> None:
        if len(covered) > len(self._quotes):  # a whole market: walk the (smaller) buffer
            drop = [c for c, ev in self._quotes.items() if ev.ts <= covered.get(c, -1)]
        else:
            drop = [
                c for c, ts in covered.items() if c in self._quotes and self._quotes[c].ts <= ts
            ]
        for code in drop:
            del self._quotes[code]

    # ---- sending ---------------------------------------------------------------------

    def use_writer(self, writer: FrameWriter, notify: Callable[[], None]) -> None:
        """Send through ``writer`` when ``notify`` (the hub's flush timer) says so; no task."""
        self._writer = writer
        self._notify = notify

    def start(self) -> None:
        """Start the sender task (only without a writer)."""
        if self._writer is None:
            name = f"ws-send-{self.sid}"
            self._task = asyncio.get_running_loop().create_task(self._run(), name=name)

    def flush(self) -> int:
        """Write everything pending through the writer, unless blocked; frames written."""
        writer = self._writer
        if writer is None or self.closing:
            return 0
        if not writer.writable():
            if self.send_started is None:
                self.send_started = time.monotonic()
            self._notify()  # retry at the next flush
            return 0
        self.send_started = None
        out = self._take()
        _write_all(writer, out)
        return len(out)

    def _take(self) -> list[bytes | Batch]:
        out: list[bytes | Batch] = self._control
        self._control = []
        self.queued_bytes = 0
        if self._quotes:
            out.append(_batch("quotes", (ev.raw for ev in self._quotes.values())))
            self._quotes = {}
            self.overflow_since = None
        if self._stats:
            out.append(_batch("stats", self._stats.values()))
            self._stats = {}
        if self._candles:
            out.append(_batch("candles", self._candles.values()))
            self._candles = {}
            self.overflow_since = None
        if self._alerts:
            out.append(_batch("alerts", self._alerts))
            self._alerts.clear()
        return out

    def _wake_task(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()

    async def _run(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        next_flush = 0.0
        while True:
            await self._wake.wait()
            now = time.monotonic()
            if now < next_flush:
                await asyncio.sleep(next_flush - now)
            self._wake.clear()
            next_flush = time.monotonic() + self.flush_interval_s
            for message in self._take():
                self.send_started = time.monotonic()
                await self._send(joined(message))
                self.send_started = None
                metrics.WS_MESSAGES_SENT.inc()

    def stalled_for(self, now: float) -> float:
        """How long this client has been hopeless (send blocked or buffer full), seconds."""
        stalled = 0.0
        if self.send_started is not None:
            stalled = now - self.send_started
        if self.overflow_since is not None:
            stalled = max(stalled, now - self.overflow_since)
        return stalled

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def kill(self, code: int, reason: str) -> None:
        """Stop sending and close the socket with ``code``; idempotent.

        The close frame waits behind what the socket already buffered; a client
        that does not read it within :data:`CLOSE_TIMEOUT_S` is dropped.
        """
        if self.closing:
            return
        self._condemn()
        await self.stop()
        self._drop_queued()
        logger.info("closing ws client %d: %d %s", self.sid, code, reason)
        try:
            await asyncio.wait_for(self._close(code, reason), CLOSE_TIMEOUT_S)
        except Exception as exc:  # the socket may already be gone, or never drains
            logger.debug("close of ws client %d failed: %r", self.sid, exc)
            if self._writer is not None:
                self._writer.abort()

    def _condemn(self) -> None:
        """Closing: nothing more is queued, and the hub routes nothing more here."""
        self.closing = True
        if self.on_condemned is not None:
            self.on_condemned()

    def _drop_queued(self) -> None:
        """Forget everything not yet sent (the connection is being closed)."""
        self._control = []
        self.queued_bytes = 0
        self._quotes = {}
        self._stats = {}
        self._candles = {}
        self._candle_snapshots = {}
        self._alerts = None
        for hold in self.holds:
            hold.latest.clear()
            hold.seq.clear()

    async def flush_and_close(self, code: int, reason: str) -> None:
        """Send what is queued (control messages first), then close."""
        if self.closing:
            return
        self._condemn()
        await self.stop()
        try:
            messages = self._take()
            if self._writer is not None:
                _write_all(self._writer, messages)
            else:
                for message in messages:
                    await asyncio.wait_for(self._send(joined(message)), timeout=2.0)
            await asyncio.wait_for(self._close(code, reason), CLOSE_TIMEOUT_S)
        except Exception as exc:
            logger.debug("close of ws client %d failed: %s", self.sid, exc)


def _write_all(writer: FrameWriter, messages: list[bytes | Batch]) -> None:
    for message in messages:
        if isinstance(message, Batch):
            writer.write_batch(message)
        else:
            writer.write(message)
