"""streams.parse: every bad-record reason, and golden quotes for each market and board."""

from __future__ import annotations

import datetime as dt
import pickle
import random
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.serde import SingleObjectCodec, parsed_schema, schema_json
from streams.errors import BadRecord, StreamsError
from streams.parse import parse_record
from tests.feed_lines import bse_line, sse_line

SHANGHAI = ZoneInfo("Asia/Shanghai")
RECEIVE_TS = 1_795_000_000_123
PROCESS_TS = 1_795_000_000_456


def epoch_ms(date: str, time: str) -> int:
    """Independent of the parser: zoneinfo, not hand arithmetic."""
    local = dt.datetime.fromisoformat(f"{date}T{time}").replace(tzinfo=SHANGHAI)
    return int(local.timestamp() * 1000)


def parse(raw: bytes) -> dict[str, Any]:
    return parse_record(raw, RECEIVE_TS, PROCESS_TS)


CODEC = SingleObjectCodec("quote")


def assert_encodes(record: dict[str, Any]) -> None:
    """Exactly the schema's fields, and an Avro round trip that changes nothing."""
    assert list(record) == [f["name"] for f in schema_json("quote")["fields"]]
    assert CODEC.decode(CODEC.encode(record)) == record


# --------------------------------------------------------------------------- bad records

