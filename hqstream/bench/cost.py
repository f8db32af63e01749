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
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import websockets
from rich.console import Console
from rich.live import Live

from hqstream.bench.common import BenchEnv, bench_env, calibration_row, machine
from hqstream.bench.pipeline_rig import Pipeline, pipeline

console = Console()
CLK_TCK = os.sysconf("SC_CLK_TCK")
HQSTREAM = ("produce", "streams", "gateway", "broker", "redis")  # the pipeline's own cost
LINES = re.compile(rb"^hq_receiver_lines_total(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)


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


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _lines_received(rig: Pipeline) -> float:
    url = f"http://127.0.0.1:{rig.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = resp.read()
    except OSError:
        return 0.0  # not serving yet: nothing received
    return sum(float(m) for m in LINES.findall(body))


def _groups(rig: Pipeline, env: BenchEnv) -> dict[str, int]:
    """Process-group ids by name: every component, the broker and Redis if ours."""
    out = {c.name: c.proc.pid for c in rig.children if c.proc is not None}
    out.update(env.pids)
    return out


class Client(threading.Thread):
    """A front end subscribed to everything, reading and dropping every frame."""

    def __init__(self, port: int) -> None:
        super().__init__(name="cost-client", daemon=True)
        self.url = f"ws://127.0.0.1:{port}/api/realtime/ws"
        self.stop = threading.Event()
        self.frames = 0

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        async with websockets.connect(self.url, max_size=None, compression=None) as ws:
            await ws.send('{"type":"subscribe_all"}')
            while not self.stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), timeout=0.5)
                except TimeoutError:
                    continue
                self.frames += 1


def _measure(
    rig: Pipeline, env: BenchEnv, phase: Phase, seconds: float, warmup: float
) -> dict[str, float]:
    rig.feed(phase.stocks, phase.interval, spread=True, snapshots=phase.snapshots)
    with Live(console=console, refresh_per_second=2) as live:
        until = time.monotonic() + warmup
        while (left := until - time.monotonic()) > 0:
            live.update(f"{phase.name}: warming up, {left:4.1f} s")
            time.sleep(min(0.5, left))
        groups = _groups(rig, env)
        before = {name: group_cpu_s(g) for name, g in groups.items()}
        own0, lines0, t0 = _own_cpu_s(), _lines_received(rig), time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            lines = _lines_received(rig) - lines0
            live.update(
                f"{phase.name}: {elapsed:4.1f}/{seconds:.0f} s, "
                f"{lines / max(elapsed, 1e-9):,.0f} ticks/s received"
            )
            time.sleep(0.5)
        wall = time.monotonic() - t0
        after = {name: group_cpu_s(g) for name, g in groups.items()}
        lines = _lines_received(rig) - lines0
    if dead := rig.dead():
        raise RuntimeError(f"components died during {phase.name}: {dead}")
    out = {name: after[name] - before[name] for name in groups}
    out["client"] = _own_cpu_s() - own0
    out["_wall"], out["_ticks"] = wall, lines
    return out


def cost_bench(
    seconds: Annotated[float, typer.Option(help="measured seconds per phase")] = 60.0,
    warmup: Annotated[float, typer.Option(help="seconds before each phase is measured")] = 10.0,
    phases: Annotated[
        str, typer.Option(help="comma-separated phases: idle, 333, 1667, 5000 (ticks/s)")
    ] = "idle,333,1667,5000",
    workers: Annotated[int, typer.Option(min=1, help="stream worker processes")] = 1,
    indicators: Annotated[
        str,
        typer.Option(
            help="the workers' HQ_STREAMS_INDICATORS: on, off, or compare (pipelines with "
            "them on and off alternately, --rounds times, and the workers' cost of each)"
        ),
    ] = "on",
    rounds: Annotated[int, typer.Option(min=1, help="with --indicators compare")] = 1,
) -> None:
    """CPU-ms per 1,000 ticks of every process of the pipeline, idle and at steady rates."""
    chosen = [PHASES[p.strip()] for p in phases.split(",") if p.strip()]
    if indicators not in ("on", "off", "compare"):
        raise typer.BadParameter("--indicators is on, off or compare")
    modes = ["on", "off"] * rounds if indicators == "compare" else [indicators]
    console.print(
        f"[bold]bench cost[/]: {', '.join(p.name for p in chosen)}; {seconds:.0f} s each after "
        f"{warmup:.0f} s warm-up, {workers} worker(s), indicators {' / '.join(modes)}; "
        f"machine: {machine()}"
    )
    runs: list[tuple[str, list[tuple[Phase, dict[str, float]]]]] = []
    with bench_env(need_redis=True) as env:
        for mode in modes:
            runs.append((mode, _run_pipeline(env, chosen, seconds, warmup, workers, mode)))
            console.print(f"indicators {mode}: done (load average {os.getloadavg()[0]:.1f})")
    for mode, results in runs:
        print(f"\nindicators {mode}:")
        _report(results)
    if indicators == "compare":
        _report_indicator_cost(runs)


