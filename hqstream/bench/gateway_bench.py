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

The feed's shape: ``--burst`` produces the whole universe at once every
``universe / rate`` seconds (the vendor's 3 s snapshots: same average rate),
otherwise quotes are produced evenly. Clients are :mod:`hqstream.bench.wsclient`
(a minimal RFC 6455 client, cheap per frame) or, with ``--client websockets``,
the ``websockets`` library.

The gateway runs as a subprocess (``python -m api``) on a loopback port with
uuid-prefixed topics, which are deleted afterwards; the producer runs in a
process of its own. Bounded in clients and time; never touches other topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from hqstream.bench import wsclient
from hqstream.bench.common import bench_env, machine
from hqstream.local_runner import free_port
from schemas import topics

ClientKind = Literal["light", "websockets"]
_TICK = os.sysconf("SC_CLK_TCK")

console = Console()
GATEWAY_TOPICS = (topics.NORMALIZED, topics.MARKET_STATS, topics.ALERTS, topics.CANDLES_1M)


def _codes(n: int) -> list[str]:
    sz = [f"{i:06d}" for i in range(1, n // 2 + 1)]
    sh = [f"{600000 + i:06d}" for i in range(n - len(sz))]
    return sz + sh


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


@dataclass
class CpuWindow:
    """CPU% of named processes and of the machine between ``start`` and ``stop``."""

    pids: dict[str, int]
    cpu0: dict[str, float] = field(default_factory=dict)
    machine0: tuple[float, float] = (0.0, 0.0)
    wall0: float = 0.0
    result: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.cpu0 = {name: _cpu_s(pid) for name, pid in self.pids.items()}
        self.machine0 = _machine_busy()
        self.wall0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall0
        busy, total = _machine_busy()
        cores = os.cpu_count() or 1
        self.result = {
            name: 100 * (_cpu_s(pid) - self.cpu0[name]) / wall for name, pid in self.pids.items()
        }
        self.result["machine"] = (
            100 * cores * (busy - self.machine0[0]) / max(1e-9, total - self.machine0[1])
        )
        return self.result


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def _produce(bootstrap: str, topic: str, codes: list[str], rate: int, seconds: float,
             burst: bool) -> None:  # fmt: skip
    """Producer process: ``rate`` quotes/s for ``seconds``, receive_ts = send time.

    ``burst``: every ``len(codes) / rate`` seconds all codes at once (a snapshot).
    """
    from confluent_kafka import Producer

    from schemas.serde import make_codec

    codec = make_codec("quote")
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 2}
    )
    base = int(time.time() * 1000)
    template = _quote_template()
    sent = 0
    start = time.monotonic()
    i = 0
    period = len(codes) / rate
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) + 1
        if burst:
            due = (int(elapsed / period) + 1) * len(codes)
        while sent < due:
            code = codes[i % len(codes)]
            now = int(time.time() * 1000)
            rec = dict(template, code=code, symbol=("sh" if code[0] == "6" else "sz") + code)
            rec.update(market="SH" if code[0] == "6" else "SZ", exchange_ts=base + i)
            rec.update(receive_ts=now, process_ts=now, price=10 + (i % 100) / 100)
            producer.produce(topic, codec.encode(rec), key=code.encode())
            sent += 1
            i += 1
            if sent % 1000 == 0:
                producer.poll(0)
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(10)


def _quote_template() -> dict[str, Any]:
    return {
        "symbol": "", "code": "", "market": "SZ", "board": "MAIN", "name": "平安银行",
        "is_st": False, "exchange_ts": 0, "trade_date": time.strftime("%Y-%m-%d"),
        "open": 10.0, "prev_close": 10.0, "price": 10.0, "high": 10.5, "low": 9.8,
        "bid": 10.0, "ask": 10.01, "volume": 123456, "amount": 1.23e6,
        "bid_prices": [10.0, 9.99, 9.98, 9.97, 9.96], "bid_volumes": [100, 200, 300, 400, 500],
        "ask_prices": [10.01, 10.02, 10.03, 10.04, 10.05],
        "ask_volumes": [100, 200, 300, 400, 500], "change": 0.0, "change_pct": 0.0,
        "limit_up": 11.0, "limit_down": 9.0, "traded": True, "suspended": False,
        "at_limit_up": False, "at_limit_down": False, "receive_ts": 0, "process_ts": 0,
    }  # fmt: skip


@dataclass
class Gateway:
    pid: int
    port: int
    prefix: str
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/realtime/ws"


