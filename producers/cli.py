"""Commands of the producers package: ``hqstream produce`` and ``hqstream simulate``."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from hqcore.event_loop import use as use_event_loop
from hqcore.logs import configure_logging

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
    logging.getLogger(__name__).info("event loop: %s", use_event_loop(settings.event_loop))

    async def run() -> int:  # the feed is read only while this pod holds the Lease
        return await run_as_leader(elector_for(settings), lambda: run_receiver(settings))

    raise typer.Exit(asyncio.run(run()))


def simulate(
    addr: Annotated[
        str | None, typer.Option(help="host:port to listen on [default: HQ_FEED_ADDR]")
    ] = None,
    stocks: Annotated[int, typer.Option(min=1, help="stocks in the universe")] = 5000,
    interval: Annotated[float, typer.Option(min=0.001, help="seconds between snapshots")] = 3.0,
    rate: Annotated[
        float, typer.Option(min=0.001, help="speed-up: a snapshot every interval/rate")
    ] = 1.0,
    max_rate: Annotated[bool, typer.Option(help="snapshots back to back (benchmarks)")] = False,
    spread: Annotated[
        bool, typer.Option(help="each snapshot's lines evenly over its interval, no burst")
    ] = False,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same feed)")] = 42,
    malformed_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of lines replaced by bad records")
    ] = 0.0,
    snapshots: Annotated[
        int | None, typer.Option(min=1, help="stop pushing after N snapshots")
    ] = None,
    sent_log: Annotated[
        Path | None, typer.Option(help="append every quote line sent to this file")
    ] = None,
    heartbeat: Annotated[
        float, typer.Option(min=0.01, help="idle seconds before a heartbeat")
    ] = 10.0,
    start: Annotated[
        str | None,
        typer.Option(
            help="exchange clock start, ISO 8601 (e.g. 2026-11-23T09:15:00; without an "
            "offset it is Asia/Shanghai time) [default: today 09:30]"
        ),
    ] = None,
    epoch: Annotated[
        float | None,
        typer.Option(
            help="wall-clock schedule (Unix seconds): snapshot k at epoch + k x period, "
            "connected or not; give A/B simulators the same seed, --start and --epoch"
        ),
    ] = None,
    delay: Annotated[
        float, typer.Option(min=0.0, help="with --epoch: push each snapshot this much later")
    ] = 0.0,
    jitter: Annotated[
        float, typer.Option(min=0.0, help="with --epoch: up to this much more, at random")
    ] = 0.0,
    missing_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="with --epoch: share of lines left out at random"),
    ] = 0.0,
    variant_seed: Annotated[
        int, typer.Option(help="seed of the delay jitter and missing lines (not of the market)")
    ] = 0,
) -> None:
    """Run the vendor feed simulator; the token comes from HQ_FEED_TOKEN."""
    from producers.settings import split_addr
    from producers.simulator import SimConfig, get_settings, serve

    settings = get_settings()
    configure_logging(settings.log_level, "simulate")
    use_event_loop(settings.event_loop)
    if not settings.feed_token.get_secret_value():
        typer.echo(
            "HQ_FEED_TOKEN is not set: the simulator needs the token clients must send.", err=True
        )
        raise typer.Exit(2)
    try:
        host, port = split_addr(addr or settings.feed_addr, default_host="127.0.0.1")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--addr") from exc
    try:
        start_at = None if start is None else dt.datetime.fromisoformat(start)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--start") from exc
    config = SimConfig(
        token=settings.feed_token.get_secret_value(),
        host=host,
        port=port,
        stocks=stocks,
        interval_s=interval,
        rate=rate,
        max_rate=max_rate,
        spread=spread,
        seed=seed,
        malformed_fraction=malformed_fraction,
        max_snapshots=snapshots,
        sent_log=sent_log,
        heartbeat_interval_s=heartbeat,
        start=start_at,
        epoch=epoch,
        delay_s=delay,
        jitter_s=jitter,
        missing_fraction=missing_fraction,
        variant_seed=variant_seed,
    )
    asyncio.run(serve(config))
