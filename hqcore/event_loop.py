"""The asyncio event loop of every hqstream process: uvloop unless told otherwise.

A stream worker spends much of its CPU between its own lines: the event loop
running callbacks, the selector, the socket transports of aiokafka and
redis-py (Python code in the standard library's loop). uvloop runs the same
asyncio programs on libuv, with those parts compiled (docs/benchmarks.md,
"uvloop"). ``HQ_EVENT_LOOP=asyncio`` puts the standard library's loop back,
for a platform without uvloop or to compare.

Entry points call :func:`use` before any loop is made: it sets the event
loop policy, so ``asyncio.run``, faust's worker and the threads mode starts
(each with a loop of its own) all get the chosen kind.
"""

from __future__ import annotations

import asyncio
from typing import Literal

EventLoop = Literal["uvloop", "asyncio"]


def use(kind: EventLoop) -> str:
    """New event loops of this process are ``kind``'s; what serves, for the start-up log."""
    if kind == "asyncio":
        asyncio.set_event_loop_policy(None)  # the default policy: the standard library's loop
        return "asyncio"
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return f"uvloop {uvloop.__version__}"
