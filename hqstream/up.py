"""``hqstream up``: the whole platform on one machine, with one command.

Starts a real Kafka broker and Redis (``hqstream.local_runner``; with
``--redis-cluster`` a Redis Cluster of 3 masters and 3 replicas,
``hqstream.local_cluster``), creates the topics, then runs the feed
simulator, the receiver, N stream workers and the gateway as child processes
(``--feeds 2``: two simulators of one market, the second with jitter, a delay
and missing lines, and a receiver for each), each logging to
``.run/logs/<name>.log``. A child that exits (a stream worker whose agent
crashed exits 70) is restarted, as Kubernetes would. Shows live figures until
Ctrl-C, then stops everything in reverse order.
The feed token is generated per run when HQ_FEED_TOKEN is unset and handed
to the children through their environment only; it is never printed. The
gateway is never open by default: unless HQ_GATEWAY_API_KEYS is set (or
HQ_GATEWAY_AUTH=off) a dev API key (also an admin key) is generated per run;
it is printed once, inside the dashboard URL's fragment (``#api_key=...``),
which the browser never sends to a server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from hqcore.logs import configure_logging
from hqstream.local_cluster import LocalRedisCluster
from hqstream.local_runner import (
    BROKER_BACKGROUND_NICE,
    DEFAULT_RUN_DIR,
    REDIS_NICE,
    LocalStack,
    create_topics,
    free_port,
    local_partitions,
    port_open,
)
from schemas.topics import topic_specs

logger = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log: TextIO | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            process_group=0,  # the caller's session: see local_runner.REDIS_NICE
        )

    @property
    def state(self) -> str:
        if self.proc is None:
            return "not started"
        code = self.proc.poll()
        return "running" if code is None else f"exited ({code})"

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.log is not None:
            self.log.close()


_METRIC = re.compile(
    rb"^(hq_receiver_lines_total|hq_receiver_produced_total|"
    rb"hq_receiver_connected|hq_receiver_journal_bytes)(\{[^}]*\})? ([0-9.e+]+)$",
    re.M,
)


def metric_figures(port: int) -> dict[str, float]:
    """A component's Prometheus figures on ``port`` (receiver or worker), summed over
    labels per metric name; {} when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            body = resp.read()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for name, _labels, value in _METRIC.findall(body):
        key = name.decode()
        out[key] = out.get(key, 0.0) + float(value)
    return out


_REBUILD = re.compile(rb"^hq_streams_rebuild_(running|progress_ratio) ([0-9.e+]+)$", re.M)


def _rebuild_progress(child: Child) -> float | None:
    """A stream worker's progress (0..1) while it rebuilds the Redis state, else None."""
    port = child.env.get("HQ_STREAMS_METRICS_PORT")
    if not port or not child.name.startswith("streams"):
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            found = {name: float(value) for name, value in _REBUILD.findall(resp.read())}
    except OSError:
        return None
    return found.get(b"progress_ratio", 0.0) if found.get(b"running") else None


def _dev_api_key(env: dict[str, str]) -> str | None:
    """Generate a per-run dev key into ``env`` unless keys are set or auth is off."""
    if env.get("HQ_GATEWAY_AUTH", "").lower() == "off":
        return None
    if env.get("HQ_GATEWAY_API_KEYS") or env.get("HQ_GATEWAY_ADMIN_KEYS"):
        return None
    key = secrets.token_urlsafe(24)
    env["HQ_GATEWAY_API_KEYS"] = key
    env["HQ_GATEWAY_ADMIN_KEYS"] = key
    return key


def _pick_port(preferred: int) -> int:
    return preferred if not port_open(preferred) else free_port()


#: the second vendor of a two-feed run: its own jitter, a small delay, a few lines missing
SECOND_FEED_OPTIONS = ("--delay", "0.05", "--jitter", "0.1", "--missing-fraction", "0.01",
                       "--variant-seed", "1")  # fmt: skip
#: two simulators share a wall-clock schedule that starts this long after ``up`` made it
SCHEDULE_LEAD_S = 5.0


@dataclass(frozen=True)
class LocalFeed:
    """One simulated vendor feed of ``hqstream up --feeds N`` and its receiver."""

    name: str
    feed_port: int
    metrics_port: int

    def entry(self) -> dict[str, object]:
        """Its ``HQ_FEEDS`` entry (the token: HQ_FEED_TOKEN, shared by the simulators)."""
        return {"name": self.name, "addr": f"127.0.0.1:{self.feed_port}",
                "priority": ord(self.name) - ord("a"),
                "metrics_url": f"http://127.0.0.1:{self.metrics_port}/metrics"}  # fmt: skip


