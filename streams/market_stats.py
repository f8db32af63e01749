"""Per-market statistics (breadth, totals, top-N) maintained incrementally.

``MarketStats.update(quote)`` replaces one stock's contribution to its
market's counts and sums in O(1); ``snapshot(market)`` builds a MarketStats
record (schemas/avro/market_stats.v1.avsc) for SH, SZ, BJ or ALL.

Definitions (each stock counted by its newest quote, by exchange_ts; only
quotes of the current trade date, the newest one seen, count: a stock that
stopped ticking does not carry yesterday's volume into today's totals):

* ``stocks``: stocks with a quote of the current trade date.
* ``suspended``: their quote says suspended (halted, or no trade all day).
* ``not_traded_yet``: neither traded nor suspended (pre-open, a late opener).
* ``advancers`` / ``decliners``: traded, not suspended, price above / below
  prev_close (compared in cents, not by the rounded change_pct: 1500.00 ->
  1500.05 is +0.003%, shown as 0.00%, and is an advancer).
* ``unchanged``: traded, not suspended, at prev_close (or without one).
  advancers + decliners + unchanged + suspended + not_traded_yet = stocks.
* ``limit_up`` / ``limit_down``: not suspended and at the limit.
* ``volume`` / ``amount``: sums of the cumulative counters (today's totals).
* ``avg_change_pct``: mean change_pct of the traded, non-suspended stocks.
* ``boards``: the same breadth (stocks, advancers, decliners, unchanged,
  suspended, not_traded_yet, limit_up, limit_down) per board of the market
  (SH: MAIN, STAR; SZ: MAIN, CHINEXT; BJ: BJ; ALL: all four), counted when a
  snapshot is taken, not per tick.
* top lists: gainers = highest change_pct, losers = lowest change_pct (both
  over traded, non-suspended stocks), turnover = highest amount (amount > 0,
  not suspended). Ties are broken by code, so every ranking is a total order.

Sums are kept in integers (amount in cents, change_pct in 1e-4 percent) so
add/subtract never drifts: the incremental result equals a recount from
scratch (tests/streams/stats_reference.py) and merged partials exactly.
Top-N lists are not maintained per tick: a snapshot runs
``heapq.nsmallest`` over the market's stocks (~2,000; about a millisecond),
which is fine at the intended rate of at most one snapshot per second;
ALL is merged from the three markets' top-N.

Several workers: each sees only its partitions' stocks. Each publishes
``partial_state()`` (a :class:`PartialState`: its counts, sums and local
top-N per market, stored as JSON by :data:`PARTIAL_JSON`);
``merge_partials`` adds the counts and sums (exact: the shards are
disjoint) and takes the global top-N from the union of the local ones
(exact: under a total order every global top-N member is in its shard's
top-N). When partitions move, the losing worker must ``forget`` their stocks,
else they are counted twice until it does.

:class:`MarketStats` is the reference; :class:`CompiledMarketStats` keeps the same
book compiled (``hqstream_native.StatsBook``, native/src/market_stats.rs) and
:func:`market_stats` gives it when the extension is installed. Both make
their records and partials through :class:`_Readout`.

Pure in-memory computation; never does I/O or reads the clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any, Final

import msgspec

from schemas.exchange import MARKETS, MARKETS_AND_ALL, Market, MarketOrAll
from schemas.native import native_module
from schemas.records import Quote
from streams.errors import StreamsError

Record = dict[str, Any]  # a MarketStats record (schemas/avro/market_stats.v2.avsc)

PARTIAL_VERSION: Final = 1
LONG_MAX: Final = 2**63 - 1  # Avro long; every count and sum saturates there (and at -LONG_MAX)
_PCT_SCALE: Final = 10_000  # change_pct summed in 1e-4 percent
_AMOUNT_SCALE: Final = 100  # amount summed in cents
_COUNT_FIELDS: Final = (
    "stocks",
    "advancers",
    "decliners",
    "limit_up",
    "limit_down",
    "suspended",
    "traded",
    "volume",
    "amount_cents",
    "change_sum",
)


class PartialStateError(StreamsError):
    """A partial state that cannot be merged (wrong version or shape, too short a top-N)."""


class RankEntry(msgspec.Struct, frozen=True, gc=False):
    """A stock in a top-N list: the Avro ``RankEntry`` (market_stats.v2.avsc), in its order."""

    code: str
    name: str
    price: float
    change_pct: float
    amount: float


class BoardCounts(msgspec.Struct, gc=False):
    """The breadth of one board (the Avro ``BoardBreadth`` but its ``board``), counted up."""

    stocks: int = 0
    advancers: int = 0
    decliners: int = 0
    unchanged: int = 0
    suspended: int = 0
    not_traded_yet: int = 0
    limit_up: int = 0
    limit_down: int = 0


class Counts(msgspec.Struct, frozen=True, gc=False):
    """The counts and integer sums of one market (saturated to an Avro long)."""

    stocks: int
    advancers: int
    decliners: int
    limit_up: int
    limit_down: int
    suspended: int
    traded: int
    volume: int
    amount_cents: int
    change_sum: int


class MarketPartial(Counts, frozen=True):
    """One worker's share of one market: its counts, local top-N lists and boards."""

    top_gainers: list[RankEntry]
    top_losers: list[RankEntry]
    top_turnover: list[RankEntry]
    boards: dict[str, BoardCounts] = {}  # none before v2 of the stats record

    def tops(self) -> Tops:
        return {"top_gainers": self.top_gainers, "top_losers": self.top_losers,
                "top_turnover": self.top_turnover}  # fmt: skip


