"""streams.native_parse: the compiled fast path gives the Python path's exact results, or None.

Both line formats: Shanghai/Shenzhen ``$`` lines and Beijing JSON objects.

"Exact" is checked three ways for every line the fast path accepts: the dict
(keys in order, values, and the type of every value and list item), its JSON
as Redis stores it (orjson: catches a -0.0 that ``==`` forgives) and its Avro
bytes. Every line the Python path refuses (BadRecord, or a quote its codec
cannot encode) must get None, so the Python path names the reason.

``make test`` (and so CI) sets ``HQ_TEST_REQUIRE_NATIVE=1``: then a missing
extension fails these tests instead of skipping them, so the suite cannot
quietly test the fallback alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from producers.quote_lines import SnapshotSource
from producers.sample_feed import generate, session_start_ms
from producers.universe import Stock, build_listing
from schemas.serde import SerdeError, SingleObjectCodec, make_codec
from schemas.topics import H_RECEIVE_TS, H_SOURCE
from streams import pipeline
from streams.errors import BadRecord
from streams.native_parse import FastParse, QuoteMaker, parse_path, quote_maker
from streams.parse import parse_record
from streams.pipeline import Parsed, Processor, RawRecord
from streams.settings import StreamsSettings
from tests.feed_lines import bse_line, sse_line
from tests.streams.test_parse import BAD

REQUIRED = os.environ.get("HQ_TEST_REQUIRE_NATIVE") == "1"
CODEC = SingleObjectCodec("quote")
RECEIVE_TS = 1_900_000_000_123  # 2030: the simulated days are replays, never ahead of it
PROCESS_TS = 1_900_000_000_456
MAX_AHEAD_MS = 300_000

Outcome = tuple[dict[str, Any], bytes] | BadRecord | SerdeError


@pytest.fixture(scope="module")
def fast() -> FastParse:
    path = parse_path(CODEC, enabled=True)
    if path.fast is None:
        if REQUIRED:
            pytest.fail(f"HQ_TEST_REQUIRE_NATIVE=1 but the parse is {path.description}")
        pytest.skip(path.description)
    return path.fast


def test_make_test_runs_with_the_extension() -> None:
    if not REQUIRED:
        pytest.skip("HQ_TEST_REQUIRE_NATIVE is not set (make test and CI set it)")
    path = parse_path(CODEC, enabled=True)
    assert path.fast is not None, path.description
    assert path.description.startswith("compiled")


def test_off_and_the_registry_codec_take_the_python_path() -> None:
    assert parse_path(CODEC, enabled=False).fast is None
    registry = make_codec("quote", "mock://native-parse", "hq.quotes.normalized")
    assert parse_path(registry, enabled=True).fast is None


def python_path(
    raw: bytes, receive_ts: int = RECEIVE_TS, max_ahead: int | None = MAX_AHEAD_MS
) -> Outcome:
    try:
        quote = parse_record(raw, receive_ts, PROCESS_TS, max_ahead_ms=max_ahead)
        return quote, CODEC.encode(quote)
    except (BadRecord, SerdeError) as exc:
        return exc


def types_of(quote: dict[str, Any]) -> list[Any]:
    return [[type(v) for v in x] if type(x) is list else type(x) for x in quote.values()]


def same_or_none(
    fast: FastParse, raw: bytes, receive_ts: int = RECEIVE_TS, max_ahead: int | None = MAX_AHEAD_MS
) -> bool:
    """Asserts the fast path's answer is None or the Python path's; True when it answered.

    The worker's form of it too (``parse_avro``, the dict and JSON made later
    from the Avro): None where ``parse`` is, but for a line whose JSON the
    compiled writer leaves to Python; else the Python path's."""
    expected = python_path(raw, receive_ts, max_ahead)
    got = fast(raw, receive_ts, PROCESS_TS, max_ahead)
    head = fast.__self__.parse_avro(raw, receive_ts, PROCESS_TS, max_ahead)  # type: ignore[attr-defined]
    if head is not None:
        assert not isinstance(expected, Exception), f"parse_avro accepted {expected!r}: {raw!r}"
        want_quote, want_payload = expected
        code, exchange_ts, price, volume, avro = head
        fields = ("code", "exchange_ts", "price", "volume")
        assert (code, exchange_ts, price, volume) == tuple(want_quote[k] for k in fields), raw
        assert avro == want_payload, raw
        ([quote], [data]) = worker_maker()([avro])
        assert list(quote.items()) == list(want_quote.items()), raw
        assert types_of(quote) == types_of(want_quote), raw
        assert data == orjson.dumps(want_quote), raw
    else:
        assert got is None, raw
    if got is None:
        return False
    assert not isinstance(expected, Exception), f"fast path accepted {expected!r}: {raw!r}"
    quote, payload, data = got
    want_quote, want_payload = expected
    assert list(quote.items()) == list(want_quote.items()), raw
    assert types_of(quote) == types_of(want_quote), raw
    assert orjson.dumps(quote) == orjson.dumps(want_quote), raw
    assert payload == want_payload, raw
    assert data == orjson.dumps(want_quote), raw  # the JSON Redis stores
    return True


