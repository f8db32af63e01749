"""``hqstream bench e2e``: feed receive -> WebSocket delivery, the whole pipeline.

Every component runs as its own process, exactly as ``hqstream up`` runs it:
simulator -> receiver -> Kafka -> stream worker -> Kafka -> gateway -> a
WebSocket client subscribed to everything. The receiver stamps ``receive_ts``
when it reads a line; the quote carries it through the stream worker
(``process_ts`` is added there); the client measures ``now - receive_ts`` at
delivery. Reports p50/p99/max for the whole path and for receive -> normalized,
the worst second's p99 (a stall of a second hides in a minute's p99), and the
ticks of each exchange minute's first snapshot apart: every one closes its
stock's 1-minute candle, the heaviest work of a minute, which a run shorter
than ~60 s never reaches (the simulated exchange clock starts at 09:30:00),
the stream workers' garbage-collector pauses over the run (from their
``hq_streams_gc_pause_seconds``): every batch in flight waits for one; and
what each process ran and waited for a core per snapshot (:class:`CoreShares`):
on two cores a burst's last quote waits for the CPU of them all.
The vendor sends each snapshot as a burst, so ``--stocks``/``--interval``
choose the burst size at a given average rate (5,000 / 3 s = 1,667 ticks/s);
``--spread`` sends the same lines as a steady stream at that rate instead.
For bursts, each burst's slowest quote is shown too (median and max over the
run): a run's p99 is set by its worst few bursts, the median by the typical one.
``--compare REF`` runs another git ref's pipeline (in a temporary worktree,
with this client) and this checkout's, ``--rounds`` runs each, alternating,
and prints every run and each side's medians with their ratio: a shared
host's speed moves between runs (the pipeline's CPU per burst by up to 1.4x
at the same calibration), so one run of each side tells little.
Loopback only; bounded by ``--seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import os
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import websockets
from rich.console import Console
from rich.live import Live

from api.settings import GatewaySettings
from hqstream.bench.common import (
    bench_env,
    machine,
    measure_calibration_s,
    measure_parse_calibration_us,
)
from hqstream.bench.pipeline_rig import GcPauses, pipeline, pipeline_rows
from hqstream.bench.proc_cpu import group_sched_ns, sched_ns
from hqstream.bench.ref_code import build_ref_native, drift_warning, head_label, ref_checkout
from hqstream.local_runner import BROKER_BACKGROUND_NICE, REDIS_NICE, local_partitions

console = Console()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: quotes read by the receiver further apart than this belong to different bursts
BURST_GAP_MS = 1000.0


@dataclass
class Latencies:
    """What a run measured, in ms: receive -> delivery, receive -> normalized, and each
    delivery's second of the measurement (for :meth:`worst_second`)."""

    total: list[float] = field(default_factory=list)
    stage: list[float] = field(default_factory=list)
    second: list[int] = field(default_factory=list)
    received: list[float] = field(default_factory=list)  # each quote's receive_ts, epoch ms
    started_at: float = 0.0  # wall clock (epoch s) of the measurement's second 0
    #: receive -> delivery of the ticks of each exchange minute's first snapshot
    #: (stamped within ``opening_ms`` of the minute): every one closes its stock's
    #: candle, the minute's work; a run shorter than ~60 s has none
    minute_first: list[float] = field(default_factory=list)
    opening_ms: int = 3000

    def add(self, quote: dict[str, Any], now_ms: float, second: int) -> None:
        """A quote delivered at ``now_ms`` (epoch ms), in the measurement's ``second``."""
        received = quote["receive_ts"]
        total = now_ms - received
        self.total.append(total)
        self.stage.append(quote["process_ts"] - received)
        self.second.append(second)
        self.received.append(received)
        if quote["exchange_ts"] % 60_000 < self.opening_ms:
            self.minute_first.append(total)

    def by_second(self) -> dict[int, tuple[list[float], list[float]]]:
        """Each measured second's receive -> delivery and receive -> normalized values."""
        seconds: dict[int, tuple[list[float], list[float]]] = {}
        for sec, total, stage in zip(self.second, self.total, self.stage, strict=True):
            row = seconds.setdefault(sec, ([], []))
            row[0].append(total)
            row[1].append(stage)
        return seconds

    def per_second_csv(self) -> str:
        """One line per measured second: where a run's tail comes from."""
        lines = ["second,utc,quotes,p50_ms,p99_ms,max_ms,normalized_p50_ms,normalized_p99_ms"]
        for sec, (total, stage) in sorted(self.by_second().items()):
            utc = datetime.fromtimestamp(self.started_at + sec, UTC).strftime("%H:%M:%S")
            lines.append(
                f"{sec},{utc},{len(total)},{_pct(total, 0.5):.1f},{_pct(total, 0.99):.1f},"
                f"{max(total):.1f},{_pct(stage, 0.5):.1f},{_pct(stage, 0.99):.1f}"
            )
        return "\n".join(lines) + "\n"

    def burst_maxes(self, gap_ms: float = BURST_GAP_MS) -> list[float]:
        """Each burst's slowest quote (receive -> delivery), in the order of the bursts.

        A burst is the quotes the receiver read with no gap over ``gap_ms``
        between two (the vendor's bursts come every 3 s and last ~0.1 s; a
        steady feed is one burst). The median of these is a run's typical
        burst; its p99 is set by the run's worst few bursts.
        """
        maxes: list[float] = []
        last = float("-inf")
        for received, total in sorted(zip(self.received, self.total, strict=True)):
            if received - last > gap_ms:
                maxes.append(total)
            else:
                maxes[-1] = max(maxes[-1], total)
            last = received
        return maxes

    def worst_second(self) -> tuple[int, float]:
        """(the second, its p99) of the measured second whose receive -> delivery p99 is
        highest: a stall (a minute's candles, a broker's compaction) shows there even
        when it is too short to move the whole run's p99."""
        return max(
            ((sec, _pct(total, 0.99)) for sec, (total, _) in self.by_second().items()),
            key=lambda row: row[1],
            default=(0, float("nan")),
        )


