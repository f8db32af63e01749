"""``hqstream bench cost``: CPU per tick of the whole pipeline, idle and at three rates.

The pipeline runs as ``hqstream up`` runs it (:mod:`hqstream.bench.pipeline_rig`),
with a WebSocket client subscribed to everything, on the bench's own broker and
Redis. Each phase feeds a steady rate (the simulator's ``--spread``) for
``--seconds`` after a warm-up, and reads every process's CPU time from /proc
(user + system, summed over its process group) before and after: the table
gives each process's share of a core and its CPU-ms per 1,000 ticks received.
The broker and Redis are measured when the bench started them (variables
unset). The simulator and the client are shown apart: they stand for the
vendor and the front ends, not for hqstream. A calibration figure measured in
the same run lets tables of different days be compared as ratios.

``--compare REF`` runs the same phases for another git ref in the same run:
the ref is checked out in a temporary worktree (:mod:`hqstream.bench.ref_code`)
and gets a pipeline of its own, with its own broker and Redis, beside this
checkout's. Only one side is fed at a time (the other idles, feed stopped), and
each phase is measured in ``--rounds`` slices per side in the order A B B A ...,
so a change of the machine's load during the run weighs on both sides equally.
One table per phase gives both sides and the ratio.

Before the phases, each side is fed until its broker's JIT compilers are
quiet (``--broker-warmup``): a fresh JVM spends its first minutes compiling
(the C2 compiler alone took 38% of a core 40 s after the broker started, at
1,667 ticks/s, and under 1% two minutes later), which is start-up, not cost
per tick, and would weigh on whichever phase comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import websockets
from rich.console import Console
from rich.live import Live

from hqstream.bench.common import BenchEnv, bench_env, calibration_row, machine
from hqstream.bench.pipeline_rig import Pipeline, pipeline, pipeline_rows
from hqstream.bench.proc_cpu import cpu_s, group_cpu_s
from hqstream.bench.ref_code import build_ref_native, drift_warning, head_label, ref_checkout
from hqstream.local_runner import local_partitions

console = Console()
SCRAPE_EVERY_S = 10.0  # the receiver's line count, for the live figures while measured


@dataclass(frozen=True)
class Phase:
    name: str
    stocks: int
    interval: float = 3.0
    snapshots: int = 0  # > 0: that many snapshots, then a connected, quiet feed


PHASES = {
    "idle": Phase("idle (feed connected, quiet)", 1000, 3.0, snapshots=1),
    "333": Phase("333 ticks/s", 1000, 3.0),
    "1667": Phase("1,667 ticks/s", 5000, 3.0),
    "5000": Phase("5,000 ticks/s", 5000, 1.0),
}


class Client(threading.Thread):
    """A front end subscribed to everything, reading and dropping every frame."""

    def __init__(self, port: int) -> None:
        super().__init__(name="cost-client", daemon=True)
        self.url = f"ws://127.0.0.1:{port}/api/realtime/ws"
        self.stop = threading.Event()
        self.frames = 0

    def run(self) -> None:
        asyncio.run(self._run())

    def cpu_s(self) -> float:
        """CPU seconds this client's thread has used (0 before it started)."""
        try:
            with open(f"/proc/self/task/{self.native_id}/stat", "rb") as fh:
                return cpu_s(fh.read())
        except (OSError, TypeError):
            return 0.0

    async def _run(self) -> None:
        async with websockets.connect(self.url, max_size=None, compression=None) as ws:
            await ws.send('{"type":"subscribe_all"}')
            while not self.stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), timeout=0.5)
                except TimeoutError:
                    continue
                self.frames += 1


@dataclass
class Side:
    """One pipeline under measurement: this checkout's, or a ref's."""

    label: str
    env: BenchEnv
    rig: Pipeline
    client: Client


Usage = dict[str, float]  # CPU seconds by process, and "_wall"/"_ticks"


