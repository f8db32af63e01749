"""``hqstream bench indicators``: the stream worker's CPU per tick with indicators on vs off.

The worker's processing step only, both settings alternating in one process
(:mod:`hqstream.bench.processing_ab`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from hqstream.bench.processing_ab import compare
from streams.settings import StreamsSettings


def indicators_bench(
    stocks: Annotated[int, typer.Option(help="stocks per snapshot")] = 1000,
    snapshots: Annotated[int, typer.Option(help="3-second snapshots (20 per minute)")] = 200,
    rounds: Annotated[int, typer.Option(min=1, help="on/off pairs, alternating")] = 3,
    batch: Annotated[int, typer.Option(help="records per processed batch")] = 2000,
) -> None:
    """The worker's processing CPU per tick with HQ_STREAMS_INDICATORS on vs off."""
    compare(
        "bench indicators",
        ("indicators on", StreamsSettings(metrics_port=0, indicators=True)),
        ("off", StreamsSettings(metrics_port=0, indicators=False)),
        stocks=stocks,
        snapshots=snapshots,
        rounds=rounds,
        batch=batch,
    )
