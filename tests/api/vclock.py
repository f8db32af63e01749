"""A virtual clock for the gateway's timers: tests move time, the machine does not.

The hub's flush timer runs on the event loop's clock (``loop.call_at``), the
sessions' sender tasks and watchdog on ``time.monotonic`` and ``asyncio.sleep``.
:class:`VirtualClock` puts all of them on one clock that moves only when the
test calls :meth:`advance`, so "not yet written within the interval" and
"written once the interval is over" are facts of the code, not of the
machine's speed.
"""

from __future__ import annotations

import asyncio
import time
import types

import pytest

import api.hub
import api.ws_session


class VirtualClock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: float = 1_000.0) -> None:
        self.now = start
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "time", self.monotonic)
        fake_time = _TimeModule(self)
        for module in (api.hub, api.ws_session):
            monkeypatch.setattr(module, "time", fake_time)

    def monotonic(self) -> float:
        return self.now

    async def advance(self, seconds: float, step: float = 0.005) -> None:
        """Moves time forward in small steps, letting due timers and tasks run at each."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            await settle()

    async def run(self) -> None:
        """Lets everything that is due now run, without moving time."""
        await settle()


class _TimeModule(types.ModuleType):
    """``time`` as the gateway modules see it: ``monotonic`` is the virtual clock."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__("time")
        self._clock = clock

    def monotonic(self) -> float:
        return self._clock.now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


async def settle(rounds: int = 20) -> None:
    """A few turns of the event loop: ready callbacks and woken tasks run."""
    for _ in range(rounds):
        await asyncio.sleep(0)