BAD: list[tuple[str, bytes, str]] = [
    # invalid_utf8
    ("utf8-sse", b"sz000001$\xff\xfe" + sse_line()[21:], "invalid_utf8"),
    (
        "utf8-truncated",
        sse_line(name="平安").replace("安".encode(), "安".encode()[:2]),
        "invalid_utf8",
    ),
    ("utf8-json", bse_line().replace("颖".encode(), b"\xc3\x28"), "invalid_utf8"),
    # wrong_field_count
    ("fields-32", sse_line().rsplit(b"$", 1)[0], "wrong_field_count"),
    ("fields-34", sse_line() + b"$0", "wrong_field_count"),
    ("fields-empty", b"", "wrong_field_count"),
    ("fields-heartbeat-like", b"hello world", "wrong_field_count"),
    # not_a_number
    ("nan-word", sse_line(price="abc"), "not_a_number"),
    ("nan-literal", sse_line(high="nan"), "not_a_number"),
    ("nan-inf", sse_line(amount="inf"), "not_a_number"),
    ("nan-volume-decimal", sse_line(volume="12.5"), "not_a_number"),
    ("nan-book", sse_line(ask4_price="11.0x"), "not_a_number"),
    ("nan-fullwidth", sse_line(open="１１.02"), "not_a_number"),
    ("nan-underscore", sse_line(volume="1_000"), "not_a_number"),
    ("nan-space", sse_line(price=" 11.05"), "not_a_number"),
    ("nan-tab", sse_line(price="\t11.05"), "not_a_number"),
    ("nan-trailing-cr", sse_line(volume="5\r"), "not_a_number"),
    ("nan-empty", sse_line(bid=""), "not_a_number"),
    ("nan-json-inf", bse_line().replace(b'"lastPrice":4.87', b'"lastPrice":1e999'), "not_a_number"),
    # invalid_json
    ("json-truncated", bse_line()[:25], "invalid_json"),
    ("json-trailing", bse_line() + b"x", "invalid_json"),
    ("json-nan", bse_line().replace(b'"lastPrice":4.87', b'"lastPrice":NaN'), "invalid_json"),
    ("json-brace-only", b"{", "invalid_json"),
    # bad_symbol
    ("sym-prefix", sse_line(symbol="sx000001"), "bad_symbol"),
    ("sym-short", sse_line(symbol="sh60051"), "bad_symbol"),
    ("sym-long", sse_line(symbol="sh6005190"), "bad_symbol"),
    ("sym-letters", sse_line(symbol="sz00000a"), "bad_symbol"),
    ("sym-upper", sse_line(symbol="SZ000001"), "bad_symbol"),
    ("sym-no-board-sh", sse_line(symbol="sh900901"), "bad_symbol"),
    ("sym-no-board-sz", sse_line(symbol="sz200002"), "bad_symbol"),
    ("sym-bj-in-sse-line", sse_line(symbol="bj920819"), "bad_symbol"),
    ("sym-sz-in-json", bse_line(symbol="sz000001"), "bad_symbol"),
    ("sym-json-no-board", bse_line(symbol="bj600000"), "bad_symbol"),
    ("sym-json-short", bse_line(symbol="bj92081"), "bad_symbol"),
    # negative_value
    ("neg-price", sse_line(price="-11.05"), "negative_value"),
    ("neg-volume", sse_line(volume="-5"), "negative_value"),
    ("neg-book-price", sse_line(bid3_price="-0.01"), "negative_value"),
    ("neg-book-volume", sse_line(ask5_volume="-100"), "negative_value"),
    ("neg-zero-price", sse_line(price="-0.00"), "negative_value"),
    ("neg-zero-volume", sse_line(bid2_volume="-0"), "negative_value"),
    ("neg-json-turnover", bse_line(turnover=-1.0), "negative_value"),
    ("neg-json-book", bse_line(bidVolumes=[3100, -5000, 200, 900, 1200]), "negative_value"),
    ("neg-json-ask-price", bse_line(askPrices=[4.87, 4.88, -4.89, 4.90, 4.91]), "negative_value"),
    # high_below_low
    ("hl-sse", sse_line(high="10.90", low="10.98"), "high_below_low"),
    ("hl-json", bse_line(high=4.70, low=4.79), "high_below_low"),
    # bad_datetime
    ("dt-feb-30", sse_line(date="2026-02-30"), "bad_datetime"),
    ("dt-25h", sse_line(time="25:61:00"), "bad_datetime"),
    ("dt-60s", sse_line(time="14:59:60"), "bad_datetime"),
    ("dt-slashes", sse_line(date="2026/11/23"), "bad_datetime"),
    ("dt-unpadded", sse_line(date="2026-1-23"), "bad_datetime"),
    ("dt-short-time", sse_line(time="14:59"), "bad_datetime"),
    ("dt-trailing-space", sse_line(date="2026-11-23 "), "bad_datetime"),
    ("dt-fullwidth", sse_line(time="１４:59:57"), "bad_datetime"),
    ("dt-underscore", sse_line(time="14:5_:57"), "bad_datetime"),
    ("dt-json-negative", bse_line(timestamp=-1), "bad_datetime"),
    ("dt-json-far-future", bse_line(timestamp=10**17), "bad_datetime"),
    ("dt-json-before-bj-rules", bse_line(timestamp=1000), "bad_datetime"),
    ("dt-before-star-rules", sse_line(symbol="sh688981", date="2019-07-19"), "bad_datetime"),
    # missing_field
    ("mf-no-timestamp", bse_line(drop="timestamp"), "missing_field"),
    ("mf-no-symbol", bse_line(drop="symbol"), "missing_field"),
    ("mf-no-turnover", bse_line(drop="turnover"), "missing_field"),
    ("mf-control-line", b'{"op":"heartbeat","ts":1763877597000}', "missing_field"),
    ("mf-book-4", bse_line(bidPrices=[4.86, 4.85, 4.84, 4.83]), "missing_field"),
    ("mf-price-string", bse_line(lastPrice="4.87"), "missing_field"),
    ("mf-volume-fraction", bse_line(volume=1.5), "missing_field"),
    ("mf-name-null", bse_line(name=None), "missing_field"),
    ("mf-timestamp-string", bse_line(timestamp="1763881197000"), "missing_field"),
    ("mf-price-bool", bse_line(high=True), "missing_field"),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [(r, why) for _, r, why in BAD], ids=[i for i, *_ in BAD]
)
def test_bad_record(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRecord) as info:
        parse(raw)
    assert info.value.reason == reason, info.value.detail
    assert 0 < len(info.value.detail) < 160
    assert isinstance(info.value, StreamsError)


def test_every_parse_reason_has_two_cases() -> None:
    reasons = [why for *_, why in BAD]
    expected = {
        "invalid_utf8", "wrong_field_count", "not_a_number", "invalid_json", "bad_symbol",
        "negative_value", "high_below_low", "bad_datetime", "missing_field",
    }  # fmt: skip
    assert set(reasons) == expected
    assert all(reasons.count(r) >= 2 for r in expected)