@functools.cache
def worker_maker() -> QuoteMaker:
    """The worker's maker of dicts and JSON from Avro."""
    make = parse_path(CODEC, enabled=True).make
    assert make is not None
    return make


# --------------------------------------------------------------------------- simulated days

#: every board and code range, a few Beijing stocks (JSON lines)
PLAN = [
    ("SH", "600", 60), ("SH", "601", 10), ("SH", "603", 20), ("SH", "605", 5),
    ("SH", "688", 40), ("SH", "689", 3), ("SZ", "000", 40), ("SZ", "001", 5),
    ("SZ", "002", 40), ("SZ", "003", 5), ("SZ", "300", 40), ("SZ", "301", 20),
    ("SZ", "302", 1), ("BJ", "920", 10),
]  # fmt: skip
#: trading days either side of the ST limit change (5% -> 10% on 2026-07-06) and later
DAYS = (dt.date(2026, 7, 3), dt.date(2026, 7, 6), dt.date(2026, 11, 23))


def listing(seed: int) -> tuple[Stock, ...]:
    """PLAN's stocks with every kind of name: ST, new listings (N first day, C days 2-5)
    on each board, names with spaces around them; some halted."""
    stocks = list(build_listing(PLAN, seed=seed))
    rng = random.Random(seed)
    for i, s in enumerate(stocks):
        roll = rng.random()
        if roll < 0.05:
            name = ("N" if s.board == "BJ" or rng.random() < 0.5 else "C") + s.name[1:]
        elif roll < 0.08:
            name = rng.choice(("ST", "*ST", "S*ST", "S")) + s.name[:2]
        elif roll < 0.10:
            name = f" {s.name}\u3000"
        else:
            continue
        stocks[i] = dataclasses.replace(s, name=name)
    return tuple(stocks)


def day_lines(day: dt.date, seed: int, interval_s: float) -> Iterator[bytes]:
    """Every line of a simulated day: 09:15 auction to after the close (15:00:03, then closed)."""
    source = SnapshotSource(listing(seed), dt.datetime.combine(day, dt.time(9, 10)), interval_s,
                            seed=seed)  # fmt: skip
    while source.clock.time() < dt.time(15, 10):
        yield from source.next().data.splitlines()


def test_simulated_days_are_identical(fast: FastParse) -> None:
    accepted = seen = 0
    phases: set[str] = set()
    kinds: set[tuple[str, bool, bool, bool]] = set()
    for n, day in enumerate(DAYS):
        for raw in day_lines(day, seed=11 + n, interval_s=170.0):
            seen += 1
            assert same_or_none(fast, raw), f"a good simulated line took the Python path: {raw!r}"
            accepted += 1
            quote, _, _ = fast(raw, RECEIVE_TS, PROCESS_TS, MAX_AHEAD_MS) or ({}, b"", b"")
            phases.add(quote["phase"])
            kinds.add((quote["board"], quote["is_st"], quote["limit_free"], quote["suspended"]))
    assert seen > 50_000
    assert phases >= {"opening_auction", "continuous", "midday_break", "closing_auction", "closed"}
    boards = {board for board, *_ in kinds}
    assert boards == {"MAIN", "STAR", "CHINEXT", "BJ"}
    for flag in (1, 2, 3):  # ST, limit-free and suspended quotes were all compared
        assert any(k[flag] for k in kinds), flag


