"""The measuring side of the gateway benchmarks: what the clients saw, CPU, memory, tables.

:class:`Tally` counts what every client received and, inside the measured
window, each quote's ``now - receive_ts``. :class:`CpuWindow` turns
``/proc/<pid>/stat`` (utime + stime) and ``/proc/stat`` into CPU% of named
processes and of the whole machine over that window, so a saturated load
generator is not mistaken for a slow gateway; :func:`rss_kb` reads VmRSS.
The rich tables and the one :data:`console` they are drawn on live here too.

Reads /proc only (Linux); never starts, stops or connects to anything.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
from rich.console import Console
from rich.table import Table

_TICK = os.sysconf("SC_CLK_TCK")

console = Console()
"""Shared by the live table and the clients' failure log, so neither garbles the other."""


def rss_kb(pid: int) -> int:
    """Resident set size of a process (VmRSS), KiB; 0 if /proc does not say."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


@dataclass
class CpuWindow:
    """CPU% of named processes and of the machine between ``start`` and ``stop``."""

    pids: dict[str, int]
    cpu0: dict[str, float] = field(default_factory=dict)
    machine0: tuple[float, float] = (0.0, 0.0)
    wall0: float = 0.0
    result: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.cpu0 = {name: _cpu_s(pid) for name, pid in self.pids.items()}
        self.machine0 = _machine_busy()
        self.wall0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall0
        busy, total = _machine_busy()
        cores = os.cpu_count() or 1
        self.result = {
            name: 100 * (_cpu_s(pid) - self.cpu0[name]) / wall for name, pid in self.pids.items()
        }
        self.result["machine"] = (
            100 * cores * (busy - self.machine0[0]) / max(1e-9, total - self.machine0[1])
        )
        return self.result


def percentile(values: list[float], p: float) -> float:
    """The ``p`` (0..1) quantile by rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


@dataclass
class Tally:
    """What all clients of one run received, and how they failed."""

    latencies: list[float] = field(default_factory=list)
    received: int = 0  # quotes
    frames: int = 0  # "quotes" messages
    connected: int = 0
    closed: int = 0
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)  # "error" messages by code
    measuring: bool = False

    def on_message(self, data: bytes) -> None:
        if not data.startswith(b'{"type":"quotes"'):
            if data.startswith(b'{"type":"error"'):
                self.server_errors[orjson.loads(data)["code"]] += 1
            return
        quotes = orjson.loads(data)["data"]
        self.frames += 1
        self.received += len(quotes)
        if self.measuring:
            now = time.time() * 1000
            self.latencies.extend([now - q["receive_ts"] for q in quotes])

    def failed(self, kind: str, exc: BaseException | None = None) -> None:
        self.error_kinds[kind] += 1
        self.errors += 1
        if self.errors <= 3 and exc is not None:
            console.log(f"client failed: {exc!r}")


def table(title: str, rows: dict[str, str]) -> Table:
    """A two-column figure/value table."""
    result = Table(title=title)
    result.add_column("figure")
    result.add_column("value", justify="right")
    for k, v in rows.items():
        result.add_row(k, v)
    return result


def live_rows(tally: Tally, started: float, phase: str) -> dict[str, str]:
    """The figures shown while a run is under way (latency over the last 20,000 quotes)."""
    lat = tally.latencies[-20000:]
    return {
        "phase": phase,
        "elapsed s": f"{time.monotonic() - started:.0f}",
        "connections held": str(tally.connected),
        "failed connections": f"{tally.errors} {dict(tally.error_kinds) or ''}",
        "quotes delivered": str(tally.received),
        "p50 ms (recent)": f"{percentile(lat, 0.5):.1f}",
        "p99 ms (recent)": f"{percentile(lat, 0.99):.1f}",
    }
