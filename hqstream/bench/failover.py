"""``hqstream bench failover``: seconds until a stopped worker's partitions are processed again.

Per run, on its own broker and Redis (always local: it flushes the Redis database):
fresh uuid topics (3 partitions), two ``hqstream streams`` workers of one
group, half of a generated feed (300 stocks x 3 snapshots) processed; then
one worker is stopped (``--signal kill``: SIGKILL, ``term``: SIGTERM), the
newer half is produced, and the time from the signal until every stock's
newest tick is in Redis is measured (the stopped worker's stocks can only get
there through failover). ``--static`` gives the workers a
``group.instance.id`` (static membership); ``--replace`` starts a
replacement with the stopped worker's instance id at once. Prints each run
and p50/max. Bounded: each wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from confluent_kafka import Producer
from rich.console import Console

from hqcore.redis_client import sync_client
from hqstream.bench.common import machine
from hqstream.local_runner import LocalStack, create_topics, free_port
from hqstream.stack_checks import quotes_at_newest, worker_metric
from producers.sample_feed import RawLine, generate
from schemas.topics import RAW, topic_specs

console = Console()
PARTITIONS = 3
WORKER = "import typer; from streams.cli import streams; typer.run(streams)"


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _assigned(port: int) -> int:
    return int(worker_metric(port, "hq_streams_assigned_partitions"))


def _newest_in_redis(url: str, lines: list[RawLine]) -> Callable[[], bool]:
    from streams.parse import parse_record

    newest: dict[str, int] = {}
    for _, value, _ in lines:
        quote = parse_record(value, 0, 0)
        newest[quote["code"]] = max(newest.get(quote["code"], 0), quote["exchange_ts"])
    return quotes_at_newest(url, newest)


def _one_run(
    bootstrap: str, redis_url: str, tmp: Path, run: int, *, sig: str, static: bool, replace: bool
) -> float:
    prefix = f"failover{secrets.token_hex(3)}."
    create_topics(bootstrap, topic_specs(PARTITIONS), prefix=prefix)
    lines, _ = generate(300, 6, seed=30 + run)
    half = len(lines) // 2
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                         "enable.idempotence": True})  # fmt: skip

    def produce(batch: list[RawLine]) -> None:
        for key, value, headers in batch:
            producer.produce(prefix + RAW, value, key, headers=cast(Any, headers))
        if producer.flush(30) != 0:
            raise RuntimeError("raw records not acknowledged")

    sync_client(redis_url).flushdb()
    group = f"{prefix}streams"
    procs: list[subprocess.Popen[bytes]] = []

    def worker(name: str, port: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "HQ_KAFKA_BOOTSTRAP": bootstrap,
            "HQ_REDIS_URL": redis_url,
            "HQ_TOPIC_PREFIX": prefix,
            "HQ_PARTITIONS": str(PARTITIONS),
            "HQ_STREAMS_GROUP_ID": group,
            "HQ_STREAMS_WORKER_ID": f"{prefix}{name}",
            "HQ_STREAMS_METRICS_PORT": str(port),
            "HQ_STREAMS_DATADIR": str(tmp / "faust"),
            "HQ_STREAMS_CANDLE_QUIET_S": "3600",
        }
        if static:
            env["HQ_STREAMS_GROUP_INSTANCE_ID"] = f"{group}-{name.split('.')[0]}"
        log = (tmp / f"{prefix}{name}.log").open("wb")
        # its own process group in this session: local_runner.REDIS_NICE
        proc = subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=log,
                                stderr=subprocess.STDOUT, process_group=0)  # fmt: skip
        procs.append(proc)
        return proc

    try:
        produce(lines[:half])
        ports = {"victim": free_port(), "survivor": free_port()}
        victim = worker("victim", ports["victim"])
        worker("survivor", ports["survivor"])
        _wait(
            lambda: (
                _assigned(ports["victim"]) > 0
                and _assigned(ports["victim"]) + _assigned(ports["survivor"]) == PARTITIONS
            ),
            120,
            "both workers to hold partitions",
        )
        _wait(_newest_in_redis(redis_url, lines[:half]), 60, "the first half in redis")
        os.killpg(victim.pid, signal.SIGKILL if sig == "kill" else signal.SIGTERM)
        stopped = time.monotonic()
        victim.wait(30)
        if replace:
            worker("victim.2", 0)
        produce(lines[half:])
        _wait(_newest_in_redis(redis_url, lines), 120, "every newest tick after the stop")
        return time.monotonic() - stopped
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def failover_bench(
    runs: Annotated[int, typer.Option(min=1, help="workers stopped, one per run")] = 5,
    sig: Annotated[str, typer.Option("--signal", help="kill (SIGKILL) | term (SIGTERM)")] = "kill",
    static: Annotated[bool, typer.Option(help="static membership (group.instance.id)")] = False,
    replace: Annotated[bool, typer.Option(help="start a replacement at once")] = False,
) -> None:
    """Failover time: stop one of two workers, time until its stocks are processed again."""
    if sig not in ("kill", "term"):
        raise typer.BadParameter("--signal is kill or term")
    membership = "static" if static else "dynamic"
    console.print(
        f"[bold]bench failover[/]: {runs} run(s), SIG{sig.upper()}, {membership} membership"
        f"{', replacement at once' if replace else ''}; machine: {machine()}"
    )
    seconds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hqfo-") as tmp, LocalStack(Path(tmp)) as stack:
        for run in range(runs):
            took = _one_run(
                stack.kafka.bootstrap,
                stack.redis.url,
                Path(tmp),
                run,
                sig=sig,
                static=static,
                replace=replace,
            )
            seconds.append(took)
            console.print(f"  run {run + 1}: {took:.1f} s")
    ordered = sorted(seconds)
    typer.echo(
        f"| SIG{sig.upper()}, {membership}{', replaced' if replace else ''} | {runs} | "
        f"{ordered[len(ordered) // 2]:.1f} | {ordered[-1]:.1f} | "
        f"{', '.join(f'{s:.1f}' for s in seconds)} |"
    )