def test_detail_names_field_and_truncates_value() -> None:
    with pytest.raises(BadRecord) as info:
        parse(sse_line(price="x" * 500))
    assert "price" in info.value.detail
    assert "x" * 40 in info.value.detail and "x" * 41 not in info.value.detail


def test_bad_record_pickles() -> None:
    err = pickle.loads(pickle.dumps(BadRecord("bad_symbol", "symbol 'x' is bad")))
    assert (err.reason, err.detail) == ("bad_symbol", "symbol 'x' is bad")


# --------------------------------------------------------------------------- golden quotes


def test_golden_sz_main() -> None:
    rec = parse(sse_line())
    assert rec == {
        "symbol": "sz000001",
        "code": "000001",
        "market": "SZ",
        "board": "MAIN",
        "name": "平安银行",
        "is_st": False,
        "exchange_ts": epoch_ms("2026-11-23", "14:59:57"),
        "trade_date": "2026-11-23",
        "open": 11.02,
        "prev_close": 11.00,
        "price": 11.05,
        "high": 11.10,
        "low": 10.98,
        "bid": 11.04,
        "ask": 11.05,
        "volume": 58342100,
        "amount": 643981234.50,
        "bid_prices": [11.04, 11.03, 11.02, 11.01, 11.00],
        "bid_volumes": [1200, 3400, 500, 7800, 9900],
        "ask_prices": [11.05, 11.06, 11.07, 11.08, 11.09],
        "ask_volumes": [1500, 2000, 300, 4100, 600],
        "change": 0.05,
        "change_pct": 0.45,
        "limit_up": 12.10,
        "limit_down": 9.90,
        "traded": True,
        "suspended": False,
        "at_limit_up": False,
        "at_limit_down": False,
        "receive_ts": RECEIVE_TS,
        "process_ts": PROCESS_TS,
        "limit_free": False,
        "not_traded_yet": False,
        "phase": "closing_auction",
        "avg_price": 11.038,
        "amplitude": 1.09,
        "order_imbalance": 45.69,
    }
    assert rec["exchange_ts"] == 1795417197000
    assert_encodes(rec)


def test_golden_bj_json() -> None:
    rec = parse(bse_line())
    assert rec == {
        "symbol": "bj920819",
        "code": "920819",
        "market": "BJ",
        "board": "BJ",
        "name": "颖泰生物",
        "is_st": False,
        "exchange_ts": 1763881197000,
        "trade_date": "2025-11-23",
        "open": 4.81,
        "prev_close": 4.80,
        "price": 4.87,
        "high": 4.92,
        "low": 4.79,
        "bid": 4.86,
        "ask": 4.87,
        "volume": 1523400,
        "amount": 7401234.0,
        "bid_prices": [4.86, 4.85, 4.84, 4.83, 4.82],
        "bid_volumes": [3100, 5000, 200, 900, 1200],
        "ask_prices": [4.87, 4.88, 4.89, 4.90, 4.91],
        "ask_volumes": [800, 2300, 400, 1000, 600],
        "change": 0.07,
        "change_pct": 1.46,
        "limit_up": 6.24,
        "limit_down": 3.36,
        "traded": True,
        "suspended": False,
        "at_limit_up": False,
        "at_limit_down": False,
        "receive_ts": RECEIVE_TS,
        "process_ts": PROCESS_TS,
        "limit_free": False,
        "not_traded_yet": False,
        "phase": "closing_auction",
        "avg_price": 4.858,
        "amplitude": 2.71,
        "order_imbalance": 34.19,
    }
    assert_encodes(rec)


def test_bj_trade_date_is_shanghai_date() -> None:
    # 2025-11-23 16:30 UTC is 2025-11-24 00:30 in Shanghai.
    ts = epoch_ms("2025-11-24", "00:30:00")
    rec = parse(bse_line(timestamp=ts, symbol="bj430047", name="诺思兰德"))
    assert (rec["trade_date"], rec["code"], rec["board"]) == ("2025-11-24", "430047", "BJ")
    assert_encodes(rec)