@dataclass
class CoreShares:
    """What each process ran and waited for a core over the measured seconds.

    On two cores a burst's quotes wait for the CPU of every process at once
    (receiver, broker, worker, gateway, Redis and this client); a process's
    wait is the time it was ready to run while others ran (``schedstat``).
    """

    readers: dict[str, Callable[[], tuple[int, int]]]  # name -> (ns ran, ns waited)
    before: dict[str, tuple[int, int]] = field(default_factory=dict)
    used: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> ms, ms

    @classmethod
    def of(cls, groups: dict[str, int]) -> CoreShares:
        """The process groups ``groups`` and this process (the client)."""
        readers: dict[str, Callable[[], tuple[int, int]]] = {
            name: functools.partial(group_sched_ns, pgid) for name, pgid in groups.items()
        }
        readers["client"] = functools.partial(sched_ns, os.getpid())
        return cls(readers)

    def start(self) -> None:
        self.before = {name: read() for name, read in self.readers.items()}

    def stop(self) -> None:
        for name, read in self.readers.items():
            ran, waited = read()
            ran0, waited0 = self.before.get(name, (ran, waited))
            self.used[name] = ((ran - ran0) / 1e6, (waited - waited0) / 1e6)

    def table(self, snapshots: float) -> str:
        """CPU and wait per snapshot of the feed (one burst, or 3 s of a steady feed): the
        pipeline's processes and their sum, then the simulator and client apart."""
        pipeline = pipeline_rows(self.used)
        lines = [
            "| process | CPU, ms per snapshot | waited for a core, ms per snapshot |",
            "|---|---:|---:|",
        ]

        def row(name: str, ran: float, waited: float) -> None:
            lines.append(f"| {name} | {ran / snapshots:.0f} | {waited / snapshots:.0f} |")

        for name in pipeline:
            row(name, *self.used[name])
        row(
            "**pipeline**",
            sum(self.used[n][0] for n in pipeline),
            sum(self.used[n][1] for n in pipeline),
        )
        for name, (ran, waited) in self.used.items():
            if name not in pipeline:
                row(f"{name} (apart)", ran, waited)
        return "\n".join(lines)


#: the live figures cover the deliveries of the last this many seconds
LIVE_WINDOW_S = 5.0


#: a message at least this large (a burst's: ~750 bytes a quote) is decoded once the
#: socket is quiet, not as it comes; a steady feed's (~20 quotes a flush) as they come
DEFER_BYTES = 64 * 1024
#: held messages are decoded once no message came for this long (``--decode-quiet-ms``):
#: a burst's deliveries pause for 20-60 ms between two of the worker's fetches, and
#: the held messages decoded in such a pause (~90 ms of this client's CPU per burst
#: at 20 ms) took one of the two cores from the burst's last quotes ...
QUIET_S = 0.25
#: ... or once the oldest was held this long
HELD_S = 1.0


