"""``hqstream bench faults``: the whole pipeline under faults, one scenario at a time.

Starts its own Kafka broker and Redis (:class:`hqstream.local_runner.LocalStack`);
per scenario, fresh topics, group and Redis database, and the simulator
(full market: 5,000 stocks every 3 s by default), the receiver and two stream
workers as separate processes (:class:`hqstream.bench.fault_rig.FaultRig`).
Each scenario: quotes flow, normal feed, the fault is injected and held,
cleared, then the time until *the pipeline has recovered* is measured, the
feed runs on, stops, and everything drains before counting:

* recovered = every record that was on the raw topic 2 s earlier is committed
  by the group (lag 0 up to the commit interval) **and** every stock's Redis
  quote is at least at the newest tick the simulator had sent when the fault
  ended (quotes flow again, the failed worker's partitions too);
* lost = lines sent but not on the raw topic (with two feeds: lines neither
  feed's receiver put there), plus raw records neither normalized nor in the
  DLQ (a dead letter carries its reason: a well-formed line with impossible
  numbers is accounted for there); unread by a killed receiver = lines its
  feed pushed after the newest line in its write-ahead log, into the dead
  connection's kernel buffers (the protocol never sends them again: counted
  apart from lost, and with two feeds only those the other feed missed too);
  duplicated = raw records beyond those sent; published twice = (stock,
  exchange_ts) on the normalized topic more than once; not at newest = stocks
  whose Redis quote is not their newest tick sent.

Prints live progress and one markdown table; exits 1 when a row lost ticks,
left a quote behind, or did not recover within ``--recover-timeout``.

With two feeds (``--feeds 2``, or a row registered with ``feeds=2``) a second
simulator plays the same market on a shared wall-clock schedule with its own
jitter, a small delay and 1 % of its lines missing, and a second receiver
reads it (``HQ_FEEDS``); feed a's processes keep their names (``simulate``,
``produce``), so ``receiver-kill`` kills feed a's receiver.

``redis-master-kill`` runs its workers on a Redis Cluster of 3 masters and 3
replicas (:class:`hqstream.local_cluster.LocalRedisCluster`, started when a
chosen row needs it, ``cluster-node-timeout`` 2 s): a master is SIGKILLed,
the time until its replica is promoted is printed, the killed node is started
again (it rejoins as a replica) and recovery is measured from then on.

Scenarios are a registry (:data:`SCENARIOS`, :func:`register`): a row is an
``inject`` and an optional ``clear`` acting on the rig; add more (journal
corruption, disk full) with :func:`register`.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hqstream.bench.common import calibration_row, machine
from hqstream.bench.fault_rig import WORKERS, Counts, FaultRig, count, tick_id
from hqstream.local_cluster import LocalRedisCluster
from hqstream.local_runner import LocalStack
from producers.sample_feed import generate
from schemas.topics import Headers, raw_headers

console = Console()

#: a fault counts as recovered only once the records of this long before are committed
LAG_SLACK_S = 2.0
POLL_S = 0.5


@dataclass(frozen=True)
class Scenario:
    """One row: ``inject`` the fault, hold it, ``clear`` it (``None``: it ends when injected).

    ``after`` runs once recovery was measured (a replacement joining later).
    """

    name: str
    title: str
    inject: Callable[[FaultRig], None]
    clear: Callable[[FaultRig], None] | None = None
    after: Callable[[FaultRig], None] | None = None
    default: bool = True  # run without --only
    feeds: int = 1  # vendor feeds (--feeds raises it for every row)
    redis_cluster: bool = False  # the workers write to a Redis Cluster (3 masters, 3 replicas)


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.name in SCENARIOS:
        raise ValueError(f"scenario {scenario.name} registered twice")
    SCENARIOS[scenario.name] = scenario
    return scenario


# -- the scenarios --------------------------------------------------------------------


def _replace_worker(rig: FaultRig) -> None:
    rig.kill(WORKERS[0])
    rig.start_again(WORKERS[0])  # the replacement (a restarted pod) starts at once


def _kill_broker_and_worker(rig: FaultRig) -> None:
    rig.stack.kafka.kill()
    _replace_worker(rig)  # the replacement starts while the broker is down


def _kill_redis_master(rig: FaultRig) -> None:
    """SIGKILL a Redis Cluster master; once its replica took over, start it again (it
    rejoins as a replica, as a restarted pod would)."""
    cluster = rig.redis_cluster
    assert cluster is not None
    killed_at = time.monotonic()
    killed = cluster.kill_master()
    cluster.wait_promoted()
    console.print(f"    replica promoted {time.monotonic() - killed_at:.1f} s after the kill "
                  f"(cluster-node-timeout {cluster.node_timeout_ms} ms)")  # fmt: skip
    cluster.restart(killed)


def _poison(kind: str) -> Callable[[FaultRig], None]:
    def inject(rig: FaultRig) -> None:
        n = rig.produce_raw(poison_lines(kind))
        console.print(f"    put {n} {kind} records on the raw topic")

    return inject


register(
    Scenario(
        "broker-kill",
        "broker SIGKILL, restarted",
        lambda rig: rig.stack.kafka.kill(),
        lambda rig: rig.stack.kafka.restart(),
    )
)
register(
    Scenario(
        "broker-pause",
        "broker SIGSTOP, SIGCONT",
        lambda rig: rig.stack.kafka.pause(),
        lambda rig: rig.stack.kafka.resume(),
    )
)
register(Scenario("none", "no fault (the measurement's floor)", lambda rig: None, default=False))
register(
    Scenario(
        "worker-kill",
        "stream worker SIGKILL (replacement started after recovery)",
        lambda rig: rig.kill(WORKERS[0]),
        after=lambda rig: rig.start_again(WORKERS[0]),
    )
)
register(
    Scenario(
        "worker-kill-replaced",
        "stream worker SIGKILL, replacement started at once",
        _replace_worker,
        default=False,
    )
)
register(
    Scenario(
        "worker-kill-broker-down",
        "worker SIGKILL + replacement while the broker is down",
        _kill_broker_and_worker,
        lambda rig: rig.stack.kafka.restart(),
    )
)
register(
    Scenario(
        "redis-kill",
        "Redis SIGKILL, restarted empty",
        lambda rig: rig.stack.redis.kill(),
        lambda rig: rig.stack.redis.start(),
    )
)
register(
    Scenario(
        "redis-master-kill",
        "Redis Cluster master SIGKILL, replica promoted",
        _kill_redis_master,
        redis_cluster=True,
    )
)
register(
    Scenario(
        "receiver-kill",
        "receiver SIGKILL, restarted",
        lambda rig: rig.kill("produce"),
        lambda rig: rig.start_again("produce"),
    )
)
register(
    Scenario(
        "receiver-kill-second-feed",
        "receiver SIGKILL with a second feed, restarted",
        lambda rig: rig.kill("produce"),
        lambda rig: rig.start_again("produce"),
        feeds=2,
    )
)
register(Scenario("poison", "poison records (malformed lines)", _poison("malformed")))
register(
    Scenario(
        "poison-hostile",
        "poison records (huge numbers, year 2099)",
        _poison("hostile"),
    )
)


def poison_lines(kind: str) -> list[tuple[bytes, bytes, Headers]]:
    """Records as the receiver would put them on the raw topic.

    ``malformed``: every malformed kind of :mod:`producers.sample_feed` (wrong
    field count, not a number, bad symbol, negative, high below low, bad date,
    truncated JSON). ``hostile``: well-formed lines with numbers or dates no
    real quote has (issue 10): prev_close 1e27, price and amount 1e308, a
    volume near 9e18 on two stocks, a 2099 date.
    """
    lines, _ = generate(40, 1, bad_fraction=1.0 if kind == "malformed" else 0.0, seed=10)
    if kind == "malformed":
        return [line for line in lines if tick_id(line[1]) is None][:12]
    now = str(int(time.time() * 1000)).encode()
    dollar = [(k, v) for k, v, _ in lines if v[:1] != b"{"]
    edits = [
        {3: "1000000000000000000000000000.00"},
        {4: "1e308", 5: "1e308"},
        {10: "1e308"},
        {9: "9000000000000000000"},
        {9: "9000000000000000000"},
        {31: "2099-01-01"},
    ]
    out = []
    for (key, value), edit in zip(dollar, edits, strict=False):
        fields = value.decode().split("$")
        for i, text in edit.items():
            fields[i] = text
        headers = raw_headers("sse_szse", now, b"faults")
        out.append((key, "$".join(fields).encode(), headers))
    return out


# -- running one scenario -------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    scenario: Scenario
    counts: Counts | None
    resumed_s: float | None
    recovered_s: float | None
    restarts: int
    error: str = ""
    feeds: int = 1
    in_no_candle: int | None = None  # FaultRig.ticks_in_no_candle (market facts, not a loss)

    @property
    def ok(self) -> bool:
        c = self.counts
        return (
            not self.error
            and c is not None
            and c.lost == 0
            and c.not_newest == 0
            and self.recovered_s is not None
        )


class Progress:
    """One console line per phase, and figures every few seconds while waiting."""

    def __init__(self, name: str, every_s: float = 2.0) -> None:
        self.name = name
        self.every_s = every_s
        self.started = time.monotonic()
        self._last = 0.0

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        clock = dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f")[:-4]
        console.print(f"  {clock} +{elapsed:5.1f}s {self.name}: {text}", markup=False)

    def figures(self, rig: FaultRig, phase: str, lag: int | None, stale: int | None) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        rig.sent_log.update()
        parts = [f"{rig.sent_log.offset // 1024:,} KiB sent"]
        if lag is not None:
            parts.append(f"lag {lag:,}")
        if stale is not None:
            parts.append(f"stocks behind {stale:,}")
        parts.append(f"restarts {sum(rig.restarts.values())}")
        self.say(f"{phase}: {', '.join(parts)}")


def _hold(rig: FaultRig, seconds: float, progress: Progress, phase: str) -> None:
    """Keep the pipeline running (and supervised) for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for name in rig.supervise():
            progress.say(f"{name} exited; restarted")
        progress.figures(rig, phase, None, None)
        time.sleep(min(POLL_S, max(0.0, end - time.monotonic())))


