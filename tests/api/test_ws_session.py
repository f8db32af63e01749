"""Session buffers and holds, without sockets: conflation, snapshot-then-live, replay merge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from api.hub import Event, Hub
from api.ws_session import CandleStream, QuoteEvent, Session
from schemas.serde import SerdeError
from tests.api.vclock import VirtualClock


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """Every timer of these tests runs on a clock the test moves (none on the machine's)."""
    return VirtualClock(monkeypatch)


def ev(code: str, ts: int, market: str = "SZ") -> QuoteEvent:
    return QuoteEvent(code, market, ts, json.dumps({"code": code, "exchange_ts": ts}).encode())


class Sink:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed: tuple[int, str] | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, text: bytes) -> None:
        await self.gate.wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def session(sink: Sink, flush: float = 0.01, max_pending: int = 100) -> Session:
    return Session(
        1,
        "anonymous",
        sink.send,
        sink.close,
        flush_interval_s=flush,
        max_pending_quotes=max_pending,
    )


def batches(sink: Sink) -> list[list[int]]:
    return [[q["exchange_ts"] for q in m["data"]] for m in sink.sent if m["type"] == "quotes"]  # type: ignore[union-attr]


async def test_routing_by_code_market_all_and_newer_wins(clock: VirtualClock) -> None:
    hub = Hub()
    a, b, c = Sink(), Sink(), Sink()
    sa, sb, sc = session(a), session(b), session(c)
    for s in (sa, sb, sc):
        hub.add(s)
        s.start()
    hub.subscribe_stock(sa, "000001")
    hub.subscribe_market(sb, "SH")
    hub.set_all(sc, True)
    hub.dispatch([Event("quote", e.raw, quote=e) for e in (ev("000001", 5), ev("600000", 5, "SH"))])
    hub.dispatch([Event("quote", b"", quote=ev("000001", 4))])  # stale: dropped
    await clock.advance(0.05)
    assert batches(a) == [[5]] and batches(b) == [[5]] and batches(c) == [[5, 5]]
    hub.remove(sa)
    assert "000001" not in hub.by_code
    for s in (sa, sb, sc):
        await s.stop()


async def test_slow_sender_conflates_to_the_latest(clock: VirtualClock) -> None:
    sink = Sink()
    s = session(sink)
    s.start()
    sink.gate.clear()  # the socket is stuck
    s.offer_quote(ev("000001", 1))
    await clock.advance(0.02)
    for ts in range(2, 50):
        s.offer_quote(ev("000001", ts))
        s.offer_quote(ev("000002", ts))
    assert s.stalled_for(clock.now + 1) > 1
    sink.gate.set()
    await clock.advance(0.05)
    assert batches(sink) == [[1], [49, 49]]
    assert s.conflated == 47 * 2
    await s.stop()


async def test_snapshot_release_drops_what_the_snapshot_covers(clock: VirtualClock) -> None:
    sink = Sink()
    s = session(sink)
    s.offer_quote(ev("000001", 3))  # pending before the subscribe
    hold = s.start_hold(codes=["000001"])
    s.offer_quote(ev("000001", 4))  # held
    s.offer_quote(ev("000001", 6))  # held, newer than the snapshot
    s.offer_quote(ev("000002", 1))  # not held
    s.release_snapshot(hold, [ev("000001", 5)])
    s.start()
    await clock.advance(0.05)
    assert sink.sent[0]["type"] == "snapshot"
    assert batches(sink) == [[1, 6]]
    await s.stop()


async def test_replay_release_merges_held_updates_in_order(clock: VirtualClock) -> None:
    sink = Sink()
    s = session(sink)
    hold = s.start_hold(codes=["000001"], ordered=True)
    for ts in (3, 4, 5, 6):
        s.offer_quote(ev("000001", ts))
    s.release_replay(hold, "000001", [ev("000001", t) for t in (1, 2, 3, 4)])
    s.start()
    await clock.advance(0.05)
    replayed = [q["exchange_ts"] for m in sink.sent if m["type"] == "replay" for q in m["data"]]  # type: ignore[union-attr]
    assert replayed == [1, 2, 3, 4, 5, 6]
    assert sink.sent[-1] == {"type": "replay_done", "stock_code": "000001", "replayed": 6}
    await s.stop()


async def test_overflow_counts_as_stalled() -> None:
    sink = Sink()
    s = session(sink, max_pending=2)
    for code in ("000001", "000002", "000003"):
        s.offer_quote(ev(code, 1))
    assert s.overflow_since is not None


