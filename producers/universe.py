"""The simulated stock universe: listed A-shares with codes, names and prev_close.

Used by the feed simulator, and by producers.sample_feed for the streams
benchmark's lines. Builds about 5,000 stocks across every board with the
real board mix (SH main 600/601/603/605, STAR 688/689, SZ main
000/001/002/003, ChiNext 300/301/302, Beijing 920xxx), unique real-looking codes,
plausible Chinese names generated from syllable lists (plus a few well-known
real ones), about 3% ST/*ST names, about 1% suspended (halted) stocks, and a
few new listings in their days without a price limit (``N`` first day, ``C``
days 2-5; Beijing: ``N`` only).

Deterministic: the same ``(count, seed)`` always gives the same universe.
Pure data; it must never do I/O or read the clock.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

from schemas.exchange import Market
from schemas.market_rules import Board, board_of, is_limit_free, is_st, limit_prices

logger = logging.getLogger(__name__)

#: Stocks per code prefix in a 5,000-stock universe (close to the real listing mix).
PREFIX_WEIGHTS: Final[tuple[tuple[Market, str, int], ...]] = (
    ("SH", "600", 760),
    ("SH", "601", 170),
    ("SH", "603", 520),
    ("SH", "605", 85),
    ("SH", "688", 545),
    ("SH", "689", 5),
    ("SZ", "000", 410),
    ("SZ", "001", 65),
    ("SZ", "002", 840),
    ("SZ", "003", 40),
    ("SZ", "300", 935),
    ("SZ", "301", 354),
    ("SZ", "302", 1),  # ChiNext's newer range: 302132
    ("BJ", "920", 270),
)
CODES_PER_PREFIX: Final = 1000
ST_SHARE: Final = 0.03
SUSPENDED_SHARE: Final = 0.01
NEW_LISTING_SHARE: Final = 0.002
#: A new listing's simulated price range, as a multiple of its issue price
#: (prev_close): it has no daily limit, first-day gains of 100-300% are common.
NEW_LISTING_RANGE: Final = (0.2, 5.0)
MIN_PREV_CLOSE_CENTS: Final = 150
MAX_PREV_CLOSE_CENTS: Final = 180_000

#: A few real listings, so the feed looks familiar: (market, code, name, prev_close yuan).
FAMOUS: Final[tuple[tuple[Market, str, str, float], ...]] = (
    ("SZ", "000001", "平安银行", 11.00),
    ("SZ", "000002", "万科A", 6.85),
    ("SZ", "000858", "五粮液", 128.50),
    ("SZ", "002594", "比亚迪", 302.10),
    ("SZ", "300750", "宁德时代", 268.40),
    ("SZ", "302132", "中航成飞", 60.12),
    ("SH", "600000", "浦发银行", 11.62),
    ("SH", "600036", "招商银行", 44.15),
    ("SH", "600519", "贵州茅台", 1448.00),
    ("SH", "601318", "中国平安", 56.30),
    ("SH", "601398", "工商银行", 7.12),
    ("SH", "688981", "中芯国际", 98.76),
    ("BJ", "920819", "颖泰生物", 4.80),
)

# Name syllables: a head, an optional middle, a two-character trade.
_HEADS: Final = (
    "华中东海金国天新长宏恒科信安润达远泰广盛隆鼎瑞祥通正永航浙苏"
    "川湘粤京沪鲁闽赣豫晋皖蓝星力嘉联万凯博创汇荣德美宝"
)
_MIDS: Final = (
    "兴发丰阳源成光明江山宇鑫微晶奥誉康健锐峰辰然顺立诚威迪尔邦泽海创云智特普盈亿纳伟捷龙"
)
_TAIL_TEXT: Final = (
    "科技电子股份医药能源材料智能生物环保新材控股电气汽车食品传媒"
    "重工化工机械光电药业电力实业集团物流通信软件精密半导装备信息"
    "矿业钢铁建设置业银行证券农业环境动力微电"
)
_TAILS: Final = tuple(_TAIL_TEXT[i : i + 2] for i in range(0, len(_TAIL_TEXT), 2))


@dataclass(frozen=True, slots=True)
class Stock:
    """One listed stock. Prices are integer cents (fen)."""

    market: Market
    code: str
    name: str
    board: Board
    prev_close: int
    suspended: bool
    liquidity: int  # typical shares traded per snapshot
    volatility: float  # log-return standard deviation per snapshot

    @property
    def symbol(self) -> str:
        return self.market.lower() + self.code

    @property
    def st(self) -> bool:
        return is_st(self.name)


def allocate(count: int) -> list[tuple[Market, str, int]]:
    """How many stocks each code prefix gets: largest remainder, capped per prefix."""
    if count < 0:
        raise ValueError("count must be >= 0")
    capacity = CODES_PER_PREFIX * len(PREFIX_WEIGHTS)
    if count > capacity:
        raise ValueError(f"at most {capacity} stocks fit the code space")
    total = sum(w for _, _, w in PREFIX_WEIGHTS)
    exact = [count * w / total for _, _, w in PREFIX_WEIGHTS]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: count - sum(counts)]:
        counts[i] += 1
    # Overflow of a full prefix goes to the next prefix with room (only past ~5,300).
    spill = 0
    for i in range(len(counts)):
        counts[i] += spill
        spill = max(0, counts[i] - CODES_PER_PREFIX)
        counts[i] -= spill
    i = 0
    while spill:
        room = min(spill, CODES_PER_PREFIX - counts[i])
        counts[i] += room
        spill -= room
        i += 1
    return [(m, p, n) for (m, p, _), n in zip(PREFIX_WEIGHTS, counts, strict=True)]


def _codes(rng: random.Random, prefix: str, n: int, taken: set[str]) -> list[str]:
    """``n`` unique codes under a prefix, dense at the low end like real allocation."""
    span = min(CODES_PER_PREFIX, max(n + len(taken), int(n * 1.3) + 8))
    pool = [f"{prefix}{i:03d}" for i in range(span) if f"{prefix}{i:03d}" not in taken]
    if len(pool) < n:
        pool = [f"{prefix}{i:03d}" for i in range(CODES_PER_PREFIX)]
        pool = [c for c in pool if c not in taken]
    return sorted(rng.sample(pool, n))


def _name(rng: random.Random, used: set[str]) -> str:
    for _ in range(1000):
        name = rng.choice(_HEADS) + rng.choice(_MIDS) + rng.choice(_TAILS)
        if rng.random() < 0.35:  # a few real names are three characters
            name = name[0] + name[2:]
        if name not in used:
            return name
    raise RuntimeError("ran out of generated names")


def _st_name(rng: random.Random, base: str, used: set[str]) -> str:
    for short in (base[:2], base[:3], base[0] + base[-1], base):
        name = ("*ST" if rng.random() < 0.6 else "ST") + short
        if name not in used:
            return name
    return "*ST" + base


def _new_listing_name(rng: random.Random, base: str, board: Board, used: set[str]) -> str:
    """``N`` + name on the first day, ``C`` + name on days 2-5 (BJ: ``N`` only)."""
    prefix = "N" if board == "BJ" or rng.random() < 0.4 else "C"
    name = prefix + base[:3]
    return base if name in used else name


def _prev_close(rng: random.Random, board: Board, st: bool) -> int:
    median = {"MAIN": 11.0, "STAR": 32.0, "CHINEXT": 24.0, "BJ": 13.0}[board]
    if st:
        median = 3.2
    yuan = math.exp(math.log(median) + rng.gauss(0.0, 0.75))
    return max(MIN_PREV_CLOSE_CENTS, min(MAX_PREV_CLOSE_CENTS, round(yuan * 100)))


def build_universe(count: int = 5000, seed: int = 42) -> tuple[Stock, ...]:
    """``count`` stocks in code order; the same arguments give the same universe."""
    return build_listing(allocate(count), seed)


def build_listing(plan: Sequence[tuple[Market, str, int]], seed: int = 42) -> tuple[Stock, ...]:
    """The stocks of ``plan`` (``(market, code prefix, how many)`` in code order, as
    :func:`allocate` gives it), deterministic per ``(plan, seed)``.

    :func:`build_universe` passes the real listing mix; a caller that needs
    another mix (every board in a handful of stocks) passes its own plan.
    """
    rng = random.Random(seed)
    # New listings are drawn from their own stream: the rest of the universe
    # stays what it was for every seed.
    listing_rng = random.Random(seed * 7 + 3)
    famous = {(m, c): (name, pc) for m, c, name, pc in FAMOUS}
    used_names = {name for name, _ in famous.values()}
    stocks: list[Stock] = []
    for market, prefix, n in plan:
        if n == 0:
            continue
        fixed = sorted(c for m, c in famous if m == market and c.startswith(prefix))[:n]
        codes = sorted(fixed + _codes(rng, prefix, n - len(fixed), set(fixed)))
        for code in codes:
            board = board_of(market, code)
            if (market, code) in famous:
                name, pc_yuan = famous[(market, code)]
                prev_close = round(pc_yuan * 100)
            else:
                name = _name(rng, used_names)
                if rng.random() < ST_SHARE:
                    name = _st_name(rng, name, used_names)
                elif listing_rng.random() < NEW_LISTING_SHARE:
                    name = _new_listing_name(listing_rng, name, board, used_names)
                prev_close = _prev_close(rng, board, is_st(name))
            used_names.add(name)
            stocks.append(
                Stock(
                    market=market,
                    code=code,
                    name=name,
                    board=board,
                    prev_close=prev_close,
                    suspended=(market, code) not in famous and rng.random() < SUSPENDED_SHARE,
                    liquidity=max(100, int(round(3000 * math.exp(rng.gauss(0.0, 1.0)), -2))),
                    volatility=math.exp(rng.uniform(math.log(0.00015), math.log(0.0007))),
                )
            )
    logger.debug("built a universe of %d stocks (seed %d)", len(stocks), seed)
    return tuple(stocks)


class Quote(NamedTuple):
    """One stock's state in one snapshot. Prices and amount are integer cents.

    Before the first trade (and while suspended) open/price/high/low are 0 and
    volume/amount are 0. A book level with price 0 is empty (none beyond the
    daily limits, e.g. no asks at limit-up).
    """

    open: int
    price: int
    high: int
    low: int
    volume: int
    amount: int
    bids: tuple[tuple[int, int], ...]  # 5 x (volume, price), best first
    asks: tuple[tuple[int, int], ...]


#: how many stocks' work a part of a stepwise build holds (:meth:`MarketWalk.stepping`):
#: ~1-2 ms of CPU
PART_STOCKS: Final = 25

_T = TypeVar("_T")


def run_to_end(steps: Generator[None, None, _T]) -> _T:
    """Run a stepwise build (:meth:`MarketWalk.stepping`) through; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            result: _T = end.value
            return result


