"""Checks on a running stack: is the gateway ready, a worker's metric, has Redis caught up.

Polled with a deadline by the benchmarks (``hqstream bench``) and the tests
that run the pipeline; each check is one cheap read and never waits itself.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

from hqcore.redis_client import sync_client
from schemas import redis_keys as rk


def gateway_ready(port: int) -> bool:
    """Whether the gateway on loopback ``port`` answers ``/readyz`` with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def worker_metric(port: int, metric: str) -> float:
    """The value of an unlabelled metric of a stream worker (0 when not exposed yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == metric:
            return float(value)
    return 0.0


def quotes_at_newest(url: str, newest: dict[str, int]) -> Callable[[], bool]:
    """A check: every code's quote in Redis is at (or past) its ``newest`` exchange_ts."""
    client = sync_client(url)  # one server or a cluster

    def check() -> bool:
        pipe = client.pipeline(transaction=False)
        for code in newest:
            pipe.hget(rk.quote(code), "ts")
        stored = pipe.execute()
        pairs = zip(newest, stored, strict=True)
        return all(s is not None and int(s) >= newest[c] for c, s in pairs)

    return check
