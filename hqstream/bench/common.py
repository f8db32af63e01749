"""Shared plumbing of the benchmark commands: a broker to run against, live figures."""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hqstream.local_runner import LocalStack


@dataclass(frozen=True)
class BenchEnv:
    bootstrap: str
    redis_url: str
    local: bool


@contextlib.contextmanager
def bench_env(need_redis: bool = False) -> Iterator[BenchEnv]:
    """HQ_KAFKA_BOOTSTRAP/HQ_REDIS_URL when set, else a fresh local broker (and Redis)."""
    bootstrap = os.environ.get("HQ_KAFKA_BOOTSTRAP")
    redis_url = os.environ.get("HQ_REDIS_URL", "")
    if bootstrap and (redis_url or not need_redis):
        yield BenchEnv(bootstrap, redis_url, local=False)
        return
    with tempfile.TemporaryDirectory(prefix="hqbench-") as tmp, LocalStack(Path(tmp)) as stack:
        yield BenchEnv(stack.kafka.bootstrap, stack.redis.url, local=True)


def machine() -> str:
    """One line describing the machine, for the results table."""
    cpu = "unknown cpu"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"
