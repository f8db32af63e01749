"""The feed receiver: one long TCP connection to the vendor -> the forwarder.

Reads the socket as fast as it delivers (the vendor drops a client that lets
100 MB sit unread), frames lines, answers the protocol (auth, heartbeats),
and hands complete lines to :class:`~producers.forwarder.Forwarder`, which
owns Kafka, the journal and the write-ahead log. Reading never waits on Kafka. Dead connections
are detected by the heartbeat timeout; reconnects back off exponentially with
full jitter; a rejected token is fatal (:class:`FeedAuthRejected`).
Never logs the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hqcore.signals import on_stop_signals
from producers import metrics, protocol
from producers.errors import FeedAuthRejected, FeedConnectionLost
from producers.forwarder import Forwarder, KindLine
from producers.health import serve_health
from producers.journal import DlqCause, Journal
from producers.settings import ReceiverSettings, split_addr
from producers.wal import WriteAheadLog

logger = logging.getLogger(__name__)

_READ_SIZE = 1 << 20
_DLQ_KEEP_BYTES = 256 * 1024  # an overlong line's DLQ copy keeps its first 256 KiB
# bound once: a labels() lookup per read costs more than the increment
_SSE_SZSE_LINES = metrics.LINES.labels("sse_szse")
_BSE_JSON_LINES = metrics.LINES.labels("bse_json")


@dataclass
class Backoff:
    """Exponential backoff with full jitter."""

    initial: float
    maximum: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(self.initial / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Silence:
    """Ends ``reader``'s stream as its end would once nothing was read for ``timeout_s``.

    One timer, moved on when it fires (to ``timeout_s`` after the last read),
    instead of a timeout armed and cancelled around every read: those took
    ~10 % of the receiver's main thread at 200 reads a second (py-spy).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        timeout_s: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._reader = reader
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._clock = clock or self._loop.time  # (a test's own)
        self._last = self._clock()
        self.fired = False  # the stream was ended for the silence
        self._timer = self._loop.call_later(timeout_s, self._check)

    def heard(self) -> None:
        """Something was read now."""
        self._last = self._clock()

    def cancel(self) -> None:
        self._timer.cancel()

    def _check(self) -> None:
        quiet_s = self._clock() - self._last
        if quiet_s >= self._timeout_s:
            self.fired = True
            self._reader.feed_eof()
        else:
            self._timer = self._loop.call_later(self._timeout_s - quiet_s, self._check)


@dataclass
class ReceiverStats:
    lines: int = 0
    bytes: int = 0
    heartbeats: int = 0
    connects: int = 0
    dlq: int = 0
    connected: bool = False


