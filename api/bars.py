"""Bars of any timeframe with their indicators, as REST and the WebSocket serve them.

The workers store the closed bars (with final indicators) and, per stock, the
bar series (``hq:bars:{code}``: indicator state and the open bar's closed
minutes, those apart when only they changed); they compute nothing per tick
for the open bars. Here the open bar is made from that series and the open
1-minute candle, its indicators evaluated as of now (``BarSeries.view``,
O(1)): what a client sees for an open bar is what the bar will carry when it
closes, if no tick changes it.

Pure functions over what :class:`api.store.Store` read; no I/O here.
"""

from __future__ import annotations

from typing import Any

import orjson

from api.errors import BadRequest
from schemas.bar_series import Bar, BarSeries, StoredSeries
from schemas.indicators import GROUPS, select
from schemas.timeframes import TIMEFRAMES, Timeframe, parse_timeframe

#: the latest daily bars served when no limit is given
DAILY_LIMIT = 250


def timeframe(text: str) -> Timeframe:
    try:
        return parse_timeframe(text)
    except ValueError:
        raise BadRequest(f"tf must be one of {', '.join(TIMEFRAMES)}, got {text[:10]!r}") from None


def indicator_groups(text: str | list[str] | None) -> frozenset[str] | None:
    """``"macd,rsi"`` (or a list) -> the groups; None (every group) for ``all`` or nothing given.

    ``none`` asks for bars without indicators (the empty set).
    """
    if text is None:
        return None
    names = text.split(",") if isinstance(text, str) else text
    wanted = {str(n).strip().lower() for n in names if str(n).strip()}
    if not wanted or wanted == {"all"}:
        return None
    if wanted == {"none"}:
        return frozenset()
    unknown = wanted - set(GROUPS)
    if unknown:
        raise BadRequest(
            f"unknown indicators {sorted(unknown)[:5]}: valid are {', '.join(GROUPS)}, all, none"
        )
    return frozenset(wanted)


def compose(
    tf: Timeframe,
    closed: list[bytes],
    series: StoredSeries | None,
    minutes: list[bytes],
    groups: frozenset[str] | None,
    limit: int = 0,
) -> list[dict[str, Any]]:
    """The bars to serve, oldest first: the closed ones, then the open one(s).

    ``closed``: the stored bars of ``tf`` (for 1m: the day's candles, open
    one included); ``series``: the stored BarSeries of ``tf``; ``minutes``:
    the day's 1-minute candles (to find the open one), unused for 1m.
    ``limit`` > 0 keeps the newest ``limit``.
    """
    rows = [orjson.loads(raw) for raw in closed]
    if tf == "1m":
        minutes_rows = rows
        rows = [r for r in rows if r["closed"]]
    else:
        minutes_rows = [orjson.loads(raw) for raw in minutes]
    open_minutes = [m for m in minutes_rows if not m["closed"]]
    open_minute = max(open_minutes, key=lambda m: m["minute_ts"]) if open_minutes else None
    rows.sort(key=lambda r: r["minute_ts"])
    newest = rows[-1]["minute_ts"] if rows else -1
    rows += [bar for bar in open_bars(tf, series, open_minute) if bar["minute_ts"] > newest]
    if limit > 0:
        rows = rows[-limit:]
    if groups is not None:
        for row in rows:
            row["indicators"] = only(row.get("indicators"), groups)
    return rows


def open_bars(tf: Timeframe, series: StoredSeries | None, open_minute: Bar | None) -> list[Bar]:
    """The open bar(s) of ``tf`` as they stand: the stored series and the open minute.

    Usually one bar (see :meth:`BarSeries.view`). Without a stored series (no
    minute of the stock closed since the platform started, or indicators are
    off) the open bar is still shown, without values.
    """
    stored = BarSeries(tf) if series is None else BarSeries.from_stored(*series)
    shown = stored.view(open_minute)
    if series is None:
        shown = [dict(bar, indicators=None) for bar in shown]
    return shown


def only(values: dict[str, Any] | None, groups: frozenset[str] | None) -> dict[str, Any] | None:
    """The values of the indicator ``groups`` (None: all; the empty set: none at all)."""
    if groups is not None and not groups:
        return None
    return select(values, groups)


def render_bar(record: dict[str, Any], groups: frozenset[str] | None) -> bytes:
    """A bar's JSON with only the indicator ``groups``."""
    return orjson.dumps(dict(record, indicators=only(record.get("indicators"), groups)))
