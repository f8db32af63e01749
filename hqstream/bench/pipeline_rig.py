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
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hqstream.bench.common import BenchEnv
from hqstream.local_runner import create_topics, free_port, port_open
from hqstream.stack_checks import gateway_ready
from hqstream.up import Child
from producers.simulator import default_start
from schemas import topics
from schemas.exchange import SHANGHAI_TZ

EXE = [sys.executable, "-m", "hqstream.cli"]


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

    def dead(self) -> list[str]:
        return [c.name for c in self.children if c.state != "running"]

    def _log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""


@contextlib.contextmanager
def pipeline(
    env: BenchEnv,
    logs: Path,
    workers: int = 1,
    flush_ms: int | None = None,
    code: Path | None = None,
    worker_env: dict[str, str] | None = None,
    partitions: int = 12,
) -> Iterator[Pipeline]:
    """Gateway and ``workers`` stream workers running (this checkout's code, or
    ``code``'s; ``worker_env`` added to the workers' environment) on topics of
    ``partitions`` partitions; the receiver starts with the first :meth:`Pipeline.feed`.
    ``flush_ms``: the gateway's flush interval (None: its default, as ``hqstream up``)."""
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
    rig.receiver = rig.child("produce", ["produce", "--metrics-port", str(metrics_port)])
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
    finally:
        rig.stop_feed()
        for c in reversed(rig.children):
            c.stop()