@pytest.mark.parametrize(
    ("over", "expect"),
    [
        pytest.param(
            {"symbol": "sh600519", "name": "贵州茅台", "open": "1501.00", "prev_close": "1500.00",
             "price": "1510.50", "high": "1520.00", "low": "1498.00"},
            {"market": "SH", "board": "MAIN", "code": "600519", "limit_up": 1650.0,
             "limit_down": 1350.0, "change": 10.5, "change_pct": 0.7},
            id="sh-main",
        ),
        pytest.param(
            {"symbol": "sh688981", "name": "中芯国际", "open": "86.00", "prev_close": "85.37",
             "price": "90.12", "high": "91.00", "low": "85.50"},
            {"market": "SH", "board": "STAR", "limit_up": 102.44, "limit_down": 68.30,
             "change": 4.75, "change_pct": 5.56},
            id="sh-star",
        ),
        pytest.param(
            {"symbol": "sz300750", "name": "宁德时代", "open": "251.00", "prev_close": "250.00",
             "price": "247.50", "high": "252.00", "low": "246.00"},
            {"market": "SZ", "board": "CHINEXT", "limit_up": 300.0, "limit_down": 200.0,
             "change": -2.5, "change_pct": -1.0},
            id="sz-chinext",
        ),
        pytest.param(
            {"symbol": "sh600898", "name": "*ST美讯", "open": "3.12", "prev_close": "3.10",
             "price": "3.26", "high": "3.26", "low": "3.10", "date": "2026-07-03"},
            {"is_st": True, "limit_up": 3.26, "limit_down": 2.95, "at_limit_up": True},
            id="st-before-2026-07-06-5pct",
        ),
        pytest.param(
            {"symbol": "sh600898", "name": "*ST美讯", "open": "3.12", "prev_close": "3.10",
             "price": "3.26", "high": "3.26", "low": "3.10", "date": "2026-07-06"},
            {"is_st": True, "limit_up": 3.41, "limit_down": 2.79, "at_limit_up": False},
            id="st-from-2026-07-06-10pct",
        ),
        pytest.param(
            {"symbol": "sh600898", "name": "*ST美讯", "open": "3.12", "prev_close": "3.10",
             "price": "3.26", "high": "3.26", "low": "3.10", "date": "2025-07-07"},
            {"is_st": True, "limit_up": 3.26, "limit_down": 2.95, "at_limit_up": True},
            id="st-2025-07-07-draft-date-still-5pct",
        ),
        pytest.param(
            {"symbol": "sz302132", "name": "中航成飞", "prev_close": "60.00", "price": "61.00",
             "open": "60.50", "high": "61.50", "low": "60.00"},
            {"market": "SZ", "board": "CHINEXT", "code": "302132", "limit_up": 72.0,
             "limit_down": 48.0},
            id="chinext-302-range-is-listed",
        ),
        pytest.param(
            {"symbol": "sz000002", "name": "万 科Ａ"},
            {"name": "万 科Ａ", "is_st": False},
            id="name-with-space",
        ),
        pytest.param(
            {"symbol": "sz000004", "name": " *ST 国华 "},
            {"name": "*ST 国华", "is_st": True, "limit_up": 12.10},
            id="star-st-name-with-spaces",
        ),
        pytest.param(
            {"name": "A_B 股份"},
            {"name": "A_B 股份"},
            id="underscore-and-space-in-name",
        ),
        pytest.param(
            {"price": "12.10", "high": "12.10", "bid": "12.10", "ask": "0.00"},
            {"at_limit_up": True, "at_limit_down": False, "change": 1.1, "change_pct": 10.0},
            id="at-limit-up",
        ),
        pytest.param(
            {"price": "9.90", "low": "9.90", "bid": "0.00", "ask": "9.90"},
            {"at_limit_up": False, "at_limit_down": True, "change": -1.1, "change_pct": -10.0},
            id="at-limit-down",
        ),
    ],
)  # fmt: skip
def test_golden_boards_and_flags(over: dict[str, str], expect: dict[str, Any]) -> None:
    rec = parse(sse_line(**over))
    assert {k: rec[k] for k in expect} == expect
    assert_encodes(rec)


ZEROS = {"open": "0.00", "price": "0.00", "high": "0.00", "low": "0.00", "volume": "0",
         "amount": "0.00"}  # fmt: skip