class PartialState(msgspec.Struct, frozen=True):
    """What a worker publishes of its stocks for the merge (:func:`merge_partials`)."""

    v: int  # PARTIAL_VERSION
    ts: int
    top_n: int
    markets: dict[Market, MarketPartial]


#: JSON of a :class:`PartialState` (a stored partial), as orjson wrote the dict it
#: replaces: its floats (prices, percents, amounts) are all below 1e16, where the
#: two write floats alike (tests/streams/test_market_stats.py pins the bytes).
PARTIAL_JSON: Final = msgspec.json.Encoder()

Tops = dict[str, list[RankEntry]]  # ranking name (top_gainers ...) -> its entries, best first


#: the markets a quote may name
_MARKET_NAMES: Final = frozenset(MARKETS)


class _Stock:
    """The little a stock contributes: its newest quote's figures and flags."""

    __slots__ = (
        "amount",
        "amount_cents",
        "board",
        "change_pct",
        "change_q",
        "code",
        "counted",
        "direction",
        "limit_down",
        "limit_up",
        "market",
        "name",
        "price",
        "ranked",
        "suspended",
        "trade_date",
        "ts",
        "volume",
    )

    def __init__(self, quote: Quote) -> None:
        self.code: str = quote["code"]
        self.counted = False  # in its market's totals (a quote of the current trade date)
        self.set(quote)

    def set(self, q: Quote) -> None:
        self.market: Market = q["market"]
        if self.market not in _MARKET_NAMES:  # (parse never lets one through)
            raise KeyError(f"market {self.market!r}")
        self.board: str = q["board"]
        self.name: str = q["name"]
        self.ts: int = q["exchange_ts"]
        self.price: float = q["price"]
        self.change_pct: float = q["change_pct"]
        self.change_q = round(self.change_pct * _PCT_SCALE)
        self.volume: int = q["volume"]
        self.amount: float = q["amount"]
        self.amount_cents = round(self.amount * _AMOUNT_SCALE)
        self.suspended: bool = q["suspended"]
        self.ranked: bool = q["traded"] and not self.suspended  # in breadth and gainers
        self.trade_date: str = q["trade_date"]
        prev_cents = round(q["prev_close"] * 100)
        diff = round(self.price * 100) - prev_cents if self.ranked and prev_cents > 0 else 0
        self.direction = (diff > 0) - (diff < 0)  # price vs prev_close: +1, 0, -1
        self.limit_up: bool = q["at_limit_up"] and not self.suspended
        self.limit_down: bool = q["at_limit_down"] and not self.suspended

    def entry(self) -> RankEntry:
        return RankEntry(self.code, self.name, self.price, self.change_pct, self.amount)


