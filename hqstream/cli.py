"""The ``hqstream`` command: one subcommand per component.

``hqstream simulate | produce | streams | gateway | archive | replay | up | bench ...``.
Each component's command lives in its own package's ``cli.py`` and is
registered here; heavy imports happen inside the commands.
"""

from __future__ import annotations

import typer

from api.cli import gateway
from archive.cli import archive_app, replay
from hqstream.bench.cli import bench_app
from hqstream.up import up
from producers.cli import produce, simulate
from streams.cli import backfill, streams

app = typer.Typer(
    name="hqstream",
    help="Real-time China A-share quotes on Kafka: feed -> Kafka -> Faust -> Redis -> WebSocket.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("simulate", help="Run the vendor feed simulator (a TCP push server).")(simulate)
app.command("produce", help="Run the feed receiver: vendor socket -> Kafka hq.ticks.raw.")(produce)
app.command("streams", help="Run the Faust stream workers (parse, normalize, Redis, stats).")(
    streams
)
app.command(
    "backfill", help="Bars and indicators of history (daily or minute bars, CSV/Parquet) to Redis."
)(backfill)
app.command("gateway", help="Run the FastAPI gateway (REST + WebSocket + dashboard).")(gateway)
app.command("up", help="Start everything locally: Kafka, Redis, simulator and all components.")(up)
app.add_typer(
    archive_app,
    name="archive",
    help="Archive quotes, candles and alerts as Parquet; `archive compact` merges a day.",
)
app.command("replay", help="Publish an archived day to a topic prefix at a chosen speed.")(replay)
app.add_typer(bench_app, name="bench", help="Benchmarks (figures go to docs/benchmarks.md).")


if __name__ == "__main__":
    app()