async def test_watchdog_closes_a_stuck_client_4008(clock: VirtualClock) -> None:
    deadline = 0.1
    hub = Hub()
    sink = Sink()
    s = session(sink)
    hub.add(s)
    s.start()
    sink.gate.clear()
    s.offer_quote(ev("000001", 1))
    watch = asyncio.get_running_loop().create_task(hub.watch_slow_clients(deadline, 0.02))
    await clock.advance(deadline - 0.03)
    assert sink.closed is None  # stuck, but not yet for the deadline
    await clock.advance(0.1)
    watch.cancel()
    assert sink.closed is not None and sink.closed[0] == 4008


async def test_a_shared_market_snapshot_misses_nothing_routed_after_it_was_merged() -> None:
    """Subscribers share one merged snapshot; what was routed since goes to each one's hold."""
    hub = Hub(flush_interval_s=60.0)  # the merge stays cached for the whole test
    hub.dispatch(
        [
            Event("quote", b"", quote=ev("000001", 1)),
            Event("quote", b"", quote=ev("600000", 1, "SH")),
        ]
    )
    first, second = Sink(), Sink()
    s1, s2 = session(first), session(second)
    s1.start()
    s2.start()
    stored: list[QuoteEvent] = []  # the shared Redis read (api.snapshots): one list object
    hold1 = s1.start_hold(everything=True)
    snap1 = hub.market_snapshot("ALL", stored, hold1)
    s1.release_snapshot(hold1, snap1)
    hub.dispatch([Event("quote", b"", quote=ev("000001", 2))])  # after the merge
    hold2 = s2.start_hold(markets=["SZ"])  # opened later: 000001@2 was not held live
    snap2 = hub.market_snapshot("SZ", [ev("000002", 7)], hold2)
    assert [e.code for e in snap2.events] == ["000001", "000002"]
    hold3 = s2.start_hold(everything=True)
    snap3 = hub.market_snapshot("ALL", stored, hold3)
    assert snap3 is snap1  # shared, not merged again
    assert [(e.code, e.ts) for e in hold3.latest.values()] == [("000001", 2)]
    s2.release_snapshot(hold2, snap2)
    s2.release_snapshot(hold3, snap3)
    await asyncio.sleep(0.05)
    assert [m["type"] for m in second.sent] == ["snapshot", "snapshot", "quotes"]
    assert batches(second) == [[2]]  # 000001@2, newer than the shared snapshot: delivered
    for s in (s1, s2):
        await s.stop()


async def test_a_condemned_client_is_detached_before_its_close_completes() -> None:
    """4008/1009: from the moment it is condemned the client gets no update and holds none,
    although its close frame waits (seconds) behind what it does not read."""
    hub = Hub()
    never = asyncio.Event()

    async def close_never_read(code: int, reason: str) -> None:
        await never.wait()

    condemned = Session(
        1, "k", Sink().send, close_never_read, flush_interval_s=0.01, max_pending_quotes=100
    )
    bystander_sink = Sink()
    bystander = session(bystander_sink)
    for s in (condemned, bystander):
        hub.add(s)
    hub.set_all(condemned, True)
    hub.subscribe_stock(condemned, "000001")
    hub.subscribe_market(bystander, "SZ")
    closing = asyncio.get_running_loop().create_task(condemned.kill(4008, "too slow"))
    await asyncio.sleep(0)  # the kill has started; its close is pending
    assert not closing.done()
    hub.dispatch([Event("quote", b"", quote=ev(f"{i:06d}", 1)) for i in range(1, 51)])
    assert condemned not in hub.everything and "000001" not in hub.by_code
    assert condemned.stalled_for(0) == 0 and not condemned.flush()  # nothing pending
    hub.set_all(condemned, True)  # a request that was under way: still routed nothing
    assert condemned not in hub.everything
    assert hub.per_key["k"] == 1  # still a connection of its key until it is removed
    never.set()
    await closing
    hub.remove(condemned)
    assert "k" not in hub.per_key and hub.by_market["SZ"] == {bystander}


def test_kept_json_is_its_own_size() -> None:
    """orjson's result holds its whole write buffer (~8 KiB for a 700-byte quote): the
    gateway keeps thousands (latest quote per code, buffers, queued control messages)."""
    import tracemalloc

    from api.kafka_feed import to_event
    from api.ws_session import frame

    rec = {"code": "600000", "market": "SH", "exchange_ts": 1, "name": "x" * 600}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [to_event("quote", rec).raw for _ in range(200)]
        kept += [frame("error", code="rate_limited", message="y" * 100) for _ in range(200)]
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    payload = sum(map(len, kept))
    assert grown < 2 * payload + 200 * 400, f"{grown} bytes held for {payload} bytes of JSON"