class _Totals:
    """Counts and integer sums of one market."""

    __slots__ = _COUNT_FIELDS

    def __init__(self) -> None:
        self.stocks = self.advancers = self.decliners = 0
        self.limit_up = self.limit_down = self.suspended = self.traded = 0
        self.volume = self.amount_cents = self.change_sum = 0

    def apply(self, s: _Stock, sign: int) -> None:
        self.stocks += sign
        if s.suspended:
            self.suspended += sign
        if s.ranked:
            self.traded += sign
            self.change_sum += sign * s.change_q
            if s.direction > 0:
                self.advancers += sign
            elif s.direction < 0:
                self.decliners += sign
        if s.limit_up:
            self.limit_up += sign
        if s.limit_down:
            self.limit_down += sign
        self.volume += sign * s.volume
        self.amount_cents += sign * s.amount_cents

    def counts(self) -> Counts:
        return Counts(*(_saturate(getattr(self, name)) for name in _COUNT_FIELDS))


def _saturate(value: int) -> int:
    """``value`` clamped to an Avro long (quotes are bounded in parse; this holds whatever came)."""
    return -LONG_MAX if value < -LONG_MAX else LONG_MAX if value > LONG_MAX else value


# Rank keys: ascending order of each key is the ranking (ties by code).
def _gainer_key(e: RankEntry) -> tuple[float, str]:
    return (-e.change_pct, e.code)


def _loser_key(e: RankEntry) -> tuple[float, str]:
    return (e.change_pct, e.code)


def _turnover_key(e: RankEntry) -> tuple[float, str]:
    return (-e.amount, e.code)


_RANKINGS: Final[tuple[tuple[str, Callable[[RankEntry], tuple[float, str]]], ...]] = (
    ("top_gainers", _gainer_key),
    ("top_losers", _loser_key),
    ("top_turnover", _turnover_key),
)


def _local_tops(stocks: Iterable[_Stock], top_n: int) -> Tops:
    """Top-N entries of each ranking over a set of stocks."""
    pool = [s for s in stocks if s.counted]
    ranked = [s for s in pool if s.ranked]
    turnover = [s for s in pool if s.amount > 0 and not s.suspended]
    gainers = heapq.nsmallest(top_n, ranked, key=lambda s: (-s.change_pct, s.code))
    losers = heapq.nsmallest(top_n, ranked, key=lambda s: (s.change_pct, s.code))
    by_amount = heapq.nsmallest(top_n, turnover, key=lambda s: (-s.amount, s.code))
    return {
        "top_gainers": [s.entry() for s in gainers],
        "top_losers": [s.entry() for s in losers],
        "top_turnover": [s.entry() for s in by_amount],
    }


BOARDS: Final = ("MAIN", "STAR", "CHINEXT", "BJ")
_BOARD_FIELDS: Final = ("stocks", "advancers", "decliners", "unchanged", "suspended",
                        "not_traded_yet", "limit_up", "limit_down")  # fmt: skip


def _board_counts(stocks: Iterable[_Stock]) -> dict[str, BoardCounts]:
    """Breadth per board over the counted stocks (boards without a stock left out)."""
    out: dict[str, BoardCounts] = {}
    for s in stocks:
        if not s.counted:
            continue
        c = out.get(s.board)
        if c is None:
            c = out[s.board] = BoardCounts()
        c.stocks += 1
        if s.suspended:
            c.suspended += 1
        elif not s.ranked:
            c.not_traded_yet += 1
        elif s.direction > 0:
            c.advancers += 1
        elif s.direction < 0:
            c.decliners += 1
        else:
            c.unchanged += 1
        c.limit_up += s.limit_up
        c.limit_down += s.limit_down
    return out


