"""Logging set-up shared by every entry point (and only entry points call it)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Final

#: libraries whose INFO lines drown ours; held at WARNING unless the caller says otherwise
CHATTY: Final = ("aiokafka", "faust", "mode", "uvicorn.access", "httpx")


def configure_logging(
    level: str = "INFO", component: str = "hqstream", quiet: Iterable[str] = CHATTY
) -> None:
    """Plain, greppable lines on stderr: time, level, component, logger, message.

    The one logging set-up of every command. ``quiet``: loggers held at WARNING
    or above (the stream workers and the gateway keep their libraries' lines).
    """
    handler = logging.StreamHandler(sys.stderr)
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
