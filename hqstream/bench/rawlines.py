"""Deterministic raw feed lines for the streams benchmark and tests.

Renders Shanghai/Shenzhen ``$`` lines and Beijing JSON lines exactly as
shared/spec/feed-protocol.md describes, as a random walk per stock over a few
snapshots 3 s apart, plus an optional fraction of bad records of known
reasons. Output: ``(key, value, headers)`` tuples as the receiver would put
them on ``hq.ticks.raw``. Never talks to Kafka.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Final

import orjson

from schemas.topics import FORMAT_BSE_JSON, FORMAT_SSE_SZSE, H_FORMAT, H_RECEIVE_TS, H_SOURCE

RawLine = tuple[bytes, bytes, list[tuple[str, bytes]]]
SHANGHAI: Final = dt.timezone(dt.timedelta(hours=8))
NAMES: Final = "平安银行万科浦发招商中信华夏民生光大兴业交通工商建设农业中国"
BAD_REASONS: Final = (
    "wrong_field_count",
    "not_a_number",
    "invalid_json",
    "bad_symbol",
    "negative_value",
    "high_below_low",
    "bad_datetime",
)


@dataclass(slots=True)
class _Stock:
    prefix: str
    code: str
    name: str
    prev_close: float
    price: float
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    volume: int = 0
    amount: float = 0.0


def universe(n: int, seed: int = 7) -> list[_Stock]:
    """``n`` stocks spread over SH main/STAR, SZ main/ChiNext and BJ."""
    rng = random.Random(seed)
    prefixes = (("sh", "600"), ("sh", "688"), ("sz", "000"), ("sz", "300"), ("bj", "920"))
    out: list[_Stock] = []
    for i in range(n):
        prefix, head = prefixes[i % len(prefixes)]
        code = f"{head}{i // len(prefixes):03d}"
        name = "".join(rng.choice(NAMES) for _ in range(4))
        if i % 37 == 0:
            name = "ST" + name[:2]
        prev = round(rng.uniform(3, 80), 2)
        out.append(_Stock(prefix, code, name, prev, prev))
    return out


def _step(st: _Stock, rng: random.Random) -> None:
    limit = 0.095 if st.prefix != "bj" else 0.29
    move = rng.gauss(0, 0.01)
    if rng.random() < 0.02:
        move = rng.choice((-1, 1)) * 0.06
    price = round(min(max(st.price * (1 + move), st.prev_close * (1 - limit)),
                      st.prev_close * (1 + limit)), 2)  # fmt: skip
    st.price = max(price, 0.01)
    if st.open == 0:
        st.open = st.high = st.low = st.price
    st.high = max(st.high, st.price)
    st.low = min(st.low, st.price)
    traded = rng.randint(1, 400) * 100
    st.volume += traded
    st.amount = round(st.amount + traded * st.price, 2)


def _sse_line(st: _Stock, ts: int) -> bytes:
    when = dt.datetime.fromtimestamp(ts / 1000, SHANGHAI)
    bid = round(st.price - 0.01, 2)
    book: list[str] = []
    for i in range(5):
        book += [str(100 * (i + 1)), f"{bid - 0.01 * i:.2f}"]
    for i in range(5):
        book += [str(100 * (i + 2)), f"{st.price + 0.01 * i:.2f}"]
    fields = [
        f"{st.prefix}{st.code}", st.name, f"{st.open:.2f}", f"{st.prev_close:.2f}",
        f"{st.price:.2f}", f"{st.high:.2f}", f"{st.low:.2f}", f"{bid:.2f}", f"{st.price:.2f}",
        str(st.volume), f"{st.amount:.2f}", *book, when.strftime("%Y-%m-%d"),
        when.strftime("%H:%M:%S"),
    ]  # fmt: skip
    return "$".join(fields).encode()


def _bse_line(st: _Stock, ts: int) -> bytes:
    return orjson.dumps(
        {
            "symbol": f"bj{st.code}",
            "name": st.name,
            "lastPrice": st.price,
            "preClose": st.prev_close,
            "open": st.open,
            "high": st.high,
            "low": st.low,
            "volume": st.volume,
            "turnover": st.amount,
            "bidPrices": [round(st.price - 0.01 * (i + 1), 2) for i in range(5)],
            "bidVolumes": [100 * (i + 1) for i in range(5)],
            "askPrices": [round(st.price + 0.01 * i, 2) for i in range(5)],
            "askVolumes": [100 * (i + 2) for i in range(5)],
            "timestamp": ts,
        }
    )


def _bad_line(reason: str, st: _Stock, ts: int) -> bytes:
    good = _sse_line(st, ts) if st.prefix != "bj" else _sse_line(_Stock("sz", "000001", "x",
                                                                        10, 10), ts)  # fmt: skip
    f = good.decode().split("$")
    if reason == "wrong_field_count":
        return "$".join(f[:20]).encode()
    if reason == "not_a_number":
        f[4] = "12.3x"
    elif reason == "invalid_json":
        return b'{"symbol":"bj920001","name":'
    elif reason == "bad_symbol":
        f[0] = "xx123456"
    elif reason == "negative_value":
        f[9] = "-100"
    elif reason == "high_below_low":
        f[5], f[6] = "1.00", "2.00"
    elif reason == "bad_datetime":
        f[31] = "2026-02-30"
    return "$".join(f).encode()


def session_start_ms(date: str = "2026-11-23", hhmmss: str = "10:00:00") -> int:
    when = dt.datetime.fromisoformat(f"{date}T{hhmmss}").replace(tzinfo=SHANGHAI)
    return int(when.timestamp() * 1000)


def generate(
    stocks: int,
    snapshots: int,
    *,
    bad_fraction: float = 0.0,
    seed: int = 7,
    start_ms: int | None = None,
    interval_ms: int = 3000,
    receive_ts: int | None = None,
) -> tuple[list[RawLine], dict[str, int]]:
    """Lines of ``snapshots`` full snapshots; also returns the bad lines per reason."""
    rng = random.Random(seed)
    start = start_ms if start_ms is not None else session_start_ms()
    stock_list = universe(stocks, seed)
    lines: list[RawLine] = []
    bad: dict[str, int] = {}
    for snap in range(snapshots):
        ts = start + snap * interval_ms
        order = list(range(len(stock_list)))
        rng.shuffle(order)
        for i in order:
            st = stock_list[i]
            _step(st, rng)
            key = st.code.encode()
            recv = str(receive_ts if receive_ts is not None else ts).encode()
            if bad_fraction and rng.random() < bad_fraction:
                reason = BAD_REASONS[rng.randrange(len(BAD_REASONS))]
                fmt = FORMAT_BSE_JSON if reason == "invalid_json" else FORMAT_SSE_SZSE
                value = _bad_line(reason, st, ts)
                bad[reason] = bad.get(reason, 0) + 1
            elif st.prefix == "bj":
                fmt, value = FORMAT_BSE_JSON, _bse_line(st, ts)
            else:
                fmt, value = FORMAT_SSE_SZSE, _sse_line(st, ts)
            headers = [(H_FORMAT, fmt.encode()), (H_RECEIVE_TS, recv), (H_SOURCE, b"bench")]
            lines.append((key, value, headers))
    return lines, bad
