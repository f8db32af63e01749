"""``hqstream bench indicators``: the stream worker's CPU per tick with indicators on vs off.

The whole-pipeline figure (``hqstream bench cost --indicators compare``) is
the honest one but, on a shared machine, its noise is larger than the effect.
This measures only what indicators change: the worker's processing step
(:meth:`streams.pipeline.Processor.process`: parse, encode, stats, candles,
bars and indicators, alerts; no Redis or Kafka I/O) over the same simulated
snapshots (``--stocks`` stocks every 3 s from 09:30, so a 1-minute candle
closes every 20 ticks of a stock, as live), in one process, alternating on and
off ``--rounds`` times, with the garbage-collector tuning a worker starts with.
CPU is the process's (user + system); the lines are rendered before the clock
starts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from dataclasses import replace
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from hqstream.bench.common import calibration_row, machine
from producers.quote_lines import SnapshotSource
from producers.universe import build_listing
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


def _batches(stocks: int, snapshots: int, batch: int) -> list[list[RawRecord]]:
    scale = max(1, stocks // 100)
    listing = [replace(s, suspended=False)
               for s in build_listing([(m, p, n * scale) for m, p, n in PLAN], seed=3)]  # fmt: skip
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


def _run(batches: list[list[RawRecord]], indicators: bool, progress: Progress) -> float:
    """CPU seconds of processing every batch with a fresh Processor."""
    processor = Processor(StreamsSettings(metrics_port=0, indicators=indicators),
                          publish_normalized=True)  # fmt: skip
    task = progress.add_task(f"indicators {'on' if indicators else 'off'}", total=len(batches))

    async def go() -> float:
        started = _cpu_s()
        for batch in batches:
            await processor.process(batch, None)
            progress.advance(task)
        return _cpu_s() - started

    return asyncio.run(go())


def indicators_bench(
    stocks: Annotated[int, typer.Option(help="stocks per snapshot")] = 1000,
    snapshots: Annotated[int, typer.Option(help="3-second snapshots (20 per minute)")] = 200,
    rounds: Annotated[int, typer.Option(min=1, help="on/off pairs, alternating")] = 3,
    batch: Annotated[int, typer.Option(help="records per processed batch")] = 2000,
) -> None:
    """The worker's processing CPU per tick with HQ_STREAMS_INDICATORS on vs off."""
    console.print(f"[bold]bench indicators[/]: {stocks} stocks x {snapshots} snapshots, "
                  f"{rounds} rounds; machine: {machine()}")  # fmt: skip
    batches = _batches(stocks, snapshots, batch)
    tune_memory(StreamsSettings(metrics_port=0).gc_threshold)  # as a worker starts
    ticks = sum(len(b) for b in batches)
    rows = []
    print(f"\n{ticks:,} ticks per run ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print("| round | indicators on: µs CPU/tick | off: µs CPU/tick | more | load avg |")
    print("|---|---:|---:|---:|---:|", flush=True)
    with Progress(console=console, transient=True) as progress:
        for i in range(1, rounds + 1):
            on = _run(batches, True, progress)
            off = _run(batches, False, progress)
            rows.append((i, on, off))
            more = 100 * (on - off) / off
            print(f"| {i} | {1e6 * on / ticks:.1f} | {1e6 * off / ticks:.1f} | {more:+.1f}% | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)  # fmt: skip
    on_all, off_all = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"| all | {1e6 * on_all / ticks / rounds:.1f} | {1e6 * off_all / ticks / rounds:.1f} | "
          f"{100 * (on_all - off_all) / off_all:+.1f}% | |")  # fmt: skip
    print(calibration_row(5))
