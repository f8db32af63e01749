"""Waiting on conditions with deadlines, never on fixed sleeps.

A test that sleeps a fixed time and then asserts passes or fails with the
machine's speed. These helpers poll a condition until it holds, or fail with
what was awaited once a generous deadline is over (deadlines are limits for a
broken build, not measurements)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Polls ``predicate`` on the event loop until it holds; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.01)


def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Polls ``predicate`` from a plain thread (a test beside a server thread) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.02)
