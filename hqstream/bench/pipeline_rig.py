"""The whole pipeline as ``hqstream up`` runs it, for the benchmarks that need it.

simulator -> receiver -> Kafka -> stream worker(s) -> Kafka -> gateway, each its
own process (:class:`hqstream.up.Child`) on uuid-prefixed topics of the bench's
broker, with logs in the run's temporary folder. The simulator is started and
stopped separately (:meth:`Pipeline.feed`), so a benchmark can change the feed's
rate between phases; the receiver reconnects to each new one, and each new feed
goes on from the exchange time where the previous one stopped (else every feed
after the first would replay times the workers have seen: their stats, candles
and alerts skip such ticks and Redis ignores them, so it would measure a
cheaper path than a live feed's). ``code`` runs every
component from another checkout (``hqstream bench cost --compare``): its folder
is the children's ``PYTHONPATH``, and ``python -P`` keeps the current directory
off their import path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live

from hqstream.bench.common import BenchEnv
from hqstream.bench.proc_cpu import jit_cpu_s, jit_share
from hqstream.local_runner import create_topics, free_port, local_partitions, port_open
from hqstream.stack_checks import gateway_ready
from hqstream.up import Child
from producers.simulator import default_start
from schemas import topics
from schemas.exchange import SHANGHAI_TZ

EXE = [sys.executable, "-m", "hqstream.cli"]
LINES = re.compile(rb"^hq_receiver_lines_total(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)
BATCHES = re.compile(rb"^hq_streams_batch_size_count ([0-9.e+]+)$", re.M)
GC_PAUSES = rb"^hq_streams_gc_pause_seconds_%s ([0-9.e+]+)$"  # streams.metrics.GC_PAUSE
GC_COUNT = re.compile(GC_PAUSES % rb"count\{[^}]*\}", re.M)
GC_SUM = re.compile(GC_PAUSES % rb"sum\{[^}]*\}", re.M)
GC_WITHIN_25MS = re.compile(GC_PAUSES % rb'bucket\{[^}]*le="0.025"\}', re.M)
GC_WITHIN_100MS = re.compile(GC_PAUSES % rb'bucket\{[^}]*le="0.1"\}', re.M)
FEED_TIMEOUT_S = 120.0  # a restarted feed reaches the receiver within this
JIT_QUIET_SHARE = 0.02  # a broker is warm once its compilers use less of a core than this
JIT_WINDOW_S = 10.0

console = Console()


#: the pipeline's own processes (the simulator and the client are the bench's), in the
#: order the tables list them; a worker's name is its component's and its index (streams-0)
PIPELINE = ("produce", "streams", "gateway", "broker", "redis")


def pipeline_rows(names: Iterable[str]) -> list[str]:
    """The pipeline's processes among ``names``, in :data:`PIPELINE`'s order."""
    ours = [n for n in names if n.split("-")[0] in PIPELINE]
    return sorted(ours, key=lambda n: (PIPELINE.index(n.split("-")[0]), n))


def command_of(code: Path | None) -> tuple[list[str], dict[str, str]]:
    """The ``hqstream`` command of the components and what it adds to their environment:
    this checkout's, or the checkout at ``code`` (on this interpreter and its packages)."""
    if code is None:
        return EXE, {}
    return [sys.executable, "-P", "-m", "hqstream.cli"], {"PYTHONPATH": str(code)}