def test_every_time_of_day_and_302_codes(fast: FastParse) -> None:
    """The phase boundaries (pre_open only happens before the simulator's day starts)."""
    times = ("00:00:00", "09:14:59", "09:15:00", "09:29:59", "09:30:00", "11:29:59", "11:30:00",
             "11:30:02", "12:59:59", "13:00:00", "14:56:59", "14:57:00", "14:59:59", "15:00:00",
             "15:00:03", "23:59:59")  # fmt: skip
    empty_book = {f"{side}{i}_volume": "0" for side in ("bid", "ask") for i in range(1, 6)}
    for symbol in ("sz302132", "sz000001", "sh688981", "sz300750", "sh600000"):
        for time in times:
            for volume, price in (("58342100", "11.05"), ("0", "0.00")):
                raw = sse_line(symbol=symbol, time=time, volume=volume, price=price)
                assert same_or_none(fast, raw), raw
                assert same_or_none(fast, sse_line(symbol=symbol, time=time, volume=volume,
                                                   price=price, **empty_book))  # fmt: skip


def test_bad_records_take_the_python_path(fast: FastParse) -> None:
    for _, raw, _reason in BAD:
        assert fast(raw, RECEIVE_TS, PROCESS_TS, MAX_AHEAD_MS) is None, raw


def test_odd_arguments_take_the_python_path(fast: FastParse) -> None:
    assert same_or_none(fast, bse_line())
    assert fast(bytearray(bse_line()), RECEIVE_TS, PROCESS_TS, MAX_AHEAD_MS) is None  # type: ignore[arg-type]
    line = sse_line()
    assert fast(line, RECEIVE_TS, PROCESS_TS, MAX_AHEAD_MS) is not None
    assert fast(bytearray(line), RECEIVE_TS, PROCESS_TS, MAX_AHEAD_MS) is None  # type: ignore[arg-type]
    assert fast(line, True, PROCESS_TS, MAX_AHEAD_MS) is None  # a bool is no receive_ts
    assert fast(line, 2**63, PROCESS_TS, MAX_AHEAD_MS) is None  # beyond an Avro long
    assert same_or_none(fast, line, max_ahead=None)
    assert same_or_none(fast, line, receive_ts=0)  # unknown: process_ts is the reference
    assert same_or_none(fast, line, receive_ts=-5)
    assert not same_or_none(fast, line, receive_ts=2**63)  # Python: encode_error


def test_limit_prices_and_rounding_edges(fast: FastParse) -> None:
    """At the limits, ties of round() (avg_price 1.0625 -> 1.062), tiny order imbalances
    (-0.0), and prev_close values whose limits round half up."""
    lines = [
        sse_line(price="12.10", high="12.10"),  # at limit up (prev 11.00, 10%)
        sse_line(price="9.90", low="9.90", high="11.10"),  # at limit down
        sse_line(symbol="sz300750", price="13.20", high="13.20"),  # ChiNext 20%
        sse_line(name="*ST平安", price="11.55", high="11.55"),  # ST: 5% before 2026-07-06
        sse_line(name="*ST平安", price="11.55", high="11.55", date="2026-07-03"),
        sse_line(name="N平安", symbol="sz001001", price="40.00", high="44.00"),  # limit-free
        sse_line(name="C平安", symbol="sh688001", price="40.00", high="44.00"),
        sse_line(volume="16", amount="17.00"),  # avg 1.0625: a tie, half to even
        sse_line(volume="16", amount="17.02"),
        sse_line(volume="8", amount="0.01"),
        sse_line(volume="3", amount="10.00"),
        sse_line(prev_close="0.00"),
        sse_line(prev_close="0.01", price="0.01", low="0.01", high="0.01"),
        sse_line(prev_close="8.00", price="8.01"),  # change_pct 0.125 -> 0.13
        sse_line(prev_close="8.00", price="7.99"),  # -0.125 -> -0.13
    ]
    for bid, ask in ((10000, 10001), (10001, 10000), (1, 0), (0, 1), (5, 5), (333333, 666667)):
        lines.append(sse_line(bid1_volume=str(bid), ask1_volume=str(ask), bid2_volume="0",
                              bid3_volume="0", bid4_volume="0", bid5_volume="0",
                              ask2_volume="0", ask3_volume="0", ask4_volume="0",
                              ask5_volume="0"))  # fmt: skip
    rng = random.Random(5)
    for _ in range(2000):
        prev = rng.randrange(1, 300_000)
        lines.append(sse_line(prev_close=f"{prev / 100:.2f}", price=f"{prev * 1.1 / 100:.2f}",
                              high=f"{prev * 1.2 / 100:.2f}", low="0.01",
                              volume=str(rng.randrange(1, 10**9)),
                              amount=f"{rng.randrange(0, 10**12) / 100:.2f}"))  # fmt: skip
    for raw in lines:
        assert same_or_none(fast, raw), raw


