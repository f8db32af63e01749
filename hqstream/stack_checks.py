"""Checks on a running stack: is the gateway ready, has Redis caught up with some quotes.

Polled with a deadline by the benchmarks (``hqstream bench``) and the tests
that run the pipeline; each check is one cheap read and never waits itself.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import redis

from schemas import redis_keys as rk


def gateway_ready(port: int) -> bool:
    """Whether the gateway on loopback ``port`` answers ``/readyz`` with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def quotes_at_newest(url: str, newest: dict[str, int]) -> Callable[[], bool]:
    """A check: every code's quote in Redis is at (or past) its ``newest`` exchange_ts."""
    client = redis.Redis.from_url(url)

    def check() -> bool:
        pipe = client.pipeline(transaction=False)
        for code in newest:
            pipe.hget(rk.quote(code), "ts")
        stored = pipe.execute()
        pairs = zip(newest, stored, strict=True)
        return all(s is not None and int(s) >= newest[c] for c, s in pairs)

    return check