def _sum_boards(parts: Iterable[Mapping[str, BoardCounts]]) -> list[Record]:
    """The ``boards`` field: per-board counts summed over parts, in BOARDS order."""
    total: dict[str, dict[str, int]] = {}
    for part in parts:
        for board, counts in part.items():
            t = total.setdefault(board, dict.fromkeys(_BOARD_FIELDS, 0))
            for name in _BOARD_FIELDS:
                t[name] += getattr(counts, name)
    return [{"board": b, **total[b]} for b in BOARDS if b in total]


def _merge_tops(parts: Iterable[Tops], top_n: int) -> Tops:
    """Global top-N of each ranking from the local top-Ns (one entry per code)."""
    parts = list(parts)
    out: Tops = {}
    for field, key in _RANKINGS:
        chosen: list[RankEntry] = []
        seen: set[str] = set()
        for entry in sorted((e for p in parts for e in p[field]), key=key):
            if len(chosen) >= top_n:
                break
            if entry.code in seen:  # a stock in two shards while partitions move
                continue
            seen.add(entry.code)
            chosen.append(entry)
        out[field] = chosen
    return out


def _record(market: str, totals: Counts, tops: Tops, ts: int, boards: list[Record]) -> Record:
    traded = totals.traded
    avg = round(totals.change_sum / _PCT_SCALE / traded, 4) if traded else 0.0
    return {
        "market": market,
        "ts": ts,
        "stocks": totals.stocks,
        "advancers": totals.advancers,
        "decliners": totals.decliners,
        "unchanged": traded - totals.advancers - totals.decliners,
        "limit_up": totals.limit_up,
        "limit_down": totals.limit_down,
        "suspended": totals.suspended,
        "not_traded_yet": totals.stocks - traded - totals.suspended,
        "volume": _saturate(totals.volume),
        "amount": totals.amount_cents / _AMOUNT_SCALE,
        "avg_change_pct": avg,
        **{field: [msgspec.structs.asdict(e) for e in tops[field]] for field, _ in _RANKINGS},
        "boards": boards,
    }


def _sum_totals(parts: Iterable[Counts]) -> Counts:
    total = dict.fromkeys(_COUNT_FIELDS, 0)
    for part in parts:
        for name in _COUNT_FIELDS:
            total[name] += getattr(part, name)
    return Counts(**total)


class _Readout:
    """A book's records and partials, made from three readings of a market: its counts
    and sums, its local top-N and its per-board breadth. :class:`MarketStats` reads
    its Python objects, :class:`CompiledMarketStats` the compiled book."""

    def __init__(self) -> None:
        #: each market's partial as last computed (with its top-N), while no stock of it
        #: changed: a quiet market (the lunch break, the night, an idle feed) is not
        #: walked again every round
        self._partials: dict[Market, tuple[int, MarketPartial]] = {}

    def _counts(self, market: Market) -> Counts:
        raise NotImplementedError

    def _tops(self, market: Market, top_n: int) -> Tops:
        raise NotImplementedError

    def _boards(self, market: Market) -> dict[str, BoardCounts]:
        raise NotImplementedError

    def _take_changed(self) -> Iterable[str]:
        """The markets changed since the last call (their partials must be computed)."""
        raise NotImplementedError

    def snapshot(self, market: MarketOrAll, top_n: int = 10, *, now_ms: int) -> Record:
        """The MarketStats record of one market or ALL (``ts`` = ``now_ms``)."""
        if market == "ALL":
            return self.snapshot_all(top_n, now_ms=now_ms)["ALL"]
        if market not in MARKETS:
            raise ValueError(f"unknown market {market!r}")
        boards = _sum_boards([self._boards(market)])
        return _record(market, self._counts(market), self._tops(market, top_n), now_ms, boards)

    def snapshot_all(self, top_n: int = 10, *, now_ms: int) -> dict[str, Record]:
        """Records for SH, SZ, BJ and ALL; ALL's top-N merged from the markets'."""
        totals = {m: self._counts(m) for m in MARKETS}
        tops = {m: self._tops(m, top_n) for m in MARKETS}
        boards = {m: self._boards(m) for m in MARKETS}
        out: dict[str, Record] = {
            m: _record(m, totals[m], tops[m], now_ms, _sum_boards([boards[m]])) for m in MARKETS
        }
        out["ALL"] = _record(
            "ALL",
            _sum_totals(totals.values()),
            _merge_tops(tops.values(), top_n),
            now_ms,
            _sum_boards(boards.values()),
        )
        return out

    def partial_state(self, top_n: int = 10, *, now_ms: int = 0) -> PartialState:
        """A compact, mergeable summary of this worker's stocks.

        A market none of whose stocks changed since the last call keeps the
        partial computed then (a walk of its stocks, ~2 ms per 1,000 of them).
        """
        markets: dict[Market, MarketPartial] = {}
        changed, cached = set(self._take_changed()), self._partials
        for m in MARKETS:
            held = cached.get(m)
            if held is None or held[0] != top_n or m in changed:
                held = cached[m] = (top_n, self._market_partial(m, top_n))
            markets[m] = held[1]
        return PartialState(PARTIAL_VERSION, now_ms, top_n, markets)

    def _market_partial(self, market: Market, top_n: int) -> MarketPartial:
        tops = self._tops(market, top_n)
        return MarketPartial(
            **msgspec.structs.asdict(self._counts(market)),
            top_gainers=tops["top_gainers"],
            top_losers=tops["top_losers"],
            top_turnover=tops["top_turnover"],
            boards=self._boards(market),
        )