# --------------------------------------------------------------------------- mutations

NUMBERS = (
    "", "0", "00", "0.0", "-0", "-0.0", "-1", "+5", "1e5", "1E5", "1.", ".5", " 5", "5 ", "\t5",
    "5\n", "1_000", "inf", "nan", "NaN", "Infinity", "-inf", "0x10", "１２", "٣", "9" * 400,
    "9" * 19, "9" * 18, "9" * 13, "10000000000000", "9999999999999", "1000000", "1000000.01",
    "999999.99", "1000000.00", "0.0001", "0.001", "0.0009999", "00012.50", "12.345",
    "12.3456789012345678901", "5e-324", "1" + "0" * 15, "999999999999999.99", "1.5.5", "--",
)  # fmt: skip
NAMES = (
    "", " ", "ST", "*ST中", " *ST中 ", "\u3000*ST中\u3000", "S*ST中", "SST中", "N中芯", "C中芯",
    "NX", "Nn", "N", "ST ", "\x1c名\x1f", "名\x85", "\u200b名", "a" * 300, "名\x00字", "NST中",
    "C*ST", "n中芯", "Ｎ中芯",
)  # fmt: skip
DATES = (
    "2024-02-29", "2026-02-29", "2026-13-01", "1990-01-01", "1996-12-16", "1996-12-15",
    "2019-07-19", "2019-07-22", "2020-08-24", "0001-01-01", "9999-12-31", "2026-7-06",
    "2026-11-23 ", "２０２６-11-23", "2026-11-31", "2099-01-01",
)  # fmt: skip
TIMES = (
    "24:00:00", "23:59:60", "9:30:00 ", "09:30:00\r", "00:00:00", "23:59:59", "12:00:00",
    "09:2５:00", "-9:30:00", "09:30",
)  # fmt: skip
SYMBOLS = ("sh600000", "sz302132", "sh900901", "sz200002", "SH600000", "sh60000", "bj920819",
           "sz３00750", "sh689009", "sz003001")  # fmt: skip


def mutate(raw: bytes, rng: random.Random) -> bytes:
    """One or more random changes to a good line: fields, names, dates, bytes."""
    fields = raw.decode().split("$")
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.randrange(12)
        at = rng.randrange(len(fields))
        if kind <= 3 and len(fields) > 11:
            fields[rng.randrange(2, min(31, len(fields)))] = rng.choice(NUMBERS)
        elif kind == 4:
            fields[min(1, len(fields) - 1)] = rng.choice(NAMES)
        elif kind == 5 and len(fields) > 31:
            fields[31] = rng.choice(DATES)
        elif kind == 6 and len(fields) > 32:
            fields[32] = rng.choice(TIMES)
        elif kind == 7:
            fields[0] = rng.choice(SYMBOLS)
        elif kind == 8:
            del fields[at]
        elif kind == 9:
            fields.insert(at, fields[at])
        elif kind == 10 and len(fields) > 11:
            i, j = rng.sample(range(2, min(31, len(fields))), 2)
            fields[i], fields[j] = fields[j], fields[i]
        elif len(fields) > 11:  # a plausible other number: a price moved, a volume grown
            i = rng.randrange(2, min(31, len(fields)))
            fields[i] = rng.choice((f"{rng.uniform(0, 2000):.{rng.randrange(4)}f}",
                                    str(rng.randrange(10 ** rng.randrange(1, 14)))))  # fmt: skip
    line = "$".join(fields).encode()
    tail = rng.randrange(20)
    if tail == 0:
        line += b"\r"
    elif tail == 1:
        line += b"\r\r"
    elif tail == 2:
        cut = rng.randrange(len(line))
        line = line[:cut] + bytes([rng.choice((0x80, 0xFF, 0xC3, 0xED))]) + line[cut:]
    elif tail == 3:
        line = b"\xef\xbb\xbf" + line
    return line