def test_pre_open_zeros_are_not_suspended() -> None:
    rec = parse(sse_line(**ZEROS, time="09:20:03"))
    assert rec["traded"] is False and rec["suspended"] is False
    assert (rec["change"], rec["change_pct"]) == (0.0, 0.0)
    assert (rec["limit_up"], rec["limit_down"]) == (12.10, 9.90)
    assert rec["at_limit_up"] is False and rec["at_limit_down"] is False
    assert_encodes(rec)


def test_suspended_after_the_open() -> None:
    halted = {f"{side}{i}_{what}": "0" for side in ("bid", "ask") for i in range(1, 6)
              for what in ("volume", "price")}  # fmt: skip
    rec = parse(sse_line(**ZEROS, **halted, time="10:15:00", bid="0.00", ask="0.00"))
    assert rec["traded"] is False and rec["suspended"] is True
    assert (rec["change"], rec["change_pct"]) == (0.0, 0.0)
    assert_encodes(rec)


def test_crlf_tolerated() -> None:
    assert parse(sse_line() + b"\r") == parse(sse_line())
    assert parse(bse_line() + b"\r") == parse(bse_line())


def test_process_ts_defaults_to_now() -> None:
    before = dt.datetime.now(dt.UTC).timestamp() * 1000
    rec = parse_record(sse_line(), RECEIVE_TS)
    after = dt.datetime.now(dt.UTC).timestamp() * 1000
    assert before - 1 <= rec["process_ts"] <= after + 1


def test_bj_integer_prices_and_whole_float_volumes() -> None:
    rec = parse(bse_line(lastPrice=5, high=5, volume=1523400.0))
    assert rec["price"] == 5.0 and type(rec["price"]) is float
    assert rec["volume"] == 1523400 and type(rec["volume"]) is int
    assert_encodes(rec)


def test_schema_has_no_field_parse_does_not_fill() -> None:
    """Guards against a schema change that the parser would silently miss."""
    parsed_schema("quote")
    names = {f["name"] for f in schema_json("quote")["fields"]}
    assert names == set(parse(sse_line())) == set(parse(bse_line()))


TOKENS = ["", "-1", "0", "1e3", "nan", "inf", "-0.00", "９", "1_0", " 1", "99999999999999999999",
          "2026-02-29", "24:00:00", "bj920819", "sh688000", "$", "{", "\xff", "ST", "1.5",
          "1990-12-19", '"timestamp":0']  # fmt: skip


def test_mutated_lines_either_parse_and_encode_or_are_bad_records() -> None:
    """Whatever arrives, the parser answers a record the codec accepts or a BadRecord."""
    rng = random.Random(20261123)
    seeds = [sse_line(), bse_line(), sse_line(symbol="sh688981"), bse_line(symbol="bj830799")]
    outcomes: dict[str, int] = {}
    for _ in range(4000):
        raw = bytearray(rng.choice(seeds))
        kind = rng.randrange(3)
        if kind == 0:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif kind == 1:
            start = rng.randrange(len(raw))
            del raw[start : start + rng.randrange(1, 8)]
        else:
            parts = bytes(raw).split(b"$") if raw[:1] != b"{" else bytes(raw).split(b",")
            parts[rng.randrange(len(parts))] = rng.choice(TOKENS).encode("utf-8", "surrogateescape")
            raw = bytearray((b"$" if raw[:1] != b"{" else b",").join(parts))
        try:
            record = parse(bytes(raw))
        except BadRecord as exc:
            outcomes[exc.reason] = outcomes.get(exc.reason, 0) + 1
            continue
        assert CODEC.decode(CODEC.encode(record)) == record
        outcomes["ok"] = outcomes.get("ok", 0) + 1
    assert outcomes["ok"] > 100 and len(outcomes) >= 8, outcomes


# --------------------------------------------------------------------------- bounds and clocks