class MarketStats(_Readout):
    """Incremental statistics of the stocks one worker sees (the reference)."""

    def __init__(self) -> None:
        super().__init__()
        self._stocks: dict[str, _Stock] = {}
        self._by_market: dict[str, dict[str, _Stock]] = {m: {} for m in MARKETS}
        self._totals: dict[str, _Totals] = {m: _Totals() for m in MARKETS}
        self.replays_ignored = 0
        self.trade_date = ""  # the newest trade date seen: only its quotes count
        self._changed: set[str] = set(MARKETS)  # markets whose partial must be computed

    def __len__(self) -> int:
        return len(self._stocks)

    def update(self, quote: Quote) -> None:
        """Replace the stock's contribution with this quote's, unless it is older.

        A quote that raises (a non-finite figure, a missing field) leaves the
        books consistent: the stock is dropped (its old contribution is out).
        """
        if quote["trade_date"] > self.trade_date:
            self._new_day(quote["trade_date"])
        s = self._stocks.get(quote["code"])
        if s is None:
            s = _Stock(quote)
            self._stocks[s.code] = s
            self._by_market[s.market][s.code] = s
            self._changed.add(s.market)
            self._count(s)
            return
        if quote["exchange_ts"] < s.ts:
            self.replays_ignored += 1
            return
        old_market = s.market
        self._changed.add(old_market)
        if s.counted:
            self._totals[old_market].apply(s, -1)
            s.counted = False
        try:
            s.set(quote)
        except Exception:
            del self._stocks[s.code], self._by_market[old_market][s.code]
            raise
        if s.market != old_market:  # never for a real code; keep the books right anyway
            del self._by_market[old_market][s.code]
            self._by_market[s.market][s.code] = s
            self._changed.add(s.market)
        self._count(s)

    def _count(self, s: _Stock) -> None:
        """Add ``s`` to its market's totals if its quote is of the current trade date."""
        if s.trade_date == self.trade_date:
            self._totals[s.market].apply(s, 1)
            s.counted = True

    def _new_day(self, trade_date: str) -> None:
        """A newer trade date: every stock still on an older one stops counting."""
        self.trade_date = trade_date
        self._changed.update(MARKETS)
        for s in self._stocks.values():
            if s.counted:
                self._totals[s.market].apply(s, -1)
                s.counted = False

    def forget(self, codes: Iterable[str]) -> int:
        """Drop stocks (partitions revoked from this worker); returns how many."""
        dropped = 0
        for code in codes:
            s = self._stocks.pop(code, None)
            if s is not None:
                self._changed.add(s.market)
                if s.counted:
                    self._totals[s.market].apply(s, -1)
                del self._by_market[s.market][code]
                dropped += 1
        return dropped

    def _counts(self, market: Market) -> Counts:
        return self._totals[market].counts()

    def _tops(self, market: Market, top_n: int) -> Tops:
        return _local_tops(self._by_market[market].values(), top_n)

    def _boards(self, market: Market) -> dict[str, BoardCounts]:
        return _board_counts(self._by_market[market].values())

    def _take_changed(self) -> Iterable[str]:
        changed, self._changed = self._changed, set()
        return changed


