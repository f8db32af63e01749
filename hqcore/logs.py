"""Logging set-up shared by every entry point (and only entry points call it)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

#: libraries whose INFO lines drown ours; held at WARNING unless the caller says otherwise
CHATTY: Final = ("aiokafka", "faust", "mode", "uvicorn.access", "httpx")

#: libraries whose repeated lines are let through once per :data:`REPEAT_EVERY_S`
LIBRARIES: Final = ("aiokafka", "faust", "mode", "uvicorn", "httpx", "websockets")
REPEAT_EVERY_S: Final = 10.0


class RepeatFilter(logging.Filter):
    """Lets a library's repeated line through once per ``every_s``, then counts the rest.

    While Kafka is down, aiokafka logs each failed connect and fetch: dozens of
    ERROR lines a second per worker, which bury everything else. A line is
    "the same" when logger, level and message template match (not the
    arguments: the node id or the error text may vary). The next one let
    through says how many were held back. Lines of hqstream's own loggers are
    never held: they log at their own pace.
    """

    def __init__(
        self,
        libraries: Iterable[str] = LIBRARIES,
        every_s: float = REPEAT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.libraries = tuple(libraries)
        self.every_s = every_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # -> (let through, held)

    def _is_library(self, name: str) -> bool:
        return any(name == lib or name.startswith(lib + ".") for lib in self.libraries)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._is_library(record.name):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.every_s:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = (
                f"{record.msg} ({last[1]} more like this in the last {now - last[0]:.0f} s)"
            )
        return True


def configure_logging(
    level: str = "INFO", component: str = "hqstream", quiet: Iterable[str] = CHATTY
) -> None:
    """Plain, greppable lines on stderr: time, level, component, logger, message.

    The one logging set-up of every command. ``quiet``: loggers held at WARNING
    or above (the stream workers and the gateway keep their libraries' lines).
    A library's repeated line is shown once per 10 s (:class:`RepeatFilter`).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter())
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)-7s [{component}] %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