class _Client:
    """The bench's WebSocket client: stamps each message as it comes, decodes it later.

    Decoding a burst's 0.7-2.8 MB message as it came took this client 18-89 ms
    of wall time on two shared cores, and the next message, already in its
    socket, was stamped only after that (docs/benchmarks.md, "The bench's
    client decodes after the burst"): the client's own work, measured as the
    pipeline's latency. Large messages are now held (with their stamps) and
    decoded once no message came for :data:`QUIET_S` (mostly after the burst), or
    :data:`HELD_S` after the oldest came; every quote is still decoded and
    measured. ``inline`` decodes each message as it comes (runs before
    2026-12-06).
    """

    def __init__(self, got: Latencies, inline: bool) -> None:
        self.got = got
        self.inline = inline
        self.held: deque[tuple[str | bytes, float, int]] = deque()

    def take(self, raw: str | bytes, now_ms: float, second: int) -> None:
        """A message received at ``now_ms`` in the measurement's ``second``."""
        if self.inline or len(raw) < DEFER_BYTES:
            self._decode(raw, now_ms, second)
            return
        self.held.append((raw, now_ms, second))
        if now_ms - self.held[0][1] > HELD_S * 1000:
            self.decode_held()

    def decode_held(self) -> None:
        while self.held:
            self._decode(*self.held.popleft())

    def _decode(self, raw: str | bytes, now_ms: float, second: int) -> None:
        msg = orjson.loads(raw)
        if msg.get("type") != "quotes":
            return
        for quote in msg["data"]:
            self.got.add(quote, now_ms, second)


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """This process's objects left out of its garbage collections while in the block.

    The bench's own heap (the rig, rich, typer, websockets: everything made
    before the run) is walked by each full collection; on the 2-core machine
    those came every ~12 s and took the client 34-76 ms (docs/benchmarks.md,
    "Young collections after the burst, and the client's heap frozen"), and a
    message arriving meanwhile was stamped late. Frozen, a collection walks
    only what was made since.
    """
    frozen_before = gc.get_freeze_count()
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:  # (the bench freezes nothing else)
            gc.unfreeze()


async def _measure(
    port: int,
    seconds: float,
    warmup: float,
    interval: float,
    measuring: Callable[[], None] = lambda: None,
    inline: bool = False,
    quiet_s: float = QUIET_S,
) -> Latencies:
    """Deliveries from ``warmup`` on, for ``seconds`` (``measuring`` is called as they
    begin to count); ``inline``: each message decoded as it comes, else large ones once
    no message came for ``quiet_s`` (:class:`_Client`).

    The live figures sort only the last :data:`LIVE_WINDOW_S` of deliveries:
    sorting every latency so far twice a second stalled this client for 39
    ms at 110,000 quotes and 137 ms at 380,000, and the quotes that waited
    meanwhile were measured late (runs before 2026-12-02 carry that).
    """
    got = Latencies(opening_ms=round(interval * 1000))
    client = _Client(got, inline)
    total = got.total
    marks: deque[tuple[float, int]] = deque()  # (elapsed, deliveries so far) at each update
    url = f"ws://127.0.0.1:{port}/api/realtime/ws"
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.send('{"type":"subscribe_all"}')
        start = time.monotonic()
        shown = 0.0
        with Live(console=console, refresh_per_second=2) as live:
            counting = False
            while (elapsed := time.monotonic() - start) < warmup + seconds:
                if not counting and elapsed >= warmup:
                    counting = True
                    measuring()
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=quiet_s if client.held else 1)
                except TimeoutError:
                    client.decode_held()  # the socket is quiet
                    continue
                now_ms = time.time() * 1000
                if elapsed < warmup:
                    continue
                if not got.started_at:
                    got.started_at = now_ms / 1000 - (elapsed - warmup)
                client.take(raw, now_ms, int(elapsed - warmup))
                if elapsed - shown < 0.5:
                    continue  # twice a second
                shown = elapsed
                marks.append((elapsed, len(total)))
                while marks[0][0] < elapsed - LIVE_WINDOW_S:
                    marks.popleft()
                recent = total[marks[0][1] :]
                live.update(
                    f"{elapsed - warmup:5.1f}s  quotes {len(total):,}  last {LIVE_WINDOW_S:.0f} s: "
                    f"p50 {_pct(recent, 0.5):.1f} ms  p99 {_pct(recent, 0.99):.1f} ms"
                )
            client.decode_held()
    return got


