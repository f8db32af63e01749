"""``hqstream bench parse``: the stream worker's CPU per tick with the compiled parse vs Python.

The worker's processing step only (:mod:`hqstream.bench.processing_ab`),
``HQ_STREAMS_NATIVE`` on (the hqstream_native fast path) and off (pure
Python) alternating in one process. Refuses to run without the extension.
"""

from __future__ import annotations

from typing import Annotated

import typer

from hqstream.bench.processing_ab import compare
from streams.pipeline import Processor
from streams.settings import StreamsSettings


def parse_bench(
    stocks: Annotated[int, typer.Option(help="stocks per snapshot")] = 1000,
    snapshots: Annotated[int, typer.Option(help="3-second snapshots (20 per minute)")] = 60,
    rounds: Annotated[int, typer.Option(min=1, help="native/Python pairs, alternating")] = 3,
    batch: Annotated[int, typer.Option(help="records per processed batch")] = 2000,
) -> None:
    """The worker's processing CPU per tick with HQ_STREAMS_NATIVE on vs off."""
    native = StreamsSettings(metrics_port=0, native=True)
    path = Processor(native).parse_path
    if path.fast is None:
        raise typer.BadParameter(f"no compiled parse to compare: {path.description}")
    compare(
        f"bench parse ({path.description} vs Python)",
        ("native", native),
        ("Python", StreamsSettings(metrics_port=0, native=False)),
        stocks=stocks,
        snapshots=snapshots,
        rounds=rounds,
        batch=batch,
    )