def compare_mutants(
    fast: FastParse,
    base: list[bytes],
    mutator: Callable[[bytes, random.Random], bytes],
    rng: random.Random,
    receive_times: tuple[int, ...],
    n: int = 20_000,
) -> tuple[int, int]:
    """``n`` mutants of lines of ``base``, each checked by :func:`same_or_none`:
    (how many the fast path answered, how many both paths refused)."""
    accepted = refused = 0
    for _ in range(n):
        raw = mutator(rng.choice(base), rng)
        receive_ts = rng.choice(receive_times)
        max_ahead = rng.choice((MAX_AHEAD_MS, MAX_AHEAD_MS, None, 0, 10**15))
        if same_or_none(fast, raw, receive_ts, max_ahead):
            accepted += 1
        elif isinstance(python_path(raw, receive_ts, max_ahead), Exception):
            refused += 1
    return accepted, refused


def test_mutated_lines_are_identical_or_refused(fast: FastParse) -> None:
    base = [raw for raw in day_lines(DAYS[2], seed=3, interval_s=900.0) if raw[:1] != b"{"]
    times = (RECEIVE_TS, RECEIVE_TS, 0, -1, 1_763_880_000_000, 2**63)
    accepted, refused = compare_mutants(fast, base, mutate, random.Random(20261201), times)
    # both sides were exercised: many mutants parse, many are refused
    assert accepted > 2_000 and refused > 10_000, (accepted, refused)


# --------------------------------------------------------------------------- Beijing JSON

#: whole numbers past the bounds and Python's float edges; bools are no numbers
JSON_VALUES: tuple[Any, ...] = (
    0, 1, -1, 0.0, -0.0, 1.0, 1.5, -1.5, 100, 100.0, 1e5, 1e-7, 5e-324, 2**53, 2**53 + 1,
    2**63 - 1, 10**13, 10**13 - 1, 1e13, 9999999999999.0, 1e15, 999999999999999.9, 1_000_000,
    1_000_000.0, 1_000_000.01, 999_999.99, 0.001, 0.0009, True, False, None, "5", "", [], {},
    [1, 2, 3, 4, 5], [1.0, 2.0, 3.0, 4.0, 5.0], [1, 2, 3, 4], [1, 2, 3, 4, 5, 6],
    [1, 2, 3, 4, -5], [1, 2, 3, 4, 5.5], [1, 2, 3, 4, True], [1, 2, 3, 4, "5"], [0.0] * 5,
    [-0.0, 1.0, 1.0, 1.0, 1.0], [1e6, 1, 1, 1, 1], [1e6 + 1, 1, 1, 1, 1], [10**13, 1, 1, 1, 1],
)  # fmt: skip
#: numbers only JSON text writes: exponents, trailing zeros, beyond a double
JSON_TEXTS = (
    "1E2", "1e+2", "100.000", "-0", "-0.0", "0e0", "1e400", "-1e400", "123456789012345678901234",
    "4.870000000000000001", "00", "NaN", "Infinity", "1.", ".5", "+1",
)  # fmt: skip
JSON_SYMBOLS = ("bj920819", "bj830799", "bj430047", "bj600000", "sh600000", "BJ920819",
                "bj92081", "bj９20819", "bj9208190", "sz920819")  # fmt: skip
JSON_TIMESTAMPS: tuple[Any, ...] = (
    1763881197000, 1763881197001, 1763827200000, 1763827199999, 1763913599999, 1763856000000,
    1751506200000, 0, -1, 1, 1.7e12, True, "1763881197000", 2**63, -(2**63), 253402300799999,
    253402300800000, 1900000000123, 1900000300123, 1900000300124,
)  # fmt: skip