def e2e_bench(
    stocks: Annotated[int, typer.Option(help="stocks per snapshot burst")] = 5000,
    interval: Annotated[float, typer.Option(help="seconds between snapshots")] = 3.0,
    seconds: Annotated[float, typer.Option(help="measurement time")] = 30.0,
    warmup: Annotated[float, typer.Option(help="seconds ignored at the start")] = 8.0,
    flush_ms: Annotated[
        int | None,
        typer.Option(help="gateway flush interval, ms (default: the gateway's own, as `up`)"),
    ] = None,
    spread: Annotated[
        bool, typer.Option(help="the simulator sends each snapshot evenly over the interval")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="stream worker processes (one group)")] = 1,
    partitions: Annotated[
        int | None,
        typer.Option(min=1, help="partitions of the tick topics (default: as `hqstream up`)"),
    ] = None,
    per_second: Annotated[
        Path | None,
        typer.Option(help="write each measured second's count, p50, p99 and max here (CSV)"),
    ] = None,
    broker_warmup: Annotated[
        float,
        typer.Option(
            help="at most this many seconds of the same feed before the run, until the "
            "bench's broker's JIT compilers are quiet, as a broker that has run a while "
            "(0: none, the fresh JVM compiles during the run)"
        ),
    ] = 0.0,
    redis_nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="the bench's Redis's CPU priority below the pipeline's, as `hqstream up "
            "--redis-nice` (0: the same)",
        ),
    ] = REDIS_NICE,
    broker_background_nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="the bench's broker's log cleaner and JIT compilers below the rest, as "
            "`hqstream up --broker-background-nice` (0: the same)",
        ),
    ] = BROKER_BACKGROUND_NICE,
    decode_inline: Annotated[
        bool,
        typer.Option(
            help="the client of runs before 2026-12-06: it decodes each message as it comes, "
            "before it takes the next, and its collections walk the bench's whole heap; "
            "default: a burst's large messages are decoded once the socket is quiet, each "
            "stamped as it came, and the heap made before the run is frozen",
        ),
    ] = False,
    decode_quiet_ms: Annotated[
        int,
        typer.Option(
            min=1,
            help="the client decodes a burst's large messages once none came for this long "
            "(before 2026-12-07: 20 ms, often inside a burst's pauses)",
        ),
    ] = round(QUIET_S * 1000),
    compare: Annotated[
        str | None,
        typer.Option(
            help="another git ref, run the same way in a temporary worktree: --rounds runs "
            "of each, alternating, then a table of both sides (the client is this checkout's)"
        ),
    ] = None,
    rounds: Annotated[
        int, typer.Option(min=1, help="with --compare: runs of each side, alternating")
    ] = 3,
) -> None:
    """Whole-pipeline latency: receiver stamp -> WebSocket delivery, p50/p99 (with
    --compare REF: another ref's pipeline and this one's, alternating)."""
    rate = stocks / interval
    shape = "steady, --spread" if spread else "bursts"
    flush = flush_ms or GatewaySettings().flush_interval_ms  # the environment's, as the gateway's
    partitions = partitions or local_partitions(workers)
    decoding = (
        "each message as it comes"
        if decode_inline
        else f"large messages once quiet for {decode_quiet_ms} ms"
    )
    console.print(
        f"[bold]bench e2e[/]: {stocks} stocks every {interval} s = {rate:,.0f} ticks/s "
        f"({shape}), {workers} stream worker(s) on {partitions} partitions, "
        f"gateway flush {flush} ms, Redis nice {redis_nice}, the broker's housekeeping nice "
        f"{broker_background_nice}, the client decodes "
        f"{decoding} "
        f"({'heap not frozen' if decode_inline else 'heap frozen'}), "
        f"{seconds:.0f} s measured; "
        f"machine: {machine()}"
    )
    run = functools.partial(
        _run,
        feed=(stocks, interval, spread),
        seconds=seconds,
        warmup=warmup,
        workers=workers,
        flush_ms=flush_ms,
        partitions=partitions,
        broker_warmup=broker_warmup,
        redis_nice=redis_nice,
        broker_background_nice=broker_background_nice,
        decode_inline=decode_inline,
        quiet_s=decode_quiet_ms / 1000,
    )
    if compare is None:
        got = run(code=None)
        _report(got, per_second)
        if not got.latencies.total:
            raise typer.Exit(1)
        return
    with ref_checkout(compare) as ref:
        if warning := drift_warning(ref):
            console.print(f"[yellow]{warning}[/]")
        if note := build_ref_native(ref, console.print):
            console.print(f"[yellow]{note}[/]")
        sides = [(ref.label, ref.path), (head_label(), None)]
        console.print(f"comparing {ref.label}, checked out in {ref.path}, with {sides[1][0]}")
        runs: list[tuple[str, int, E2eRun]] = []
        for round_no in range(1, rounds + 1):
            order = sides if round_no % 2 else sides[::-1]  # neither side always first
            for label, code in order:
                console.rule(f"round {round_no}/{rounds}: {label}")
                got = run(code=code)
                _report(got, _csv_of(per_second, label == sides[0][0], round_no))
                runs.append((label, round_no, got))
    _report_compare([label for label, _ in sides], runs, spread)


