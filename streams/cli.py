"""``hqstream streams``: run one stream worker process, or the rebuild.

One process = one faust worker; run N processes (same group id) to share the
raw topic's partitions. ``--rebuild`` restores the Redis state from the
workers' Kafka outputs instead (:mod:`streams.state_rebuild`; a worker does it
by itself when it finds the state marker missing), ``--rebuild-from-raw``
replays ``hq.ticks.raw`` from the earliest offset (:mod:`streams.rebuild`: for
when the outputs themselves are wrong, e.g. after a parser fix). Ctrl-C / SIGTERM stop cleanly:
the current batch finishes or is not acked, offsets are committed, the
producer is flushed. Heavy imports happen inside the command.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hqcore.event_loop import use as use_event_loop
from hqcore.logs import configure_logging

if TYPE_CHECKING:
    from streams.settings import StreamsSettings
    from streams.state_rebuild import StateRebuildSummary

logger = logging.getLogger(__name__)


def streams(
    rebuild: bool = typer.Option(
        False,
        "--rebuild",
        help="Restore Redis from the compacted latest quotes, bar series and feed winners, "
        "the normalized tail, today's bars of every timeframe, stats and alerts.",
    ),
    rebuild_from_raw: bool = typer.Option(
        False,
        "--rebuild-from-raw",
        help="Replay hq.ticks.raw from the earliest offset into empty Redis (slow: the retention).",
    ),
    force: bool = typer.Option(
        False, "--force", help="With --rebuild-from-raw: delete existing hq:* keys first."
    ),
    partitions: int | None = typer.Option(
        None, "--partitions", help="Partitions of the tick topics (default HQ_PARTITIONS)."
    ),
    worker_id: str | None = typer.Option(
        None, "--worker-id", help="Identity of this worker (default host-pid-random)."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Prometheus /metrics and /healthz port (0 = off)."
    ),
) -> None:
    """Run a Faust stream worker: parse, normalize, DLQ, stats, candles, alerts, Redis."""
    from streams.settings import get_settings

    settings = get_settings()
    updates: dict[str, object] = {}
    if partitions is not None:
        updates["partitions"] = partitions
    if worker_id:
        updates["worker_id"] = worker_id
    if metrics_port is not None:
        updates["metrics_port"] = metrics_port
    if updates:
        settings = settings.model_copy(update=updates)
    configure_logging(settings.log_level, "streams", quiet=())
    if rebuild:
        typer.echo(run_state_rebuild(settings))
        return
    if rebuild_from_raw:
        from streams.rebuild import RebuildRefused, run_rebuild

        try:
            summary = run_rebuild(settings, force=force)
        except RebuildRefused as exc:
            typer.echo(f"refused: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(summary)
        return
    if force:
        typer.echo("--force only applies to --rebuild-from-raw", err=True)
        raise typer.Exit(2)
    run_worker(settings)


def backfill(
    bars: Path = typer.Option(
        ..., "--bars", help="A .csv or .parquet file of daily or minute bars."
    ),
    label: str = typer.Option(
        "end", "--label", help="Minute bars labelled by their 'end' (09:31 ... 15:00) or 'start'."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Start each stock's series from the file (drops the stored one)."
    ),
) -> None:
    """Bars and indicators of history into Redis (see streams/backfill.py for the format)."""
    from streams.backfill import BackfillError, run_backfill
    from streams.settings import get_settings

    if label not in ("end", "start"):
        typer.echo("--label is 'end' or 'start'", err=True)
        raise typer.Exit(2)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        summary = run_backfill(bars, get_settings().redis_url, label, replace)  # type: ignore[arg-type]
    except BackfillError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(summary)


def run_worker(settings: object) -> None:
    """Start the faust worker in this process until SIGINT/SIGTERM."""
    import faust

    from streams import metrics
    from streams.alerts import CompiledAlertDetector
    from streams.app import create_app
    from streams.candles import CompiledCandleBuilder
    from streams.lifecycle import EXIT_FATAL, wait_for_dependencies
    from streams.market_stats import CompiledMarketStats
    from streams.settings import StreamsSettings

    assert isinstance(settings, StreamsSettings)
    event_loop = use_event_loop(settings.event_loop)  # before faust or anything makes a loop
    metrics.serve_metrics(settings.metrics_port)  # /readyz is 503 until the worker joined
    wait_for_dependencies(settings)
    built = create_app(settings)
    app, runtime = built.app, built.runtime
    metrics.HEALTH.running = True
    parse_path = runtime.processor.parse_path
    metrics.NATIVE_PARSE.set(1 if parse_path.fast else 0)
    processor = runtime.processor
    derive = ", ".join(
        f"{name} {'compiled' if isinstance(part, kind) else 'Python'}"
        for name, part, kind in (
            ("alerts", processor.alerts, CompiledAlertDetector),
            ("statistics", processor.stats, CompiledMarketStats),
            ("candles", processor.candles, CompiledCandleBuilder),
        )
    )
    logger.info(
        "stream worker %s: group %s, raw topic %s, redis %s, parse: %s, derive: %s, event loop: %s",
        runtime.worker_id,
        settings.group_id,
        settings.topic_names.raw,
        settings.redis_url.split("@")[-1],
        parse_path.description,
        derive,
        event_loop,
    )
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if metrics.HEALTH.fatal is None:
            raise
    finally:
        metrics.HEALTH.running = False
    if metrics.HEALTH.fatal is not None:  # stopped by streams.lifecycle.fatal
        logger.critical("worker exits with status %d: %s", EXIT_FATAL, metrics.HEALTH.fatal)
        raise SystemExit(EXIT_FATAL)


def run_state_rebuild(settings: StreamsSettings) -> StateRebuildSummary:
    """``hqstream streams --rebuild``: every partition and the market, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streams.state_rebuild import rebuild_redis

    columns = (
        TextColumn("[bold]rebuild[/bold] {task.fields[phase]:<13}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("rebuild", total=None, phase="planning")

        def show(phase: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None, phase=phase)

        return asyncio.run(rebuild_redis(settings, progress=show))