OUT_OF_RANGE: list[tuple[str, bytes]] = [
    ("prev-close-1e27", sse_line(prev_close="1000000000000000000000000000.00")),
    ("price-1e308", sse_line(price="1e308")),
    ("amount-1e308", sse_line(amount="1e308")),
    ("prices-add-up-to-inf", sse_line(price="1e308", high="1.7e308")),
    ("price-above-max", sse_line(price="1000000.01")),
    ("book-price", sse_line(ask3_price="2e6")),
    ("volume-9e18", sse_line(volume="9000000000000000000")),
    ("volume-2**64", sse_line(volume=str(2**64))),
    ("book-volume", sse_line(bid2_volume="10000000000000")),
    ("prev-close-tiny", sse_line(prev_close="0.0000000000000000000000001")),
    ("json-price", bse_line(lastPrice=1e308)),
    ("json-turnover", bse_line(turnover=1e308)),
    ("json-volume", bse_line(volume=9_000_000_000_000_000_000)),
    ("json-book-price", bse_line(bidPrices=[4.86, 4.85, 4e6, 4.83, 4.82])),
    ("json-book-volume", bse_line(askVolumes=[800, 2300, 10**13, 1000, 600])),
    ("json-prev-close-tiny", bse_line(preClose=1e-300)),
]


@pytest.mark.parametrize("raw", [r for _, r in OUT_OF_RANGE], ids=[i for i, _ in OUT_OF_RANGE])
def test_numbers_no_real_quote_reaches_are_out_of_range(raw: bytes) -> None:
    with pytest.raises(BadRecord) as info:
        parse(raw)
    assert info.value.reason == "out_of_range", info.value.detail
    assert 0 < len(info.value.detail) < 160


def test_the_bounds_themselves_are_accepted() -> None:
    rec = parse(sse_line(price="1000000.00", high="1000000.00", volume=str(10**13 - 1),
                         amount="999999999999999.88", prev_close="0.001"))  # fmt: skip
    assert rec["price"] == 1e6 and rec["volume"] == 10**13 - 1
    assert_encodes(rec)


def test_a_quote_stamped_ahead_of_its_receive_time_is_refused() -> None:
    ts = epoch_ms("2026-11-23", "14:59:57")
    ok = parse_record(sse_line(), ts - 299_000, PROCESS_TS, max_ahead_ms=300_000)
    assert ok["exchange_ts"] == ts
    with pytest.raises(BadRecord) as info:
        parse_record(sse_line(), ts - 301_000, PROCESS_TS, max_ahead_ms=300_000)
    assert info.value.reason == "future_timestamp", info.value.detail
    with pytest.raises(BadRecord) as info:
        parse_record(sse_line(date="2099-01-01"), ts, PROCESS_TS, max_ahead_ms=300_000)
    assert info.value.reason == "future_timestamp"
    with pytest.raises(BadRecord) as info:  # BJ, and an unknown receive time: the processing time
        parse_record(bse_line(timestamp=4070908800000), 0, ts, max_ahead_ms=300_000)
    assert info.value.reason == "future_timestamp"


def test_old_quotes_are_not_refused() -> None:
    """A replay of old data (a rebuild, a backfill) is fine: only the future is refused."""
    rec = parse_record(sse_line(date="2020-01-02"), RECEIVE_TS, PROCESS_TS, max_ahead_ms=300_000)
    assert rec["trade_date"] == "2020-01-02"


def test_no_trade_yet_with_orders_in_the_book_is_not_suspended() -> None:
    """A thin stock quoting at 09:30:03 without a match yet is not suspended."""
    rec = parse(sse_line(**ZEROS, time="09:30:03"))
    assert (rec["traded"], rec["suspended"], rec["not_traded_yet"]) == (False, False, True)


@pytest.mark.parametrize("code", ["302132", "300750", "301236"])
def test_chinext_codes_are_never_dead_lettered(code: str) -> None:
    """SZSE ChiNext lists 300xxx, 301xxx and 302xxx codes (302132 trades):
    none may go to the DLQ as bad_symbol."""
    rec = parse(sse_line(symbol=f"sz{code}"))
    assert (rec["code"], rec["board"]) == (code, "CHINEXT")


def test_new_listing_line_has_no_limit() -> None:
    """N中芯 opening at 82.92 on prev_close 27.46: no limit, no limit flag."""
    rec = parse(sse_line(symbol="sh688981", name="N中芯", prev_close="27.46", open="82.92",
                         price="82.92", high="82.92", low="82.92"))  # fmt: skip
    assert rec["limit_free"] is True and rec["at_limit_up"] is False
    assert (rec["limit_up"], rec["limit_down"]) == (0.0, 0.0)