def _csv_of(per_second: Path | None, ref: bool, round_no: int) -> Path | None:
    """A compared run's per-second CSV: ``NAME-ref-1.csv``, ``NAME-this-1.csv``, ..."""
    if per_second is None:
        return None
    side = "ref" if ref else "this"
    return per_second.with_name(f"{per_second.stem}-{side}-{round_no}{per_second.suffix}")


@dataclass
class E2eRun:
    """One run's figures: the latencies, the workers' GC pauses, each process's CPU."""

    latencies: Latencies
    gc: GcPauses
    cores: CoreShares
    snapshots: float  # feed periods measured (one burst, or 3 s of a steady feed, each)
    calibration_s: float  # the 10 M-addition loop, measured after the run
    parse_us: float  # the stream worker's parse calibration, µs a line, after the run

    def pipeline_cpu_ms(self) -> float:
        """The pipeline's CPU per snapshot (receiver, workers, gateway, broker, Redis)."""
        used = self.cores.used
        return sum(used[name][0] for name in pipeline_rows(used)) / self.snapshots


def _run(
    code: Path | None,
    *,
    feed: tuple[int, float, bool],
    seconds: float,
    warmup: float,
    workers: int,
    flush_ms: int | None,
    partitions: int,
    broker_warmup: float,
    redis_nice: int,
    broker_background_nice: int,
    decode_inline: bool,
    quiet_s: float,
) -> E2eRun:
    """A fresh broker, Redis and pipeline (this checkout's code, or ``code``'s) fed
    ``feed`` (stocks, interval, spread); measured by this client."""
    stocks, interval, _ = feed
    with (
        bench_env(
            need_redis=True, redis_nice=redis_nice, broker_background_nice=broker_background_nice
        ) as env,
        tempfile.TemporaryDirectory(prefix="hqe2e-") as tmp,
        pipeline(
            env, Path(tmp), workers=workers, flush_ms=flush_ms, code=code, partitions=partitions
        ) as rig,
    ):
        broker = env.pids.get("broker")
        rig.warm_broker(broker, "bench e2e", feed, broker_warmup)
        lines_before = rig.lines_received()
        rig.feed(*feed)
        with console.status("bench e2e: waiting for the feed") as status:
            # a whole snapshot through the receiver, then the warm-up and the measured time
            rig.wait_for_feed(
                lines_before, stocks, lambda what: status.update(f"bench e2e: {what}")
            )
        gc_before = rig.worker_gc_pauses()
        cores = CoreShares.of(rig.groups(env.pids))
        with contextlib.nullcontext() if decode_inline else _heap_frozen():
            got = asyncio.run(
                _measure(
                    rig.gateway_port, seconds, warmup, interval, cores.start, decode_inline, quiet_s
                )
            )
        cores.stop()
        gc = rig.worker_gc_pauses() - gc_before
        if dead := rig.dead():
            raise RuntimeError(f"components died during the run: {dead}")
    calibrations = measure_calibration_s(), measure_parse_calibration_us()
    return E2eRun(got, gc, cores, seconds / interval, *calibrations)