@dataclass(frozen=True)
class Flow:
    """When the pipeline flowed again after ``since``; ``None`` = not within the timeout."""

    resumed_s: float | None  # every partition committed past its offset when the fault began
    recovered_s: float | None  # and lag 0, and every stock has a newer quote in Redis


def _wait_flowing(
    rig: FaultRig,
    progress: Progress,
    phase: str,
    timeout: float,
    since: float,
    baseline: list[int] | None = None,
) -> Flow:
    """Wait until the group is caught up and quotes flow again.

    Without ``baseline`` (warm-up): every stock's Redis quote is at least the
    newest tick sent by now. With ``baseline`` (the committed offsets when the
    fault began): every partition committed past it, and every stock's quote
    is newer than the newest tick sent when the fault ended, i.e. a tick sent
    after the fault went all the way through (this includes waiting for each
    stock's next tick: at most one snapshot interval).
    """
    rig.sent_log.update()
    target = dict(rig.sent_log.newest)
    strict = baseline is not None
    history: deque[tuple[float, list[int]]] = deque()
    resumed: float | None = None
    while (now := time.monotonic()) - since < timeout:
        for name in rig.supervise():
            progress.say(f"{name} exited; restarted")
        ends = rig.end_offsets()
        if ends is not None:
            history.append((now, ends))
        while len(history) > 1 and history[1][0] <= now - LAG_SLACK_S:
            history.popleft()
        committed = rig.committed() if history else None
        lag = None
        if committed is not None and history:
            reference = history[0][1]
            lag = sum(max(0, e - c) for e, c in zip(reference, committed, strict=True))
            if resumed is None and (
                baseline is None or all(c > b for c, b in zip(committed, baseline, strict=True))
            ):
                resumed = time.monotonic() - since
        stale = rig.stale_quotes(target, strict=strict)
        progress.figures(rig, phase, lag, stale)
        if lag == 0 and stale == 0 and resumed is not None:
            return Flow(resumed, time.monotonic() - since)
        time.sleep(POLL_S)
    return Flow(resumed, None)