def mutate_json(raw: bytes, rng: random.Random) -> bytes:
    """One or more random changes to a good Beijing line: values, keys, number texts, bytes."""
    obj: dict[str, Any] = orjson.loads(raw)
    texts: dict[str, str] = {}
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        key = rng.choice(list(obj) or ["symbol"])
        kind = rng.randrange(9)
        if kind <= 2:
            obj[key] = rng.choice(JSON_VALUES)
        elif kind == 3:
            obj["symbol"] = rng.choice(JSON_SYMBOLS)
        elif kind == 4:
            obj["name"] = rng.choice(NAMES)
        elif kind == 5:
            obj["timestamp"] = rng.choice(JSON_TIMESTAMPS)
        elif kind == 6:
            obj.pop(key, None)
        elif kind == 7:
            obj[rng.choice(("extra", "Symbol", "price"))] = rng.choice(JSON_VALUES)
        else:
            texts[key] = rng.choice(JSON_TEXTS)
            obj[key] = f"@{key}@"
    line = orjson.dumps(obj)
    for key, text in texts.items():
        line = line.replace(f'"@{key}@"'.encode(), text.encode())
    tail = rng.randrange(16)
    if tail == 0:
        line += b"\r"
    elif tail == 1:
        line = line.replace(b",", b" , ", 1) + b" "
    elif tail == 2:
        line += b"x"
    elif tail == 3:
        cut = rng.randrange(len(line))
        line = line[:cut] + bytes([rng.choice((0x80, 0xFF, 0xC3, 0xED))]) + line[cut:]
    return line


def test_beijing_edges(fast: FastParse) -> None:
    """Ints and floats where the Python path reads either, the book's edges, the
    day's edges in Shanghai time, and what it refuses."""
    accepted = [
        bse_line(),
        bse_line(lastPrice=5, preClose=5, open=5, high=5, low=5, turnover=0),
        bse_line(volume=1523400.0, bidVolumes=[3100.0, 0, 0, 0, 0.0]),
        bse_line(bidPrices=[0] * 5, askPrices=[0.0] * 5, bidVolumes=[0] * 5, askVolumes=[0] * 5),
        bse_line(lastPrice=0.0, volume=0),  # not traded
        bse_line(name=" 颖泰生物\u3000"),
        bse_line(name="N颖泰"),  # a new listing: no limits
        bse_line(name="*ST颖泰"),
        bse_line(symbol="bj830799"),
        bse_line(extra="ignored", nested={"a": [1]}),
        bse_line(preClose=0.0),
        bse_line(lastPrice=5.28, high=5.28),  # within Beijing's 30% (prev 4.80: 3.36-6.24)
        bse_line(lastPrice=6.24, high=6.24),  # at limit up
        bse_line(lastPrice=3.36, low=3.36),  # at limit down
        bse_line(bidPrices=[1_000_000, 1, 1, 1, 1]),
        bse_line(volume=10**13 - 1),
        bse_line(turnover=999999999999999.9),
    ]
    day_start = 1763827200000  # 2025-11-23 00:00 Asia/Shanghai
    for ts in (day_start, day_start - 1, day_start + 86_399_999, day_start + 9 * 3_600_000,
               day_start + 34_200_000, day_start + 41_400_000, day_start + 54_000_000,
               1751506200000, 1900000000123):  # fmt: skip
        accepted.append(bse_line(timestamp=ts))
    for raw in accepted:
        assert same_or_none(fast, raw), raw
    refused = [
        bse_line(volume=True),
        bse_line(lastPrice=-0.0),  # the Python path keeps the sign: it answers
        bse_line(turnover=2**53 + 1),  # beyond a double's exact ints: it answers
        bse_line(timestamp=1.7e12),
        bse_line(timestamp=0),
        bse_line(timestamp=253402300800000),  # year 10000
        bse_line(symbol="sh600000"),
        bse_line(drop="askVolumes"),
        bse_line(bidPrices=[1, 2, 3, 4]),
        bse_line(high=4.0, low=4.5),
        bse_line(preClose=0.0005),
        bse_line(volume=10**13),
        bse_line(timestamp=1900000300124),  # beyond max_ahead
        b"[1, 2]",
        b"{",
        bse_line() + b"x",
    ]
    for raw in refused:
        assert fast(raw, RECEIVE_TS, PROCESS_TS, MAX_AHEAD_MS) is None, raw
    assert fast(bse_line(timestamp=1900000300124), RECEIVE_TS, PROCESS_TS, None) is not None