def _report(run: E2eRun, per_second: Path | None) -> None:
    """A run's tables: latencies, the workers' GC pauses, the calibration, each process's
    CPU; its per-second figures written to ``per_second``."""
    got = run.latencies
    total, stage = got.total, got.stage
    console.print()
    console.print("| measure | p50 ms | p99 ms | max ms |\n|---|---|---|---|")
    for label, values in (
        ("receive -> WebSocket delivery", total),
        ("receive -> normalized (stream worker)", stage),
    ):
        console.print(
            f"| {label} | {_pct(values, 0.5):.1f} | {_pct(values, 0.99):.1f} | "
            f"{max(values, default=float('nan')):.1f} |"
        )
    at, worst = got.worst_second()
    console.print(f"| receive -> WebSocket delivery, worst second (at {at} s) | | {worst:.1f} | |")
    bursts = got.burst_maxes()
    if len(bursts) > 1:  # (a steady feed is one "burst")
        console.print(
            f"| each burst's slowest quote, {len(bursts)} bursts | {_pct(bursts, 0.5):.1f} "
            f"| | {max(bursts):.1f} |"
        )
    opening = got.minute_first
    if opening:  # (receive -> WebSocket delivery)
        console.print(
            f"| a minute's first snapshot, {len(opening):,} quotes | {_pct(opening, 0.5):.1f} "
            f"| {_pct(opening, 0.99):.1f} | {max(opening):.1f} |"
        )
    else:
        console.print("| a minute's first snapshot | none: ~60 s into a run | | |")
    console.print(f"| quotes measured | {len(total):,} | | |")
    console.print(
        f"| stream workers' GC pauses, warm-up included: {run.gc.describe()} | | | |",
        soft_wrap=True,
    )
    console.print(
        "| calibration, this run: 10 M-addition Python loop; the stream worker's parse | "
        f"{run.calibration_s:.2f} s; {run.parse_us:.2f} µs a line | | |"
    )
    console.print()
    console.print(run.cores.table(run.snapshots), soft_wrap=True)
    if per_second is not None:
        per_second.write_text(got.per_second_csv())
        console.print(f"each second's figures: {per_second}")


def _report_compare(labels: list[str], runs: list[tuple[str, int, E2eRun]], spread: bool) -> None:
    """Every run of both sides, then each side's medians and this side's ratio to the ref's."""
    console.print()
    head = "| side | round | p50 ms | p99 ms | "
    head += "" if spread else "burst's slowest quote, median ms | "
    head += "pipeline CPU, ms per snapshot | calibration s | parse calibration, µs a line |"
    console.print(head, soft_wrap=True)
    console.print("|---" * (head.count("|") - 1) + "|")
    columns: dict[str, list[tuple[float, ...]]] = {}  # each figure's values, by side
    medians: dict[str, list[float]] = {}
    for label in labels:
        mine = [(round_no, _figures(run, spread)) for side, round_no, run in runs if side == label]
        for round_no, figures in mine:
            console.print(_compare_row(label, str(round_no), figures), soft_wrap=True)
        columns[label] = list(zip(*(figures for _, figures in mine), strict=True))
        medians[label] = [statistics.median(column) for column in columns[label]]
        console.print(_compare_row(f"**{label}**", "median", medians[label]), soft_wrap=True)
    ref, this = labels
    ratios = [
        f"{b / a:.2f}x" if a else "-" for a, b in zip(medians[ref], medians[this], strict=True)
    ]
    console.print(f"| this / ref, medians | | {' | '.join(ratios)} |", soft_wrap=True)
    chance = [
        f"{permutation_p(a, b):.2f}" for a, b in zip(columns[ref], columns[this], strict=True)
    ]
    console.print(
        f"| as far apart by chance, p (exact permutation test of the means) | | "
        f"{' | '.join(chance)} |",
        soft_wrap=True,
    )


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """How often the runs, dealt to the two sides in every possible way, put the sides'
    means at least as far apart as ``a`` and ``b`` are (two-sided, exact).

    Small means the sides differ beyond the runs' spread. With 3 runs a side
    the smallest possible is 0.10 (2 of the 20 ways), so a difference can be
    told at 5 % only from 4 runs a side (2 of 70: 0.03).
    """
    values = [*a, *b]
    total, n = sum(values), len(a)
    observed = abs(sum(a) / n - sum(b) / len(b))
    deals = list(itertools.combinations(values, n))
    as_far = sum(
        abs(sum(side) / n - (total - sum(side)) / len(b)) >= observed - 1e-9 for side in deals
    )
    return as_far / len(deals)


def _figures(run: E2eRun, spread: bool) -> list[float]:
    total = run.latencies.total
    figures = [_pct(total, 0.5), _pct(total, 0.99)]
    if not spread:
        figures.append(_pct(run.latencies.burst_maxes(), 0.5))
    return [*figures, run.pipeline_cpu_ms(), run.calibration_s, run.parse_us]


def _compare_row(label: str, round_no: str, figures: list[float]) -> str:
    *latencies, cpu, calibration, parse = figures
    cells = [f"{x:.1f}" for x in latencies] + [f"{cpu:,.0f}", f"{calibration:.2f}", f"{parse:.2f}"]
    return f"| {label} | {round_no} | {' | '.join(cells)} |"
