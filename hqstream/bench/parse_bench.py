"""``hqstream bench parse``: CPU per tick with the compiled Quote paths (hqstream_native) vs Python.

Three tables, each alternating compiled and Python in one process:

* the stream worker's processing step (:mod:`hqstream.bench.processing_ab`),
  ``HQ_STREAMS_NATIVE`` on and off;
* the gateway's decoding of the same quotes' Avro into the JSON it pushes
  (:meth:`api.kafka_feed.KafkaFeed.decode`), ``HQ_GATEWAY_NATIVE`` on and off;
* the stream worker's Redis quote script arguments of the same quotes
  (:func:`streams.redis_lua.quote_chunks_path`), ``HQ_STREAMS_NATIVE`` on and off;
* the stream worker's parse on a burst's path (:meth:`streams.pipeline.Processor.parse`
  to the Avro, the feed arbiter's judgement included): a batch in one call
  (``QuoteParser.parse_run``) against the compiled line parse one record at a
  time in Python's loop.

Refuses to run without the extension.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from api.hub import Hub
from api.kafka_feed import KafkaFeed
from api.settings import GatewaySettings
from hqstream.bench.common import calibration_row
from hqstream.bench.processing_ab import compare, simulated_batches
from streams.pipeline import Parsed, Processor
from streams.redis_lua import QuoteChunks, quote_chunks, quote_chunks_path
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
    _redis_arguments(stocks, snapshots, rounds, batch)
    _burst_parse(stocks, snapshots, rounds, batch)


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

    def decode(feed: KafkaFeed) -> Callable[[], None]:
        def run() -> None:
            for start in range(0, n, batch):
                feed.decode(quotes[start : start + batch])

        return run

    _ab_table(
        f"gateway: Avro -> JSON of {n:,} quotes (KafkaFeed.decode)",
        "quote",
        n,
        rounds,
        compiled=decode(feeds[True]),
        python=decode(feeds[False]),
    )
    loop.close()


def _redis_arguments(stocks: int, snapshots: int, rounds: int, batch: int) -> None:
    """The stream worker's Redis quote script arguments of the same batches (RedisSink's
    ``quote_chunks``), µs CPU per tick, compiled vs Python."""
    processor = Processor(StreamsSettings(metrics_port=0))

    async def sink_batches() -> list[tuple[list[Any], list[bytes]]]:
        out = []
        for raw in simulated_batches(stocks, snapshots, batch):
            sink = (await processor.process(raw, None)).sink
            out.append((sink.quotes, sink.data or []))
        return out

    batches = asyncio.run(sink_batches())
    chunk_ticks = StreamsSettings(metrics_port=0).redis_chunk_ticks

    def build(chunks: QuoteChunks) -> Callable[[], None]:
        def run() -> None:
            for quotes, data in batches:
                chunks(quotes, data, chunk_ticks)

        return run

    n = sum(len(quotes) for quotes, _ in batches)
    _ab_table(
        f"stream worker: the Redis quote script's arguments of {n:,} ticks (quote_chunks)",
        "tick",
        n,
        rounds,
        compiled=build(quote_chunks_path(enabled=True)),
        python=build(quote_chunks),
    )


def _burst_parse(stocks: int, snapshots: int, rounds: int, batch: int) -> None:
    """The stream worker's parse of the same batches to their Avro (a burst's path), µs CPU
    per line: in one call a batch (``parse_run``) vs one record at a time. Each run has
    a processor of its own, made and given the first snapshot before it is timed, so
    every timed snapshot is new to its arbiter (a new winner per stock, as live)."""
    raw = simulated_batches(stocks, snapshots, batch)
    first, rest = raw[: -(-stocks // batch)], raw[-(-stocks // batch) :]
    settings = StreamsSettings(metrics_port=0)

    def ready(run: bool) -> Processor:
        processor = Processor(settings)
        if not run:
            processor.parse_path = dataclasses.replace(processor.parse_path, run=None)
        for records in first:
            processor.parse(records, Parsed(maker=processor.parse_path.make))
        return processor

    ready_ones = {run: [ready(run) for _ in range(rounds)] for run in (True, False)}

    def parse(run: bool) -> Callable[[], None]:
        def go() -> None:
            processor = ready_ones[run].pop()
            for records in rest:
                processor.parse(records, Parsed(maker=processor.parse_path.make))

        return go

    n = sum(len(records) for records in rest)
    _ab_table(
        f"stream worker: a burst's parse of {n:,} lines to their Avro (Processor.parse), "
        "'compiled' a batch in one call (parse_run), 'Python' one record at a time",
        "line",
        n,
        rounds,
        compiled=parse(True),
        python=parse(False),
    )


def _ab_table(
    title: str, unit: str, n: int, rounds: int, *, compiled: Callable[[], None],
    python: Callable[[], None],
) -> None:  # fmt: skip
    """Runs ``compiled`` and ``python`` (each over ``n`` ``unit``s) alternating, ``rounds``
    times; prints µs CPU per unit of each, round by round, and a calibration."""
    print(f"\n{title}\n")
    print(f"| round | compiled: µs CPU/{unit} | Python: µs CPU/{unit} | compiled vs Python "
          "| load avg |")  # fmt: skip
    print("|---|---:|---:|---:|---:|", flush=True)
    totals = {"compiled": 0.0, "python": 0.0}
    for i in range(1, rounds + 1):
        spent = {}
        for name, run in (("compiled", compiled), ("python", python)):
            started = os.times()
            run()
            ended = os.times()
            spent[name] = ended.user + ended.system - started.user - started.system
            totals[name] += spent[name]
        print(f"| {i} | {1e6 * spent['compiled'] / n:.2f} | {1e6 * spent['python'] / n:.2f} | "
              f"{100 * (spent['compiled'] - spent['python']) / spent['python']:+.1f}% | "
              f"{os.getloadavg()[0]:.1f} |", flush=True)  # fmt: skip
    done, ref = totals["compiled"], totals["python"]
    print(f"| all | {1e6 * done / n / rounds:.2f} | {1e6 * ref / n / rounds:.2f}"
          f" | {100 * (done - ref) / ref:+.1f}% | |")  # fmt: skip
    print(calibration_row(5))