@dataclass
class Pipeline:
    env: dict[str, str]
    exe: list[str]
    logs: Path
    gateway_port: int
    metrics_port: int
    feed_port: int
    children: list[Child] = field(default_factory=list)
    simulator: Child | None = None
    receiver: Child | None = None  # started once the first feed listens
    #: where the next feed's exchange clock starts: after every time fed so far
    exchange_clock: dt.datetime | None = None
    _fed: tuple[float, float] | None = None  # the last feed: (monotonic start, interval)

    def child(self, name: str, args: list[str], **env: str) -> Child:
        c = Child(name, [*self.exe, *args], {**self.env, **env}, self.logs / f"{name}.log")
        self.children.append(c)
        return c

    def groups(self, more: dict[str, int] | None = None) -> dict[str, int]:
        """Process-group ids by name: every component started, and ``more`` (the bench's
        broker and Redis, when it started them: :attr:`BenchEnv.pids`)."""
        out = {c.name: c.proc.pid for c in self.children if c.proc is not None}
        out.update(more or {})
        return out

    def feed(self, stocks: int, interval: float, spread: bool, snapshots: int = 0) -> None:
        """(Re)starts the simulator with this shape (``snapshots`` > 0: that many, then
        only heartbeats, as a closed market); the receiver reconnects to it."""
        self.stop_feed()
        args = ["simulate", "--stocks", str(stocks), "--interval", str(interval)]
        now = time.monotonic()
        args += ["--start", self.next_start(now).isoformat()]
        self._fed = (now, interval)
        args += ["--snapshots", str(snapshots)] if snapshots else []
        self.simulator = self.child("simulate", args + (["--spread"] if spread else []))
        self.simulator.start()
        deadline = time.monotonic() + 30
        while not port_open(self.feed_port):
            if time.monotonic() > deadline or self.simulator.state != "running":
                raise RuntimeError("simulator did not listen: " + self._log("simulate"))
            time.sleep(0.1)
        if self.receiver is not None and self.receiver.proc is None:
            self.receiver.start()

    def next_start(self, now: float) -> dt.datetime:
        """The exchange time after the last feed's, at monotonic time ``now``: a
        simulator's clock moves one interval per snapshot, at most as fast as the
        wall clock (lunch aside)."""
        if self.exchange_clock is None:
            self.exchange_clock = default_start(dt.datetime.now(SHANGHAI_TZ))
        elif self._fed is not None:
            started, interval = self._fed
            ran = math.ceil(now - started + interval)
            self.exchange_clock += dt.timedelta(seconds=ran)
        return self.exchange_clock

    def stop_feed(self) -> None:
        if self.simulator is not None:
            self.simulator.stop()
            self.children.remove(self.simulator)
            self.simulator = None

    def wait_for_feed(
        self,
        since: float,
        lines: int,
        show: Callable[[str], None],
        timeout_s: float = FEED_TIMEOUT_S,
        poll_s: float = 0.5,
    ) -> None:
        """Until the receiver has read ``lines`` more feed lines than ``since`` (a
        :meth:`lines_received` figure): after :meth:`feed` restarted the simulator,
        the receiver reconnects with its backoff (up to 30 s), and a measurement
        that starts before would count seconds without a feed."""
        deadline = time.monotonic() + timeout_s
        while (got := self.lines_received() - since) < lines:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the feed did not flow: {got:,.0f} lines in {timeout_s:.0f} s")
            show(f"waiting for the feed, {got:,.0f} lines")
            time.sleep(poll_s)

    def lines_received(self) -> float:
        """Feed lines the receiver has read so far."""
        return metric_sum(self.metrics_port, LINES)

    def worker_batches(self) -> float:
        """Batches the stream workers processed so far."""
        return sum(metric_sum(port, BATCHES) for port in self._worker_ports())

    def worker_gc_pauses(self) -> GcPauses:
        """The stream workers' garbage-collector pauses so far, all workers together."""
        total = GcPauses()
        for port in self._worker_ports():
            total += gc_pauses(metrics_of(port))
        return total

    def _worker_ports(self) -> list[int]:
        return [
            int(c.env["HQ_STREAMS_METRICS_PORT"])
            for c in self.children
            if c.name.startswith("streams-")
        ]

    def warm_broker(
        self, pgid: int | None, label: str, feed: tuple[int, float, bool], limit_s: float
    ) -> None:
        """Feeds ``feed`` (stocks, interval, spread) until the broker of process group
        ``pgid`` is warm, as one that has run a while, or for ``limit_s`` at most;
        then stops the feed and waits until the workers are done with it.

        Warm: the feed has carried an exchange minute's first snapshot (every
        stock closes its minute: candles, bars and their topics, paths a
        broker compiles when they first come) and the JIT compilers then used
        under :data:`JIT_QUIET_SHARE` of a core over :data:`JIT_WINDOW_S`. A
        fresh JVM compiles for its first minutes (175 ms of the broker's 445 ms
        of CPU per burst 75-120 s after its start): start-up, not the pipeline.
        """
        if pgid is None or limit_s <= 0:
            return  # not our broker (or no warm-up asked): nothing to wait for
        stocks, interval, spread = feed
        self.feed(stocks, interval, spread)
        assert self.exchange_clock is not None  # set by the feed
        minute_done = minute_closed_after(self.exchange_clock, interval)
        started = time.monotonic()
        share = float("nan")
        with Live(console=console, refresh_per_second=2) as live:
            while (elapsed := time.monotonic() - started) < limit_s:
                jit0, until = jit_cpu_s(pgid), time.monotonic() + JIT_WINDOW_S
                while (left := until - time.monotonic()) > 0:
                    live.update(
                        f"{label}: warming the broker, {elapsed:3.0f} s, JIT compilers "
                        f"{100 * share:.1f}% of a core in the last {JIT_WINDOW_S:.0f} s"
                        + (", the exchange minute to come" if elapsed < minute_done else "")
                    )
                    time.sleep(min(0.5, left))
                share = jit_share(jit0, jit_cpu_s(pgid), JIT_WINDOW_S)
                if share < JIT_QUIET_SHARE and time.monotonic() - started >= minute_done:
                    break
        console.print(
            f"{label}: broker warmed for {time.monotonic() - started:.0f} s, through an "
            f"exchange minute's closes after {minute_done:.0f} s (JIT compilers "
            f"{100 * share:.1f}% of a core at the end)"
        )
        self.stop_feed()
        self.wait_drained(label)

    def wait_drained(self, label: str, quiet_s: float = 3.0, limit_s: float = 180.0) -> None:
        """Waits until the workers processed no batch for ``quiet_s``: a feed the pipeline
        could not keep up with leaves a backlog, which would be measured next."""
        deadline = time.monotonic() + limit_s
        last, since = self.worker_batches(), time.monotonic()
        with Live(console=console, refresh_per_second=2) as live:
            while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
                time.sleep(0.5)
                if (now := self.worker_batches()) != last:
                    last, since = now, time.monotonic()
                live.update(f"{label}: the workers work off the warm-up's backlog, {last:,.0f}")

    def dead(self) -> list[str]:
        return [c.name for c in self.children if c.state != "running"]

    def _log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""


