"""The stream worker's processing CPU per tick under two settings, A/B in one process.

Shared by ``hqstream bench indicators`` and ``hqstream bench parse``. The
whole-pipeline figure (``hqstream bench cost``) is the honest one but, on a
shared machine, its noise is larger than most effects. This measures only the
worker's processing step (:meth:`streams.pipeline.Processor.process`: parse,
encode, stats, candles, bars and indicators, alerts; no Redis or Kafka I/O)
over the same simulated snapshots (``stocks`` stocks every 3 s from 09:30, so
a 1-minute candle closes every 20 ticks of a stock, as live), alternating the
two settings ``rounds`` times, with the garbage-collector tuning a worker
starts with. CPU is the process's (user + system); the lines are rendered
before the clock starts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from dataclasses import replace

from rich.console import Console
from rich.progress import Progress

from hqstream.bench.common import calibration_row, machine
from producers.quote_lines import SnapshotSource
from producers.universe import CODES_PER_PREFIX, allocate, build_listing
from schemas.redis_keys import Market
from schemas.topics import H_RECEIVE_TS
from streams.pipeline import Processor, RawRecord
from streams.runtime import tune_memory
from streams.settings import StreamsSettings

console = Console()
#: the listing per 100 stocks: (market, code prefix, count)
PLAN: list[tuple[Market, str, int]] = [
    ("SH", "600", 30), ("SH", "688", 10), ("SZ", "000", 25), ("SZ", "300", 25), ("BJ", "920", 10)
]  # fmt: skip


def simulated_batches(stocks: int, snapshots: int, batch: int) -> list[list[RawRecord]]:
    """``snapshots`` 3-second snapshots of ``stocks`` stocks from 09:30, as raw records."""
    scale = max(1, stocks // 100)
    plan = [(m, p, n * scale) for m, p, n in PLAN]
    if any(n > CODES_PER_PREFIX for _, _, n in plan):  # a whole market: as the simulator lists it
        plan = allocate(stocks)
    listing = [replace(s, suspended=False) for s in build_listing(plan, seed=3)]
    source = SnapshotSource(tuple(listing), dt.datetime(2026, 11, 23, 9, 30), 3.0, seed=3)
    received = [(H_RECEIVE_TS, b"1900000000000")]
    records: list[RawRecord] = []
    for _ in range(snapshots):
        for line in source.next().data.splitlines():
            records.append(RawRecord(None, line, received, "raw", 0, len(records), 0))
    return [records[i : i + batch] for i in range(0, len(records), batch)]


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def processing_cpu_s(
    batches: list[list[RawRecord]], settings: StreamsSettings, label: str, progress: Progress
) -> float:
    """CPU seconds of processing every batch with a fresh Processor."""
    processor = Processor(settings, publish_normalized=True)
    task = progress.add_task(label, total=len(batches))

    async def go() -> float:
        started = _cpu_s()
        for batch in batches:
            await processor.process(batch, None)
            progress.advance(task)
        return _cpu_s() - started

    return asyncio.run(go())


def compare(
    title: str,
    a: tuple[str, StreamsSettings],
    b: tuple[str, StreamsSettings],
    *,
    stocks: int,
    snapshots: int,
    rounds: int,
    batch: int,
) -> None:
    """Prints the table: µs CPU per tick of ``a`` and ``b``, round by round, and a calibration."""
    (name_a, settings_a), (name_b, settings_b) = a, b
    console.print(f"[bold]{title}[/]: {stocks} stocks x {snapshots} snapshots, "
                  f"{rounds} rounds; machine: {machine()}")  # fmt: skip
    batches = simulated_batches(stocks, snapshots, batch)
    tune_memory(StreamsSettings(metrics_port=0).gc_threshold)  # as a worker starts
    ticks = sum(len(b) for b in batches)
    rows = []
    print(f"\n{ticks:,} ticks per run ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"| round | {name_a}: µs CPU/tick | {name_b}: µs CPU/tick | {name_a} vs {name_b} "
          "| load avg |")  # fmt: skip
    print("|---|---:|---:|---:|---:|", flush=True)
    with Progress(console=console, transient=True) as progress:
        for i in range(1, rounds + 1):
            cpu_a = processing_cpu_s(batches, settings_a, name_a, progress)
            cpu_b = processing_cpu_s(batches, settings_b, name_b, progress)
            rows.append((cpu_a, cpu_b))
            print(f"| {i} | {1e6 * cpu_a / ticks:.1f} | {1e6 * cpu_b / ticks:.1f} | "
                  f"{100 * (cpu_a - cpu_b) / cpu_b:+.1f}% | {os.getloadavg()[0]:.1f} |",
                  flush=True)  # fmt: skip
    all_a, all_b = sum(r[0] for r in rows), sum(r[1] for r in rows)
    print(f"| all | {1e6 * all_a / ticks / rounds:.1f} | {1e6 * all_b / ticks / rounds:.1f} | "
          f"{100 * (all_a - all_b) / all_b:+.1f}% | |")  # fmt: skip
    print(calibration_row(5))
