"""``hqstream archive`` (run the archiver), ``archive compact`` and ``hqstream replay``.

Heavy imports happen inside the commands. Ctrl-C / SIGTERM stop the archiver
cleanly: buffered batches are written and committed.
"""

from __future__ import annotations

import typer

from hqcore.logs import configure_logging

archive_app = typer.Typer(
    help="Archive the normalized quotes, candles and alerts as Parquet (docs/archive.md).",
    no_args_is_help=False,
    invoke_without_command=True,
)


@archive_app.callback()
def archive(
    ctx: typer.Context,
    root: str | None = typer.Option(
        None, "--root", help="Archive directory or URL (default HQ_ARCHIVE_ROOT)."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Prometheus /metrics and /healthz port (0 = off)."
    ),
) -> None:
    """Run the archiver (its own consumer group) until Ctrl-C / SIGTERM."""
    from archive.settings import get_settings

    settings = get_settings()
    updates: dict[str, object] = {}
    if root:
        updates["root"] = root
    if metrics_port is not None:
        updates["metrics_port"] = metrics_port
    settings = settings.model_copy(update=updates)
    configure_logging(settings.log_level, "archive")
    ctx.obj = settings
    if ctx.invoked_subcommand is not None:
        return
    from archive.archiver import run_archiver

    run_archiver(settings)


@archive_app.command("compact")
def compact(
    ctx: typer.Context,
    date: str = typer.Option(..., "--date", help="Trade date to compact, YYYY-MM-DD."),
    dataset: list[str] = typer.Option(
        ["ticks", "candles", "alerts"], "--dataset", help="Datasets to compact (repeatable)."
    ),
    force: bool = typer.Option(False, "--force", help="Compact even a day that is not closed."),
) -> None:
    """Merge a closed day's files into few large ones (atomic, idempotent)."""
    from archive.compact import DayNotClosed, compact_day
    from archive.settings import ArchiveSettings
    from hqcore.parquet_archive.arrow_schema import SPECS
    from hqcore.parquet_archive.storage import open_storage
    from schemas.exchange import today_in_shanghai

    settings: ArchiveSettings = ctx.obj
    storage = open_storage(settings.root)
    today = "9999-12-31" if force else today_in_shanghai()
    for name in dataset:
        if name not in SPECS:
            typer.echo(f"unknown dataset {name!r}", err=True)
            raise typer.Exit(2)
        try:
            report = compact_day(
                storage,
                name,  # type: ignore[arg-type]
                date,
                today=today,
                max_rows=settings.compact_max_rows,
                row_group_rows=settings.row_group_rows,
                zstd_level=settings.zstd_level,
            )
        except DayNotClosed as exc:
            typer.echo(f"refused: {exc} (--force to compact anyway)", err=True)
            raise typer.Exit(2) from exc
        typer.echo(
            f"{name} {date}: {report.files_in} files -> {report.files_out}, {report.rows} rows, "
            f"{report.leftovers_deleted} leftovers deleted"
        )


def replay(
    date: str = typer.Option(..., "--date", help="Trade date to replay, YYYY-MM-DD."),
    speed: float = typer.Option(
        1.0, "--speed", help="Pacing divisor: 10 = ten times as fast; 0 = as fast as possible."
    ),
    prefix: str = typer.Option(
        ..., "--prefix", help="Topic prefix of the replay's namespace (never the live one)."
    ),
    root: str | None = typer.Option(None, "--root", help="Archive directory or URL."),
    dataset: list[str] = typer.Option(
        ["ticks", "candles", "alerts"], "--dataset", help="Datasets to publish (repeatable)."
    ),
    max_gap: float | None = typer.Option(
        None, "--max-gap", help="Cap any pause (after the speed-up) at this many seconds."
    ),
) -> None:
    """Publish an archived day to <prefix>hq.ticks.normalized (and candles/alerts)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from archive.replay import Replay, run_replay
    from archive.settings import get_settings
    from hqcore.parquet_archive.errors import NoSuchDay

    settings = get_settings()
    if root:
        settings = settings.model_copy(update={"root": root})
    configure_logging(settings.log_level, "replay")
    if prefix == settings.topic_prefix:
        typer.echo("refused: --prefix is the live namespace's prefix", err=True)
        raise typer.Exit(2)
    try:
        job = Replay.open(settings, date, dataset, prefix, speed, max_gap)
    except NoSuchDay as exc:
        typer.echo(f"nothing to replay: {exc}", err=True)
        raise typer.Exit(1) from exc
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} records {task.fields[clock]}"),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task(f"replay {date} x{speed:g}", total=job.total, clock="")

        def on_progress(done: int, exchange_clock: str) -> None:
            progress.update(task, completed=done, clock=exchange_clock)

        published = run_replay(job, settings, on_progress)
    typer.echo(f"published {published} records of {date} to {prefix}*")
