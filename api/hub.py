"""Subscription index and fan-out: routes each consumed update to its subscribers.

Subscribers are indexed by code, by market and "all" (plus stats, alerts and
candles), so routing a tick costs O(subscribers of that tick). Routing runs on
the event loop, called by :mod:`api.kafka_feed` once per consumed batch; it only
offers updates to sessions (:mod:`api.ws_session`) and never awaits a send.

Sessions that write frames directly (:meth:`Session.use_writer`) are flushed
here: a session with something pending marks itself dirty; one not written
during the last flush interval is written right after the current dispatch,
the others when their interval is over (one timer for all of them). Idle
sessions cost nothing; no session has a task or timer of its own.

The hub also keeps the latest quote per code it has routed: a subscribe's
snapshot is the newer of that and Redis, so nothing routed before the
subscription was registered can be missed (see docs/websocket.md). A market
snapshot merged that way is computed at most once per flush interval and
shared by every subscriber (:meth:`Hub.market_snapshot`); quotes routed after
it was merged are handed to each subscriber's hold instead.
This module never reads Redis or Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from api import metrics
from api.bars import render_bar
from api.ws_session import (
    CLOSE_TOO_SLOW,
    CandleStream,
    FrameWriter,
    Hold,
    QuoteEvent,
    Session,
    Snapshot,
    dumps,
)
from schemas.bar_series import Bar
from schemas.serde import SerdeError

logger = logging.getLogger(__name__)

EventKind = Literal["quote", "stats", "alert", "candle"]


@dataclass(slots=True)
class Event:
    """One consumed record: a quote (``quote`` set) or a stats/alert/candle JSON."""

    kind: EventKind
    raw: bytes
    quote: QuoteEvent | None = None
    key: str = ""  # market for stats, code for candles
    minute_ts: int = 0
    tf: str = "1m"  # candles: the timeframe
    record: dict[str, Any] | None = None  # candles: the decoded bar (indicators re-rendered)
    # candles from the feed: the Avro decoder of the still undecoded bar (see decoded())
    pending: Callable[[], dict[str, Any]] | None = None
    _rendered: dict[frozenset[str] | None, bytes] | None = None

    def decoded(self) -> bool:
        """Decode a pending bar (only one a client watches is worth it); False if it cannot be.

        The feed hands candles over undecoded, keyed by code: at a minute's
        end every stock's bars arrive at once (5,000 to 25,000), and most
        stocks are watched by nobody.
        """
        if self.pending is None:
            return True
        try:
            rec = self.pending()
        except SerdeError as exc:
            metrics.DECODE_ERRORS.inc()
            logger.warning("feed: undecodable bar of %s: %s", self.key, exc)
            return False
        finally:
            self.pending = None
        self.set_bar(rec)
        return True

    def set_bar(self, rec: dict[str, Any]) -> None:
        """This candle event's bar: the decoded Avro record, its JSON serialized once."""
        self.raw = dumps(rec)
        self.minute_ts = int(rec["minute_ts"])
        self.tf = rec.get("tf", "1m")
        self.record = rec

    def candle_json(self, groups: frozenset[str] | None) -> bytes:
        """The bar's JSON with only the indicator ``groups`` (rendered once per set)."""
        if groups is None or self.record is None:
            return self.raw
        if self._rendered is None:
            self._rendered = {}
        found = self._rendered.get(groups)
        if found is None:
            found = self._rendered[groups] = render_bar(self.record, groups)
        return found


