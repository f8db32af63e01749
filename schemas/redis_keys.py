"""Every Redis key hqstream writes or reads, named in one place.

Per-stock keys carry the code as a Redis Cluster hash tag (``{000001}``), so
one stock's quote, ticks and candles live in one slot and the newer-wins
Lua/function update touches a single slot. Per-market keys are small and few.

Layout:

==============================  ======  ==========================================
key                             type    holds
==============================  ======  ==========================================
hq:quote:{<code>}               HASH    latest quote: ``ts`` (exchange ms), ``data``
                                        (JSON of the whole quote) + flat fields
hq:ticks:{<code>}               STREAM  recent quotes, id = ``<exchange_ts>-0``,
                                        capped at TICKS_MAXLEN
hq:candles:{<code>}:<YYYYMMDD>  HASH    1-minute candles: field = minute start (epoch ms),
                                        value = JSON (Avro Candle v2 fields)
hq:candles:{<code>}:<tf>:<YMD>  HASH    closed 5m/15m/30m/60m bars of a day, field = bar start
hq:candles:{<code>}:1d          HASH    closed daily bars (and backfilled history), field =
                                        the day's 09:30 (epoch ms)
hq:bars:{<code>}                HASH    field = timeframe, value = JSON of the stock's
                                        schemas.bar_series.BarSeries (indicator state, the
                                        open bar's closed minutes): warm-up, open-bar views;
                                        field = <timeframe>:open, the open bar's part when
                                        only it changed (BarSeries.take_stored)
hq:rank:<market>:<metric>       ZSET    member = code, score = metric; SH, SZ, BJ (the
                                        ALL ranking is merged from them when read)
hq:market:<market>              HASH    market summary (JSON in ``data`` + ``ts``)
hq:alerts                       STREAM  recent alerts (JSON in ``data``), capped
hq:alerts:seen                  SET     ids of the alerts in hq:alerts (cluster:
                                        ``hq:alerts:seen{hq:alerts}``, same slot)
hq:codes:<market>               SET     codes seen today per market
hq:feeds:winners:<partition>    HASH    feed arbitration: field = code, value = JSON
                                        ``[ts // precision, source, price, volume,
                                        published-units mask]``
hq:state:ready                  HASH    marker written with the state: field
                                        ``p<N>`` per partition, ``market``
hq:state:rebuilding             HASH    while workers rebuild the state: field = worker
                                        id, value = JSON ``{"progress", "started", "at"}``
==============================  ======  ==========================================

Markets are SH, SZ, BJ and ALL (summaries only): see :mod:`schemas.exchange`.
"""

from __future__ import annotations

from typing import Final, Literal

from schemas.exchange import Market, MarketOrAll
from schemas.timeframes import Timeframe

RankMetric = Literal["change_pct", "amount", "volume"]

RANK_METRICS: Final[tuple[RankMetric, ...]] = ("change_pct", "amount", "volume")

QUOTE_TTL_S: Final = 2 * 24 * 3600
TICKS_TTL_S: Final = 2 * 24 * 3600
CANDLES_TTL_S: Final = 3 * 24 * 3600
DAILY_CANDLES_TTL_S: Final = 400 * 24 * 3600
#: a halted stock keeps its indicator state this long (then it starts afresh)
BARS_TTL_S: Final = 30 * 24 * 3600
MARKET_TTL_S: Final = 24 * 3600
TICKS_MAXLEN: Final = 2000
ALERTS_MAXLEN: Final = 5000


def quote(code: str) -> str:
    return f"hq:quote:{{{code}}}"


def ticks(code: str) -> str:
    return f"hq:ticks:{{{code}}}"


def candles(code: str, trade_date: str, tf: Timeframe = "1m") -> str:
    """The closed bars of ``tf`` (``trade_date`` as YYYY-MM-DD or YYYYMMDD; unused for 1d)."""
    if tf == "1d":
        return f"hq:candles:{{{code}}}:1d"
    day = trade_date.replace("-", "")
    if tf == "1m":
        return f"hq:candles:{{{code}}}:{day}"
    return f"hq:candles:{{{code}}}:{tf}:{day}"


def candles_ttl_s(tf: Timeframe) -> int:
    return DAILY_CANDLES_TTL_S if tf == "1d" else CANDLES_TTL_S


def bars(code: str) -> str:
    return f"hq:bars:{{{code}}}"


def bars_open_field(tf: str) -> str:
    """The field of ``hq:bars:{code}`` holding the open part of the ``tf`` series."""
    return f"{tf}:open"


def rank(market: Market, metric: RankMetric) -> str:
    return f"hq:rank:{market}:{metric}"


def market_summary(market: MarketOrAll) -> str:
    return f"hq:market:{market}"


def codes(market: Market) -> str:
    return f"hq:codes:{market}"


def feed_winners(partition: int) -> str:
    """The arbitration winners of the stocks of one raw-topic partition (streams/arbitration)."""
    return f"hq:feeds:winners:{partition}"


ALERTS: Final = "hq:alerts"

#: SET of alert ids (``code|kind|exchange_ts``) already in :data:`ALERTS`: makes
#: at-least-once replay idempotent. Expires with MARKET_TTL_S. See :func:`alerts_seen`.
ALERTS_SEEN: Final = "hq:alerts:seen"
#: :data:`ALERTS_SEEN` on a Redis Cluster: its hash tag is the whole name of
#: :data:`ALERTS`, so both hash to one slot and one script updates both.
ALERTS_SEEN_CLUSTER: Final = "hq:alerts:seen{hq:alerts}"


def alerts_seen(*, cluster: bool) -> str:
    """The alert id SET: standalone keeps its historical name, a cluster needs ALERTS's slot."""
    return ALERTS_SEEN_CLUSTER if cluster else ALERTS_SEEN


#: HASH field = stream worker id, value = JSON ``{"ts": ms, "state": partial}``:
#: each worker's market-statistics partial; entries older than a few seconds
#: belong to dead workers and are ignored and deleted.
STATS_PARTIALS: Final = "hq:stats:partials"

#: HASH written with the state (the marker a worker checks before each batch):
#: field ``p<N>`` once partition N's stocks are in Redis, ``market`` once the
#: market summaries and alerts are; value = epoch ms. A Redis that lost its data
#: (FLUSHDB, a restart without persistence) lost this too, and the workers
#: rebuild the missing part from Kafka (streams/state_rebuild.py). No TTL.
STATE_READY: Final = "hq:state:ready"
STATE_MARKET: Final = "market"


#: HASH present while stream workers rebuild the state (streams/state_rebuild.py):
#: field = worker id, value = JSON ``{"progress": 0..1, "started": ms, "at": ms}``,
#: refreshed every second; the key expires :data:`REBUILDING_TTL_S` after the last
#: refresh and an entry whose ``at`` is older is a dead worker's. The gateway
#: answers REST with 503 and ``Retry-After`` while a live entry exists.
STATE_REBUILDING: Final = "hq:state:rebuilding"
REBUILDING_TTL_S: Final = 10


def state_partition(partition: int) -> str:
    """The :data:`STATE_READY` field of one partition's stocks."""
    return f"p{partition}"
