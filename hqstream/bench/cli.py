"""``hqstream bench``: the benchmark commands. Figures go to docs/benchmarks.md."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from hqstream.bench import steal
from hqstream.bench.archive_bench import archive_bench
from hqstream.bench.common import console
from hqstream.bench.cost import cost_bench
from hqstream.bench.e2e import e2e_bench
from hqstream.bench.failover import failover_bench
from hqstream.bench.faults import faults_bench
from hqstream.bench.gateway_bench import fanout_bench, latency_bench
from hqstream.bench.indicators_bench import indicators_bench
from hqstream.bench.ingest import ingest
from hqstream.bench.journal_faults import journal_faults_bench
from hqstream.bench.parse_bench import parse_bench
from hqstream.bench.produce_shapes import produce_shapes_bench
from hqstream.bench.rebuild_bench import rebuild_bench
from hqstream.bench.streams_bench import streams_bench

bench_app = typer.Typer(no_args_is_help=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@bench_app.callback()
def _bench_options(
    ctx: typer.Context,
    steal_fraction: Annotated[
        float,
        typer.Option(
            "--steal",
            min=0.0,
            max=steal.MAX_STEAL,
            help="emulate a slower host: a real-time process on each core takes this "
            "fraction of it in 2 ms cycles, as a shared host's hypervisor does on a slow "
            "day; the calibration printed shows the machine it makes (needs root or "
            "CAP_SYS_NICE; 0: none)",
        ),
    ] = 0.0,
) -> None:
    """A bench stopped with SIGTERM (``kill``, a CI timeout) cleans up as on Ctrl-C.

    Benches start brokers, Redis, workers and clients in process groups of their
    own, so a signal to the bench reaches none of them: without this, SIGTERM's
    default action ends the bench before its ``finally`` blocks and context
    managers run, and everything it started keeps running (and loading the
    machine) with nobody to stop it.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    if steal_fraction > 0:  # before the command measures its calibration
        try:
            steal.start(steal_fraction)
        except steal.StealError as exc:
            console.print(f"[red]bench --steal: {exc}[/]")
            raise typer.Exit(2) from None
        ctx.call_on_close(steal.stop)
        console.print(f"bench: {steal.described()}")


bench_app.command("ingest")(ingest)
bench_app.command("streams")(streams_bench)
bench_app.command("gateway-latency")(latency_bench)
bench_app.command("fanout")(fanout_bench)
bench_app.command("e2e")(e2e_bench)
bench_app.command("cost")(cost_bench)
bench_app.command("indicators")(indicators_bench)
bench_app.command("parse")(parse_bench)
bench_app.command("faults")(faults_bench)
bench_app.command("failover")(failover_bench)
bench_app.command("archive")(archive_bench)
bench_app.command("rebuild")(rebuild_bench)
bench_app.command("produce-shapes")(produce_shapes_bench)


@bench_app.command("journal-faults")
def journal_faults(
    pause_s: float = typer.Option(20.0, help="how long the broker is SIGSTOPped"),
    delivery_timeout_s: float = typer.Option(10.0, help="HQ_PRODUCER_DELIVERY_TIMEOUT_S"),
    rate: int = typer.Option(2000, help="lines/s of the steady feed during the pause"),
) -> None:
    """The receiver journal's faults (kill, corruption, disk full, broker pause): 0 lost."""
    from hqcore.logs import configure_logging

    configure_logging("WARNING", "bench")
    rows = journal_faults_bench(pause_s, delivery_timeout_s, rate)
    if any(r.lost or r.out_of_order for r in rows):
        raise typer.Exit(1)