def _drain(rig: FaultRig, progress: Progress, timeout: float = 180.0) -> bool:
    """After the feed stopped: until the receiver forwarded all and the group committed all."""
    deadline = time.monotonic() + timeout
    steady = 0
    previous: list[int] | None = None
    while time.monotonic() < deadline:
        rig.supervise()
        ends, committed = rig.end_offsets(), rig.committed()
        done = rig.receiver_drained() and ends is not None and ends == committed
        steady = steady + 1 if done and ends == previous else 0
        if steady >= 3:
            return True
        previous = ends
        lag = None if ends is None or committed is None else sum(ends) - sum(committed)
        progress.figures(rig, "draining", lag, None)
        time.sleep(POLL_S * 2)
    return False


def run_scenario(
    stack: LocalStack,
    scenario: Scenario,
    run_dir: Path,
    *,
    redis_db: int,
    stocks: int,
    interval_s: float,
    spread: bool,
    seconds: float,
    fault_s: float,
    recover_timeout: float,
    feeds: int = 1,
    redis_cluster: LocalRedisCluster | None = None,
) -> Row:
    progress = Progress(scenario.name)
    rig = FaultRig(
        stack,
        run_dir / scenario.name,
        redis_db=redis_db,
        stocks=stocks,
        interval_s=interval_s,
        spread=spread,
        feeds=max(feeds, scenario.feeds),
        redis_cluster=redis_cluster if scenario.redis_cluster else None,
    )
    recovered: float | None = None
    resumed: float | None = None
    in_no_candle: int | None = None
    error = ""
    counts: Counts | None = None
    try:
        rig.start()
        progress.say(f"started {len(rig.feeds)} simulator(s) and receiver(s), 2 workers "
                     f"(logs in {rig.run_dir})")  # fmt: skip
        started = time.monotonic()
        while len(rig.sent_log.newest) < stocks * 0.95 and time.monotonic() - started < 60:
            rig.supervise()
            time.sleep(POLL_S)
            rig.sent_log.update()
        if _wait_flowing(rig, progress, "warm-up", 120, time.monotonic()).recovered_s is None:
            raise RuntimeError("quotes never flowed before the fault")
        progress.say("quotes flow; normal feed")
        _hold(rig, seconds / 2, progress, "normal")
        baseline = rig.committed(timeout=10)
        if baseline is None:
            raise RuntimeError("committed offsets unreadable before the fault")
        progress.say(f"inject: {scenario.title}")
        scenario.inject(rig)
        if scenario.clear is not None:
            _hold(rig, fault_s, progress, "fault held")
            progress.say("clear the fault")
            scenario.clear(rig)
        cleared = time.monotonic()
        flow = _wait_flowing(rig, progress, "recovering", recover_timeout, cleared, baseline)
        resumed, recovered = flow.resumed_s, flow.recovered_s
        progress.say(
            "every partition processing again after "
            + (f"{resumed:.1f}s" if resumed is not None else "-")
            + "; recovered after "
            + (f"{recovered:.1f}s" if recovered is not None else f"NOT within {recover_timeout}s")
        )
        if scenario.after is not None:
            progress.say("after the fault: restoring the pipeline")
            scenario.after(rig)
        _hold(rig, seconds / 2, progress, "normal")
        for name in rig.simulators:
            rig.stop_child(name)
        progress.say("feed stopped; draining")
        if not _drain(rig, progress):
            error = "did not drain"
            progress.say("NOT drained within 180 s")
        in_no_candle = rig.ticks_in_no_candle()
        for name in (*rig.receivers, *WORKERS):
            rig.stop_child(name)
        counts = count(rig)
        progress.say(
            f"sent {counts.sent:,}, lost {counts.lost:,} (receiver {counts.lost_at_receiver:,}, "
            f"streams {counts.lost_in_streams:,}), unread by a killed receiver "
            f"{counts.unread:,}, duplicated {counts.duplicated:,}, "
            f"published twice {counts.published_twice:,}, "
            f"not at newest {counts.not_newest:,}, DLQ {counts.dlq:,}"
        )
    except Exception as exc:
        error = repr(exc)
        progress.say(f"failed: {error}")
    finally:
        rig.stop()
        with_restarts = sum(rig.restarts.values())
        # a fault left in place (the scenario failed half-way) must not spoil the next row
        stack.kafka.resume()
        if stack.kafka.proc is None or stack.kafka.proc.poll() is not None:
            stack.kafka.restart()
        if stack.redis.proc is None or stack.redis.proc.poll() is not None:
            stack.redis.start()
        if rig.redis_cluster is not None:
            for node in rig.redis_cluster.nodes:
                if node.proc is None:
                    node.start()
        rig.delete_topics()
    return Row(
        scenario, counts, resumed, recovered, with_restarts, error, len(rig.feeds), in_no_candle
    )