def up(
    stocks: Annotated[int, typer.Option(help="stocks in the simulated universe")] = 5000,
    rate: Annotated[float, typer.Option(help="simulator cadence multiplier (1 = every 3 s)")] = 1.0,
    workers: Annotated[int, typer.Option(help="stream worker processes")] = 1,
    port: Annotated[int, typer.Option(help="gateway HTTP port")] = 8000,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="partitions of the tick topics (default: one per worker; production has 12)",
        ),
    ] = None,
    simulator: Annotated[
        bool, typer.Option(help="run the feed simulator (off: use HQ_FEED_ADDR)")
    ] = True,
    feeds: Annotated[
        int,
        typer.Option(
            min=1,
            max=2,
            help="simulated vendor feeds: 2 = two simulators on one schedule (the second "
            "with jitter, a delay and missing lines) and a receiver for each (HQ_FEEDS)",
        ),
    ] = 1,
    run_dir: Annotated[Path, typer.Option(help="where data and logs go")] = DEFAULT_RUN_DIR,
    redis_cluster: Annotated[
        bool,
        typer.Option(
            "--redis-cluster",
            help="a Redis Cluster (3 masters, 3 replicas on loopback, cluster-node-timeout "
            "2 s) instead of one Redis server",
        ),
    ] = False,
    redis_nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="Redis's CPU priority below the rest (a nice increment): at each burst the "
            "quotes' path goes first, Redis right after; 0: the same priority",
        ),
    ] = REDIS_NICE,
    broker_background_nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="the local broker's log cleaner and JIT compilers below the rest (a nice "
            "increment): they take the CPU the quotes leave; 0: the same priority",
        ),
    ] = BROKER_BACKGROUND_NICE,
) -> None:
    """Start Kafka, Redis, the simulator and every hqstream component; Ctrl-C stops all."""
    configure_logging("INFO", "up")
    partitions = partitions or local_partitions(workers)
    console = Console()
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(run_dir, kafka_port=_pick_port(9092), redis_port=_pick_port(6379),
                       with_redis=not redis_cluster, redis_nice=redis_nice,
                       broker_background_nice=broker_background_nice)  # fmt: skip
    cluster = LocalRedisCluster(run_dir, nice=redis_nice) if redis_cluster else None
    children: list[Child] = []
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        with console.status("starting Kafka (KRaft) and Redis ..."):
            stack.start()
            if cluster is not None:
                cluster.start()
            create_topics(stack.kafka.bootstrap, topic_specs(partitions))
        redis_url = stack.redis.url if cluster is None else cluster.url
        console.print(f"[green]Kafka[/] {stack.kafka.bootstrap}   [green]Redis[/] {redis_url}")
        local_feeds = [
            LocalFeed(name, _pick_port(7070 + i), _pick_port(9101 + i))
            for i, name in enumerate("ab"[:feeds])
        ]
        metrics_port = local_feeds[0].metrics_port
        gateway_port = _pick_port(port)
        env = {
            **os.environ,
            "HQ_KAFKA_BOOTSTRAP": stack.kafka.bootstrap,
            "HQ_REDIS_URL": redis_url,
            "HQ_PARTITIONS": str(partitions),
            "HQ_JOURNAL_DIR": str(run_dir / "journal"),
            "HQ_GATEWAY_PRODUCER_METRICS_URL": f"http://127.0.0.1:{metrics_port}/metrics",
        }
        dev_key = _dev_api_key(env)
        if simulator:
            env["HQ_FEED_ADDR"] = f"127.0.0.1:{local_feeds[0].feed_port}"
            env.setdefault("HQ_FEED_TOKEN", secrets.token_urlsafe(24))
        elif not env.get("HQ_FEED_TOKEN"):
            console.print("[red]HQ_FEED_TOKEN is not set; the vendor feed needs it[/]")
            raise typer.Exit(2)
        if feeds > 1:
            env["HQ_FEEDS"] = json.dumps([feed.entry() for feed in local_feeds])
        exe = [sys.executable, "-m", "hqstream.cli"]
        schedule = ["--epoch", str(time.time() + SCHEDULE_LEAD_S)] if feeds > 1 else []
        for i, feed in enumerate(local_feeds):
            suffix = f"-{feed.name}" if feeds > 1 else ""
            if simulator:
                simulate = [*exe, "simulate", "--stocks", str(stocks), "--rate", str(rate),
                            "--addr", f"127.0.0.1:{feed.feed_port}", *schedule]  # fmt: skip
                simulate += list(SECOND_FEED_OPTIONS) if i else []
                children.append(
                    Child(f"simulate{suffix}", simulate, env, logs / f"simulate{suffix}.log")
                )
            produce = [*exe, "produce", "--metrics-port", str(feed.metrics_port)]
            produce += ["--feed", feed.name] if feeds > 1 else []
            children.append(Child(f"produce{suffix}", produce, env, logs / f"produce{suffix}.log"))
        for i in range(workers):
            worker_env = {
                **env,
                "HQ_STREAMS_METRICS_PORT": str(free_port()),
                "HQ_STREAMS_WORKER_ID": f"worker-{i + 1}",
                # static membership: a worker restarted after a crash takes its own
                # place back at once (docs/architecture.md, "Failover")
                "HQ_STREAMS_GROUP_INSTANCE_ID": f"worker-{i + 1}",
            }
            children.append(
                Child(
                    f"streams-{i + 1}", [*exe, "streams"], worker_env, logs / f"streams-{i + 1}.log"
                )
            )
        children.append(
            Child(
                "gateway", [*exe, "gateway", "--port", str(gateway_port)], env, logs / "gateway.log"
            )
        )
        feed_ports = {f"simulate-{f.name}": f.feed_port for f in local_feeds}
        feed_ports["simulate"] = local_feeds[0].feed_port
        for child in children:
            child.start()
            if child.name in feed_ports:
                deadline = time.monotonic() + 20
                while not port_open(feed_ports[child.name]) and time.monotonic() < deadline:
                    time.sleep(0.1)
        url = f"http://127.0.0.1:{gateway_port}/"
        dashboard = url + (f"#api_key={dev_key}" if dev_key else "")
        console.print(f"\n[bold]dashboard:[/] [link={dashboard}]{dashboard}[/]")
        console.print(f"API docs: {url}docs")
        if dev_key:
            console.print("(dev API key generated for this run; REST: X-API-Key header)")
        console.print(f"logs: {logs}/   Ctrl-C stops everything\n")
        _watch(console, children, [f.metrics_port for f in local_feeds], lambda: stop_requested)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping ...")
        for child in reversed(children):
            child.stop()
        stack.stop()
        if cluster is not None:
            cluster.stop()
        console.print("stopped.")


