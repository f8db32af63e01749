"""Commands of the producers package: ``hqstream produce`` and ``hqstream simulate``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from producers.simulator import simulate_command as simulate
from schemas.logs import configure_logging

__all__ = ["produce", "simulate"]


def produce(
    feed_addr: Annotated[
        str | None, typer.Option("--feed-addr", help="vendor host:port (HQ_FEED_ADDR)")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="port of /metrics, /healthz, /readyz")
    ] = None,
    journal_dir: Annotated[
        Path | None, typer.Option(help="on-disk spool used while Kafka is down")
    ] = None,
    feed: Annotated[
        str | None, typer.Option("--feed", help="the HQ_FEEDS entry to read (HQ_FEED)")
    ] = None,
) -> None:
    """Read the vendor feed and produce every line to hq.ticks.raw (token: HQ_FEED_TOKEN)."""
    from producers.lease import elector_for, run_as_leader
    from producers.receiver import run_receiver
    from producers.settings import ReceiverSettings

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "feed_addr": feed_addr,
            "metrics_port": metrics_port,
            "journal_dir": journal_dir,
            "feed": feed,
        }.items()
        if v is not None
    }
    settings = ReceiverSettings(**overrides)  # explicit options win over HQ_* env
    configure_logging(settings.log_level, "produce")

    async def run() -> int:  # the feed is read only while this pod holds the Lease
        return await run_as_leader(elector_for(settings), lambda: run_receiver(settings))

    raise typer.Exit(asyncio.run(run()))