def minute_closed_after(start: dt.datetime, interval: float, settle_s: float = 5.0) -> float:
    """Seconds after a feed starts at exchange time ``start`` until the first exchange
    minute's first snapshot has been sent (a spread one takes its interval) and
    ``settle_s`` more passed: what that minute's closes sent has reached the broker."""
    into_minute = start.second + start.microsecond / 1e6
    return (60.0 - into_minute) + interval + settle_s


def metrics_of(port: int) -> bytes:
    """``port``'s /metrics (empty if not serving)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return bytes(resp.read())
    except OSError:
        return b""  # not serving yet: nothing counted


def metric_sum(port: int, pattern: re.Pattern[bytes]) -> float:
    """The sum of the samples ``pattern`` finds on ``port``'s /metrics (0 if not serving)."""
    return _sum(pattern, metrics_of(port))


def _sum(pattern: re.Pattern[bytes], body: bytes) -> float:
    return sum(float(m) for m in pattern.findall(body))


@dataclass(frozen=True)
class GcPauses:
    """Garbage-collector pauses of stream workers (``hq_streams_gc_pause_seconds``, every
    generation): how many, their time, and how many took longer than 25 and 100 ms."""

    collections: float = 0.0
    seconds: float = 0.0
    over_25ms: float = 0.0
    over_100ms: float = 0.0

    def __add__(self, other: GcPauses) -> GcPauses:
        return GcPauses(*(a + b for a, b in zip(self._values(), other._values(), strict=True)))

    def __sub__(self, other: GcPauses) -> GcPauses:
        return GcPauses(*(a - b for a, b in zip(self._values(), other._values(), strict=True)))

    def _values(self) -> tuple[float, float, float, float]:
        return self.collections, self.seconds, self.over_25ms, self.over_100ms

    def describe(self) -> str:
        return (
            f"{self.collections:,.0f} collections, {self.seconds * 1000:,.0f} ms in all, "
            f"{self.over_25ms:,.0f} over 25 ms, {self.over_100ms:,.0f} over 100 ms"
        )


def gc_pauses(body: bytes) -> GcPauses:
    """The pauses a stream worker's /metrics ``body`` counts (none in an empty one)."""
    collections = _sum(GC_COUNT, body)
    return GcPauses(
        collections,
        _sum(GC_SUM, body),
        collections - _sum(GC_WITHIN_25MS, body),
        collections - _sum(GC_WITHIN_100MS, body),
    )