def test_mutated_beijing_lines_are_identical_or_refused(fast: FastParse) -> None:
    base = [raw for raw in day_lines(DAYS[2], seed=3, interval_s=300.0) if raw[:1] == b"{"]
    times = (RECEIVE_TS, RECEIVE_TS, 0, -1, 1_763_880_000_000)
    accepted, refused = compare_mutants(fast, base, mutate_json, random.Random(20261204), times)
    assert accepted > 2_000 and refused > 5_000, (accepted, refused)


# --------------------------------------------------------------------------- the worker


def worker_records() -> list[RawRecord]:
    """A day's lines of both formats, mutated ones, bad ones, and a second feed repeating
    some of them (the arbiter drops those copies)."""
    rng = random.Random(7)
    lines = list(day_lines(DAYS[1], seed=5, interval_s=1800.0))
    sse = [raw for raw in lines if raw[:1] != b"{"]
    bse = [raw for raw in lines if raw[:1] == b"{"]
    lines += [mutate(rng.choice(sse), rng) for _ in range(500)] + [raw for _, raw, _ in BAD]
    lines += [mutate_json(rng.choice(bse), rng) for _ in range(300)]
    received = (H_RECEIVE_TS, str(RECEIVE_TS).encode())
    fed = [(raw, b"a") for raw in lines] + [(raw, b"b") for raw in lines[:300]]
    return [
        RawRecord(None, raw, [received, (H_SOURCE, feed)], "raw", i % 3, i, 0)
        for i, (raw, feed) in enumerate(fed)
    ]


def typed(quotes: list[tuple[dict[str, Any], int]]) -> list[list[tuple[str, type, Any]]]:
    """Each quote's keys in order with each value's type and value, and its partition."""
    return [[(k, type(v), v) for k, v in q.items()] + [("", int, p)] for q, p in quotes]