class CompiledMarketStats(_Readout):
    """:class:`MarketStats` compiled (``hqstream_native.StatsBook``, native/src/market_stats.rs):
    the same figures kept the same way tick by tick (the same rounding, integer sums),
    so the same records and partials (the tests run both over the same ticks). ``update``
    is the compiled method itself. Boards are listed in :data:`BOARDS` order, where the
    reference lists them as its stocks came (the records list them in that order either
    way), and a quote whose board is not one of them raises."""

    def __init__(self, native: ModuleType) -> None:
        super().__init__()
        self._book = native.StatsBook(list(MARKETS))
        self.update: Callable[[Quote], None] = self._book.update

    def __len__(self) -> int:
        return len(self._book)

    @property
    def replays_ignored(self) -> int:
        replays: int = self._book.replays_ignored
        return replays

    @property
    def trade_date(self) -> str:
        trade_date: str = self._book.trade_date
        return trade_date

    def forget(self, codes: Iterable[str]) -> int:
        """Drop stocks (partitions revoked from this worker); returns how many."""
        dropped: int = self._book.forget(list(codes))
        return dropped

    def _counts(self, market: Market) -> Counts:
        return Counts(*self._book.counts(market))

    def _tops(self, market: Market, top_n: int) -> Tops:
        gainers, losers, turnover = self._book.tops(market, top_n)
        return {
            "top_gainers": [RankEntry(*e) for e in gainers],
            "top_losers": [RankEntry(*e) for e in losers],
            "top_turnover": [RankEntry(*e) for e in turnover],
        }

    def _boards(self, market: Market) -> dict[str, BoardCounts]:
        return {board: BoardCounts(*counts) for board, *counts in self._book.boards(market)}

    def _take_changed(self) -> Iterable[str]:
        changed: list[str] = self._book.take_changed()
        return changed


Stats = MarketStats | CompiledMarketStats


def market_stats(*, compiled: bool = True) -> Stats:
    """The compiled book when ``compiled`` and the extension is installed, else the
    Python one."""
    native = native_module()[0] if compiled else None
    return MarketStats() if native is None else CompiledMarketStats(native)


def merge_partials(
    partials: Iterable[PartialState],
    markets: Iterable[MarketOrAll] = MARKETS_AND_ALL,
    top_n: int = 10,
    *,
    now_ms: int,
) -> dict[str, Record]:
    """Final records of ``markets`` from the partials of disjoint shards.

    Raises PartialStateError for a partial of another version or one whose
    local top-N is shorter than ``top_n`` (its global top-N would not be exact).
    """
    parts = list(partials)
    for p in parts:
        if p.v != PARTIAL_VERSION:
            raise PartialStateError(f"partial state version {p.v!r} is not {PARTIAL_VERSION}")
        if p.top_n < top_n:
            raise PartialStateError(f"partial keeps top {p.top_n}, {top_n} requested")
    out: dict[str, Record] = {}
    for market in markets:
        members = MARKETS if market == "ALL" else (market,)
        if not set(members) <= set(MARKETS):
            raise ValueError(f"unknown market {market!r}")
        shards = [p.markets[m] for p in parts for m in members]
        boards = _sum_boards(shard.boards for shard in shards)
        tops = _merge_tops((shard.tops() for shard in shards), top_n)
        out[market] = _record(market, _sum_totals(shards), tops, now_ms, boards)
    return out