def _watch(
    console: Console, children: list[Child], metrics_ports: list[int], stopping: object
) -> None:
    assert callable(stopping)
    last_lines, last_t = 0.0, time.monotonic()
    restarts: dict[str, int] = {}
    with Live(console=console, refresh_per_second=1) as live:
        while not stopping():
            time.sleep(1)
            for child in children:  # like Kubernetes: a component that exits is restarted
                if child.proc is not None and child.proc.poll() is not None:
                    logger.warning("%s %s; restarting it", child.name, child.state)
                    restarts[child.name] = restarts.get(child.name, 0) + 1
                    if child.log is not None:
                        child.log.close()
                    child.start()
            figures: dict[str, float] = {}
            connected = 0
            for port in metrics_ports:  # every feed's receiver, summed
                one = metric_figures(port)
                connected += bool(one.get("hq_receiver_connected"))
                for name, value in one.items():
                    figures[name] = figures.get(name, 0.0) + value
            now = time.monotonic()
            lines = figures.get("hq_receiver_lines_total", 0.0)
            rate = (lines - last_lines) / (now - last_t) if lines >= last_lines else 0.0
            last_lines, last_t = lines, now
            table = Table(title="hqstream (live)", expand=False)
            table.add_column("component")
            table.add_column("state")
            for child in children:
                colour = "green" if child.state == "running" else "red"
                again = f" (restarted {restarts[child.name]}x)" if child.name in restarts else ""
                rebuild = _rebuild_progress(child)
                doing = "" if rebuild is None else f" [yellow]rebuilding Redis {rebuild:.0%}[/]"
                table.add_row(child.name, f"[{colour}]{child.state}[/]{doing}{again}")
            table.add_row("feeds connected", f"{connected} of {len(metrics_ports)}")
            table.add_row("lines/s", f"{rate:,.0f}")
            table.add_row("lines total", f"{lines:,.0f}")
            table.add_row("acked by Kafka", f"{figures.get('hq_receiver_produced_total', 0):,.0f}")
            table.add_row("journal bytes", f"{figures.get('hq_receiver_journal_bytes', 0):,.0f}")
            live.update(table)