def test_processor_output_is_the_same_with_and_without(
    fast: FastParse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's whole parse step: quotes, Avro, Redis JSON, dead letters, arbitration;
    compiled with the dicts made later from the Avro (as the worker parses), compiled
    with them made at once, and in Python."""
    monkeypatch.setattr(pipeline, "_now_ms", lambda: PROCESS_TS)
    records = worker_records()
    results = []
    for native, later in ((True, True), (True, False), (False, False)):
        processor = Processor(StreamsSettings(metrics_port=0, native=native))
        assert (processor.parse_path.fast is not None) == native
        parsed = Parsed(maker=processor.parse_path.make if later else None)
        processor.parse(records, parsed)
        if later:
            assert parsed.made_quotes == [] and len(parsed) > 1000  # the Avro only, so far
        results.append(parsed)
    lazy, on, off = results
    assert len(on.quotes) > 1000 and len(on.dead) > 10
    for parsed in (lazy, on):
        assert typed(parsed.quotes) == typed(off.quotes)
        assert parsed.encoded == off.encoded
        assert parsed.data == off.data
        assert parsed.codes == off.codes == [q["code"] for q, _ in off.quotes]
        assert parsed.partitions == off.partitions == [p for _, p in off.quotes]
        assert [(d.key, d.value, d.headers) for d in parsed.dead] == [
            (d.key, d.value, d.headers) for d in off.dead
        ]
        assert parsed.arbitrated == off.arbitrated > 0


def test_quotes_the_python_path_took_are_made_again_from_their_avro(
    fast: FastParse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line the compiled parse leaves to the Python path (a -0.0, an int beyond 2**53)
    is a quote all the same: made later from its Avro, it is the Python path's."""
    monkeypatch.setattr(pipeline, "_now_ms", lambda: PROCESS_TS)
    processor = Processor(StreamsSettings(metrics_port=0))
    assert processor.parse_path.avro is not None
    records = worker_records()
    python_only = [
        rec for rec in records
        if processor.parse_path.avro(rec.value, RECEIVE_TS, PROCESS_TS, processor.max_ahead_ms)
        is None and parse_or_none(rec.value) is not None
    ]  # fmt: skip
    assert len(python_only) > 10
    later, now = Parsed(maker=processor.parse_path.make), Parsed()
    for parsed in (later, now):
        Processor(StreamsSettings(metrics_port=0)).parse(python_only, parsed)
    assert len(later) == len(now) == len(python_only)
    assert typed(later.quotes) == typed(now.quotes)
    assert later.data == now.data

    # a payload the compiled JSON writer leaves to Python (a double whose shortest
    # form it cannot tell from Python's) is read by the codec: the same again
    def left_to_python(payloads: list[bytes]) -> tuple[list[None], list[None]]:
        return [None] * len(payloads), [None] * len(payloads)

    by_codec = quote_maker(processor.quote_codec, left_to_python)
    quotes, data = by_codec(now.encoded)
    assert typed(list(zip(quotes, now.partitions, strict=True))) == typed(now.quotes)
    assert data == now.data


def parse_or_none(raw: bytes) -> dict[str, Any] | None:
    try:
        return parse_record(raw, RECEIVE_TS, PROCESS_TS, max_ahead_ms=MAX_AHEAD_MS)
    except BadRecord:
        return None


def test_a_batch_split_and_pruned_before_its_quotes_are_made(
    fast: FastParse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """take_first and drop keep every list in step, whether the dicts are made or not."""
    monkeypatch.setattr(pipeline, "_now_ms", lambda: PROCESS_TS)
    records = worker_records()[:400]
    whole = Parsed()
    Processor(StreamsSettings(metrics_port=0)).parse(records, whole)
    processor = Processor(StreamsSettings(metrics_port=0))
    parsed = Parsed(maker=processor.parse_path.make)
    processor.parse(records, parsed)
    n = len(parsed)
    first = parsed.take_first(100)  # nothing made
    assert (len(first), len(parsed), first.made_quotes) == (100, n - 100, [])
    assert first.quotes == whole.quotes[:100]  # made now
    second = parsed.take_first(50)
    parsed.make()
    assert len(second.made_quotes) == 0 and len(parsed.made_quotes) == n - 150
    second.make()
    third = second.take_first(20)  # all made: the made lists are split too
    assert (len(third.made_quotes), len(second.made_quotes)) == (20, 30)
    assert third.quotes + second.quotes + parsed.quotes == whole.quotes[100:]
    assert third.data + second.data + parsed.data == whole.data[100:]
    pruned = Parsed(maker=processor.parse_path.make)
    Processor(StreamsSettings(metrics_port=0)).parse(records, pruned)
    dead = pruned.dead[:]
    letters = {
        i: pipeline.unprocessable(pruned.sources[i], ValueError("a test"), PROCESS_TS)
        for i in (0, 5, 7)
    }
    pruned.drop(letters)
    keep = [i for i in range(len(whole)) if i not in letters]
    assert pruned.quotes == [whole.quotes[i] for i in keep]
    assert pruned.codes == [whole.codes[i] for i in keep]
    assert pruned.sources == [whole.sources[i] for i in keep]
    assert pruned.encoded == [whole.encoded[i] for i in keep]
    assert len(pruned.dead) == len(dead) + 3


def test_a_processor_derives_the_same_with_and_without(
    fast: FastParse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's derive step with the compiled alert windows and statistics' book
    and without: the same alerts, closed and open candles, Kafka records and partials,
    batch by batch, over a simulated morning from the opening auction."""
    monkeypatch.setattr(pipeline, "_now_ms", lambda: PROCESS_TS)
    lines, _ = generate(300, 90, start_ms=session_start_ms(hhmmss="09:29:00"))
    records = [
        RawRecord(
            key, value, [(k, v) for k, v in headers if isinstance(v, bytes)], "raw", i % 3, i, 0
        )
        for i, (key, value, headers) in enumerate(lines)
    ]
    sides = []
    for native in (True, False):
        processor = Processor(StreamsSettings(metrics_port=0, native=native))
        compiled = (type(processor.alerts).__name__, type(processor.stats).__name__)
        assert compiled == (
            ("CompiledAlertDetector", "CompiledMarketStats")
            if native
            else ("AlertDetector", "MarketStats")
        )
        batches = []
        for start in range(0, len(records), 500):
            result = asyncio.run(processor.process(records[start : start + 500], None))
            partial = processor.stats.partial_state(10, now_ms=start)
            sink = result.sink
            batches.append((sink.alerts, sink.candles, sink.open_candles, result.kafka, partial))
        sides.append(batches)
    on, off = sides
    assert on == off
    assert sum(len(alerts) for alerts, *_ in on) > 10  # (it fired some)
    assert sum(len(closed) for _, closed, *_ in on) > 500
