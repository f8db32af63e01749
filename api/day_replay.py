"""Private replays of an archived day over WebSocket (``replay_day``, docs/websocket.md).

A client asks for one stock or one market of a past trading day at a speed;
the gateway reads that day's quotes from the Parquet archive (the archive's
own reader, :mod:`hqcore.parquet_archive.reader`: row group by row group, in
exchange-time order) and sends them with their original pacing divided by the speed, then
``day_replay_done``. Only this client gets them: nothing is published to
Kafka and nothing touches the live fan-out.

What it may cost the gateway is bounded:

- the event loop never reads or decodes: opening the day, reading row groups,
  filtering them (by Arrow, before rows become dicts) and encoding the JSON
  run in a worker thread, :data:`CHUNK_ROWS` quotes at a time; the loop only
  waits for a chunk's due time and queues one message per due group;
- memory: a chunk is read only when the client has taken what was sent
  (its queued control bytes under :data:`QUEUED_BYTES_BEFORE_NEXT_CHUNK`), so a
  replay holds a chunk or two whatever its speed and its client's reading;
  a client that stops reading is closed by the slow-client deadline;
- :class:`DayReplayLimits`: replays per API key and per gateway, and a speed cap.

This module never touches Kafka, Redis or the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date

import pyarrow.compute as pc

from api.ws_session import Session, dumps, frame
from hqcore.parquet_archive.errors import ArchiveError
from hqcore.parquet_archive.reader import Pacer, events, index_day
from hqcore.parquet_archive.storage import open_storage

logger = logging.getLogger(__name__)

CHUNK_ROWS = 500  # quotes read (and at most sent in one message) at a time
QUEUED_BYTES_BEFORE_NEXT_CHUNK = 1 << 20
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

Sleep = Callable[[float], Awaitable[None]]


class DayReplayError(Exception):
    """A ``replay_day`` that cannot run; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class DayReplayRequest:
    """What to replay: one stock (``code``) or one market of ``trade_date``, at ``speed``."""

    trade_date: str
    speed: float
    code: str | None = None
    market: str | None = None

    @property
    def subject(self) -> dict[str, str]:
        """The fields naming what is replayed, as the messages carry them."""
        return {"stock_code": self.code} if self.code is not None else {"market": str(self.market)}


def parse_date(value: object) -> str:
    """``YYYY-MM-DD`` (a real date) or :class:`DayReplayError` ``bad_request``."""
    if isinstance(value, str) and DATE_RE.fullmatch(value):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(value).isoformat()
    raise DayReplayError("bad_request", f"date must be YYYY-MM-DD, got {str(value)[:20]!r}")


class DayReader:
    """The quotes of one request, read from the archive ``CHUNK_ROWS`` at a time.

    Every method does I/O: call them in a worker thread, one at a time.
    """

    def __init__(self, root: str, request: DayReplayRequest) -> None:
        self.request = request
        market = request.market or _market_of(request.code or "")
        try:
            storage = open_storage(root)
            refs = index_day(storage, request.trade_date, ["ticks"], [market])
        except (ArchiveError, OSError, ValueError) as exc:
            logger.warning("day replay: the archive cannot be read: %r", exc)
            raise DayReplayError("no_archive", "the archive cannot be read; try again") from None
        if not refs:
            raise DayReplayError(
                "no_such_day", f"no archived quotes of market {market} on {request.trade_date}"
            )
        if request.code is not None:
            where = pc.field("code") == request.code
        else:
            where = pc.field("market") == market
        self._rows: Iterator[tuple[int, object, dict[str, object]]] = events(storage, refs, where)

    def read_chunk(self) -> list[tuple[int, bytes]]:
        """The next quotes as ``(exchange_ts, JSON)``, oldest first; empty at the end."""
        out: list[tuple[int, bytes]] = []
        for ts, _, row in self._rows:
            out.append((ts, dumps(row)))
            if len(out) >= CHUNK_ROWS:
                break
        return out


def _market_of(code: str) -> str:
    """The archive's market partition of a stock code (SH 6xxxxx, BJ 4/8/9xxxxx, else SZ)."""
    return "SH" if code.startswith("6") else "BJ" if code[:1] in ("4", "8", "9") else "SZ"


class DayReplayLimits:
    """At most ``per_key`` replays of one API key and ``total`` on this gateway at once."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self.running: dict[str, int] = {}

    def acquire(self, key: str) -> None:
        """Count one more replay of ``key``, or raise :class:`DayReplayError` ``rate_limited``."""
        if self.running.get(key, 0) >= self.per_key:
            raise DayReplayError(
                "rate_limited", f"at most {self.per_key} day replays per API key at once"
            )
        if sum(self.running.values()) >= self.total:
            raise DayReplayError("rate_limited", "all day replay slots are taken; try again later")
        self.running[key] = self.running.get(key, 0) + 1

    def release(self, key: str) -> None:
        self.running[key] -= 1
        if not self.running[key]:
            del self.running[key]


async def stream_day(
    session: Session,
    reader: DayReader,
    *,
    clock: Callable[[], float],
    sleep: Sleep = asyncio.sleep,
) -> int:
    """Send ``reader``'s quotes to ``session`` at the request's pace; returns how many.

    Quotes due at the same moment (the exchange clock divided by the speed, as
    :class:`hqcore.parquet_archive.reader.Pacer` paces ``hqstream replay``) go in one
    ``day_replay`` message; a replay that falls behind (a slow reader) sends
    what is due at once, never sleeping to catch up.
    """
    request = reader.request
    head = b'{"type":"day_replay",' + dumps({"date": request.trade_date, **request.subject})[1:-1]
    head += b',"data":['
    pacer = Pacer(request.speed, clock=clock)
    sent = 0
    while not session.closing:
        while session.queued_bytes > QUEUED_BYTES_BEFORE_NEXT_CHUNK and not session.closing:
            await sleep(session.flush_interval_s)
        chunk = await asyncio.to_thread(reader.read_chunk)
        if not chunk:
            break
        due: list[bytes] = []
        for ts, raw in chunk:
            delay = pacer.delay(ts)
            if delay > 0:
                if due:
                    session.control(head + b",".join(due) + b"]}")
                    sent += len(due)
                    due = []
                await sleep(delay)
            due.append(raw)
        if due:
            session.control(head + b",".join(due) + b"]}")
            sent += len(due)
    session.control(
        frame("day_replay_done", date=request.trade_date, **request.subject, replayed=sent)
    )
    return sent
