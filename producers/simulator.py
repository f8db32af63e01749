"""The vendor feed simulator: a TCP push server speaking the feed protocol.

Stands in for the market-data vendor (shared/spec/feed-protocol.md) in tests,
benchmarks and local runs: token auth, newline-framed quote lines (33-field
``$`` lines for Shanghai/Shenzhen, JSON for Beijing), a full snapshot burst
every ``interval_s / rate`` seconds (or back to back with ``max_rate``; or,
with ``spread``, each snapshot's lines sent evenly over its period, a steady
stream at the same average rate),
heartbeats when idle, and the vendor's backlog rule: a client with more than
``backlog_limit_bytes`` unread is dropped. One slow client never delays the
others. ``sent_log`` records exactly the quote lines pushed (control lines such
as the auth answer and heartbeats are not quote lines and are not logged).

It must never log the token, never block the event loop on one client, and
never read environment variables outside :class:`producers.settings.FeedSettings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import random
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO

from hqcore.signals import on_stop_signals
from producers import protocol
from producers.errors import ProducersError
from producers.quote_lines import MalformedKind, SnapshotBuild, SnapshotSource
from producers.settings import FeedSettings
from producers.universe import build_universe
from schemas.exchange import SHANGHAI_TZ

logger = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 10.0
SPREAD_TICK_S = 0.005  # with spread: a slice of the snapshot every 5 ms
POLL_S = 0.001  # how often max-rate mode looks at the clients' write buffers
#: Above this many lines/s snapshots come from a pre-rendered pool (see SnapshotSource):
#: rendering each one afresh manages ~45,000 lines/s on one core.
POOL_ABOVE_LINES_S = 20_000


class SimulatorError(ProducersError):
    """The simulator cannot run as configured (bad address, interval or rate)."""


def default_start(now: dt.datetime) -> dt.datetime:
    """Where the exchange clock starts by default: 09:30 Shanghai today, or
    yesterday when today's 09:30 is still ahead.

    Never in the future: the stream workers dead-letter quotes stamped more
    than a few minutes after they were received (``future_timestamp``), so a
    feed started at night must not stamp the coming morning. (A clock run
    faster than real time, ``rate`` > 1, or one that jumps over the lunch
    break can still get ahead of the wall clock during a trading day.)
    """
    local = now.astimezone(SHANGHAI_TZ)
    opening = local.replace(hour=9, minute=30, second=0, microsecond=0)
    return opening if opening <= local else opening - dt.timedelta(days=1)


@lru_cache(maxsize=1)
def get_settings() -> FeedSettings:
    """``HQ_FEED_ADDR`` (where to listen) and ``HQ_FEED_TOKEN`` (required to serve)."""
    return FeedSettings()


@dataclass(frozen=True)
class SimConfig:
    """How the simulator runs. ``token`` is what clients must send."""

    token: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 0
    stocks: int = 5000
    interval_s: float = protocol.SNAPSHOT_INTERVAL_S
    rate: float = 1.0
    max_rate: bool = False
    spread: bool = False  # each snapshot's lines evenly over its period, not one burst
    seed: int = 42
    malformed_fraction: float = 0.0
    max_snapshots: int | None = None
    sent_log: Path | None = None
    heartbeat_interval_s: float = protocol.HEARTBEAT_INTERVAL_S
    backlog_limit_bytes: int = protocol.BACKLOG_LIMIT_BYTES
    # exchange clock start (naive = Asia/Shanghai time); None = default_start(now)
    start: dt.datetime | None = None
    pool_snapshots: int = 16  # pre-rendered and cycled with max_rate or > 20,000 lines/s
    # A second vendor (A/B feeds): with ``epoch`` (wall-clock seconds) snapshot k
    # is due at epoch + k * period, whether or not a client is connected (one
    # pushed to nobody is skipped, as a real feed's), so simulators sharing
    # seed, start and epoch push the same market at the same time. Then
    # ``delay_s`` later, up to ``jitter_s`` more at random, and with
    # ``missing_fraction`` of the lines left out of each snapshot (drawn from
    # ``variant_seed``, never from the market's seed).
    epoch: float | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    missing_fraction: float = 0.0
    variant_seed: int = 0


@dataclass
class SimStats:
    """Counters. Quote lines and bytes count once per snapshot, whatever the client count."""

    lines_sent: int = 0
    lines_missing: int = 0  # left out on purpose (``missing_fraction``)
    bytes_sent: int = 0
    malformed_sent: int = 0
    snapshots_sent: int = 0
    clients_connected: int = 0
    clients_dropped: int = 0
    auth_failures: int = 0
    malformed_by_kind: dict[MalformedKind, int] = field(default_factory=dict)


@dataclass(eq=False)
class _Client:
    peer: str
    writer: asyncio.StreamWriter
    last_sent: float

    def buffered(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    def send(self, data: bytes) -> None:
        if not self.writer.transport.is_closing():
            self.writer.write(data)
            self.last_sent = time.monotonic()


class FeedSimulator:
    """The push server. ``await start()``, then connect to ``port``; ``await stop()``."""

    def __init__(self, config: SimConfig) -> None:
        if config.rate <= 0 or config.interval_s <= 0:
            raise SimulatorError("interval and rate must be positive")
        self.config = config
        self.stats = SimStats()
        self.port = config.port
        self._clients: list[_Client] = []  # authenticated, receiving the stream
        self._conns: set[asyncio.StreamWriter] = set()  # every open connection
        self._has_clients = asyncio.Event()
        self._done = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._log: IO[bytes] | None = None

    async def start(self) -> None:
        cfg = self.config
        start = cfg.start or default_start(dt.datetime.now(SHANGHAI_TZ))
        fast = cfg.max_rate or cfg.stocks * cfg.rate / cfg.interval_s > POOL_ABOVE_LINES_S
        try:
            stocks = build_universe(cfg.stocks, cfg.seed)
            # A pool takes a few seconds to render: keep the event loop free meanwhile.
            self._source = await asyncio.to_thread(
                SnapshotSource,
                stocks,
                start,
                cfg.interval_s,
                cfg.seed,
                cfg.malformed_fraction,
                cfg.pool_snapshots if fast else 0,
            )
        except ValueError as exc:
            raise SimulatorError(str(exc)) from exc
        if cfg.sent_log is not None:
            self._log = cfg.sent_log.open("ab")
        self._server = await asyncio.start_server(
            self._serve_client, cfg.host, cfg.port, limit=protocol.MAX_LINE_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [
            asyncio.create_task(self._push(), name="sim-push"),
            asyncio.create_task(self._heartbeats(), name="sim-heartbeat"),
        ]
        logger.info(
            "feed simulator on %s:%d: %d stocks, %s",
            cfg.host,
            self.port,
            len(self._source.stocks),
            "max rate" if cfg.max_rate else f"every {cfg.interval_s / cfg.rate:g} s",
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._server is not None:
            self._server.close()
        for writer in list(self._conns):
            writer.close()
        self._clients.clear()
        self.stats.clients_connected = 0
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        if self._log is not None:
            self._log.close()
            self._log = None

    async def wait_done(self, timeout: float | None = None) -> None:
        """Until ``max_snapshots`` were pushed and handed to the clients' sockets."""
        await asyncio.wait_for(self._done.wait(), timeout)

    # -- clients ---------------------------------------------------------------

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = str(writer.get_extra_info("peername"))
        self._conns.add(writer)
        try:
            token = await self._authenticate(reader, writer, peer)
            if token is None:
                return
            client = _Client(peer, writer, time.monotonic())
            client.send(protocol.auth_ok())
            self._clients.append(client)
            self.stats.clients_connected = len(self._clients)
            self._has_clients.set()
            logger.info("client %s authenticated (%d connected)", peer, len(self._clients))
            try:
                while await reader.read(65536):  # clients send nothing more; notice EOF
                    pass
            finally:
                self._forget(client)
                logger.info("client %s left (%d connected)", peer, len(self._clients))
        except (ConnectionError, OSError) as exc:
            logger.info("client %s: %s", peer, exc)
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> str | None:
        """The accepted token, or None after answering a rejection (or a client that
        closed before a word: nothing to answer, not an auth failure)."""
        error = "invalid token"
        try:
            line = await asyncio.wait_for(reader.readline(), AUTH_TIMEOUT_S)
            if not line:  # closed without a word: a port probe (`hqstream up`, a readiness check)
                logger.debug("client %s closed before authenticating", peer)
                return None
            token = protocol.parse_auth_request(line.rstrip(b"\r\n"))
            if hmac.compare_digest(token.encode(), self.config.token.encode()):
                return token
        except (TimeoutError, ValueError) as exc:  # ProtocolError, LimitOverrun are ValueErrors
            error = "expected an auth line"
            logger.warning("client %s: no valid auth line (%s)", peer, type(exc).__name__)
        self.stats.auth_failures += 1
        logger.warning("client %s rejected: %s", peer, error)
        writer.write(protocol.auth_rejected(error))
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        return None

    def _forget(self, client: _Client) -> None:
        if client in self._clients:
            self._clients.remove(client)
        self.stats.clients_connected = len(self._clients)
        if not self._clients:
            self._has_clients.clear()

    def _drop(self, client: _Client, unread: int) -> None:
        logger.warning(
            "dropping client %s: %d bytes unread > backlog limit %d",
            client.peer,
            unread,
            self.config.backlog_limit_bytes,
        )
        self.stats.clients_dropped += 1
        self._forget(client)
        client.writer.transport.abort()

    # -- pushing ---------------------------------------------------------------

    async def _push(self) -> None:
        if self.config.epoch is not None:
            await self._push_on_schedule(self.config.epoch)
        else:
            await self._push_when_connected()

    async def _push_on_schedule(self, epoch: float) -> None:
        """Snapshot k at epoch + k * period (+ delay and jitter), clients or not."""
        cfg = self.config
        period = cfg.interval_s / cfg.rate
        variant = random.Random(cfg.variant_seed)
        index = 0
        while cfg.max_snapshots is None or index < cfg.max_snapshots:
            due = epoch + index * period + cfg.delay_s + variant.uniform(0.0, cfg.jitter_s)
            await asyncio.sleep(max(0.0, due - time.time()))
            snapshot = self._source.next()
            index += 1
            if not self._clients:
                continue  # pushed to nobody: this snapshot is not sent
            data, lines = snapshot.data, snapshot.lines
            if cfg.missing_fraction:
                kept = [
                    line
                    for line in data.splitlines(keepends=True)
                    if variant.random() >= cfg.missing_fraction
                ]
                data, lines = b"".join(kept), len(kept)
                self.stats.lines_missing += snapshot.lines - lines
            self._broadcast(data)
            st = self.stats
            st.snapshots_sent += 1
            st.lines_sent += lines
            st.bytes_sent += len(data)
        await self._drained()
        if self._log is not None:
            self._log.flush()
        self._done.set()

    async def _push_when_connected(self) -> None:
        cfg = self.config
        period = cfg.interval_s / cfg.rate
        spread = cfg.spread and not cfg.max_rate
        st = self.stats
        next_at = time.monotonic()
        ahead: SnapshotBuild | None = None  # spread: the next one, being built
        while cfg.max_snapshots is None or st.snapshots_sent < cfg.max_snapshots:
            if not self._has_clients.is_set():
                await self._has_clients.wait()
                next_at = time.monotonic()
            if ahead is not None:
                snapshot, ahead = ahead.result(), None
            else:
                snapshot = self._source.next()
                if spread:  # the first one's period starts once it is built
                    next_at = max(next_at, time.monotonic())
            if spread:
                # A steady stream has no gap between snapshots: the next one is
                # built (~0.3 s of CPU for 5,000 stocks) a part after each slice
                # of this one, so its CPU is as steady as the feed, and each
                # starts one period after the last, so the feed keeps its rate
                # and the exchange clock keeps wall time.
                if cfg.max_snapshots is None or st.snapshots_sent + 1 < cfg.max_snapshots:
                    ahead = self._source.build()
                await self._spread(snapshot.data, next_at, period, ahead)
                next_at = max(next_at + period, time.monotonic() - period)
            else:
                self._broadcast(snapshot.data)
            st.snapshots_sent += 1
            st.lines_sent += snapshot.lines
            st.bytes_sent += len(snapshot.data)
            for kind, n in snapshot.malformed.items():
                st.malformed_sent += n
                st.malformed_by_kind[kind] = st.malformed_by_kind.get(kind, 0) + n
            if cfg.max_rate:
                await self._pace()
            elif not spread:
                next_at = max(next_at + period, time.monotonic() - period)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await self._drained()
        if self._log is not None:
            self._log.flush()
        logger.info("pushed %d snapshots (%d lines)", st.snapshots_sent, st.lines_sent)
        self._done.set()

    def _broadcast(self, data: bytes) -> None:
        if self._log is not None and self._clients:  # pushed to nobody is not sent
            self._log.write(data)
        limit = self.config.backlog_limit_bytes
        for client in list(self._clients):
            client.send(data)
            unread = client.buffered()
            if unread > limit:
                self._drop(client, unread)

    async def _spread(
        self, data: bytes, start: float, period: float, ahead: SnapshotBuild | None = None
    ) -> None:
        """Send one snapshot's lines in equal slices every SPREAD_TICK_S over ``period``
        from ``start`` (monotonic; slices already due go at once); after each slice,
        build the next snapshot's (``ahead``) share of parts."""
        lines = data.splitlines(keepends=True)
        slices = max(1, min(len(lines), round(period / SPREAD_TICK_S)))
        step = period / slices
        built = 0
        for i in range(slices):
            first, last = len(lines) * i // slices, len(lines) * (i + 1) // slices
            self._broadcast(b"".join(lines[first:last]))
            if ahead is not None:
                share = ahead.parts * (i + 1) // slices
                ahead.advance(share - built)
                built = share
            await asyncio.sleep(max(0.0, start + (i + 1) * step - time.monotonic()))

    async def _pace(self) -> None:
        """Max-rate mode: wait until the fastest client has taken most of its backlog.

        Slower clients fall behind and are dropped by the backlog rule, as the
        vendor would; they never hold back the others.
        """
        high_water = min(1 << 20, self.config.backlog_limit_bytes // 4)
        while self._clients and min(c.buffered() for c in self._clients) > high_water:
            await asyncio.sleep(POLL_S)
        await asyncio.sleep(0)  # let clients and heartbeats run between bursts

    async def _drained(self) -> None:
        while any(c.buffered() for c in self._clients):
            await asyncio.sleep(POLL_S * 10)

    async def _heartbeats(self) -> None:
        interval = self.config.heartbeat_interval_s
        tick = min(1.0, max(0.005, interval / 5))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for client in list(self._clients):
                if now - client.last_sent >= interval:
                    client.send(protocol.heartbeat(int(time.time() * 1000)))


async def _report(sim: FeedSimulator, every_s: float) -> None:
    last_lines, last_t = 0, time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        now = time.monotonic()
        st = sim.stats
        logger.info(
            "%.0f lines/s, %d clients, %d snapshots, %d lines, %d malformed, %d dropped",
            (st.lines_sent - last_lines) / (now - last_t),
            st.clients_connected,
            st.snapshots_sent,
            st.lines_sent,
            st.malformed_sent,
            st.clients_dropped,
        )
        last_lines, last_t = st.lines_sent, now


async def serve(config: SimConfig, report_every_s: float = 5.0) -> None:
    """Run the simulator until SIGINT or SIGTERM."""
    sim = FeedSimulator(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    remove_handlers = on_stop_signals(lambda _signum: stopping.set(), loop)
    await sim.start()
    reporter = asyncio.create_task(_report(sim, report_every_s))
    try:
        await stopping.wait()
        logger.info("stopping the feed simulator")
    finally:
        reporter.cancel()
        await sim.stop()
        remove_handlers()