class Receiver:
    """Connects, authenticates and reads; see the module docstring."""

    def __init__(self, settings: ReceiverSettings, forwarder: Forwarder) -> None:
        self.settings = settings
        self.forwarder = forwarder
        self.host, self.port = split_addr(settings.feed_addr)
        self.stats = ReceiverStats()
        self._stop = asyncio.Event()
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Read until :meth:`stop`; raises FeedAuthRejected on a rejected token."""
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self._session()
            except FeedAuthRejected:
                raise
            except (OSError, TimeoutError, FeedConnectionLost, protocol.ProtocolError) as exc:
                if self._stop.is_set():
                    break
                logger.warning("feed %s:%d: %s", self.host, self.port, exc or type(exc).__name__)
            finally:
                self.stats.connected = False
                metrics.CONNECTED.set(0)
            if time.monotonic() - started > self.settings.heartbeat_timeout_s:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            logger.info("reconnecting to the feed in %.1fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            metrics.RECONNECTS.inc()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.settings.socket_rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), self.settings.connect_timeout_s)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=protocol.MAX_LINE_BYTES + 2)

    async def _session(self) -> None:
        reader, writer = await self._connect()
        try:
            self.stats.connects += 1
            writer.write(protocol.auth_request(self.settings.feed_token.get_secret_value()))
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), self.settings.connect_timeout_s)
            if not reply:
                raise FeedConnectionLost("connection closed before the auth reply")
            ok, error = protocol.parse_auth_reply(reply.rstrip(b"\r\n"))
            if not ok:
                raise FeedAuthRejected(
                    f"the feed at {self.host}:{self.port} rejected the token "
                    f"({error or 'no reason given'}): check HQ_FEED_TOKEN"
                )
            logger.info("connected and authenticated to the feed at %s:%d", self.host, self.port)
            self.stats.connected = True
            metrics.CONNECTED.set(1)
            await self._read_loop(reader)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        buf = b""
        overlong: int | None = None  # bytes of a too-long line being skipped
        overlong_head = b""
        # A stop ends the read in progress as the end of the stream would: one
        # await per read, not a task and a wait per read (~30 us of the
        # receiver's Python each, 200 reads a second at the steady rate).
        stop_wait = asyncio.ensure_future(self._stop.wait())
        stop_wait.add_done_callback(lambda _: reader.feed_eof())
        # So does a silence of the heartbeat timeout (one timer, not a timeout
        # armed and cancelled around every read).
        heartbeat_s = self.settings.heartbeat_timeout_s
        silence = Silence(reader, heartbeat_s)
        try:
            while not self._stop.is_set():
                chunk = await reader.read(_READ_SIZE)
                if not chunk:
                    if self._stop.is_set():
                        return
                    if silence.fired:
                        raise FeedConnectionLost(
                            f"nothing heard for {heartbeat_s:.0f}s (heartbeat timeout)"
                        )
                    raise FeedConnectionLost("the feed closed the connection")
                silence.heard()
                now_ms = time.time_ns() // 1_000_000
                self.stats.bytes += len(chunk)
                metrics.BYTES.inc(len(chunk))
                metrics.LAST_DATA.set(time.time())

                if overlong is not None:
                    nl = chunk.find(b"\n")
                    if nl < 0:
                        overlong += len(chunk)
                        if len(overlong_head) < _DLQ_KEEP_BYTES:
                            overlong_head += chunk[: _DLQ_KEEP_BYTES - len(overlong_head)]
                        continue
                    overlong += nl
                    self._dead_letter(now_ms, DlqCause.LINE_TOO_LONG, overlong_head)
                    overlong, overlong_head, chunk = None, b"", chunk[nl + 1 :]

                data = buf + chunk if buf else chunk
                last_nl = data.rfind(b"\n")
                if last_nl < 0:
                    buf = data
                else:
                    self._handle_lines(now_ms, data[:last_nl])
                    buf = data[last_nl + 1 :]
                if len(buf) > protocol.MAX_LINE_BYTES:
                    overlong, overlong_head, buf = len(buf), buf[:_DLQ_KEEP_BYTES], b""
        finally:
            silence.cancel()
            stop_wait.cancel()

    def _handle_lines(self, now_ms: int, block: bytes) -> None:
        """Split a block of complete lines; DLQ the bad ones; pass the rest on."""
        try:
            block.decode("utf-8")
            utf8_ok = True
        except UnicodeDecodeError:
            utf8_ok = False
        lines = block.split(b"\n")
        good: list[KindLine] = []
        bse = 0
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                continue
            if len(line) > protocol.MAX_LINE_BYTES:
                self._dead_letter(now_ms, DlqCause.LINE_TOO_LONG, line[:_DLQ_KEEP_BYTES])
                continue
            if not utf8_ok:
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    self._dead_letter(now_ms, DlqCause.INVALID_UTF8, line)
                    continue
            kind = protocol.classify(line)
            if kind == "control":
                self._control(line)
                continue
            if kind == "bse_json":
                bse += 1
            good.append((kind, line))
        if good:
            self.stats.lines += len(good)
            if bse:
                _BSE_JSON_LINES.inc(bse)
            _SSE_SZSE_LINES.inc(len(good) - bse)
            self.forwarder.submit(now_ms, good)

    def _control(self, line: bytes) -> None:
        if b'"heartbeat"' in line:
            self.stats.heartbeats += 1
            metrics.HEARTBEATS.inc()
        else:
            logger.info("feed control message ignored: %s", line[:120].decode(errors="replace"))

    def _dead_letter(self, now_ms: int, cause: DlqCause, payload: bytes) -> None:
        self.stats.dlq += 1
        reason = cause.reason
        metrics.DLQ.labels(reason).inc()
        logger.warning("feed line dead-lettered (%s, %d bytes kept)", reason, len(payload))
        self.forwarder.submit_dlq(now_ms, cause, payload)


async def run_receiver(settings: ReceiverSettings) -> int:
    """Run the receiver until SIGINT/SIGTERM. Returns the process exit code."""
    if not settings.feed_token.get_secret_value():
        logger.error("HQ_FEED_TOKEN is not set (or the token_env of this HQ_FEEDS entry)")
        return 2
    metrics.FEED_INFO.labels(settings.feed_source).set(1)
    journal = Journal.from_settings(settings)
    forwarder = Forwarder(settings, journal, WriteAheadLog(settings.journal_dir / "wal"))
    forwarder.start()
    receiver = Receiver(settings, forwarder)
    loop = asyncio.get_running_loop()
    on_stop_signals(lambda _signum: receiver.stop(), loop)

    def status() -> tuple[bool, bool, dict[str, Any]]:
        healthy = forwarder.failure is None
        ready = (
            healthy and receiver.stats.connected and (forwarder.kafka_up or not forwarder.spooling)
        )
        return (
            healthy,
            ready,
            {
                "feed_connected": receiver.stats.connected,
                "kafka_up": forwarder.kafka_up,
                "spooling": forwarder.spooling,
                "journal_bytes": journal.size_bytes,
                "queue_bytes": forwarder.queue_bytes,
                "lines": receiver.stats.lines,
            },
        )

    health = await serve_health(settings.metrics_host, settings.metrics_port, status)
    progress = asyncio.create_task(_log_progress(receiver, forwarder))
    code = 0
    try:
        await receiver.run()
    except FeedAuthRejected as exc:
        logger.error("%s", exc)
        code = 2
    finally:
        progress.cancel()
        health.close()
        await asyncio.get_running_loop().run_in_executor(None, forwarder.stop)
    if forwarder.failure is not None:
        code = code or 1
    return code


async def _log_progress(receiver: Receiver, forwarder: Forwarder, every: float = 10.0) -> None:
    last_lines, last_t = 0, time.monotonic()
    while True:
        await asyncio.sleep(every)
        if forwarder.failure is not None:
            logger.error("the Kafka forwarder failed (%s): stopping", forwarder.failure)
            receiver.stop()
            return
        now = time.monotonic()
        rate = (receiver.stats.lines - last_lines) / (now - last_t)
        last_lines, last_t = receiver.stats.lines, now
        logger.info(
            "feed %s | %.0f lines/s | %d lines total | acked %d | journal %d B%s | dlq %d",
            "up" if receiver.stats.connected else "DOWN",
            rate,
            receiver.stats.lines,
            forwarder.acked(forwarder.settings.raw_topic),
            forwarder.journal.size_bytes,
            " (spooling)" if forwarder.spooling else "",
            receiver.stats.dlq,
        )
