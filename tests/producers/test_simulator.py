"""The feed simulator over real loopback sockets: auth, line formats, cadence, backlog.

Lines are checked by an independent reader of shared/spec/feed-protocol.md
written here (not the simulator's own renderer), so a format slip fails.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers import protocol
from producers.quote_lines import (
    MALFORMED_KINDS,
    SnapshotBuild,
    SnapshotSource,
    Stamp,
    cents,
    next_time,
    price_text,
    render,
    session_time,
    template,
)
from producers.settings import split_addr
from producers.simulator import FeedSimulator, SimConfig, SimulatorError, default_start
from producers.universe import MarketWalk, allocate, build_listing
from schemas.exchange import SHANGHAI_TZ
from schemas.market_rules import board_of, is_limit_free, is_st, limit_prices

TOKEN = "test-token-not-secret"
START = dt.datetime(2026, 11, 23, 11, 29, 58, tzinfo=SHANGHAI_TZ)
BJ_KEYS = [
    "symbol", "name", "lastPrice", "preClose", "open", "high", "low", "volume", "turnover",
    "bidPrices", "bidVolumes", "askPrices", "askVolumes", "timestamp",
]  # fmt: skip
SYMBOL = re.compile(r"(sh|sz|bj)\d{6}")
PRICE = re.compile(r"-?\d+\.\d{2}")
INTEGER = re.compile(r"-?\d+")


class Bad(Exception):
    """A line that is not a valid quote; ``args[0]`` is the malformed kind."""


def parse_line(line: bytes) -> dict[str, Any]:
    """A quote line as a dict of yuan/shares; raises Bad(kind) per the spec's list."""
    text = line.decode()
    if text.startswith("{"):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise Bad("invalid_json") from None
        if list(obj) != BJ_KEYS:
            raise Bad("field_count")
        if not isinstance(obj["symbol"], str) or not SYMBOL.fullmatch(obj["symbol"]):
            raise Bad("bad_symbol")
        nums = ["lastPrice", "preClose", "open", "high", "low", "volume", "turnover", "timestamp"]
        if any(type(obj[k]) not in (int, float) for k in nums):
            raise Bad("non_numeric")
        q = {
            "symbol": obj["symbol"], "name": obj["name"], "open": obj["open"],
            "prev_close": obj["preClose"], "price": obj["lastPrice"], "high": obj["high"],
            "low": obj["low"], "volume": obj["volume"], "amount": obj["turnover"],
            "bids": list(zip(obj["bidVolumes"], obj["bidPrices"], strict=True)),
            "asks": list(zip(obj["askVolumes"], obj["askPrices"], strict=True)),
            "when": dt.datetime.fromtimestamp(obj["timestamp"] / 1000, SHANGHAI_TZ),
        }  # fmt: skip
        assert isinstance(q["volume"], int)
        assert len(q["bids"]) == len(q["asks"]) == 5
    else:
        f = text.split("$")
        if len(f) != 33:
            raise Bad("field_count")
        if not SYMBOL.fullmatch(f[0]):
            raise Bad("bad_symbol")
        ints = [9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29]
        for i in range(2, 31):
            if not (INTEGER if i in ints else PRICE).fullmatch(f[i]):
                raise Bad("non_numeric")
        n = [float(x) for x in f[2:11]]
        q = {
            "symbol": f[0], "name": f[1], "open": n[0], "prev_close": n[1], "price": n[2],
            "high": n[3], "low": n[4], "bid": n[5], "ask": n[6], "volume": int(f[9]),
            "amount": n[8],
            "bids": [(int(f[i]), float(f[i + 1])) for i in range(11, 21, 2)],
            "asks": [(int(f[i]), float(f[i + 1])) for i in range(21, 31, 2)],
        }  # fmt: skip
        assert q["bid"] == q["bids"][0][1] and q["ask"] == q["asks"][0][1]
    if q["price"] < 0 or q["volume"] < 0:
        raise Bad("negative")
    if q["high"] and q["low"] and q["high"] < q["low"]:
        raise Bad("high_low")
    if not text.startswith("{"):
        try:
            q["when"] = dt.datetime.strptime(f"{f[31]} {f[32]}", "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise Bad("bad_datetime") from None
        q["when"] = q["when"].replace(tzinfo=SHANGHAI_TZ)
    return q


def check_quote(q: dict[str, Any], trade_date: dt.date) -> None:
    """What a good line must satisfy beyond parsing: limits, consistency, books."""
    market, code = q["symbol"][:2].upper(), q["symbol"][2:]
    board = board_of(market, code)
    up, down = limit_prices(q["prev_close"], board, is_st(q["name"]), trade_date)
    if is_limit_free(q["name"], board, trade_date):  # a new listing: no daily limit
        up, down = q["prev_close"] * 5, q["prev_close"] * 0.2
    if q["price"] == 0:  # not traded yet, or suspended
        assert q["open"] == q["high"] == q["low"] == 0 and q["volume"] == 0 == q["amount"]
    else:
        assert down <= q["low"] <= q["price"] <= q["high"] <= up, q
        assert down <= q["open"] <= up and q["volume"] > 0
        assert q["low"] * q["volume"] - 0.01 <= q["amount"] <= q["high"] * q["volume"] + 0.01
    bids = [p for v, p in q["bids"] if p]
    asks = [p for v, p in q["asks"] if p]
    assert all(down <= p <= up for p in bids + asks), q
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    if bids and asks:
        assert bids[0] < asks[0]


async def connect(
    port: int, token: str = TOKEN
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(protocol.auth_request(token))
    await writer.drain()
    assert await asyncio.wait_for(reader.readline(), 5) == b'{"op":"auth","ok":true}\n'
    return reader, writer


async def read_quotes(reader: asyncio.StreamReader, n: int, timeout: float = 20) -> list[bytes]:
    """The next ``n`` quote lines (control lines skipped), without their newline."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        line = await asyncio.wait_for(reader.readline(), deadline - time.monotonic())
        assert line.endswith(b"\n"), "connection closed early"
        if protocol.classify(line) != "control":
            out.append(line[:-1])
    return out


async def run_sim(**kw: Any) -> FeedSimulator:
    sim = FeedSimulator(SimConfig(token=TOKEN, **kw))
    await sim.start()
    return sim


async def quotes_from(n: int, **kw: Any) -> list[bytes]:
    """The first ``n`` quote lines of a simulator configured with ``kw``; then it stops."""
    sim = await run_sim(**kw)
    try:
        reader, writer = await connect(sim.port)
        lines = await read_quotes(reader, n)
        writer.close()
        return lines
    finally:
        await sim.stop()


async def test_auth_ok_then_wrong_token_rejected_and_closed() -> None:
    sim = await run_sim(stocks=50, interval_s=0.05, max_snapshots=1)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(b'{"op":"auth","token":"nope"}\n')
        await writer.drain()
        assert await reader.readline() == b'{"op":"auth","ok":false,"error":"invalid token"}\n'
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
        assert sim.stats.auth_failures == 1 and sim.stats.snapshots_sent == 0
        reader, writer = await connect(sim.port)  # the right token gets the stream
        assert len(await read_quotes(reader, 50)) == 50
        assert sim.stats.clients_connected == 1
        writer.close()
    finally:
        await sim.stop()


async def test_a_port_probe_is_not_an_auth_failure(caplog: pytest.LogCaptureFixture) -> None:
    """`hqstream up` checks that the simulator listens by connecting and closing:
    no warning, no auth failure counted, and the next client gets the stream."""
    sim = await run_sim(stocks=50, interval_s=0.05, max_snapshots=1)
    try:
        with caplog.at_level(logging.WARNING, logger="producers.simulator"):
            _, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            writer.close()
            await writer.wait_closed()
            reader, writer = await connect(sim.port)
            assert len(await read_quotes(reader, 50)) == 50
            writer.close()
        assert sim.stats.auth_failures == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        await sim.stop()


async def test_snapshots_are_valid_complete_and_move_forward() -> None:
    stocks, snaps = 400, 6
    sim = await run_sim(stocks=stocks, interval_s=1.0, rate=50, max_snapshots=snaps, start=START)
    try:
        reader, writer = await connect(sim.port)
        lines = await read_quotes(reader, stocks * snaps)
        writer.close()
    finally:
        await sim.stop()
    # the morning's last snapshot is stamped after 11:30, then lunch is skipped
    expected_times = ["11:29:58", "11:29:59", "11:30:00", "11:30:01", "13:00:00", "13:00:01"]
    last: dict[str, dict[str, Any]] = {}
    for k in range(snaps):
        chunk = [parse_line(line) for line in lines[k * stocks : (k + 1) * stocks]]
        symbols = [q["symbol"] for q in chunk]
        assert len(set(symbols)) == stocks  # one line per stock per snapshot
        assert {q["when"].strftime("%H:%M:%S") for q in chunk} == {expected_times[k]}
        for q in chunk:
            check_quote(q, START.date())
            prev = last.get(q["symbol"])
            if prev is not None:
                assert q["volume"] >= prev["volume"] and q["amount"] >= prev["amount"]
                assert q["prev_close"] == prev["prev_close"] and q["name"] == prev["name"]
            last[q["symbol"]] = q
        if k == 0:  # shuffled, not in code order
            assert symbols != sorted(symbols)
    kinds = Counter(q["symbol"][:2] for q in last.values())
    assert set(kinds) == {"sh", "sz", "bj"}
    sse_line = next(line for line in lines if not line.startswith(b"{"))
    assert sse_line.decode().split("$")[31] == "2026-11-23"
    assert any(q["price"] == 0 for q in last.values())  # suspended / not yet traded
    assert sum(q["volume"] for q in last.values()) > 0
    assert sim.stats.lines_sent == stocks * snaps and sim.stats.snapshots_sent == snaps
    assert sim.stats.malformed_sent == 0


async def _collect(seed: int, max_rate: bool = False) -> bytes:
    lines = await quotes_from(
        600, stocks=150, interval_s=0.01, max_snapshots=4, seed=seed, start=START,
        malformed_fraction=0.05, max_rate=max_rate, pool_snapshots=3,
    )  # fmt: skip
    return b"\n".join(lines)


async def test_same_seed_same_feed() -> None:
    first = await _collect(11)
    assert await _collect(11) == first
    assert await _collect(12) != first
    assert await _collect(11, max_rate=True) == await _collect(11, max_rate=True)


async def test_spread_sends_the_same_lines_evenly_over_the_interval() -> None:
    """--spread: a steady stream at the snapshot rate, not a burst; same lines as a burst."""
    stocks, interval = 400, 0.6
    sim = await run_sim(stocks=stocks, interval_s=interval, max_snapshots=2, seed=5, start=START,
                        spread=True)  # fmt: skip
    try:
        reader, writer = await connect(sim.port)
        arrivals: list[float] = []
        lines: list[bytes] = []
        for _ in range(2 * stocks):
            lines += await read_quotes(reader, 1)
            arrivals.append(time.monotonic())
        writer.close()
    finally:
        await sim.stop()
    first = arrivals[:stocks]
    span = first[-1] - first[0]
    assert 0.7 * interval <= span <= 1.5 * interval, span  # a burst arrives within milliseconds
    # evenly: each quarter of the period carries about a quarter of the lines
    quarters = Counter(min(3, int((t - first[0]) / (interval / 4))) for t in first)
    assert all(0.15 * stocks <= quarters[q] <= 0.35 * stocks for q in range(4)), quarters
    burst = await quotes_from(
        2 * stocks, stocks=stocks, interval_s=interval, max_snapshots=2, seed=5, start=START
    )
    assert lines == burst


async def test_spread_keeps_the_snapshot_rate_however_long_a_snapshot_takes_to_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--spread: snapshot k starts k periods after the first, not k * (period + build):
    the next snapshot is built, a part after each slice, while this one goes out
    (5,000 stocks take ~0.3 s of CPU)."""
    stocks, interval, build_s, snaps = 200, 0.4, 0.3, 4
    advance = SnapshotBuild.advance

    def slow_advance(self: SnapshotBuild, parts: int = 1) -> None:
        time.sleep(build_s * parts / self.parts)  # a build of build_s, part by part
        advance(self, parts)

    monkeypatch.setattr(SnapshotBuild, "advance", slow_advance)
    sim = await run_sim(stocks=stocks, interval_s=interval, max_snapshots=snaps, seed=5,
                        start=START, spread=True)  # fmt: skip
    try:
        reader, writer = await connect(sim.port)
        firsts: list[float] = []  # when each snapshot's first line arrived
        for _ in range(snaps):
            await read_quotes(reader, 1)
            firsts.append(time.monotonic())
            await read_quotes(reader, stocks - 1)
        writer.close()
    finally:
        await sim.stop()
    span = firsts[-1] - firsts[0]
    # a gap of a build per snapshot would make it (snaps - 1) * (interval + build_s) = 2.1 s
    assert 0.9 * (snaps - 1) * interval <= span < (snaps - 1) * (interval + build_s / 2), firsts


def test_a_snapshot_built_a_part_at_a_time_is_the_one_next_gives() -> None:
    """SnapshotSource.build: the same bytes as next(), through the pre-open, the
    auction print and trading, and from the max-rate pool; ``parts`` builds it all."""
    listing = build_listing(allocate(120), seed=7)
    opening = dt.datetime(2026, 11, 23, 9, 24, 54, tzinfo=SHANGHAI_TZ)
    for pool in (0, 3):
        whole = SnapshotSource(listing, opening, 3.0, seed=7, malformed_fraction=0.1,
                               pool_snapshots=pool)  # fmt: skip
        parted = SnapshotSource(listing, opening, 3.0, seed=7, malformed_fraction=0.1,
                                pool_snapshots=pool)  # fmt: skip
        for k in range(8):  # 09:24:54 to 09:25:15: pre-open, the opening print, holds
            expected = whole.next()
            build = parted.build()
            assert not build.done
            step = 1 + k % 3
            for _ in range(0, build.parts, step):
                build.advance(step)
            assert build.done, (pool, k, build.parts)
            assert build.result() == expected
            assert parted.clock == whole.clock
    trading = SnapshotSource(listing, dt.datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI_TZ), 3.0, 7)
    built = SnapshotSource(listing, dt.datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI_TZ), 3.0, 7)
    for _ in range(3):
        expected = trading.next()
        build = built.build()
        build.advance(build.parts // 2)  # half built: the rest is built on demand
        assert not build.done
        assert build.result() == expected


async def test_spread_builds_the_next_snapshot_evenly_over_the_slices() -> None:
    """Each slice sent is followed by its share of the next snapshot's parts."""

    class Recorded:
        parts = 7

        def __init__(self) -> None:
            self.after: list[int] = []  # parts built, after each slice
            self.sent = 0

        def advance(self, parts: int = 1) -> None:
            self.sent += parts
            self.after.append(self.sent)

    sim = FeedSimulator(SimConfig(token=TOKEN, stocks=10, seed=1, start=START, spread=True))
    ahead = Recorded()
    data = b"".join(b"line %d\n" % i for i in range(10))
    await sim._spread(data, time.monotonic(), 0.05, ahead)  # type: ignore[arg-type]
    assert ahead.after == [7 * (i + 1) // 10 for i in range(10)]


async def test_malformed_fraction_gives_each_kind_its_share() -> None:
    stocks, snaps, fraction = 500, 10, 0.2
    sim = await run_sim(
        stocks=stocks, interval_s=0.01, max_snapshots=snaps, malformed_fraction=fraction,
        start=START,
    )  # fmt: skip
    try:
        reader, writer = await connect(sim.port)
        lines = await read_quotes(reader, stocks * snaps)
        writer.close()
    finally:
        await sim.stop()
    seen: Counter[str] = Counter()
    for line in lines:
        assert b"\n" not in line and b"\r" not in line
        try:
            check_quote(parse_line(line), START.date())
        except Bad as exc:
            seen[exc.args[0]] += 1
    total = sum(seen.values())
    assert 0.17 * len(lines) <= total <= 0.23 * len(lines)
    assert total == sim.stats.malformed_sent
    assert dict(seen) == sim.stats.malformed_by_kind
    assert set(seen) == set(MALFORMED_KINDS)
    for kind in MALFORMED_KINDS:
        assert abs(seen[kind] - total / 7) < 50, (kind, seen)
    assert b"sx" in b"".join(lines)  # the spec's sx12345-style symbol appears


async def test_max_rate_cycles_the_pool_with_growing_volumes_and_clock() -> None:
    stocks, snaps = 200, 7
    lines = await quotes_from(
        stocks * snaps,
        stocks=stocks,
        max_rate=True,
        pool_snapshots=2,
        max_snapshots=snaps,
        start=START,
    )
    last: dict[str, dict[str, Any]] = {}
    times = []
    for k in range(snaps):
        chunk = [parse_line(line) for line in lines[k * stocks : (k + 1) * stocks]]
        assert len({q["symbol"] for q in chunk}) == stocks
        times.append({q["when"] for q in chunk})
        for q in chunk:
            check_quote(q, START.date())
            prev = last.get(q["symbol"])
            if prev is not None and prev["volume"]:
                assert q["volume"] > prev["volume"] or q["volume"] == prev["volume"] > 0
                assert q["amount"] >= prev["amount"]
            last[q["symbol"]] = q
    assert all(len(t) == 1 for t in times)
    assert [t.pop().strftime("%H:%M:%S") for t in times] == [
        "11:29:58",
        "11:30:01",
        "13:00:00",
        "13:00:03",
        "13:00:06",
        "13:00:09",
        "13:00:12",
    ]  # fmt: skip  (11:30:01 is the morning's late-stamped last snapshot, then lunch)


async def test_heartbeat_when_idle() -> None:
    sim = await run_sim(stocks=30, interval_s=0.01, max_snapshots=1, heartbeat_interval_s=0.3)
    try:
        reader, writer = await connect(sim.port)
        await read_quotes(reader, 30)
        quiet_from = time.monotonic()
        line = await asyncio.wait_for(reader.readline(), 5)
        waited = time.monotonic() - quiet_from
        msg = orjson.loads(line)
        assert line == protocol.heartbeat(msg["ts"])
        assert abs(msg["ts"] - time.time() * 1000) < 2000
        assert 0.2 <= waited <= 2.0
        await asyncio.wait_for(reader.readline(), 5)  # and again while still idle
        writer.close()
    finally:
        await sim.stop()


async def test_sent_log_equals_what_the_client_received(tmp_path: Path) -> None:
    log = tmp_path / "sent.log"
    sim = await run_sim(
        stocks=300, interval_s=0.01, max_snapshots=5, malformed_fraction=0.05, sent_log=log
    )
    try:
        reader, writer = await connect(sim.port)
        await sim.wait_done(20)
        received = await read_quotes(reader, sim.stats.lines_sent)
        # Nothing else is queued: the next line, if any, is a heartbeat.
        logged = log.read_bytes()
        writer.close()
    finally:
        await sim.stop()
    assert logged == b"".join(line + b"\n" for line in received)
    assert sim.stats.bytes_sent == len(logged) and sim.stats.lines_sent == 1500


def read_in_thread(port: int, lines: int) -> tuple[threading.Thread, list[bytes]]:
    """A client in its own thread (as a receiver would be in its own process)."""
    chunks: list[bytes] = []

    def run() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(protocol.auth_request(TOKEN))
            seen = 0
            while seen < lines + 1:  # + the auth answer
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                seen += chunk.count(b"\n")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, chunks


@pytest.mark.parametrize("max_rate", [False, True])
async def test_client_that_stops_reading_is_dropped_others_continue(max_rate: bool) -> None:
    stocks, snaps = 1000, 50  # ~200 KB a snapshot
    sim = await run_sim(
        stocks=stocks, interval_s=0.05, max_snapshots=snaps, backlog_limit_bytes=1 << 20,
        max_rate=max_rate, pool_snapshots=4,
    )  # fmt: skip
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        thread, chunks = read_in_thread(sim.port, stocks * snaps)
        while not sim.stats.clients_connected:  # the healthy client is first
            await asyncio.sleep(0.001)
        stalled.connect(("127.0.0.1", sim.port))
        stalled.sendall(protocol.auth_request(TOKEN))  # authenticates, then never reads
        await sim.wait_done(30)
        await asyncio.to_thread(thread.join, 30)
        received = b"".join(chunks).split(b"\n")
        assert received[0] == protocol.auth_ok().strip()
        quotes = [line for line in received[1:] if line and not line.startswith(b'{"op"')]
        assert len(quotes) == stocks * snaps
        assert sim.stats.clients_dropped == 1  # the stalled one; the healthy one got it all
        # The stalled client finds its connection gone once it reads what it had.
        stalled.settimeout(5)
        got = 0
        with pytest.raises((ConnectionResetError, EOFError)):
            while chunk := stalled.recv(1 << 20):
                got += len(chunk)
            raise EOFError
        assert got < sim.stats.bytes_sent
    finally:
        stalled.close()
        await sim.stop()


def test_session_clock_follows_the_exchange_day() -> None:
    """Sessions (Asia/Shanghai): call auction from 09:15, lunch 11:30-13:00,
    close 15:00; vendors stamp the last ticks late (11:30:02, 15:00:03); after
    the close the clock runs on instead of standing at 15:00."""
    d = dt.datetime(2026, 11, 23, tzinfo=SHANGHAI_TZ)
    three = dt.timedelta(seconds=3)
    assert session_time(d.replace(hour=9)) == d.replace(hour=9, minute=15)
    assert session_time(d.replace(hour=12)) == d.replace(hour=13)
    assert session_time(d.replace(hour=16)) == d.replace(hour=16)  # closed: not pinned
    assert next_time(d.replace(hour=11, minute=29, second=57), three) == d.replace(
        hour=11, minute=30
    )
    assert next_time(d.replace(hour=11, minute=30), three) == d.replace(
        hour=11, minute=30, second=2
    )
    assert next_time(d.replace(hour=11, minute=30, second=2), three) == d.replace(hour=13)
    assert next_time(d.replace(hour=14, minute=59, second=58), three) == d.replace(
        hour=15, second=1
    )
    assert next_time(d.replace(hour=15), three) == d.replace(hour=15, second=3)
    assert next_time(d.replace(hour=15, second=3), three) == d.replace(hour=15, second=6)


def test_a_start_without_timezone_is_shanghai_time() -> None:
    """A naive start is exchange time: the BJ epoch timestamp agrees with the
    SH/SZ date and time fields (it was 8 h off on a UTC machine)."""
    naive = Stamp.of(dt.datetime(2026, 11, 23, 14, 59, 57))
    assert naive == Stamp.of(dt.datetime(2026, 11, 23, 14, 59, 57, tzinfo=SHANGHAI_TZ))
    utc = dt.datetime(2026, 11, 23, 6, 59, 57, tzinfo=dt.UTC)
    assert Stamp.of(utc) == naive == Stamp("2026-11-23$14:59:57", "1795417197000")


def test_cents_and_addresses() -> None:
    assert [cents(x) for x in (0, 5, 105, 1105, 144800, -1105)] == [
        "0.00", "0.05", "1.05", "11.05", "1448.00", "-11.05",
    ]  # fmt: skip
    assert Stamp.of(dt.datetime(2026, 11, 23, 14, 59, 57, tzinfo=SHANGHAI_TZ)) == Stamp(
        "2026-11-23$14:59:57", "1795417197000"
    )
    assert split_addr("127.0.0.1:7070") == ("127.0.0.1", 7070)
    assert split_addr("[::1]:7071") == ("::1", 7071)
    assert split_addr(":7072", default_host="127.0.0.1") == ("127.0.0.1", 7072)
    with pytest.raises(ValueError):
        split_addr("localhost")
    with pytest.raises(SimulatorError):
        FeedSimulator(SimConfig(token=TOKEN, rate=0))


def test_a_line_is_its_template_filled_in() -> None:
    """render writes a line out at once; the pool's templates fill theirs: the same text."""
    listing = build_listing(allocate(300), seed=5)
    assert {s.market for s in listing} == {"SH", "SZ", "BJ"}
    walk = MarketWalk(listing, dt.date(2026, 11, 23), 5, late_openers=True)
    stamp = Stamp.of(dt.datetime(2026, 11, 23, 10, 1, 3, tzinfo=SHANGHAI_TZ))
    for quotes in (walk.indicative(), walk.step(), walk.step(), walk.step()):
        for stock, q in zip(listing, quotes, strict=True):
            assert render(stock, q, stamp) == template(stock, q).fill(q.volume, q.amount, stamp)


def test_remembered_prices_are_written_as_cents_and_the_memory_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from producers import quote_lines

    monkeypatch.setattr(quote_lines, "_PRICE_TEXTS_MAX", 4)
    monkeypatch.setattr(quote_lines, "_price_texts", {})
    values = (0, 5, 105, 1105, 144800, -1105, 105)
    assert [price_text(x) for x in values] == [cents(x) for x in values]
    assert 0 < len(quote_lines._price_texts) <= 4


def test_command_refuses_to_run_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from producers import simulator
    from producers.cli import simulate

    monkeypatch.delenv("HQ_FEED_TOKEN", raising=False)
    simulator.get_settings.cache_clear()
    app = typer.Typer()
    app.command()(simulate)
    try:
        result = CliRunner().invoke(app, ["--addr", "127.0.0.1:1", "--stocks", "10"])
    finally:
        simulator.get_settings.cache_clear()
    assert result.exit_code == 2
    assert "HQ_FEED_TOKEN is not set" in result.output


@pytest.mark.parametrize(
    ("now", "start"),
    [
        ("2026-11-23T03:00:00+08:00", "2026-11-22T09:30:00+08:00"),  # the night: yesterday
        ("2026-11-23T09:29:59+08:00", "2026-11-22T09:30:00+08:00"),
        ("2026-11-23T09:30:00+08:00", "2026-11-23T09:30:00+08:00"),
        ("2026-11-23T18:00:00+08:00", "2026-11-23T09:30:00+08:00"),
        ("2026-11-22T20:00:00+00:00", "2026-11-22T09:30:00+08:00"),  # 04:00 on the 23rd, UTC+8
    ],
)
def test_default_start_is_never_ahead_of_the_wall_clock(now: str, start: str) -> None:
    """The stream workers refuse quotes from the future (future_timestamp)."""
    got = default_start(dt.datetime.fromisoformat(now))
    assert got == dt.datetime.fromisoformat(start)
    assert got <= dt.datetime.fromisoformat(now)


async def test_a_second_vendor_on_the_same_schedule_sends_the_same_market_with_gaps() -> None:
    """A/B simulators (same seed, start, epoch): B's lines are A's, a few left out.

    The schedule runs on the wall clock whether or not anyone listens, so the
    comparison starts at the first snapshot both clients got, however late
    either connected on a loaded machine.
    """
    epoch = time.time() + 0.5
    common: dict[str, Any] = {"stocks": 200, "interval_s": 0.2, "max_snapshots": 15, "epoch": epoch}
    a = await run_sim(**common)
    b = await run_sim(**common, delay_s=0.05, jitter_s=0.05, missing_fraction=0.1, variant_seed=7)
    try:
        (ra, wa), (rb, wb) = await connect(a.port), await connect(b.port)
        await a.wait_done(30)
        await b.wait_done(30)
        got_a = await read_quotes(ra, a.stats.lines_sent)
        got_b = await read_quotes(rb, b.stats.lines_sent)
        wa.close()
        wb.close()
    finally:
        await a.stop()
        await b.stop()
    first_both = max(parse_line(got_a[0])["when"], parse_line(got_b[0])["when"])
    in_a = {line for line in got_a if parse_line(line)["when"] >= first_both}
    in_b = {line for line in got_b if parse_line(line)["when"] >= first_both}
    assert in_b <= in_a
    assert 0 < len(in_a - in_b) < 0.2 * len(in_a)  # about 10 % left out
    assert b.stats.lines_missing > 0 and a.stats.lines_missing == 0