class Hub:
    """Who is subscribed to what, and the last routed state."""

    def __init__(self, flush_interval_s: float = 0.02) -> None:
        self.flush_interval_s = flush_interval_s
        self.sessions: dict[int, Session] = {}
        self.by_code: defaultdict[str, set[Session]] = defaultdict(set)
        self.by_market: defaultdict[str, set[Session]] = defaultdict(set)
        self.everything: set[Session] = set()
        self.stats_subs: set[Session] = set()
        self.alert_subs: set[Session] = set()
        self.candle_subs: defaultdict[str, set[Session]] = defaultdict(set)
        # (code, tf) -> start of the newest closed bar routed, for watched codes: no open
        # bar of that start or an older one is offered after it (api.open_bars)
        self.closed_through: dict[tuple[str, str], int] = {}
        # called with the code of each routed quote that has candle subscribers
        self.on_watched_quote: Callable[[str], None] | None = None
        self.per_key: defaultdict[str, int] = defaultdict(int)
        self.latest: dict[str, QuoteEvent] = {}
        self.exchange_now = 0  # the newest exchange_ts routed: the exchange clock, epoch ms
        self.latest_stats: dict[str, bytes] = {}
        # shared market snapshots: (Redis rows they merged, index in _routed_since) per market
        self._merged: dict[str, tuple[list[QuoteEvent], int, Snapshot]] = {}
        self._merged_at = 0.0  # monotonic; all of _merged is dropped a flush interval later
        self._routed_since: list[QuoteEvent] = []  # quotes routed since _merged_at
        self.pushing = True
        self.routed = 0
        self.last_event_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: list[Session] = []  # flushed right after the current dispatch
        self._ready_scheduled = False
        self._later: list[Session] = []  # flushed when their interval is over
        self._later_at: asyncio.TimerHandle | None = None
        self._later_due = 0.0
        self.frames_sent = 0
        self.removed = 0  # sessions removed so far (see api.app's collector tuning)

    # ---- membership ------------------------------------------------------------------

    def add(self, session: Session) -> None:
        self.sessions[session.sid] = session
        self.per_key[session.key_id] += 1
        session.on_condemned = partial(self.detach, session)
        metrics.WS_CONNECTIONS.set(len(self.sessions))

    def remove(self, session: Session) -> None:
        if self.sessions.pop(session.sid, None) is None:
            return
        self.removed += 1
        self.per_key[session.key_id] -= 1
        if self.per_key[session.key_id] <= 0:
            del self.per_key[session.key_id]
        self.detach(session)
        metrics.WS_CONNECTIONS.set(len(self.sessions))

    def detach(self, session: Session) -> None:
        """Route nothing more to ``session``: called as soon as it is condemned.

        Its close can take seconds (the close frame waits behind what the
        client does not read); meanwhile it must cost the fan-out nothing and
        hold no updates. It still counts as a connection until :meth:`remove`.
        """
        for code in session.stocks:
            _discard(self.by_code, code, session)
        for market in session.markets:
            _discard(self.by_market, market, session)
        for code in session.candles:
            _discard(self.candle_subs, code, session)
        self.everything.discard(session)
        self.stats_subs.discard(session)
        self.alert_subs.discard(session)

    def subscribe_stock(self, s: Session, code: str) -> None:
        s.stocks.add(code)
        if not s.closing:  # a request under way when its connection was condemned
            self.by_code[code].add(s)

    def unsubscribe_stock(self, s: Session, code: str) -> None:
        s.stocks.discard(code)
        _discard(self.by_code, code, s)

    def subscribe_market(self, s: Session, market: str) -> None:
        s.markets.add(market)
        if not s.closing:
            self.by_market[market].add(s)

    def unsubscribe_market(self, s: Session, market: str) -> None:
        s.markets.discard(market)
        _discard(self.by_market, market, s)

    def set_all(self, s: Session, on: bool) -> None:
        s.all = on
        (self.everything.add if on and not s.closing else self.everything.discard)(s)

    def set_stats(self, s: Session, on: bool) -> None:
        s.stats = on
        (self.stats_subs.add if on and not s.closing else self.stats_subs.discard)(s)

    def set_alerts(self, s: Session, on: bool) -> None:
        s.alerts = on
        (self.alert_subs.add if on and not s.closing else self.alert_subs.discard)(s)

    def subscribe_candles(self, s: Session, code: str, stream: CandleStream) -> None:
        """One timeframe per stock and connection: subscribing again switches it."""
        s.candles[code] = stream
        if not s.closing:
            self.candle_subs[code].add(s)

    def unsubscribe_candles(self, s: Session, code: str) -> None:
        s.candles.pop(code, None)
        _discard(self.candle_subs, code, s)

    # ---- routing ---------------------------------------------------------------------

    def dispatch(self, events: list[Event]) -> None:
        """Route a consumed batch; called on the event loop by the feed."""
        started = time.perf_counter()
        pushing = self.pushing
        latest = self.latest
        merged = self._merged
        if merged and started - self._merged_at > self.flush_interval_s:
            self._drop_merged()
            merged = self._merged
        for ev in events:
            q = ev.quote
            if q is not None:
                prev = latest.get(q.code)
                if prev is not None and prev.ts >= q.ts:
                    continue  # stale or duplicate (newer wins)
                latest[q.code] = q
                if merged:
                    self._routed_since.append(q)
                if q.ts > self.exchange_now:
                    self.exchange_now = q.ts
                if not pushing:
                    continue
                for s in self.by_code.get(q.code, ()):
                    s.offer_quote(q)
                for s in self.by_market.get(q.market, ()):
                    s.offer_quote(q)
                for s in self.everything:
                    s.offer_quote(q)
                if q.code in self.candle_subs and self.on_watched_quote is not None:
                    self.on_watched_quote(q.code)
            elif ev.kind == "stats":
                self.latest_stats[ev.key] = ev.raw
                if pushing:
                    for s in self.stats_subs:
                        s.offer_stats(ev.key, ev.raw)
            elif ev.kind == "alert":
                if pushing:
                    for s in self.alert_subs:
                        s.offer_alert(ev.raw)
            elif ev.kind == "candle" and pushing:
                subs = self.candle_subs.get(ev.key)
                if not subs or not ev.decoded():
                    continue
                key = (ev.key, ev.tf)
                if ev.minute_ts > self.closed_through.get(key, -1):
                    self.closed_through[key] = ev.minute_ts
                for s in subs:
                    stream = s.candles.get(ev.key)
                    if stream is not None and stream.tf == ev.tf:
                        s.offer_candle(ev.key, ev.minute_ts, ev.candle_json(stream.groups))
        self.routed += len(events)
        self.last_event_at = time.time()
        metrics.DISPATCH_SECONDS.observe(time.perf_counter() - started)

    def offer_open_bars(self, code: str, tf: str, bars: list[Bar]) -> None:
        """Offer ``code``'s open ``tf`` bars (api.open_bars) to the sessions watching them.

        Each bar is rendered once per set of indicator groups; a bar whose
        start is not after the newest closed one routed is dropped (its final
        values went out already).
        """
        subs = self.candle_subs.get(code)
        if not subs or not self.pushing:
            return
        newest_closed = self.closed_through.get((code, tf), -1)
        fresh = [bar for bar in bars if bar["minute_ts"] > newest_closed]
        rendered: dict[frozenset[str] | None, list[bytes]] = {}
        for s in subs:
            stream = s.candles.get(code)
            if stream is None or stream.tf != tf:
                continue
            raws = rendered.get(stream.groups)
            if raws is None:
                raws = rendered[stream.groups] = [render_bar(bar, stream.groups) for bar in fresh]
            for bar, raw in zip(fresh, raws, strict=True):
                s.offer_candle(code, bar["minute_ts"], raw, closed=False)

    def refresh_open_bars(self, code: str) -> None:
        """Have ``code``'s open bars read and offered again (a new candle subscriber)."""
        if code in self.latest and self.on_watched_quote is not None:
            self.on_watched_quote(code)

    def market_snapshot(self, market: str, stored: list[QuoteEvent], hold: Hold) -> Snapshot:
        """Per code of ``market`` (or ALL) the newer of ``stored`` and the last routed quote.

        Merged (5,000 codes: milliseconds) at most once per flush interval per
        market and shared: never modify it. Quotes of the market routed since
        it was merged go to ``hold``, which the caller opened before asking, so
        with the snapshot they cover everything routed before the hold opened.
        """
        now = time.perf_counter()
        if self._merged and now - self._merged_at > self.flush_interval_s:
            self._drop_merged()
        hit = self._merged.get(market)
        if hit is None or hit[0] is not stored:
            if not self._merged:
                self._merged_at = now
            hit = (stored, len(self._routed_since), self._merge(market, stored))
            self._merged[market] = hit
        everything = market == "ALL"
        for ev in self._routed_since[hit[1] :]:
            if everything or ev.market == market:
                hold.add_routed_earlier(ev)
        return hit[2]

    def _merge(self, market: str, stored: list[QuoteEvent]) -> Snapshot:
        merged = {ev.code: ev for ev in stored}
        everything = market == "ALL"
        for code, ev in self.latest.items():
            if everything or ev.market == market:
                old = merged.get(code)
                if old is None or ev.ts > old.ts:
                    merged[code] = ev
        return Snapshot.of([merged[code] for code in sorted(merged)])

    def _drop_merged(self) -> None:
        self._merged = {}
        self._routed_since = []

    # ---- the flush timer -------------------------------------------------------------

    def attach_writer(self, s: Session, writer: FrameWriter) -> None:
        """Let the hub's flush timer write ``s``'s frames through ``writer``."""
        s.use_writer(writer, partial(self.mark_dirty, s))

    def mark_dirty(self, s: Session) -> None:
        """``s`` has something to send: flush it now, or once its flush interval is over.

        Each session is written at most once per flush interval; one that was
        not written during the last interval goes out right after the current
        dispatch (one callback for all of them), the others at their due time.
        """
        if s.dirty:
            return
        s.dirty = True
        loop = asyncio.get_running_loop()
        due = s.flushed_at + self.flush_interval_s
        if due <= loop.time():
            self._ready.append(s)
            if not self._ready_scheduled:
                self._ready_scheduled = True
                loop.call_soon(self._flush_ready)
        else:
            self._later.append(s)
            if self._later_at is None or due < self._later_due:
                if self._later_at is not None:
                    self._later_at.cancel()
                self._later_due = due
                self._later_at = loop.call_at(due, self._flush_later)

    def _flush_ready(self) -> None:
        self._ready_scheduled = False
        ready, self._ready = self._ready, []
        self._write(ready, asyncio.get_running_loop().time())

    def _flush_later(self) -> None:
        loop = asyncio.get_running_loop()
        self._later_at = None
        now = loop.time()
        horizon = now + 0.001  # timer granularity
        interval = self.flush_interval_s
        due_now: list[Session] = []
        keep: list[Session] = []
        next_due = float("inf")
        for s in self._later:
            due = s.flushed_at + interval
            if due <= horizon:
                due_now.append(s)
            else:
                keep.append(s)
                next_due = min(next_due, due)
        self._later = keep
        if keep:
            self._later_due = next_due
            self._later_at = loop.call_at(next_due, self._flush_later)
        self._write(due_now, now)

    def _write(self, sessions: list[Session], now: float) -> None:
        frames = 0
        for s in sessions:
            s.dirty = False
            s.flushed_at = now
            try:
                frames += s.flush()
            except Exception:  # one broken socket must not stop the others' flush
                logger.exception("flush of ws client %d failed", s.sid)
        if frames:
            self.frames_sent += frames
            metrics.WS_MESSAGES_SENT.inc(frames)

    # ---- slow clients ----------------------------------------------------------------

    async def watch_slow_clients(self, deadline_s: float, period_s: float = 0.25) -> None:
        """Close (4008) every client that stays hopeless longer than ``deadline_s``."""
        while True:
            await asyncio.sleep(period_s)
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if not s.closing and s.stalled_for(now) > deadline_s:
                    metrics.WS_CLOSED_SLOW.inc()
                    reason = f"client too slow: no progress for {deadline_s:g} s"
                    task = asyncio.get_running_loop().create_task(s.kill(CLOSE_TOO_SLOW, reason))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)


def _discard(index: defaultdict[str, set[Session]], key: str, s: Session) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(s)
        if not subs:
            del index[key]