def table(rows: list[Row]) -> str:
    out = [
        "| fault | feeds | ticks sent | lost | unread by a killed receiver "
        "| duplicated in Kafka | published twice "
        "| Redis quotes not at newest tick | DLQ records | partitions processing again (s) "
        "| recovered after (s) | ticks in no candle | restarts | |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c = row.counts
        cells = [str(row.feeds)] + (
            [
                f"{c.sent:,}",
                f"{c.lost:,}",
                f"{c.unread:,}",
                f"{c.duplicated:,}",
                f"{c.published_twice:,}",
                f"{c.not_newest:,}",
                f"{c.dlq:,}",
            ]
            if c is not None
            else ["-"] * 7
        )
        res = f"{row.resumed_s:.1f}" if row.resumed_s is not None else "-"
        rec = f"{row.recovered_s:.1f}" if row.recovered_s is not None else "not recovered"
        verdict = "ok" if row.ok else (row.error or "FAIL")
        no_candle = f"{row.in_no_candle:,}" if row.in_no_candle is not None else "-"
        out.append(
            f"| {row.scenario.title} | {' | '.join(cells)} | {res} | {rec} | {no_candle} "
            f"| {row.restarts} | {verdict} |"
        )
    out.append(calibration_row(14))
    return "\n".join(out)


def faults_bench(
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help=f"scenario to run (repeatable): {', '.join(SCENARIOS)}"),
    ] = None,
    stocks: Annotated[int, typer.Option(min=5, help="stocks per snapshot")] = 5000,
    interval: Annotated[float, typer.Option(help="seconds between snapshots")] = 3.0,
    spread: Annotated[bool, typer.Option(help="each snapshot evenly over the interval")] = False,
    seconds: Annotated[float, typer.Option(help="normal feed around each fault (s)")] = 20.0,
    fault_seconds: Annotated[float, typer.Option(help="how long a fault is held (s)")] = 10.0,
    recover_timeout: Annotated[float, typer.Option(help="give up recovering after (s)")] = 90.0,
    run_dir: Annotated[
        Path | None, typer.Option(help="logs and data (default: a temporary directory)")
    ] = None,
    feeds: Annotated[
        int,
        typer.Option(
            min=1, max=2, help="vendor feeds: 2 runs every row with a second simulator and receiver"
        ),
    ] = 1,
) -> None:
    """Inject faults one at a time into the running pipeline; a table of what survived."""
    chosen = only or [name for name, sc in SCENARIOS.items() if sc.default]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    console.print(
        f"[bold]bench faults[/]: {len(chosen)} scenario(s), {stocks:,} stocks every {interval:g} s"
        f", {feeds} feed(s) (rows registered with two feeds: two)"
        f"{' (spread)' if spread else ''}, 2 workers, fault held {fault_seconds:g} s; "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}"
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hqfaults-") as tmp:
        base = run_dir or Path(tmp)
        with console.status("starting Kafka (KRaft) and Redis ..."):
            stack = LocalStack(base / "stack").start()
        redis_cluster = None
        if any(SCENARIOS[name].redis_cluster for name in chosen):
            with console.status("starting a Redis Cluster (3 masters, 3 replicas) ..."):
                redis_cluster = LocalRedisCluster(base / "redis-cluster")
                redis_cluster.start()
        try:
            for i, name in enumerate(chosen):
                console.print(f"[bold]{name}[/]: {SCENARIOS[name].title}")
                rows.append(
                    run_scenario(
                        stack,
                        SCENARIOS[name],
                        base,
                        redis_db=1 + i,
                        stocks=stocks,
                        interval_s=interval,
                        spread=spread,
                        seconds=seconds,
                        fault_s=fault_seconds,
                        recover_timeout=recover_timeout,
                        feeds=feeds,
                        redis_cluster=redis_cluster,
                    )
                )
        finally:
            stack.stop()
            if redis_cluster is not None:
                redis_cluster.stop()
    typer.echo("")
    typer.echo(table(rows))
    if not all(row.ok for row in rows):
        raise typer.Exit(1)
