"""Shared plumbing of the benchmark commands: a broker to run against, live figures."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import typer
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from redis.exceptions import RedisClusterException
from rich.console import Console

from hqcore.redis_client import sync_client
from hqstream.bench import steal
from hqstream.local_runner import BROKER_BACKGROUND_NICE, REDIS_NICE, LocalStack

console = Console(stderr=True)


@dataclass(frozen=True)
class BenchEnv:
    bootstrap: str
    redis_url: str
    local: bool
    pids: dict[str, int] = field(default_factory=dict)  # "broker", "redis" when local


@contextlib.contextmanager
def bench_env(
    need_redis: bool = False,
    bootstrap: str = "",
    redis_url: str = "",
    redis_nice: int = REDIS_NICE,
    broker_background_nice: int = BROKER_BACKGROUND_NICE,
) -> Iterator[BenchEnv]:
    """The given endpoints, else HQ_KAFKA_BOOTSTRAP/HQ_REDIS_URL when set, else a
    fresh local broker and Redis that live as long as the benchmark (the Redis at
    ``redis_nice``, the broker's housekeeping threads at ``broker_background_nice``,
    as ``hqstream up`` runs them).

    Endpoints given by the user are checked first: one that cannot be reached
    ends the command with one line saying what was tried and what to set.
    """
    bootstrap = bootstrap or os.environ.get("HQ_KAFKA_BOOTSTRAP", "")
    redis_url = redis_url or os.environ.get("HQ_REDIS_URL", "")
    if bootstrap and (redis_url or not need_redis):
        check_kafka(bootstrap)
        if need_redis:
            check_redis(redis_url)
        console.print(
            f"using Kafka {bootstrap}" + (f", Redis {_safe(redis_url)}" if need_redis else "")
        )
        yield BenchEnv(bootstrap, redis_url, local=False)
        return
    console.print(
        "HQ_KAFKA_BOOTSTRAP/HQ_REDIS_URL unset: starting a local Kafka broker and Redis ..."
    )
    with (
        tempfile.TemporaryDirectory(prefix="hqbench-") as tmp,
        LocalStack(
            Path(tmp), redis_nice=redis_nice, broker_background_nice=broker_background_nice
        ) as stack,
    ):
        console.print(f"local Kafka {stack.kafka.bootstrap}, Redis {stack.redis.url}")
        pids = {
            name: proc.pid
            for name, proc in (("broker", stack.kafka.proc), ("redis", stack.redis.proc))
            if proc is not None
        }
        yield BenchEnv(stack.kafka.bootstrap, stack.redis.url, local=True, pids=pids)


def _safe(url: str) -> str:
    """A Redis URL without its credentials, for messages."""
    return url.split("@")[-1] if "@" in url else url


def unreachable(what: str, target: str, variable: str, why: object) -> typer.Exit:
    """Prints the one line a user needs and returns the exit to raise."""
    console.print(
        f"[red]cannot reach {what} at {target} ({why}).[/] Start it, or set {variable} to a "
        f"reachable one; a benchmark with {variable} unset starts its own."
    )
    return typer.Exit(2)


def check_kafka(bootstrap: str, timeout: float = 10.0) -> None:
    try:
        conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _quiet}
        AdminClient(conf).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise unreachable("Kafka", bootstrap, "HQ_KAFKA_BOOTSTRAP", exc.args[0].str()) from None


def check_redis(url: str, timeout: float = 5.0) -> None:
    """Exit 2 with a hint unless Redis (one server or a cluster) answers PING."""
    client = None
    try:  # a cluster client connects (to learn the slots) when it is made
        client = sync_client(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        client.ping()
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        raise unreachable("Redis", _safe(url), "HQ_REDIS_URL", exc) from None
    finally:
        if client is not None:
            client.close()


# librdkafka's connection errors are summed up in one line by check_kafka
_quiet = logging.getLogger("hqstream.bench.kafka-check")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


CALIBRATION_LOOP = 10_000_000


@functools.cache
def calibration_s() -> float:
    """Seconds a fixed pure-Python loop of 10 M additions takes on this machine now
    (best of three), measured once per benchmark run.

    Machines of one kind differ from day to day (a shared host, another tenant's
    load), so every benchmark table prints this figure beside its own: tables
    from different days compare as ratios to it."""
    return measure_calibration_s()


def measure_calibration_s() -> float:
    """:func:`calibration_s` measured again (a benchmark of several runs, one per run)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(CALIBRATION_LOOP):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


#: the parse calibration's snapshot: this many simulated stocks' lines
PARSE_CALIBRATION_STOCKS = 5000


@functools.cache
def parse_calibration_us() -> float:
    """Microseconds a line of the stream worker's parse of a fixed simulated snapshot on
    this machine now (best of three), measured once per benchmark run.

    The 10 M-addition loop (:func:`calibration_s`) runs in a core's first-level
    cache; the pipeline's work allocates and reads memory, and on a shared host
    the two move apart: on 2026-12-06 the same code's pipeline took 622 to 939
    ms of CPU per burst between runs at loop figures of 0.24-0.29 s. This is the
    worker's own work (:meth:`streams.pipeline.Processor.parse`: the compiled
    line parse when installed, the arbitration, the quote dicts, their Avro and
    JSON) on the same 5,000 lines every time, the collector off."""
    return measure_parse_calibration_us()


def measure_parse_calibration_us() -> float:
    """:func:`parse_calibration_us` measured again (a benchmark of several runs)."""
    from streams.pipeline import Parsed, Processor
    from streams.settings import StreamsSettings

    records = _calibration_records()
    best = float("inf")
    for _ in range(3):
        processor = Processor(StreamsSettings(metrics_port=0))  # a fresh arbiter each time
        collecting = gc.isenabled()
        gc.disable()
        try:
            started = time.perf_counter()
            processor.parse(records, Parsed(n_in=len(records)))
            best = min(best, time.perf_counter() - started)
        finally:
            if collecting:
                gc.enable()
    return best / len(records) * 1e6


@functools.cache
def _calibration_records() -> list[Any]:
    """The parse calibration's raw records: the same simulated snapshot every run (the
    first of ``bench parse``'s and ``bench indicators``', 09:30:00)."""
    from hqstream.bench.processing_ab import simulated_batches

    return simulated_batches(PARSE_CALIBRATION_STOCKS, 1, PARSE_CALIBRATION_STOCKS)[0]


def calibration_row(columns: int = 2) -> str:
    """The calibrations as a markdown table row of ``columns`` cells (figures in the second)."""
    empty = " |" * (columns - 2)
    slowed = f" ({steal.described()})" if steal.running() else ""
    return (
        "| calibration, this run: 10 M-addition Python loop; the stream worker's parse of "
        f"{PARSE_CALIBRATION_STOCKS:,} simulated lines{slowed} | {calibration_s():.2f} s; "
        f"{parse_calibration_us():.2f} µs a line |{empty}"
    )


def machine() -> str:
    """One line describing the machine, for the results table (with the calibration)."""
    cpu = "unknown cpu"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, "
        f"calibration {calibration_s():.2f} s (10 M-addition loop), "
        f"{parse_calibration_us():.2f} µs a line (the stream worker's parse)"
        + (f"; {steal.described()}" if steal.running() else "")
    )