@contextlib.contextmanager
def _gateway(bootstrap: str, redis_url: str, flush_ms: int,
             profile: str | None = None) -> Iterator[Gateway]:  # fmt: skip
    """A gateway subprocess on uuid-prefixed topics (created and deleted here).

    ``profile``: run it under cProfile, stats written to that path on exit.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [prefix + t for t in GATEWAY_TOPICS]
    parts = {prefix + s.name: s.partitions for s in topics.topic_specs()}
    for fut in admin.create_topics([NewTopic(n, parts[n], 1) for n in names]).values():
        fut.result(30)
    port = free_port()
    env = dict(
        os.environ,
        HQ_KAFKA_BOOTSTRAP=bootstrap,
        HQ_REDIS_URL=redis_url,
        HQ_GATEWAY_TOPIC_PREFIX=prefix,
        HQ_GATEWAY_FLUSH_INTERVAL_MS=str(flush_ms),
        HQ_GATEWAY_MAX_CONNECTIONS_PER_KEY="100000",
        HQ_LOG_LEVEL="WARNING",
    )
    env.pop("HQ_GATEWAY_API_KEYS", None)
    env.pop("HQ_GATEWAY_ADMIN_KEYS", None)
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    proc = subprocess.Popen(
        [sys.executable, *prof, "-m", "api", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not become ready")
            time.sleep(0.3)
        yield Gateway(proc.pid, port, prefix, proc)
    finally:
        # uvicorn re-raises SIGTERM after its shutdown (killing cProfile before it
        # writes); SIGINT becomes a KeyboardInterrupt, and cProfile writes on the way out.
        proc.send_signal(signal.SIGINT if profile else signal.SIGTERM)
        try:
            proc.wait(60 if profile else 15)
        except subprocess.TimeoutExpired:
            proc.kill()
        for fut in admin.delete_topics(names).values():
            with contextlib.suppress(Exception):
                fut.result(30)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    received: int = 0  # quotes
    frames: int = 0  # "quotes" messages
    connected: int = 0
    closed: int = 0
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)  # "error" messages by code
    measuring: bool = False

    def on_message(self, data: bytes) -> None:
        if not data.startswith(b'{"type":"quotes"'):
            if data.startswith(b'{"type":"error"'):
                self.server_errors[orjson.loads(data)["code"]] += 1
            return
        quotes = orjson.loads(data)["data"]
        self.frames += 1
        self.received += len(quotes)
        if self.measuring:
            now = time.time() * 1000
            self.latencies.extend([now - q["receive_ts"] for q in quotes])

    def failed(self, kind: str, exc: BaseException | None = None) -> None:
        self.error_kinds[kind] += 1
        self.errors += 1
        if self.errors <= 3 and exc is not None:
            console.log(f"client failed: {exc!r}")


async def _light_client(gw: Gateway, subscribe: list[bytes], tally: Tally, stop: asyncio.Event,
                        compression: bool) -> None:  # fmt: skip
    try:
        client = await asyncio.wait_for(
            wsclient.connect(
                "127.0.0.1", gw.port, "/api/realtime/ws", tally.on_message, compression
            ),
            60,
        )
    except Exception as exc:
        tally.failed(type(exc).__name__, exc)
        return
    for msg in subscribe:
        client.send_text(msg)
    tally.connected += 1
    stopping = asyncio.ensure_future(stop.wait())
    waiters: list[asyncio.Future[Any]] = [stopping, client.closed]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        tally.connected -= 1
    if client.closed.done():
        tally.failed(f"closed({client.closed.result()})")
        tally.closed += 1
    else:
        client.close()


async def _ws_client(gw: Gateway, subscribe: list[bytes], tally: Tally, stop: asyncio.Event,
                     compression: bool) -> None:  # fmt: skip
    import websockets

    try:
        async with websockets.connect(
            gw.ws_url,
            compression="deflate" if compression else None,
            open_timeout=60,
            max_size=2**24,
        ) as ws:
            for msg in subscribe:
                await ws.send(msg.decode())
            tally.connected += 1
            try:
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(decode=False), 0.5)
                    except TimeoutError:
                        continue
                    tally.on_message(raw)
            finally:
                tally.connected -= 1
    except Exception as exc:
        rcvd = getattr(exc, "rcvd", None)
        tally.failed(type(exc).__name__ + (f"({rcvd.code})" if rcvd is not None else ""), exc)
        tally.closed += 1


def _table(title: str, rows: dict[str, str]) -> Table:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in rows.items():
        table.add_row(k, v)
    return table


def _live_rows(tally: Tally, started: float, phase: str) -> dict[str, str]:
    lat = tally.latencies[-20000:]
    return {
        "phase": phase,
        "elapsed s": f"{time.monotonic() - started:.0f}",
        "connections held": str(tally.connected),
        "failed connections": f"{tally.errors} {dict(tally.error_kinds) or ''}",
        "quotes delivered": str(tally.received),
        "p50 ms (recent)": f"{_percentile(lat, 0.5):.1f}",
        "p99 ms (recent)": f"{_percentile(lat, 0.99):.1f}",
    }


@dataclass(frozen=True)
class Load:
    clients: int
    stocks_per_client: int
    seconds: float
    rate: int
    universe: int
    compression: bool
    burst: bool
    client: ClientKind


async def _run(gw: Gateway, bootstrap: str, load: Load, title: str) -> dict[str, str]:
    codes = _codes(load.universe)
    tally = Tally()
    stop = asyncio.Event()
    rss_before = _rss_kb(gw.pid)
    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    rng = random.Random(7)
    subscribers = Counter[str]()
    run_client = _light_client if load.client == "light" else _ws_client
    with Live(_table(title, _live_rows(tally, started, "connecting")), console=console,
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
                live.update(_table(title, _live_rows(tally, started, "connecting")))
        while tally.connected + tally.errors < load.clients and time.monotonic() - started < 120:
            await asyncio.sleep(0.2)
            live.update(_table(title, _live_rows(tally, started, "connecting")))
        await asyncio.sleep(1.0)  # subscriptions acked and snapshots sent
        rss_connected = _rss_kb(gw.pid)
        ctx = mp.get_context("spawn")
        producer = ctx.Process(
            target=_produce,
            args=(
                bootstrap,
                gw.prefix + topics.NORMALIZED,
                codes,
                load.rate,
                load.seconds + 3,
                load.burst,
            ),
            daemon=True,
        )
        producer.start()
        assert producer.pid is not None
        cpu = CpuWindow({"gateway": gw.pid, "clients": os.getpid(), "producer": producer.pid})
        await asyncio.sleep(3.0)  # warm-up, not measured
        tally.measuring = True
        received0, frames0 = tally.received, tally.frames
        cpu.start()
        while time.monotonic() - cpu.wall0 < load.seconds:
            await asyncio.sleep(0.5)
            live.update(_table(title, _live_rows(tally, started, "measuring")))
        tally.measuring = False
        used = cpu.stop()
        wall = time.monotonic() - cpu.wall0
        received, frames = tally.received - received0, tally.frames - frames0
        rss_loaded = _rss_kb(gw.pid)
        held = tally.connected
        stop.set()
        producer.join(30)
        await asyncio.gather(*tasks, return_exceptions=True)
    lat = tally.latencies
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
        "latency p50 / p90 / p99 / max ms": f"{_percentile(lat, 0.5):.1f} / "
        f"{_percentile(lat, 0.9):.1f} / {_percentile(lat, 0.99):.1f} / "
        f"{max(lat, default=float('nan')):.1f}",
        "CPU % gateway / clients / producer": f"{used['gateway']:.0f} / {used['clients']:.0f} / "
        f"{used['producer']:.0f}",
        f"CPU % machine (of {100 * (os.cpu_count() or 1)})": f"{used['machine']:.0f}",
        "gateway RSS idle / connected / loaded MiB": f"{rss_before / 1024:.0f} / "
        f"{rss_connected / 1024:.0f} / {rss_loaded / 1024:.0f}",
        "gateway RSS per connection KiB": f"{per_conn:.1f}",
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
    with bench_env(need_redis=True) as env, _gateway(env.bootstrap, env.redis_url, flush_ms) as gw:
        result = asyncio.run(_run(gw, env.bootstrap, load, "gateway latency"))
    result["flush interval ms"] = str(flush_ms)
    console.print(_table("gateway latency: receive_ts -> WebSocket delivery", result))


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
) -> None:
    """Many concurrent WebSocket clients on one gateway process: latency, CPU and memory."""
    if client not in ("light", "websockets"):
        raise typer.BadParameter("--client is light or websockets")
    hard = _raise_nofile()
    if clients + 500 > hard:  # client sockets here, server sockets in the gateway process
        raise typer.BadParameter(f"RLIMIT_NOFILE hard limit {hard} is too low for {clients}")
    kind: ClientKind = "light" if client == "light" else "websockets"
    load = Load(clients, stocks, seconds, rate, universe, compression, burst, kind)
    with (
        bench_env(need_redis=True) as env,
        _gateway(env.bootstrap, env.redis_url, flush_ms, profile) as gw,
    ):
        result = asyncio.run(_run(gw, env.bootstrap, load, "gateway fan-out"))
    result["flush interval ms"] = str(flush_ms)
    console.print(_table("gateway fan-out", result))


if __name__ == "__main__":
    app = typer.Typer()
    app.command("latency")(latency_bench)
    app.command("fanout")(fanout_bench)
    app()