_EMPTY_SIDE: Final = ((0, 0),) * 5
_EMPTY_QUOTE: Final = Quote(0, 0, 0, 0, 0, 0, _EMPTY_SIDE, _EMPTY_SIDE)


class MarketWalk:
    """Moves every stock's price by a bounded random walk, one snapshot per ``step()``.

    Prices stay within each board's daily limit for ``trade_date`` (from
    ``schemas.market_rules``; a new listing without a limit moves within
    NEW_LISTING_RANGE of its issue price, an ``N`` name opening far above it);
    cumulative volume and amount never decrease;
    drift regimes make some stocks run to a limit and stay there or leave.
    Without ``late_openers`` every stock that is not suspended trades in the
    first snapshot.
    """

    def __init__(
        self,
        stocks: tuple[Stock, ...],
        trade_date: dt.date,
        seed: int,
        late_openers: bool = True,
    ) -> None:
        self.stocks = stocks
        self._rng = random.Random(seed * 7919 + 17)
        rng = self._rng
        self.limits: list[tuple[int, int]] = []
        self.limit_free = [is_limit_free(s.name, s.board, trade_date) for s in stocks]
        low, high = NEW_LISTING_RANGE
        for s, free in zip(stocks, self.limit_free, strict=True):
            if free:
                self.limits.append((round(s.prev_close * high), max(1, round(s.prev_close * low))))
                continue
            up, down = limit_prices(s.prev_close / 100, s.board, s.st, trade_date)
            self.limits.append((round(up * 100), round(down * 100)))
        n = len(stocks)
        self._fair = [float(s.prev_close) for s in stocks]
        self._drift = [0.0] * n
        # Most stocks trade at once; with late_openers some first trade a few snapshots later.
        self._first = [
            0 if not late_openers or rng.random() < 0.92 else 1 + int(rng.expovariate(0.2))
            for _ in stocks
        ]
        self._last: list[Quote] = [_EMPTY_QUOTE] * n
        self.steps = 0

    def step(self) -> list[Quote]:
        """The next snapshot, one quote per stock in universe order."""
        return run_to_end(self.stepping())

    def stepping(self, part: int = PART_STOCKS) -> Generator[None, None, list[Quote]]:
        """:meth:`step` a part at a time: pauses after every ``part`` stocks (a caller
        spreads the work over time), returns the same quotes."""
        quotes = yield from self._each(self._stepped, part)
        self.steps += 1
        return quotes

    def _stepped(self, i: int, s: Stock) -> Quote:
        if s.suspended:
            q = _EMPTY_QUOTE
        elif self.steps < self._first[i]:
            q = Quote(0, 0, 0, 0, 0, 0, *self._book(s.prev_close, i))
        elif self.steps == self._first[i]:
            q = self._open(i, s)
        else:
            q = self._move(i, s, self._last[i])
        self._last[i] = q
        return q

    def indicative(self) -> list[Quote]:
        """A pre-open (09:15-09:25 call auction) snapshot: no trade yet, orders in
        the book around prev_close; suspended stocks have an empty book."""
        return run_to_end(self.indicating())

    def indicating(self, part: int = PART_STOCKS) -> Generator[None, None, list[Quote]]:
        """:meth:`indicative` a part at a time, as :meth:`stepping`."""
        return self._each(self._indicated, part)

    def _indicated(self, i: int, s: Stock) -> Quote:
        if s.suspended:
            return _EMPTY_QUOTE
        return Quote(0, 0, 0, 0, 0, 0, *self._book(s.prev_close, i))

    def pauses(self, part: int = PART_STOCKS) -> int:
        """How often :meth:`stepping` and :meth:`indicating` pause (:meth:`_each`)."""
        return len(self.stocks) // part

    def _each(
        self, quote: Callable[[int, Stock], Quote], part: int
    ) -> Generator[None, None, list[Quote]]:
        """Every stock's quote in universe order, pausing after every ``part`` stocks."""
        out: list[Quote] = []
        for i, s in enumerate(self.stocks):
            out.append(quote(i, s))
            if not (i + 1) % part:
                yield
        return out

    def hold(self) -> list[Quote]:
        """The last snapshot again: no trade (09:25-09:30, the closing call
        auction's order collection, after the close)."""
        return list(self._last)

    def _open(self, i: int, s: Stock) -> Quote:
        rng = self._rng
        up, down = self.limits[i]
        roll = rng.random()
        if self.limit_free[i] and s.name.startswith("N"):  # first day: far above the issue
            price = min(up, round(s.prev_close * rng.uniform(1.3, 3.0)))
            self._fair[i] = float(price)
            volume = s.liquidity * 40 // 100 * 100 + 100
            bids, asks = self._book(price, i)
            return Quote(price, price, price, price, volume, volume * price, bids, asks)
        if self.limit_free[i]:  # no limit to open at
            price = round(s.prev_close * math.exp(rng.gauss(0.0, 0.05)))
        elif roll < 0.006:
            price, self._drift[i] = up, s.volatility
        elif roll < 0.009:
            price, self._drift[i] = down, -s.volatility
        else:
            price = min(up, max(down, round(s.prev_close * math.exp(rng.gauss(0.0, 0.012)))))
        self._fair[i] = float(price)
        volume = s.liquidity * 5 // 100 * 100 + 100
        bids, asks = self._book(price, i)
        return Quote(price, price, price, price, volume, volume * price, bids, asks)

    def _move(self, i: int, s: Stock, last: Quote) -> Quote:
        rng = self._rng
        up, down = self.limits[i]
        if rng.random() < 0.0005:  # regime change: mostly calm, now and then a run
            if rng.random() < 0.98:
                self._drift[i] = 0.0
            else:
                self._drift[i] = rng.choice((-1.0, 1.0)) * s.volatility * rng.uniform(0.3, 1.0)
        fair = self._fair[i] * math.exp(self._drift[i] + s.volatility * rng.gauss(0.0, 1.0))
        fair = min(float(up), max(float(down), fair))
        self._fair[i] = fair
        price = min(up, max(down, round(fair)))
        traded = 0
        if rng.random() < 0.85:
            lots = max(1, int(s.liquidity / 100 * rng.lognormvariate(0.0, 0.8)))
            traded = lots * 100
        amount = last.amount + traded * (last.price + price) // 2
        bids, asks = self._book(price, i)
        return Quote(
            last.open,
            price,
            max(last.high, price),
            min(last.low, price),
            last.volume + traded,
            amount,
            bids,
            asks,
        )

    def _book(self, price: int, i: int) -> tuple[tuple[tuple[int, int], ...], ...]:
        """5 bid and 5 ask levels around ``price``, none beyond the daily limits."""
        rng = self._rng
        up, down = self.limits[i]
        gap = 1 + price // 5000  # expensive stocks have sparser books
        if price >= up:
            bid1, ask1 = up, up + 1
        elif price <= down:
            bid1, ask1 = down - 1, down
        else:
            bid1 = price - int(rng.random() * 2)
            ask1 = bid1 + 1 + int(rng.random() * gap)
        lot = max(1, self.stocks[i].liquidity // 300)
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        b, a = bid1, ask1
        for _ in range(5):
            bids.append((100 * (1 + int(rng.random() * lot)), b) if b >= down else (0, 0))
            asks.append((100 * (1 + int(rng.random() * lot)), a) if a <= up else (0, 0))
            b -= 1 + int(rng.random() * gap)
            a += 1 + int(rng.random() * gap)
        return tuple(bids), tuple(asks)
