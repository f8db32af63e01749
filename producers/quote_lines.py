"""Render simulated quotes as feed lines, good and deliberately bad.

Used by the feed simulator, and by producers.sample_feed for the streams
benchmark's lines. Shanghai/Shenzhen quotes become the 33-field ``$`` line and
Beijing quotes the JSON object of shared/spec/feed-protocol.md, byte for byte
in the field order the spec gives. A line is rendered once as a
:class:`Template` with its cumulative fields (volume, amount) and its time left
open, so a fast sender can re-fill them without rendering the rest again.

:func:`malformed_line` makes the bad records the spec lists, one kind at a
time, so tests and the dead-letter path can be checked kind by kind.
Lines never contain a newline; this module never does I/O.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

import orjson

from producers.universe import PART_STOCKS, MarketWalk, Quote, Stock, run_to_end
from schemas.exchange import SHANGHAI_TZ

MalformedKind = Literal[
    "field_count",
    "non_numeric",
    "invalid_json",
    "bad_symbol",
    "negative",
    "high_low",
    "bad_datetime",
]
MALFORMED_KINDS: Final[tuple[MalformedKind, ...]] = (
    "field_count",
    "non_numeric",
    "invalid_json",
    "bad_symbol",
    "negative",
    "high_low",
    "bad_datetime",
)
SSE_FIELDS: Final = 33
_SSE_STAMP: Final = "%Y-%m-%d$%H:%M:%S"  # date and time fields of a $ line, joined
_SLOT: Final = "\x00"  # marks the open fields while rendering a template
_JUNK_NUMBERS: Final = ("--", "abc", "1.2.3", "12,50", "0x1A", "N/A")


def cents(value: int) -> str:
    """Integer cents as yuan with exactly two decimals (``1105`` -> ``11.05``)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}{value // 100}.{value % 100:02d}"


#: :func:`price_text`'s answers; emptied when it reaches this many
_PRICE_TEXTS_MAX: Final = 1 << 20
_price_texts: dict[int, str] = {}


def price_text(value: int) -> str:
    """:func:`cents` of a price, remembered: a snapshot's ~85,000 prices (the
    books') repeat from one snapshot to the next, and formatting each took a
    third of the simulator's CPU."""
    text = _price_texts.get(value)
    if text is None:
        if len(_price_texts) >= _PRICE_TEXTS_MAX:
            _price_texts.clear()
        text = _price_texts[value] = cents(value)
    return text


class Stamp(NamedTuple):
    """One snapshot's exchange time in both wire forms."""

    sse: str  # "2026-11-23$14:59:57" (date and time fields of a $ line)
    bse: str  # epoch milliseconds, for the Beijing "timestamp"

    @classmethod
    def of(cls, when: dt.datetime) -> Stamp:
        """The stamp of ``when``; a naive datetime is Shanghai time."""
        when = exchange_time(when)
        ms = int(when.timestamp() * 1000)
        return cls(when.strftime(_SSE_STAMP), str(ms))

    @classmethod
    def of_ms(cls, ms: int) -> Stamp:
        """The stamp of an exact epoch-ms instant, in exchange (Shanghai) time.

        For callers that count time in milliseconds: going through a float
        ``datetime`` could round the Beijing timestamp off by one.
        """
        when = dt.datetime.fromtimestamp(ms // 1000, SHANGHAI_TZ)
        return cls(when.strftime(_SSE_STAMP), str(ms))


@dataclass(frozen=True, slots=True)
class Template:
    """A rendered line with volume, amount and time still to fill."""

    head: str
    mid: str
    tail: str
    end: str
    bse: bool

    def fill(self, volume: int, amount: int, stamp: Stamp) -> str:
        when = stamp.bse if self.bse else stamp.sse
        return f"{self.head}{volume}{self.mid}{cents(amount)}{self.tail}{when}{self.end}"


def sse_fields(stock: Stock, q: Quote, stamp: Stamp) -> list[str]:
    """The 33 ``$`` fields of a quote, as strings."""
    book: list[str] = []
    for vol, price in (*q.bids, *q.asks):
        book += (str(vol), price_text(price))
    date, time = stamp.sse.split("$") if "$" in stamp.sse else (stamp.sse, "")
    return [
        stock.symbol,
        stock.name,
        price_text(q.open),
        price_text(stock.prev_close),
        price_text(q.price),
        price_text(q.high),
        price_text(q.low),
        price_text(q.bids[0][1]),
        price_text(q.asks[0][1]),
        str(q.volume),
        cents(q.amount),
        *book,
        date,
        time,
    ]


def bse_pairs(stock: Stock, q: Quote, stamp: Stamp) -> list[tuple[str, str]]:
    """The Beijing JSON keys in spec order, each with its JSON value text."""

    def prices(side: tuple[tuple[int, int], ...]) -> str:
        return "[" + ",".join(price_text(p) for _, p in side) + "]"

    def volumes(side: tuple[tuple[int, int], ...]) -> str:
        return "[" + ",".join(str(v) for v, _ in side) + "]"

    return [
        ("symbol", f'"{stock.symbol}"'),
        ("name", orjson.dumps(stock.name).decode()),
        ("lastPrice", price_text(q.price)),
        ("preClose", price_text(stock.prev_close)),
        ("open", price_text(q.open)),
        ("high", price_text(q.high)),
        ("low", price_text(q.low)),
        ("volume", str(q.volume)),
        ("turnover", cents(q.amount)),
        ("bidPrices", prices(q.bids)),
        ("bidVolumes", volumes(q.bids)),
        ("askPrices", prices(q.asks)),
        ("askVolumes", volumes(q.asks)),
        ("timestamp", stamp.bse),
    ]


def _json(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f'"{k}":{v}' for k, v in pairs) + "}"


def template(stock: Stock, q: Quote) -> Template:
    """The line of ``q`` with its volume, amount and time left open."""
    open_q = q._replace(volume=0, amount=0)
    if stock.market == "BJ":
        pairs = bse_pairs(stock, open_q, Stamp(_SLOT, _SLOT))
        pairs[7] = ("volume", _SLOT)
        pairs[8] = ("turnover", _SLOT)
        text, bse = _json(pairs), True
    else:
        fields = sse_fields(stock, open_q, Stamp(_SLOT, _SLOT))
        fields[9] = fields[10] = _SLOT
        text, bse = "$".join(fields[:32]), False
    head, mid, tail, end = text.split(_SLOT)
    return Template(head, mid, tail, end, bse)


def render(stock: Stock, q: Quote, stamp: Stamp) -> str:
    """One good feed line for ``q`` (no trailing newline): ``template(stock, q)``
    filled with its volume, amount and ``stamp``, written out at once."""
    if stock.market == "BJ":
        return _json(bse_pairs(stock, q, stamp))
    return "$".join(sse_fields(stock, q, stamp))


def _bad_symbol(stock: Stock, rng: random.Random) -> str:
    m, code = stock.market.lower(), stock.code
    return rng.choice(
        ("sx" + code[1:], m + code[:5], "hk" + code, code, m + code + "0", m + code[:4] + "ab")
    )


def _bad_stamp(stamp: Stamp, rng: random.Random) -> Stamp:
    date, time = stamp.sse.split("$")
    year = date[:4]
    if rng.random() < 0.5:
        date = rng.choice((f"{year}-02-30", f"{year}-13-01", f"{year}-04-31", f"{year}-00-10"))
    else:
        time = rng.choice(("25:61:00", "24:00:01", "14:60:00", "09:30:61"))
    return Stamp(f"{date}${time}", stamp.bse)


def malformed_line(
    kind: MalformedKind, stock: Stock, q: Quote, stamp: Stamp, rng: random.Random
) -> str:
    """A bad record of ``kind`` made from a good quote (no trailing newline).

    ``invalid_json`` is always a JSON line and ``field_count``/``bad_datetime``
    always a ``$`` line, whatever the stock's exchange; the other kinds keep
    the stock's own format.
    """
    bse = stock.market == "BJ"
    if kind == "invalid_json":
        text = _json(bse_pairs(stock, q, stamp))
        return text[: rng.randrange(len(text) // 3, len(text) - 1)]
    if kind == "field_count":
        fields = sse_fields(stock, q, stamp)
        at = rng.randrange(1, SSE_FIELDS)
        if rng.random() < 0.5:
            del fields[at]
        else:
            fields.insert(at, fields[at])
        return "$".join(fields)
    if kind == "bad_datetime":
        return "$".join(sse_fields(stock, q, _bad_stamp(stamp, rng)))
    # The remaining kinds keep the stock's own format: name the field to spoil.
    price_i, vol_i, high_i, low_i, sym_i = (2, 7, 5, 6, 0) if bse else (4, 9, 5, 6, 0)
    if bse:
        pairs = bse_pairs(stock, q, stamp)
        values = [v for _, v in pairs]
    else:
        values = sse_fields(stock, q, stamp)
    if kind == "bad_symbol":
        symbol = _bad_symbol(stock, rng)
        values[sym_i] = f'"{symbol}"' if bse else symbol
    elif kind == "non_numeric":
        junk = rng.choice(_JUNK_NUMBERS)
        if bse:
            values[rng.randrange(2, 9)] = f'"{junk}"'
        else:
            values[rng.randrange(2, SSE_FIELDS - 2)] = junk
    elif kind == "negative":
        if rng.random() < 0.5:
            values[price_i] = cents(-(q.price or stock.prev_close))
        else:
            values[vol_i] = str(-(q.volume or 100))
    elif kind == "high_low":
        low = max(q.low, 2)
        values[high_i] = cents(low)
        values[low_i] = cents(max(q.high, low) + 1 + rng.randrange(5))
    if bse:
        return _json([(k, v) for (k, _), v in zip(pairs, values, strict=True)])
    return "$".join(values)


# The exchange day (Asia/Shanghai), as the simulator plays it.
PRE_OPEN: Final = dt.time(9, 15)  # opening call auction: orders, no trades
AUCTION_PRINT: Final = dt.time(9, 25)  # the opening match; no trades 09:25-09:30
CONTINUOUS: Final = dt.time(9, 30)
MIDDAY: Final = dt.time(11, 30)
AFTERNOON: Final = dt.time(13, 0)
CLOSING_AUCTION: Final = dt.time(14, 57)  # closing call auction: orders, no trades
CLOSE: Final = dt.time(15, 0)
#: Vendors stamp a session's last ticks a few seconds late: the morning's last
#: trades come at 11:30:02, the closing auction's result at 15:00:03.
MIDDAY_LATE: Final = dt.timedelta(seconds=2)
CLOSE_LATE: Final = dt.timedelta(seconds=3)

Phase = Literal["pre_open", "auction_print", "continuous", "closing_auction", "closing_print"]


def _at(when: dt.datetime, t: dt.time) -> dt.datetime:
    return when.replace(hour=t.hour, minute=t.minute, second=t.second, microsecond=0)


def exchange_time(when: dt.datetime) -> dt.datetime:
    """``when`` in Asia/Shanghai time; a naive datetime is taken as Shanghai time
    (not the machine's zone: that put Beijing epoch timestamps 8 h off)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=SHANGHAI_TZ)
    return when.astimezone(SHANGHAI_TZ)


def session_time(when: dt.datetime) -> dt.datetime:
    """A start moved into the exchange day: not before 09:15 (the opening call
    auction), none in the lunch break. After the close it stays: the market is closed."""
    when = exchange_time(when)
    t = when.time()
    if t < PRE_OPEN:
        return _at(when, PRE_OPEN)
    if _at(when, MIDDAY) + MIDDAY_LATE < when < _at(when, AFTERNOON):
        return _at(when, AFTERNOON)
    return when


def next_time(when: dt.datetime, interval: dt.timedelta) -> dt.datetime:
    """The snapshot time after ``when``: ``interval`` later, except that the
    session's last snapshot is stamped late (11:30:02, 15:00:03) and the lunch
    break is skipped. After the close the clock runs on (prices do not move)."""
    nxt = when + interval
    midday, close = _at(when, MIDDAY), _at(when, CLOSE)
    if when <= midday < nxt:
        return min(nxt, midday + MIDDAY_LATE)
    if midday < when < _at(when, AFTERNOON):
        return _at(when, AFTERNOON)
    if when <= close < nxt:
        return min(nxt, close + CLOSE_LATE)
    return nxt


def phase_at(when: dt.datetime) -> Phase:
    """What the market does in a snapshot stamped ``when`` (see SnapshotSource)."""
    t = when.time()
    if t < AUCTION_PRINT:
        return "pre_open"
    if t < CONTINUOUS:
        return "auction_print"
    if t < CLOSING_AUCTION:
        return "continuous"  # includes the late-stamped 11:30:02 snapshot
    if t <= CLOSE:
        return "closing_auction"
    return "closing_print"


class Snapshot(NamedTuple):
    """One full snapshot, ready to send: newline-terminated lines."""

    data: bytes
    lines: int
    malformed: dict[MalformedKind, int]


class SnapshotBuild:
    """A snapshot being built a part at a time (:meth:`SnapshotSource.build`).

    The simulator's steady mode spreads the next snapshot's build over the
    current one's period, a few parts after each slice it sends, instead of
    taking ~0.3 s of a core at once for 5,000 stocks every period.
    """

    def __init__(self, steps: Generator[None, None, Snapshot], parts: int) -> None:
        self.parts = parts  #: at most this many parts build it all
        self._steps = steps
        self._snapshot: Snapshot | None = None

    @property
    def done(self) -> bool:
        return self._snapshot is not None

    def advance(self, parts: int = 1) -> None:
        """Build up to ``parts`` more parts (~1-2 ms of CPU each)."""
        for _ in range(parts):
            if self._snapshot is not None:
                return
            try:
                next(self._steps)
            except StopIteration as end:
                self._snapshot = end.value

    def result(self) -> Snapshot:
        """The snapshot; what is left of its build is done first."""
        if self._snapshot is None:
            self._snapshot = run_to_end(self._steps)
        return self._snapshot


class SnapshotSource:
    """Yields the feed's snapshots: every stock once, in shuffled order.

    The exchange clock starts at ``start`` (a naive time is Shanghai time) and
    advances by ``interval_s`` per snapshot through the exchange day
    (:func:`next_time`), which the snapshots follow: 09:15-09:25 the opening
    call auction (no trade, orders in the book), the 09:25 opening print, no
    trades until 09:30, continuous trading to 11:30 with a last snapshot
    stamped 11:30:02, lunch skipped, continuous trading 13:00-14:57, the
    closing call auction (no trades) and its result stamped 15:00:03; then the
    market is closed: the clock runs on and the closing snapshot repeats.
    With ``pool_snapshots`` > 0 the
    quotes of that many snapshots are rendered up front and cycled (for the
    max-rate benchmark mode); each cycle adds the pool's day totals to volume
    and amount so the cumulative fields keep growing, and the clock keeps
    running, but prices repeat (high and low hold the pool's extremes after
    the first cycle). ``malformed_fraction`` of the lines are
    replaced by bad records, kinds drawn uniformly.
    """

    def __init__(
        self,
        stocks: tuple[Stock, ...],
        start: dt.datetime,
        interval_s: float,
        seed: int,
        malformed_fraction: float = 0.0,
        pool_snapshots: int = 0,
    ) -> None:
        if not 0.0 <= malformed_fraction <= 1.0:
            raise ValueError("malformed_fraction must be within 0..1")
        self.stocks = stocks
        start = exchange_time(start)
        self.clock = session_time(start)
        self._interval = dt.timedelta(seconds=interval_s)
        self._fraction = malformed_fraction
        self._rng = random.Random(seed + 1)
        self._walk = MarketWalk(stocks, start.date(), seed, late_openers=pool_snapshots == 0)
        self._printed = {"auction_print": False, "closing_print": False}
        # Pool entries: (stock index, first-cycle template, later-cycle template, quote).
        self._pool: list[list[tuple[int, Template, Template, Quote]]] = []
        self._pool_totals: list[tuple[int, int]] = []
        self.count = 0
        steps = [self._shuffled(self._walk.step()) for _ in range(pool_snapshots)]
        if steps:
            # Later cycles show the pool's whole-day high and low, so that
            # low <= price <= high and amount/volume stays within [low, high].
            final = dict(steps[-1])
            self._pool_totals = [(final[i].volume, final[i].amount) for i in range(len(stocks))]
            for order in steps:
                self._pool.append(
                    [
                        (
                            i,
                            template(stocks[i], q),
                            template(stocks[i], q._replace(high=final[i].high, low=final[i].low)),
                            q,
                        )
                        for i, q in order
                    ]
                )

    def _shuffled(self, quotes: list[Quote]) -> list[tuple[int, Quote]]:
        order = list(enumerate(quotes))
        self._rng.shuffle(order)
        return order

    def next(self) -> Snapshot:
        """The next snapshot; the clock then moves on by one interval."""
        return self.build().result()

    def build(self) -> SnapshotBuild:
        """The next snapshot, to be built a part at a time (:class:`SnapshotBuild`):
        the same snapshot as :meth:`next`. Build them one at a time, in order: the
        clock moves on once one is built."""
        # parts: the walk's pauses (none from the pool), the render loop's (one per
        # PART_STOCKS lines), and the last one, which returns the snapshot
        walk = 0 if self._pool else self._walk.pauses()
        return SnapshotBuild(self._building(), walk + len(self.stocks) // PART_STOCKS + 1)

    def _building(self) -> Generator[None, None, Snapshot]:
        stamp = Stamp.of(self.clock)
        stocks, rng, fraction = self.stocks, self._rng, self._fraction
        malformed: dict[MalformedKind, int] = {}
        lines: list[str] = []
        if self._pool:
            cycle, j = divmod(self.count, len(self._pool))
            totals = self._pool_totals
            for n, (i, first, later, q) in enumerate(self._pool[j], 1):
                if fraction and rng.random() < fraction:
                    lines.append(self._bad(stocks[i], q, stamp, malformed))
                else:
                    tpl = later if cycle else first
                    vol, amount = totals[i]
                    lines.append(tpl.fill(q.volume + cycle * vol, q.amount + cycle * amount, stamp))
                if not n % PART_STOCKS:
                    yield
        else:
            quotes = yield from self._quotes(phase_at(self.clock))
            for n, (i, q) in enumerate(self._shuffled(quotes), 1):
                if fraction and rng.random() < fraction:
                    lines.append(self._bad(stocks[i], q, stamp, malformed))
                else:
                    lines.append(render(stocks[i], q, stamp))
                if not n % PART_STOCKS:
                    yield
        self.count += 1
        self.clock = next_time(self.clock, self._interval)
        lines.append("")
        return Snapshot("\n".join(lines).encode(), len(lines) - 1, malformed)

    def _quotes(self, phase: Phase) -> Generator[None, None, list[Quote]]:
        """The walk's snapshot for a phase, a part at a time: trades only in the
        continuous sessions and in the two auction prints, each printed once."""
        walk = self._walk
        if phase == "pre_open":
            return (yield from walk.indicating())
        if phase == "continuous":
            self._printed["auction_print"] = True  # a start after 09:30 opens at once
            return (yield from walk.stepping())
        if phase in self._printed and not self._printed[phase]:
            self._printed[phase] = True
            return (yield from walk.stepping())
        return walk.hold()

    def _bad(self, stock: Stock, q: Quote, stamp: Stamp, seen: dict[MalformedKind, int]) -> str:
        kind = self._rng.choice(MALFORMED_KINDS)
        seen[kind] = seen.get(kind, 0) + 1
        return malformed_line(kind, stock, q, stamp, self._rng)