def _measure(side: Side, phase: Phase, seconds: float, warmup: float) -> Usage:
    rig, env = side.rig, side.env
    lines_before = rig.lines_received()
    rig.feed(phase.stocks, phase.interval, spread=True, snapshots=phase.snapshots)
    client_cpu = side.client.cpu_s
    with Live(console=console, refresh_per_second=2) as live:
        # the warm-up starts once a whole snapshot came through (idle's only one)
        try:
            rig.wait_for_feed(
                lines_before,
                phase.stocks,
                lambda what: live.update(f"{side.label}, {phase.name}: {what}"),
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{side.label}, {phase.name}: {exc}") from exc
        until = time.monotonic() + warmup
        while (left := until - time.monotonic()) > 0:
            live.update(f"{side.label}, {phase.name}: warming up, {left:4.1f} s")
            time.sleep(min(0.5, left))
        groups = rig.groups(env.pids)
        before = {name: group_cpu_s(g) for name, g in groups.items()}
        own0, lines0, t0 = client_cpu(), rig.lines_received(), time.monotonic()
        batches0 = rig.worker_batches()
        rate, scraped = "-", t0
        while (elapsed := time.monotonic() - t0) < seconds:
            # the receiver's metrics page costs it ~4 ms of CPU: scraped twice a
            # second it was ~0.8 % of a core, most of an idle receiver's figure
            if time.monotonic() - scraped >= SCRAPE_EVERY_S:
                scraped = time.monotonic()
                rate = f"{(rig.lines_received() - lines0) / max(elapsed, 1e-9):,.0f}"
            live.update(
                f"{side.label}, {phase.name}: {elapsed:4.1f}/{seconds:.0f} s, "
                f"{rate} ticks/s received, load average {os.getloadavg()[0]:.1f}"
            )
            time.sleep(0.5)
        wall = time.monotonic() - t0
        after = {name: group_cpu_s(g) for name, g in groups.items()}
        lines = rig.lines_received() - lines0
        batches = rig.worker_batches() - batches0
    if dead := rig.dead():
        raise RuntimeError(f"{side.label}: components died during {phase.name}: {dead}")
    out = {name: after[name] - before[name] for name in groups}
    out["client"] = client_cpu() - own0
    out["_wall"], out["_ticks"], out["_batches"] = wall, lines, batches
    return out


def _add(total: Usage, more: Usage) -> None:
    for name, value in more.items():
        total[name] = total.get(name, 0.0) + value


def partition_counts(option: str, workers: int, *, comparing: bool = False) -> list[int]:
    """``--partitions``: one or two counts (default: as ``hqstream up``). ``comparing``:
    another comparison (``--indicators compare``) is asked for, so only one count."""
    try:
        counts = [int(n) for n in option.split(",")] if option else []
    except ValueError:
        raise typer.BadParameter("one or two numbers", param_hint="--partitions") from None
    if len(counts) > 2 or min(counts, default=1) < 1:
        raise typer.BadParameter("one or two counts of at least 1", param_hint="--partitions")
    if comparing and len(counts) == 2:
        raise typer.BadParameter("one comparison at a time: two --partitions or "
                                 "--indicators compare")  # fmt: skip
    return counts or [local_partitions(workers)]


@contextlib.contextmanager
def _side(
    stack: contextlib.ExitStack,
    label: str,
    workers: int,
    code: Path | None,
    indicators: bool,
    partitions: int,
) -> Iterator[Side]:
    env = stack.enter_context(bench_env(need_redis=True))
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hqcost-"))
    worker_env = {"HQ_STREAMS_INDICATORS": "true" if indicators else "false"}
    rig = stack.enter_context(
        pipeline(env, Path(tmp), workers, code=code, worker_env=worker_env, partitions=partitions)
    )
    client = Client(rig.gateway_port)
    client.start()
    try:
        yield Side(label, env, rig, client)
    finally:
        client.stop.set()
        client.join(10)


def cost_bench(
    seconds: Annotated[float, typer.Option(help="measured seconds per phase (and side)")] = 60.0,
    warmup: Annotated[float, typer.Option(help="seconds before each slice is measured")] = 10.0,
    phases: Annotated[
        str, typer.Option(help="comma-separated phases: idle, 333, 1667, 5000 (ticks/s)")
    ] = "idle,333,1667,5000",
    workers: Annotated[int, typer.Option(min=1, help="stream worker processes")] = 1,
    compare: Annotated[
        str,
        typer.Option(
            help="another git ref (branch, tag, commit) measured side by side in the same run"
        ),
    ] = "",
    indicators: Annotated[
        str,
        typer.Option(
            help="the workers' HQ_STREAMS_INDICATORS: on, off, or compare (two pipelines of "
            "this checkout, indicators off and on, side by side as with --compare)"
        ),
    ] = "on",
    rounds: Annotated[
        int,
        typer.Option(min=1, help="with two sides: slices per phase and side, measured A B B A ..."),
    ] = 2,
    partitions: Annotated[
        str,
        typer.Option(
            help="partitions of the tick topics (HQ_PARTITIONS; default: as `hqstream up`); "
            "two counts, e.g. 12,4: two pipelines of this checkout side by side, or with "
            "--compare, the ref's count and this checkout's"
        ),
    ] = "",
    broker_warmup: Annotated[
        float,
        typer.Option(
            help="at most this many seconds of feed before the phases, until the bench's "
            "broker's JIT compilers are quiet (0: none)"
        ),
    ] = 300.0,
) -> None:
    """CPU-ms per 1,000 ticks of every process of the pipeline, idle and at steady rates."""
    chosen = [PHASES[p.strip()] for p in phases.split(",") if p.strip()]
    if indicators not in ("on", "off", "compare"):
        raise typer.BadParameter("on, off or compare", param_hint="--indicators")
    if compare and indicators == "compare":
        raise typer.BadParameter("one comparison at a time", param_hint="--indicators compare")
    counts = partition_counts(partitions, workers, comparing=indicators == "compare")
    two_sides = bool(compare) or indicators == "compare" or len(counts) == 2
    rounds = rounds if two_sides else 1
    console.print(
        f"[bold]bench cost[/]: {', '.join(p.name for p in chosen)}; {seconds:.0f} s each "
        f"(in {rounds} slice(s) after {warmup:.0f} s warm-up), {workers} worker(s); "
        f"machine: {machine()}; load average {_loadavg()}"
    )
    this = head_label() if compare else "this checkout"
    with contextlib.ExitStack() as stack:
        sides: list[Side] = []
        if compare:
            ref = stack.enter_context(ref_checkout(compare))
            if warning := drift_warning(ref):
                console.print(f"[yellow]{warning}[/]")
            if note := build_ref_native(ref, console.print):
                console.print(f"[yellow]{note}[/]")
            console.print(f"comparing {ref.label}, checked out in {ref.path}, with {this}")
            on, (n_ref, n_this) = indicators == "on", (counts * 2)[:2]
            ref_label, this_label = ref.label, this
            if n_ref != n_this:  # each side's partitions in its column's name
                ref_label, this_label = f"{ref.label} ({n_ref} p.)", f"{this} ({n_this} p.)"
            ref_side = _side(stack, ref_label, workers, ref.path, on, n_ref)
            sides.append(stack.enter_context(ref_side))
            sides.append(stack.enter_context(_side(stack, this_label, workers, None, on, n_this)))
        elif indicators == "compare":
            for on in (False, True):
                label = f"indicators {'on' if on else 'off'}"
                ctx = _side(stack, label, workers, None, on, counts[0])
                sides.append(stack.enter_context(ctx))
        else:
            on = indicators == "on"
            for n in counts:
                label = f"{n} partitions" if len(counts) == 2 else this
                sides.append(stack.enter_context(_side(stack, label, workers, None, on, n)))
        fed = [p for p in chosen if p.snapshots == 0]
        busiest = max(fed, key=lambda p: p.stocks / p.interval, default=PHASES["1667"])
        for side in sides:
            feed = (busiest.stocks, busiest.interval, True)
            label = f"{side.label} at {busiest.name}"
            side.rig.warm_broker(side.env.pids.get("broker"), label, feed, broker_warmup)
        results: list[tuple[Phase, list[Usage]]] = []
        for phase in chosen:
            usage: list[Usage] = [{} for _ in sides]
            for slice_no in range(rounds):
                order = list(enumerate(sides))
                for i, side in order if slice_no % 2 == 0 else reversed(order):
                    _add(usage[i], _measure(side, phase, seconds / rounds, warmup))
                    if len(sides) > 1:
                        side.rig.stop_feed()  # the other side runs alone
            results.append((phase, usage))
    load = _loadavg()
    if len(sides) == 1:
        _report([(phase, usage[0]) for phase, usage in results])
        print(f"load average at the end: {load}")
    else:
        _report_compare([s.label for s in sides], results, load)


def _loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _cost(usage: Usage, pick: list[str]) -> tuple[float, float]:
    """(% of a core, CPU-ms per 1,000 ticks; NaN without ticks) of the processes ``pick``."""
    cpu = sum(usage.get(n, 0.0) for n in pick)
    per_k = 1e6 * cpu / usage["_ticks"] if usage["_ticks"] > 0 else float("nan")
    return 100 * cpu / usage["_wall"], per_k


def _cell(usage: Usage, pick: list[str]) -> str:
    share, per_k = _cost(usage, pick)
    return f"{share:.1f}% · {per_k:.1f}" if per_k == per_k else f"{share:.1f}% · -"


def _batches(usage: Usage) -> str:
    n = usage.get("_batches", 0.0)
    per = f" ({usage['_ticks'] / n:,.1f})" if n > 0 else ""
    return f"{n / usage['_wall']:,.0f}/s{per}"


def _report(results: list[tuple[Phase, Usage]]) -> None:
    rows = pipeline_rows(results[0][1])
    head = "| process | " + " | ".join(f"{p.name}: % core, ms/1k ticks" for p, _ in results) + " |"
    print()
    print(head)
    print("|---|" + "---:|" * len(results))
    for name, pick in _row_picks(rows):
        print(f"| {name} | {' | '.join(_cell(u, pick) for _, u in results)} |")
    ticks = " | ".join(f"{u['_ticks'] / u['_wall']:,.0f}/s" for _, u in results)
    print(f"| ticks received | {ticks} |")
    batches = " | ".join(_batches(u) for _, u in results)
    print(f"| stream worker batches (ticks per batch) | {batches} |")
    print(calibration_row(len(results) + 1))


def _row_picks(rows: list[str]) -> list[tuple[str, list[str]]]:
    """Table rows: each process, the pipeline's sum, then the simulator and client apart."""
    picks = [(name, [name]) for name in rows]
    picks.append((f"**pipeline** ({' + '.join(rows)})", rows))
    picks += [(f"{name} (apart)", [name]) for name in ("simulate", "client")]
    return picks


def _report_compare(labels: list[str], results: list[tuple[Phase, list[Usage]]], load: str) -> None:
    ref, this = labels
    for phase, (ref_usage, this_usage) in results:
        idle = not (ref_usage["_ticks"] and this_usage["_ticks"])
        unit = "% core" if idle else "% core · ms/1k ticks"
        print(f"\n{phase.name}\n")
        print(f"| process | {ref}: {unit} | {this}: {unit} | ratio {ref} / {this} |")
        print("|---|---:|---:|---:|")
        for name, pick in _row_picks(pipeline_rows({**ref_usage, **this_usage})):
            ref_share, ref_k = _cost(ref_usage, pick)
            this_share, this_k = _cost(this_usage, pick)
            num, den = (ref_share, this_share) if idle else (ref_k, this_k)
            ratio = f"{num / den:.2f}x" if den > 0 else "-"
            print(f"| {name} | {_cell(ref_usage, pick)} | {_cell(this_usage, pick)} | {ratio} |")
        rates = [f"{u['_ticks'] / u['_wall']:,.0f}/s" for u in (ref_usage, this_usage)]
        print(f"| ticks received | {rates[0]} | {rates[1]} | |")
        batches = [_batches(u) for u in (ref_usage, this_usage)]
        print(f"| stream worker batches (ticks per batch) | {batches[0]} | {batches[1]} | |")
    print()
    print(f"{calibration_row()}; load average at the end: {load}")
