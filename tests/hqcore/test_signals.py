"""hqcore.signals: stop callbacks on SIGINT/SIGTERM, and the previous handlers put back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from types import FrameType

from hqcore.signals import on_stop_signals


def _previous(signum: int, frame: FrameType | None) -> None:
    raise AssertionError("the previous handler ran while the stop callback was installed")


async def test_loop_handlers_call_stop_then_give_the_previous_handler_back() -> None:
    """A command that installs its stop on the loop and removes it when done (the bench's
    spool-then-drain) leaves the command's own SIGTERM handler, not SIG_DFL, behind."""
    before = signal.signal(signal.SIGTERM, _previous)
    try:
        stopped = asyncio.Event()
        undo = on_stop_signals(lambda _signum: stopped.set(), asyncio.get_running_loop())
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stopped.wait(), 30)
        undo()
        assert signal.getsignal(signal.SIGTERM) is _previous
    finally:
        signal.signal(signal.SIGTERM, before)


def test_threaded_handlers_call_stop_then_give_the_previous_handler_back() -> None:
    before = signal.signal(signal.SIGTERM, _previous)
    try:
        seen: list[int] = []
        undo = on_stop_signals(seen.append)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.001)  # the handler runs in the main thread between bytecodes
        assert seen == [signal.SIGTERM]
        undo()
        assert signal.getsignal(signal.SIGTERM) is _previous
    finally:
        signal.signal(signal.SIGTERM, before)