def bar(minute_ts: int, close: float, closed: bool = False) -> dict[str, object]:
    return {"code": "000001", "tf": "5m", "minute_ts": minute_ts, "close": close,
            "closed": closed, "indicators": {"rsi6": close, "ma5": close}}  # fmt: skip


def candle_batches(sink: Sink) -> list[list[tuple[int, object, object]]]:
    return [
        [(c["minute_ts"], c["close"], c["closed"]) for c in m["data"]]  # type: ignore[union-attr]
        for m in sink.sent
        if m["type"] == "candles"
    ]


async def test_open_bars_conflate_and_never_follow_their_closed_bar(clock: VirtualClock) -> None:
    """Per bar start the latest open bar; the closed one replaces it and is final."""
    hub = Hub()
    sink = Sink()
    s = session(sink)
    hub.add(s)
    hub.subscribe_candles(s, "000001", CandleStream("5m", frozenset({"rsi"})))
    s.start()
    sink.gate.clear()  # a slow reader: its updates conflate
    await clock.advance(0.02)
    for close in (1.0, 2.0, 3.0):
        hub.offer_open_bars("000001", "5m", [bar(300, close)])
    hub.offer_open_bars("000001", "1m", [bar(300, 9.0)])  # not its timeframe
    sink.gate.set()
    await clock.advance(0.05)
    assert candle_batches(sink) == [[(300, 3.0, False)]]
    assert sink.sent[-1]["data"][0]["indicators"]["rsi6"] == 3.0  # type: ignore[index]
    assert "ma5" not in sink.sent[-1]["data"][0]["indicators"]  # type: ignore[index]
    hub.offer_open_bars("000001", "5m", [bar(300, 4.0)])
    closed = bar(300, 4.0, closed=True)
    hub.dispatch([Event("candle", json.dumps(closed).encode(), key="000001", minute_ts=300,
                        tf="5m", record=closed)])  # fmt: skip
    hub.offer_open_bars("000001", "5m", [bar(300, 3.5), bar(600, 5.0)])  # a late read
    await clock.advance(0.05)
    assert candle_batches(sink)[1:] == [[(300, 4.0, True), (600, 5.0, False)]]
    await s.stop()


async def test_pending_bars_are_bounded_per_client() -> None:
    sink = Sink()
    s = session(sink, max_pending=2)
    for minute_ts in (1, 2, 3):
        s.offer_candle("000001", minute_ts, b"{}")
    assert s.overflow_since is not None  # stalled: the slow-client deadline closes it


async def test_a_candle_snapshot_comes_before_the_bars_routed_while_it_was_read(
    clock: VirtualClock,
) -> None:
    sink = Sink()
    s = session(sink)
    s.start_candle_snapshot("000001")
    s.offer_candle("000001", 300, json.dumps(bar(300, 2.0)).encode(), closed=False)  # dropped
    s.offer_candle("000001", 0, json.dumps(bar(0, 1.0, closed=True)).encode())  # parked
    s.release_candle_snapshot("000001", b'{"type":"snapshot","candles":[]}')
    s.start()
    await clock.advance(0.05)
    assert [m["type"] for m in sink.sent] == ["snapshot", "candles"]
    assert candle_batches(sink) == [[(0, 1.0, True)]]
    await s.stop()


async def test_the_feeds_bars_are_decoded_only_for_watched_stocks(clock: VirtualClock) -> None:
    """The feed hands bars over undecoded (Event.pending): at a minute's end thousands
    arrive at once. Decoded once for a watched stock; never for the others; one that
    cannot be decoded is counted and dropped, and the batch goes on."""
    hub = Hub()
    sink = Sink()
    s = session(sink)
    hub.add(s)
    hub.subscribe_candles(s, "000001", CandleStream("5m", None))
    s.start()
    decoded: list[str] = []

    def pending(code: str, close: float) -> Callable[[], dict[str, object]]:
        def decode() -> dict[str, object]:
            decoded.append(code)
            if close < 0:
                raise SerdeError("truncated")
            return {**bar(300, close, closed=True), "code": code}

        return decode

    errors = REGISTRY.get_sample_value("hq_gateway_decode_errors_total") or 0.0
    bars = (("000002", 1.0), ("000001", -1.0), ("000001", 2.0))
    hub.dispatch(
        [Event("candle", b"", key=code, pending=pending(code, close)) for code, close in bars]
    )
    await clock.advance(0.05)
    assert decoded == ["000001", "000001"]  # the unwatched stock's bar never
    assert candle_batches(sink) == [[(300, 2.0, True)]]
    assert REGISTRY.get_sample_value("hq_gateway_decode_errors_total") == errors + 1
    await s.stop()