@contextlib.contextmanager
def pipeline(
    env: BenchEnv,
    logs: Path,
    workers: int = 1,
    flush_ms: int | None = None,
    code: Path | None = None,
    worker_env: dict[str, str] | None = None,
    partitions: int | None = None,
) -> Iterator[Pipeline]:
    """Gateway and ``workers`` stream workers running (this checkout's code, or
    ``code``'s; ``worker_env`` added to the workers' environment) on topics of
    ``partitions`` partitions (default: as ``hqstream up``, :func:`local_partitions`);
    the receiver starts with the first :meth:`Pipeline.feed`.
    ``flush_ms``: the gateway's flush interval (None: its default, as ``hqstream up``)."""
    partitions = partitions or local_partitions(workers)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    create_topics(env.bootstrap, topics.topic_specs(partitions), prefix=prefix)
    feed_port, gw_port, metrics_port = free_port(), free_port(), free_port()
    child_env = {
        **os.environ,
        "HQ_KAFKA_BOOTSTRAP": env.bootstrap,
        "HQ_REDIS_URL": env.redis_url,
        "HQ_TOPIC_PREFIX": prefix,
        "HQ_PARTITIONS": str(partitions),
        "HQ_FEED_ADDR": f"127.0.0.1:{feed_port}",
        "HQ_FEED_TOKEN": secrets.token_urlsafe(16),
        "HQ_JOURNAL_DIR": str(logs / "journal"),
        "HQ_LOG_LEVEL": "WARNING",
        "HQ_STREAMS_GROUP_ID": f"{prefix}streams",
        "HQ_STREAMS_DATADIR": str(logs / "streams"),
        "HQ_GATEWAY_STREAMS_GROUP": f"{prefix}streams",
        "HQ_GATEWAY_PRODUCER_METRICS_URL": f"http://127.0.0.1:{metrics_port}/metrics",
        "HQ_GATEWAY_AUTH": "off",  # the bench's client sends no key (loopback only)
    }
    if flush_ms is not None:
        child_env["HQ_GATEWAY_FLUSH_INTERVAL_MS"] = str(flush_ms)
    exe, code_env = command_of(code)
    rig = Pipeline({**child_env, **code_env}, exe, logs, gw_port, metrics_port, feed_port)
    gateway = rig.child("gateway", ["gateway", "--port", str(gw_port)])
    for i in range(workers):
        rig.child(
            f"streams-{i}",
            ["streams"],
            HQ_STREAMS_METRICS_PORT=str(free_port()),
            HQ_STREAMS_WORKER_ID=f"bench-{i}",
            **(worker_env or {}),
        )
    # at INFO: its connects and reconnects, what a feed that did not flow needs explained
    rig.receiver = rig.child(
        "produce", ["produce", "--metrics-port", str(metrics_port)], HQ_LOG_LEVEL="INFO"
    )
    failed = False
    try:
        for c in rig.children:
            if c is not rig.receiver:
                c.start()
        deadline = time.monotonic() + 90
        while not gateway_ready(gw_port):
            if time.monotonic() > deadline or gateway.state != "running":
                raise RuntimeError("gateway not ready: " + rig._log("gateway"))
            time.sleep(0.3)
        yield rig
    except Exception:
        failed = True
        raise
    finally:
        rig.stop_feed()
        for c in reversed(rig.children):
            c.stop()
        if failed:  # the run's folder goes with it: its logs are all there is to go on
            console.print(f"[red]the pipeline's logs are kept in {keep_logs(logs)}[/]")


def keep_logs(logs: Path, into: Path | None = None) -> Path:
    """A copy of a failed run's folder ``logs`` (its components' logs and the receiver's
    journal; not the workers' data folder), in a new folder of ``into`` (default: the
    system's temporary folder), which outlives the run's own."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if into is not None:
        into.mkdir(parents=True, exist_ok=True)
    kept = Path(tempfile.mkdtemp(prefix=f"hqstream-bench-failed-{stamp}-", dir=into))
    shutil.copytree(logs, kept, ignore=shutil.ignore_patterns("streams"), dirs_exist_ok=True)
    return kept