def _run_pipeline(
    env: BenchEnv, chosen: list[Phase], seconds: float, warmup: float, workers: int, mode: str
) -> list[tuple[Phase, dict[str, float]]]:
    """Every phase measured on a fresh pipeline whose workers run with indicators ``mode``."""
    results: list[tuple[Phase, dict[str, float]]] = []
    worker_env = {"HQ_STREAMS_INDICATORS": "true" if mode == "on" else "false"}
    with (
        tempfile.TemporaryDirectory(prefix="hqcost-") as tmp,
        pipeline(env, Path(tmp), workers=workers, worker_env=worker_env) as rig,
    ):
        client = Client(rig.gateway_port)
        client.start()
        try:
            for phase in chosen:
                results.append((phase, _measure(rig, env, phase, seconds, warmup)))
        finally:
            client.stop.set()
            client.join(10)
    return results


def _report_indicator_cost(runs: list[tuple[str, list[tuple[Phase, dict[str, float]]]]]) -> None:
    """The stream workers' CPU-ms per 1,000 ticks, indicators on vs off, per phase and round."""
    phases = [p for p, _ in runs[0][1] if p.snapshots == 0]  # idle has no ticks to divide by

    def per_k(results: list[tuple[Phase, dict[str, float]]], phase: Phase) -> float:
        for p, r in results:
            if p == phase:
                cpu = sum(v for n, v in r.items() if n.startswith("streams"))
                return 1e6 * cpu / r["_ticks"] if r["_ticks"] > 0 else float("nan")
        return float("nan")

    print("\n| stream workers, ms CPU per 1k ticks | " + " | ".join(p.name for p in phases) + " |")
    print("|---|" + "---:|" * len(phases))
    on = [r for mode, r in runs if mode == "on"]
    off = [r for mode, r in runs if mode == "off"]
    for i, (a, b) in enumerate(zip(on, off, strict=True), start=1):
        cells = []
        for phase in phases:
            x, y = per_k(a, phase), per_k(b, phase)
            cells.append(f"{x:.1f} vs {y:.1f} ({100 * (x - y) / y:+.0f}%)")
        print(f"| round {i}: indicators on vs off | " + " | ".join(cells) + " |")


def _report(results: list[tuple[Phase, dict[str, float]]]) -> None:
    names = [n for n in results[0][1] if not n.startswith("_") and n not in ("simulate", "client")]
    rows = sorted(
        names,
        key=lambda n: (HQSTREAM.index(n.split("-")[0]) if n.split("-")[0] in HQSTREAM else 9, n),
    )
    head = "| process | " + " | ".join(f"{p.name}: % core, ms/1k ticks" for p, _ in results) + " |"
    print()
    print(head)
    print("|---|" + "---:|" * len(results))

    def cells(pick: list[str]) -> str:
        out = []
        for _, r in results:
            cpu = sum(r.get(n, 0.0) for n in pick)
            per_k = 1e6 * cpu / r["_ticks"] if r["_ticks"] > 0 else float("nan")
            share = 100 * cpu / r["_wall"]
            out.append(f"{share:.1f}% · {per_k:.1f}" if per_k == per_k else f"{share:.1f}% · -")
        return " | ".join(out)

    for name in rows:
        print(f"| {name} | {cells([name])} |")
    print(f"| **pipeline** ({' + '.join(rows)}) | {cells(rows)} |")
    for name in ("simulate", "client"):
        print(f"| {name} (apart) | {cells([name])} |")
    ticks = " | ".join(f"{r['_ticks'] / r['_wall']:,.0f}/s" for _, r in results)
    print(f"| ticks received | {ticks} |")
    print(calibration_row() + " |" * (len(results) - 1))
