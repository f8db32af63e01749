"""Logging set-up shared by every entry point (and only entry points call it)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO", component: str = "hqstream") -> None:
    """Plain, greppable lines on stderr: time, level, component, logger, message."""
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
    for noisy in ("aiokafka", "faust", "mode", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
