"""``hqstream bench parse``: CPU per tick with the compiled Quote paths (hqstream_native) vs Python.

Two tables, each alternating compiled and Python in one process:

* the stream worker's processing step (:mod:`hqstream.bench.processing_ab`),
  ``HQ_STREAMS_NATIVE`` on and off;
* the gateway's decoding of the same quotes' Avro into the JSON it pushes
  (:meth:`api.kafka_feed.KafkaFeed.decode`), ``HQ_GATEWAY_NATIVE`` on and off.

Refuses to run without the extension.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from api.hub import Hub
from api.kafka_feed import KafkaFeed
from api.settings import GatewaySettings
from hqstream.bench.common import calibration_row
from hqstream.bench.processing_ab import compare, simulated_batches
from streams.pipeline import Parsed, Processor
from streams.settings import StreamsSettings


def parse_bench(
    stocks: Annotated[int, typer.Option(help="stocks per snapshot")] = 1000,
    snapshots: Annotated[int, typer.Option(help="3-second snapshots (20 per minute)")] = 60,
    rounds: Annotated[int, typer.Option(min=1, help="compiled/Python pairs, alternating")] = 3,
    batch: Annotated[int, typer.Option(help="records per processed batch")] = 2000,
) -> None:
    """CPU per tick with HQ_STREAMS_NATIVE and HQ_GATEWAY_NATIVE on vs off."""
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
    _gateway_json(stocks, snapshots, rounds, batch)


def _gateway_json(stocks: int, snapshots: int, rounds: int, batch: int) -> None:
    """The gateway's Avro -> JSON of the same quotes, µs CPU per quote, compiled vs Python."""
    parsed = Parsed()
    processor = Processor(StreamsSettings(metrics_port=0))
    for raw in simulated_batches(stocks, snapshots, batch):
        processor.parse(raw, parsed)
    loop = asyncio.new_event_loop()
    feeds = {native: KafkaFeed(GatewaySettings(native=native, auth="off"), Hub(), loop)
             for native in (True, False)}  # fmt: skip
    topic = feeds[True].settings.normalized_topic
    quotes = [(topic, payload, None) for payload in parsed.encoded]
    n = len(quotes)
    print(f"\ngateway: Avro -> JSON of {n:,} quotes (KafkaFeed.decode)\n")
    print("| round | compiled: µs CPU/quote | Python: µs CPU/quote | compiled vs Python "
          "| load avg |")  # fmt: skip
    print("|---|---:|---:|---:|---:|", flush=True)
    totals = {True: 0.0, False: 0.0}
    for i in range(1, rounds + 1):
        spent = {}
        for native, feed in feeds.items():
            started = os.times()
            for start in range(0, n, batch):
                feed.decode(quotes[start : start + batch])
            ended = os.times()
            spent[native] = ended.user + ended.system - started.user - started.system
            totals[native] += spent[native]
        print(f"| {i} | {1e6 * spent[True] / n:.2f} | {1e6 * spent[False] / n:.2f} | "
              f"{100 * (spent[True] - spent[False]) / spent[False]:+.1f}% | "
              f"{os.getloadavg()[0]:.1f} |", flush=True)  # fmt: skip
    loop.close()
    print(f"| all | {1e6 * totals[True] / n / rounds:.2f} | {1e6 * totals[False] / n / rounds:.2f}"
          f" | {100 * (totals[True] - totals[False]) / totals[False]:+.1f}% | |")  # fmt: skip
    print(calibration_row(5))
