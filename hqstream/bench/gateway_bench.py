"""Gateway benchmarks: feed-receive -> WebSocket latency, and WebSocket fan-out.

``latency_bench``: normalized quotes whose ``receive_ts`` is their send time are
produced at the full-market rate (default 1,667/s over 5,000 codes) into the
topic a gateway process consumes; a WebSocket client subscribed to everything
measures ``now - receive_ts`` at delivery. ``fanout_bench``: many clients, each
subscribed to 10 stocks, on one gateway process; reports connections held,
delivery latency, quotes and frames delivered per second against those due,
the gateway's RSS per connection (/proc VmRSS) and where the CPU went: the
gateway's, the clients', the producer's and the whole machine's CPU% over the
measured window (/proc/<pid>/stat utime+stime, /proc/stat), so a saturated
load generator is not mistaken for a slow gateway.

``fanout_bench --abuse``: after the first measured window three more of the
same length run, with one hostile client beside the normal ones in the second
and the fourth (:mod:`hqstream.bench.hostile`: oversized compressed frames,
binary frames, ``subscribe_all`` in a loop without reading); the table
compares the normal clients' latency with and without it and shows the
gateway's RSS before, at its peak and after the hostile windows.

The feed's shape: ``--burst`` produces the whole universe at once every
``universe / rate`` seconds (the vendor's 3 s snapshots: same average rate),
otherwise quotes are produced evenly. Clients are :mod:`hqstream.wsclient`
(a minimal RFC 6455 client, cheap per frame) or, with ``--client websockets``,
the ``websockets`` library.

The gateway runs as a subprocess (``python -m api``) on a loopback port with
uuid-prefixed topics, which are deleted afterwards; the producer runs in a
process of its own. Bounded in clients and time; never touches other topics.
This module holds the commands and the run; the gateway process, the feed and
the clients are in :mod:`hqstream.bench.gateway_rig`, the figures (/proc
readings, latency tally, tables) in :mod:`hqstream.bench.gateway_measure`.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass

import orjson
import typer
from rich.live import Live

from hqstream.bench.common import bench_env, machine
from hqstream.bench.gateway_measure import (
    CpuWindow,
    Tally,
    console,
    live_rows,
    percentile,
    rss_kb,
    table,
)
from hqstream.bench.gateway_rig import (
    ClientKind,
    Gateway,
    gateway_process,
    light_client,
    produce_quotes,
    stock_codes,
    websockets_client,
)
from hqstream.bench.hostile import Abuse, hostile_process
from schemas import topics

SETTLE_LONGEST_S = 90.0


@dataclass(frozen=True)
class Load:
    """What one run puts on the gateway: clients, their subscriptions, the feed."""

    clients: int
    stocks_per_client: int
    seconds: float
    rate: int
    universe: int
    compression: bool
    burst: bool
    client: ClientKind
    abuse: bool = False


async def _run(gw: Gateway, bootstrap: str, load: Load, title: str) -> dict[str, str]:
    codes = stock_codes(load.universe)
    tally = Tally()
    stop = asyncio.Event()
    rss_before = rss_kb(gw.pid)
    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    rng = random.Random(7)
    subscribers = Counter[str]()
    run_client = light_client if load.client == "light" else websockets_client
    with Live(table(title, live_rows(tally, started, "connecting")), console=console,
              refresh_per_second=2) as live:  # fmt: skip
        for i in range(load.clients):
            if load.stocks_per_client <= 0:
                subs: list[bytes] = [b'{"type":"subscribe_all"}']
                subscribers.update(codes)
            else:
                picked = rng.sample(codes, load.stocks_per_client)
                subscribers.update(picked)
                subs = [orjson.dumps({"type": "subscribe_stock", "stock_code": c}) for c in picked]
            tasks.append(asyncio.create_task(run_client(gw, subs, tally, stop, load.compression)))
            if i % 100 == 99:
                while tally.connected + tally.errors < i - 200:
                    await asyncio.sleep(0.05)
                live.update(table(title, live_rows(tally, started, "connecting")))
        while tally.connected + tally.errors < load.clients and time.monotonic() - started < 120:
            await asyncio.sleep(0.2)
            live.update(table(title, live_rows(tally, started, "connecting")))
        await asyncio.sleep(1.0)  # subscriptions acked and snapshots sent
        rss_connected = rss_kb(gw.pid)
        ctx = mp.get_context("spawn")
        producer = ctx.Process(
            target=produce_quotes,
            args=(
                bootstrap,
                gw.prefix + topics.NORMALIZED,
                codes,
                load.rate,
                load.seconds * 4 + SETTLE_LONGEST_S + 20 if load.abuse else load.seconds + 3,
                load.burst,
            ),
            daemon=True,
        )
        producer.start()
        assert producer.pid is not None
        cpu = CpuWindow({"gateway": gw.pid, "clients": os.getpid(), "producer": producer.pid})
        await asyncio.sleep(3.0)  # warm-up, not measured
        if load.abuse:  # compare steady states: wait out the backlog of the start
            await _settle(tally, live, title, started)
        tally.measuring = True
        received0, frames0 = tally.received, tally.frames
        cpu.start()
        while time.monotonic() - cpu.wall0 < load.seconds:
            await asyncio.sleep(0.5)
            live.update(table(title, live_rows(tally, started, "measuring")))
        tally.measuring = False
        used = cpu.stop()
        wall = time.monotonic() - cpu.wall0
        received, frames = tally.received - received0, tally.frames - frames0
        rss_loaded = rss_kb(gw.pid)
        held = tally.connected
        lat = list(tally.latencies)  # the first window's (the hostile windows reuse the tally)
        abuse_rows = {}
        if load.abuse:
            abuse_rows = await _hostile_windows(gw, load, tally, cpu, live, title, started)
        stop.set()
        if load.abuse and producer.is_alive():  # it was given time to spare for the settling
            producer.terminate()
        producer.join(30)
        await asyncio.gather(*tasks, return_exceptions=True)
    per_conn = (rss_connected - rss_before) / max(1, held)
    due = load.rate * sum(subscribers.values()) / len(codes)
    shape = (
        f"burst: {load.universe} every {load.universe / load.rate:.1f} s"
        if load.burst
        else f"even: {load.rate}/s"
    )
    return {
        "machine": machine(),
        "clients requested / held": f"{load.clients} / {held}",
        "failed connections": f"{tally.errors} {dict(tally.error_kinds) or ''}",
        "error messages received": f"{sum(tally.server_errors.values())} "
        f"{dict(tally.server_errors) or ''}",
        "client implementation": load.client,
        "stocks per client": "all" if load.stocks_per_client <= 0 else str(load.stocks_per_client),
        "feed shape (universe, seconds)": f"{shape} ({load.universe}, {load.seconds:g})",
        "permessage-deflate": str(load.compression),
        "quotes/s due / delivered": f"{due:,.0f} / {received / wall:,.0f}",
        "frames/s delivered (quotes per frame)": f"{frames / wall:,.0f} "
        f"({received / max(1, frames):.2f})",
        "latency p50 / p90 / p99 / max ms": f"{percentile(lat, 0.5):.1f} / "
        f"{percentile(lat, 0.9):.1f} / {percentile(lat, 0.99):.1f} / "
        f"{max(lat, default=float('nan')):.1f}",
        "CPU % gateway / clients / producer": f"{used['gateway']:.0f} / {used['clients']:.0f} / "
        f"{used['producer']:.0f}",
        f"CPU % machine (of {100 * (os.cpu_count() or 1)})": f"{used['machine']:.0f}",
        "gateway RSS idle / connected / loaded MiB": f"{rss_before / 1024:.0f} / "
        f"{rss_connected / 1024:.0f} / {rss_loaded / 1024:.0f}",
        "gateway RSS per connection KiB": f"{per_conn:.1f}",
        **abuse_rows,
    }


async def _settle(tally: Tally, live: Live, title: str, started: float,
                  p99_ms: float = 500.0, longest_s: float = SETTLE_LONGEST_S) -> None:  # fmt: skip
    """Wait, unmeasured, until 2 s of quotes have a p99 under ``p99_ms`` (``longest_s`` at most).

    On a shared machine the first seconds of a run carry a backlog (connecting
    clients, a broker warming up) that drains over tens of seconds; windows
    measured during it would compare the backlog, not the hostile client.
    """
    deadline = time.monotonic() + longest_s
    tally.measuring = True
    while time.monotonic() < deadline:
        tally.latencies.clear()
        await asyncio.sleep(2.0)
        live.update(table(title, live_rows(tally, started, "settling")))
        if tally.latencies and percentile(tally.latencies, 0.99) < p99_ms:
            break
    tally.measuring = False
    tally.latencies.clear()


async def _hostile_windows(gw: Gateway, load: Load, tally: Tally, cpu: CpuWindow, live: Live,
                           title: str, started: float) -> dict[str, str]:  # fmt: skip
    """Three more measured windows: hostile client on, on, off (the first one was off).

    In that order (off, on, on, off) a drift of the machine's load (shared
    cores) that grows or shrinks steadily over the run weighs the same on both
    sides, so it does not pass for the hostile client's effect. The normal
    clients' latencies of the "off" windows and of the "on" windows are pooled.
    """
    without = list(tally.latencies)
    with_hostile: list[float] = []
    errors_before = sum(tally.server_errors.values())
    closed_before = tally.closed + tally.errors
    rss_before = peak = rss_kb(gw.pid)
    abuse = Abuse()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    cpu_on: list[dict[str, float]] = []
    per_window = [f"off {percentile(without, 0.99):.0f} ms, {rss_before / 1024:.0f} MiB"]
    for hostile_on in (True, True, False):
        tally.latencies.clear()
        stop_hostile = ctx.Event()
        hostile = None
        if hostile_on:  # in a process of its own: its work never delays the normal clients
            hostile = ctx.Process(
                target=hostile_process, args=(gw.port, stop_hostile, results), daemon=True
            )
            hostile.start()
        phase = "measuring, hostile client " + ("on" if hostile_on else "off")
        tally.measuring = True
        cpu.start()
        while time.monotonic() - cpu.wall0 < load.seconds:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_kb(gw.pid))
            live.update(table(title, live_rows(tally, started, phase)))
        tally.measuring = False
        used = cpu.stop()
        (with_hostile if hostile_on else without).extend(tally.latencies)
        per_window.append(
            f"{'on' if hostile_on else 'off'} {percentile(tally.latencies, 0.99):.0f} ms, "
            f"{rss_kb(gw.pid) / 1024:.0f} MiB"
        )
        if hostile is not None:
            cpu_on.append(used)
            stop_hostile.set()
            got: Abuse = await asyncio.to_thread(results.get, True, 60)
            abuse.merge(got)
            await asyncio.to_thread(hostile.join, 30)
            await asyncio.sleep(2.0)  # the gateway closes what is left of the hostile client
    rss_after = rss_kb(gw.pid)
    p99_without, p99_with = percentile(without, 0.99), percentile(with_hostile, 0.99)
    p50_without, p50_with = percentile(without, 0.5), percentile(with_hostile, 0.5)
    gw_cpu = sum(u["gateway"] for u in cpu_on) / len(cpu_on)
    machine_cpu = sum(u["machine"] for u in cpu_on) / len(cpu_on)
    return {
        f"ABUSE: windows of {load.seconds:g} s: p99, RSS at the end": " / ".join(per_window),
        "ABUSE: normal p50 ms without / with hostile": f"{p50_without:.1f} / {p50_with:.1f}",
        "ABUSE: normal p99 ms without / with hostile": f"{p99_without:.1f} / {p99_with:.1f}",
        "ABUSE: p99 change": f"{100 * (p99_with - p99_without) / p99_without:+.1f} %",
        "ABUSE: normal clients closed / errors while abused": (
            f"{tally.closed + tally.errors - closed_before} / "
            f"{sum(tally.server_errors.values()) - errors_before}"
        ),
        "ABUSE: gateway RSS before / peak / after MiB": (
            f"{rss_before / 1024:.0f} / {peak / 1024:.0f} / {rss_after / 1024:.0f}"
        ),
        "ABUSE: CPU % gateway / machine (hostile on)": f"{gw_cpu:.0f} / {machine_cpu:.0f}",
        "ABUSE: hostile client": abuse.summary(),
    }


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def latency_bench(
    seconds: float = typer.Option(20.0, min=1, max=600, help="measured seconds"),
    rate: int = typer.Option(1667, min=1, max=20000, help="quotes per second"),
    universe: int = typer.Option(5000, min=1, max=20000, help="distinct stock codes"),
    flush_ms: int = typer.Option(20, min=1, max=1000, help="gateway flush interval"),
    compression: bool = typer.Option(True, help="negotiate permessage-deflate"),
    burst: bool = typer.Option(False, help="whole universe at once every universe/rate s"),
) -> None:
    """Feed receive -> WebSocket delivery latency at the full-market rate (one client, all)."""
    load = Load(1, 0, seconds, rate, universe, compression, burst, "websockets")
    with (
        bench_env(need_redis=True) as env,
        gateway_process(env.bootstrap, env.redis_url, flush_ms) as gw,
    ):
        result = asyncio.run(_run(gw, env.bootstrap, load, "gateway latency"))
    result["flush interval ms"] = str(flush_ms)
    console.print(table("gateway latency: receive_ts -> WebSocket delivery", result))


def fanout_bench(
    clients: int = typer.Option(2000, min=1, max=10_000, help="concurrent WebSocket clients"),
    stocks: int = typer.Option(10, min=1, max=500, help="stocks per client"),
    seconds: float = typer.Option(20.0, min=1, max=600, help="measured seconds"),
    rate: int = typer.Option(1667, min=1, max=20000, help="quotes per second"),
    universe: int = typer.Option(5000, min=10, max=20000, help="distinct stock codes"),
    flush_ms: int = typer.Option(20, min=1, max=1000, help="gateway flush interval"),
    compression: bool = typer.Option(True, help="negotiate permessage-deflate"),
    burst: bool = typer.Option(False, help="whole universe at once every universe/rate s"),
    client: str = typer.Option("light", help="client implementation: light | websockets"),
    profile: str | None = typer.Option(None, help="run the gateway under cProfile, stats here"),
    abuse: bool = typer.Option(
        False, help="a second window with one hostile client: p99 and RSS with and without it"
    ),
) -> None:
    """Many concurrent WebSocket clients on one gateway process: latency, CPU and memory."""
    if client not in ("light", "websockets"):
        raise typer.BadParameter("--client is light or websockets")
    hard = _raise_nofile()
    if clients + 500 > hard:  # client sockets here, server sockets in the gateway process
        raise typer.BadParameter(f"RLIMIT_NOFILE hard limit {hard} is too low for {clients}")
    kind: ClientKind = "light" if client == "light" else "websockets"
    load = Load(clients, stocks, seconds, rate, universe, compression, burst, kind, abuse)
    with (
        bench_env(need_redis=True) as env,
        gateway_process(env.bootstrap, env.redis_url, flush_ms, profile) as gw,
    ):
        result = asyncio.run(_run(gw, env.bootstrap, load, "gateway fan-out"))
    result["flush interval ms"] = str(flush_ms)
    console.print(table("gateway fan-out", result))


if __name__ == "__main__":
    app = typer.Typer()
    app.command("latency")(latency_bench)
    app.command("fanout")(fanout_bench)
    app()
