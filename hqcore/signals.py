"""Stop on SIGINT or SIGTERM: the one way a long-running command hears it should end.

:func:`on_stop_signals` installs ``stop(signum)`` for both signals, through the
running event loop when given one (asyncio commands: the callback runs in the
loop), else with :func:`signal.signal` (threaded commands: it runs in the main
thread between bytecodes, so it should only set a flag or an Event). It
returns a function that puts the previous handlers back (either way).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Final

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def on_stop_signals(
    stop: Callable[[int], object], loop: asyncio.AbstractEventLoop | None = None
) -> Callable[[], None]:
    """Call ``stop(signum)`` on SIGINT/SIGTERM; returns the undo."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    if loop is not None:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop, int(sig))

        def remove_loop_handlers() -> None:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)  # leaves SIG_DFL: put the previous one back
                if handler is not None:  # None: not installed from Python
                    signal.signal(sig, handler)

        return remove_loop_handlers
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: stop(signum))

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
