"""``hqstream bench``: the benchmark commands. Figures go to docs/benchmarks.md."""

from __future__ import annotations

import typer

from hqstream.bench.archive_bench import archive_bench
from hqstream.bench.cost import cost_bench
from hqstream.bench.e2e import e2e_bench
from hqstream.bench.gateway_bench import fanout_bench, latency_bench
from hqstream.bench.ingest import ingest
from hqstream.bench.streams_bench import streams_bench

bench_app = typer.Typer(no_args_is_help=True)
bench_app.command("ingest")(ingest)
bench_app.command("streams")(streams_bench)
bench_app.command("gateway-latency")(latency_bench)
bench_app.command("fanout")(fanout_bench)
bench_app.command("e2e")(e2e_bench)
bench_app.command("cost")(cost_bench)
bench_app.command("archive")(archive_bench)
