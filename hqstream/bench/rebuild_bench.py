"""``hqstream bench rebuild``: a cold start after a day of trading, new rebuild vs raw replay.

1. **A day of outputs.** Into fresh prefixed topics it produces what the stream
   workers write in a trading day of ``--stocks`` stocks, a snapshot every
   ``--interval-s`` for ``--hours`` (default 5,000 stocks, 3 s, 4 h: 24 M
   quotes), stamped with the times of today's session (Kafka timestamps
   included, as a live worker's records are): ``hq.ticks.normalized`` (every
   quote), ``hq.candles.1m`` (240 closed candles per stock), ``hq.market.stats``
   (each market every second), ``hq.alerts`` (one per stock per hour) and
   ``hq.quotes.latest`` as compaction leaves it (one quote per stock, then the
   last two minutes of per-batch quotes: the not yet cleaned head). Quotes of
   the tail the rebuild reads (the last ``--ticks-window-s`` plus a minute) are
   encoded one by one; older ones, which the new rebuild never reads (it seeks
   past them by timestamp), reuse each stock's payload of their minute, so
   producing a day takes minutes, not an hour. Market statistics are encoded
   once a minute. A sample of ``--raw-sample`` raw feed lines goes to
   ``hq.ticks.raw``.
2. **The new rebuild** (:class:`streams.state_rebuild.StateRebuilder`, every
   partition and the market) into an empty Redis database, timed, with its
   process and Redis CPU time; then checked: every stock at its newest tick,
   its ticks stream holding the window, today's 240 candles per stock, the
   four market summaries, the alerts.
3. **The old rebuild** (``--rebuild-from-raw``: reparse ``hq.ticks.raw`` from
   the earliest offset) on the raw sample, into the next database: its rate,
   and the time a day of raw records (stocks x snapshots) takes at that rate.

``--workers N`` runs the new rebuild in N processes at once, each its share
of the partitions (the market in the first), as N stream workers do when they
find Redis empty; the wall time is then the deployment's cold start.

Prints a markdown table with the ratio, the load average and the calibration
row. Deletes its topics and its ``hq:*`` keys afterwards (``--keep`` keeps them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import os
import queue
import resource
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
import typer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hqstream.bench.common import bench_env, calibration_row, console, machine
from hqstream.bench.failover import quotes_at_newest
from hqstream.local_runner import create_topics
from producers.sample_feed import generate
from schemas import redis_keys as rk
from schemas import topics
from schemas.exchange import MARKETS_AND_ALL, SHANGHAI_TZ
from schemas.serde import make_codec
from schemas.timeframes import HIGHER, MINUTES
from streams.bars import CHECKPOINT_EVERY_MIN, TimeframeBars, checkpoint_slot
from streams.candles import Candle
from streams.market_stats import MarketStats
from streams.parse import parse_record
from streams.settings import StreamsSettings
from streams.state_rebuild import rebuild_redis

MORNING = (dt.time(9, 30), dt.time(11, 30))
AFTERNOON = (dt.time(13, 0), dt.time(15, 0))
ALERT_KINDS = ("FAST_MOVE", "VOLUME_SPIKE", "LIMIT_UP_TOUCH")
#: the latest topic's head not yet compacted (two 1-minute segments)
LATEST_HEAD_MS = 2 * topics.MINUTE_MS


@dataclass(frozen=True)
class Day:
    """The simulated session: snapshot times (epoch ms) and their minutes."""

    stamps: list[int]
    trade_date: str

    @classmethod
    def today(cls, hours: float, interval_ms: int) -> Day:
        """The newest session that is over (Kafka refuses timestamps far in the future)."""
        now = dt.datetime.now(SHANGHAI_TZ)
        date = now.date()
        if now < dt.datetime.combine(date, AFTERNOON[1], SHANGHAI_TZ):
            date -= dt.timedelta(days=1)
        stamps: list[int] = []
        for start, end in (MORNING, AFTERNOON):
            t = int(dt.datetime.combine(date, start, SHANGHAI_TZ).timestamp() * 1000)
            stop = int(dt.datetime.combine(date, end, SHANGHAI_TZ).timestamp() * 1000)
            stamps += range(t, stop, interval_ms)
        keep = int(hours * 3600 * 1000 / interval_ms)
        return cls(stamps[:keep], date.isoformat())

    @property
    def minutes(self) -> list[int]:
        return sorted({ts - ts % topics.MINUTE_MS for ts in self.stamps})


def bar_state(base: dict[str, Any], day: Day) -> bytes:
    """An ``hq.bars.state`` value (every timeframe's series), as a worker writes it.

    One stock's series through the day's minutes but the last
    :data:`CHECKPOINT_EVERY_MIN` (a checkpoint is that old at most; the
    rebuild folds the minutes after it), with a day of history before,
    reused for every stock: its size and shape are what the rebuild's cost
    depends on.
    """
    bars = TimeframeBars()
    history = dt.date.fromisoformat(day.trade_date) - dt.timedelta(days=1)
    start = int(dt.datetime.combine(history, MORNING[0], SHANGHAI_TZ).timestamp()) * 1000
    minutes = [start + (i if i < 120 else i + 90) * 60_000 for i in range(240)]
    minutes += day.minutes[:-CHECKPOINT_EVERY_MIN]
    for i, minute in enumerate(minutes):
        date = dt.datetime.fromtimestamp(minute / 1000, SHANGHAI_TZ).date().isoformat()
        price = round(base["price"] * (1 + (i % 7 - 3) / 1000), 2)
        candle = Candle(base["code"], base["market"], date, minute, price, price, price,
                        price, 2000, round(2000 * price, 2), 20, True)  # fmt: skip
        bars.add_minutes([candle])
    stored = bars.take_changed()[base["code"]]
    return orjson.dumps({tf: orjson.Fragment(v) for tf, v in stored.items()})


class DayProducer:
    """Produces the day's outputs of the stream workers to prefixed topics."""

    def __init__(self, bootstrap: str, prefix: str, stocks: int, day: Day) -> None:
        self.prefix = prefix
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50,
                                  "enable.idempotence": True,
                                  "compression.type": "lz4", "partitioner": "murmur2_random",
                                  "queue.buffering.max.messages": 1_000_000,
                                  "batch.size": 1_000_000,
                                  "delivery.report.only.error": True})  # fmt: skip
        self.failed: list[str] = []  # the first delivery errors
        self.quote_codec = make_codec("quote")
        self.candle_codec = make_codec("candle")
        self.alert_codec = make_codec("alert")
        self.stats_codec = make_codec("market_stats")
        lines, _ = generate(stocks, 1, seed=21)
        self.base = [parse_record(value, 0, 0) for _, value, _ in lines]
        stats = MarketStats()
        for quote in self.base:
            stats.update(quote)
        self.stats = stats.snapshot_all(10, now_ms=0)
        self.bar_state = bar_state(self.base[0], day)
        self.sent = 0

    def send(self, base_topic: str, key: bytes, value: bytes, ts: int) -> None:
        topic = self.prefix + base_topic
        while True:
            try:
                self.producer.produce(topic, value, key, timestamp=ts, on_delivery=self._failed)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.sent += 1

    def _failed(self, err: Any, _msg: Any) -> None:
        if err is not None and len(self.failed) < 3:
            self.failed.append(str(err))

    def quote_at(self, base: dict[str, Any], k: int, ts: int) -> dict[str, Any]:
        """The stock's quote of snapshot ``k`` (a small walk within its limits)."""
        step = ((k * 7 + len(base["code"])) % 21 - 10) / 1000
        price = round(min(base["limit_up"], max(base["limit_down"], base["price"] * (1 + step))), 2)
        volume = base["volume"] + 100 * k
        return {**base, "exchange_ts": ts, "receive_ts": ts, "process_ts": ts + 5,
                "price": price, "volume": volume, "amount": round(volume * price, 2),
                "high": max(base["high"], price), "low": min(base["low"], price),
                "change": round(price - base["prev_close"], 2)}  # fmt: skip

    def day(self, day: Day, tail_ms: int) -> Iterator[int]:
        """Produce the whole day; yields the records sent so far, once per snapshot."""
        end = day.stamps[-1]
        head_from = end - LATEST_HEAD_MS
        minute_payloads: dict[str, bytes] = {}
        current_minute = -1
        for k, ts in enumerate(day.stamps):
            minute = ts - ts % topics.MINUTE_MS
            one_by_one = ts >= end - tail_ms
            if minute != current_minute:
                self._minute_outputs(day, minute, k)
                current_minute, minute_payloads = minute, {}
            if ts >= head_from and (k == 0 or day.stamps[k - 1] < head_from):
                self._compacted_base(max(0, k - 1), day.stamps[max(0, k - 1)])
            for base in self.base:
                code = base["code"]
                value = None if one_by_one else minute_payloads.get(code)
                if value is None:
                    value = self.quote_codec.encode(self.quote_at(base, k, ts))
                    minute_payloads[code] = value
                self.send(topics.NORMALIZED, code.encode(), value, ts)
                if ts >= head_from:
                    self.send(topics.QUOTES_LATEST, code.encode(), value, ts)
            self.producer.poll(0)
            yield self.sent
        while self.producer.flush(1) > 0:
            yield self.sent

    def _compacted_base(self, k: int, ts: int) -> None:
        """hq.quotes.latest as the cleaner leaves it before the head: one quote per stock."""
        for base in self.base:
            value = self.quote_codec.encode(self.quote_at(base, k, ts))
            self.send(topics.QUOTES_LATEST, base["code"].encode(), value, ts)

    def _minute_outputs(self, day: Day, minute: int, k: int) -> None:
        """The closed candles of the minute before, this minute's statistics, alerts hourly."""
        if minute == day.minutes[0]:  # the bar state as the cleaner left it: one per stock
            for base in self.base:
                self.send(topics.BARS_STATE, base["code"].encode(), self.bar_state, minute)
        else:
            index = day.minutes.index(minute) - 1  # the minute before (11:29 before 13:00)
            previous = day.minutes[index]
            closing = [tf for tf in HIGHER if tf != "1d" and (index + 1) % MINUTES[tf] == 0]
            for base in self.base:
                q = self.quote_at(base, k, minute)
                candle = {"code": q["code"], "market": q["market"], "trade_date": day.trade_date,
                          "minute_ts": previous, "open": q["price"], "high": q["high"],
                          "low": q["low"], "close": q["price"], "volume": 2000,
                          "amount": round(2000 * q["price"], 2), "ticks": 20,
                          "closed": True}  # fmt: skip
                value = self.candle_codec.encode(candle)
                self.send(topics.CANDLES_1M, q["code"].encode(), value, minute + 30_000)
                for tf in closing:  # the bars the minute closes: one per stock
                    bar = {**candle, "minute_ts": day.minutes[index + 1 - MINUTES[tf]], "tf": tf}
                    value = self.candle_codec.encode(bar)
                    self.send(topics.CANDLES[tf], q["code"].encode(), value, minute + 30_000)
                if (
                    minute >= day.minutes[-1] - LATEST_HEAD_MS
                    and checkpoint_slot(q["code"])
                    == (minute // topics.MINUTE_MS) % CHECKPOINT_EVERY_MIN
                ):
                    # the bar state's uncompacted head: a worker checkpoints a fifth a minute
                    self.send(topics.BARS_STATE, q["code"].encode(), self.bar_state, minute)
        payloads = {m: self.stats_codec.encode({**r, "ts": minute}) for m, r in self.stats.items()}
        for second in range(60):
            for market, payload in payloads.items():
                self.send(topics.MARKET_STATS, market.encode(), payload, minute + second * 1000)
        if (minute - day.minutes[0]) % (60 * topics.MINUTE_MS) == 0:  # hourly from the open
            for base in self.base:
                q = self.quote_at(base, k, minute)
                alert = {"code": q["code"], "name": q["name"], "market": q["market"],
                         "kind": ALERT_KINDS[k % len(ALERT_KINDS)], "exchange_ts": minute,
                         "price": q["price"], "change_pct": q["change_pct"], "value": 5.0,
                         "message": f"{q['code']} bench alert"}  # fmt: skip
                self.send(topics.ALERTS, q["code"].encode(), self.alert_codec.encode(alert), minute)

    def raw_sample(self, records: int) -> int:
        """``records`` raw feed lines (whole snapshots) for the old rebuild; returns how many."""
        lines, _ = generate(len(self.base), max(1, records // len(self.base)), seed=22)
        for key, value, headers in lines:
            while True:
                try:
                    self.producer.produce(
                        self.prefix + topics.RAW, value, key, headers=cast(Any, headers)
                    )
                    break
                except BufferError:
                    self.producer.poll(0.05)
        self.producer.flush(300)
        return len(lines)


@dataclass
class Measured:
    seconds: float
    cpu_s: float  # this process
    redis_cpu_s: float
    records: int


def _redis_cpu(url: str) -> float:
    info: Any = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _db_urls(url: str) -> tuple[str, str]:
    """The URL's database (default 0) and the next one."""
    base, _, tail = url.rpartition("/")
    if not base.startswith("redis") or not tail.isdigit():
        base, tail = url.rstrip("/"), "0"
    return f"{base}/{tail}", f"{base}/{int(tail) + 1}"


def _refuse_used(url: str) -> None:
    if next(redis.Redis.from_url(url).scan_iter(match="hq:*", count=100), None) is not None:
        console.print(f"[red]{url} holds hq:* keys; the benchmark needs an empty database[/]")
        raise typer.Exit(2)


def _rebuild_share(options: dict[str, Any], index: int, workers: int, updates: Any) -> None:
    """Child ``index`` of ``workers``: rebuild the partitions ``p % workers == index``
    (the market too when ``index`` is 0), as a stream worker of that assignment does
    after a Redis loss; reports ``(index, phase, done, total)`` and then its result."""
    settings = StreamsSettings(**options)
    mine = {p for p in range(settings.partitions) if p % workers == index}
    last = [0.0]

    def show(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2:
            last[0] = now
            updates.put((index, phase, done, total))

    summary = asyncio.run(rebuild_redis(settings, mine, index == 0, show))
    updates.put((index, "done", sum(summary.records.values()), _cpu()))


def run_parallel_rebuild(options: dict[str, Any], workers: int) -> Measured:
    """``workers`` processes, each rebuilding its share of the partitions at once."""
    context = multiprocessing.get_context("spawn")  # no fork of librdkafka's threads
    updates = context.Queue()
    children = [context.Process(target=_rebuild_share, args=(options, i, workers, updates))
                for i in range(workers)]  # fmt: skip
    columns = (TextColumn("[bold]rebuild {task.description}[/] {task.fields[phase]:<13}"),
               BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
    url = options["redis_url"]
    redis_cpu, started = _redis_cpu(url), time.perf_counter()
    records, cpu, finished = 0, 0.0, 0
    with Progress(*columns, console=console) as bar:
        tasks = [bar.add_task(f"worker {i}", total=None, phase="starting") for i in range(workers)]
        for child in children:
            child.start()
        try:
            while finished < workers:
                try:
                    index, phase, done, total = updates.get(timeout=1)
                except queue.Empty:
                    failed = [c.exitcode for c in children if c.exitcode not in (None, 0)]
                    if failed:
                        raise RuntimeError(f"a rebuild process failed (exit {failed[0]})") from None
                    continue
                if phase == "done":  # done = its records, total = its CPU seconds
                    finished += 1
                    records += int(done)
                    cpu += float(total)
                    bar.update(tasks[index], phase="done")
                else:
                    bar.update(tasks[index], completed=done, total=total or None, phase=phase)
        finally:
            for child in children:
                if child.is_alive() and finished < workers:
                    child.terminate()
                child.join()
    return Measured(time.perf_counter() - started, cpu, _redis_cpu(url) - redis_cpu, records)


def run_new_rebuild(settings: StreamsSettings) -> Measured:
    """The state rebuild of every partition and the market, with a progress bar."""
    columns = (TextColumn("[bold]new rebuild[/] {task.fields[phase]:<13}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip

    cpu, redis_cpu, started = _cpu(), _redis_cpu(settings.redis_url), time.perf_counter()
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("rebuild", total=None, phase="planning")

        def show(phase: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None, phase=phase)

        summary = asyncio.run(rebuild_redis(settings, progress=show))
        console.print(str(summary))
        records = sum(summary.records.values())
    return Measured(time.perf_counter() - started, _cpu() - cpu,
                    _redis_cpu(settings.redis_url) - redis_cpu, records)  # fmt: skip


def run_raw_replay(settings: StreamsSettings) -> Measured:
    """The old rebuild (reparse hq.ticks.raw from the earliest offset); it shows its own bar."""
    from streams.rebuild import run_rebuild

    cpu, redis_cpu = _cpu(), _redis_cpu(settings.redis_url)
    summary = run_rebuild(settings)
    return Measured(summary.seconds, _cpu() - cpu, _redis_cpu(settings.redis_url) - redis_cpu,
                    summary.records)  # fmt: skip


def check_state(url: str, producer: DayProducer, day: Day, window_ms: int, interval_ms: int) -> str:
    """What the new rebuild restored, checked; returns a one-line summary (raises if wrong)."""
    client = redis.Redis.from_url(url)
    last = len(day.stamps) - 1
    newest = {b["code"]: day.stamps[last] for b in producer.base}
    assert quotes_at_newest(url, newest)(), "a stock is not at its newest tick"
    pipe = client.pipeline(transaction=False)
    for code in newest:
        pipe.xlen(rk.ticks(code))
        pipe.hlen(rk.candles(code, day.trade_date))
        pipe.hlen(rk.candles(code, day.trade_date, "5m"))
        pipe.hlen(rk.bars(code))
    counts = pipe.execute()
    ticks, candles, bars_5m, series = counts[0::4], counts[1::4], counts[2::4], counts[3::4]
    assert min(bars_5m) == (len(day.minutes) - 1) // 5 and min(series) == 6, (bars_5m, series)
    expected_ticks = min(window_ms // interval_ms + 1, len(day.stamps))
    assert min(ticks) >= min(expected_ticks, rk.TICKS_MAXLEN), (min(ticks), expected_ticks)
    assert min(candles) == max(candles) == len(day.minutes) - 1, (min(candles), max(candles))
    assert all(client.exists(rk.market_summary(m)) for m in MARKETS_AND_ALL)
    alerts = int(client.xlen(rk.ALERTS))
    assert alerts > 0
    return (f"checked: {len(newest):,} stocks at their newest tick, >= {min(ticks)} ticks each, "
            f"{max(candles)} candles and {max(bars_5m)} 5m bars each, 6 bar series each, "
            f"4 market summaries, {alerts:,} alerts")  # fmt: skip


def rebuild_bench(
    stocks: int = typer.Option(5000, help="Stocks of the simulated day."),
    hours: float = typer.Option(4.0, help="Trading hours produced (a full day: 4)."),
    interval_s: float = typer.Option(3.0, help="Seconds between snapshots."),
    ticks_window_s: int = typer.Option(300, help="HQ_STREAMS_REBUILD_TICKS_S of the rebuild."),
    raw_sample: int = typer.Option(100_000, help="Raw lines the old rebuild replays (a sample)."),
    partitions: int = typer.Option(12, help="Partitions of the tick topics."),
    keep: bool = typer.Option(False, help="Keep the topics (and the hq:* keys)."),
    reuse: str = typer.Option(
        "", help="Topic prefix of a day produced earlier today with --keep: rebuild it again."
    ),
    old: bool = typer.Option(True, help="Also time the old rebuild (replay hq.ticks.raw)."),
    workers: int = typer.Option(
        1,
        min=1,
        max=12,
        help="Rebuild in this many processes, each its share of the partitions (the market in "
        "the first), as that many stream workers do after a Redis loss.",
    ),
    bootstrap: str = typer.Option("", help="Kafka bootstrap (default HQ_KAFKA_BOOTSTRAP)."),
    redis_url: str = typer.Option("", help="Redis URL (default HQ_REDIS_URL); it and the next db."),
) -> None:
    """Cold start: rebuild Redis after a trading day, from the outputs vs from the raw topic."""
    with bench_env(need_redis=True, bootstrap=bootstrap, redis_url=redis_url) as env:
        new_url, old_url = _db_urls(env.redis_url)
        for url in (new_url, old_url):
            _refuse_used(url)
        prefix = reuse or f"bench.{uuid.uuid4().hex[:8]}."
        created = (
            []
            if reuse
            else create_topics(env.bootstrap, topics.topic_specs(partitions), prefix=prefix)
        )
        console.print(f"topics of prefix {prefix}")
        interval_ms = int(interval_s * 1000)
        day = Day.today(hours, interval_ms)
        producer = DayProducer(env.bootstrap, prefix, stocks, day)
        try:
            _bench(env.bootstrap, prefix, producer, day, new_url, old_url, partitions,
                   ticks_window_s, interval_ms, raw_sample if old else 0,
                   produce=not reuse, workers=workers)  # fmt: skip
        finally:
            del producer  # its librdkafka client, before the local broker stops
            if created and not keep:
                AdminClient({"bootstrap.servers": env.bootstrap}).delete_topics(created)
            if not keep:
                for url in (new_url, old_url):
                    client = redis.Redis.from_url(url)
                    for key in list(client.scan_iter(match="hq:*", count=1000)):
                        client.delete(key)


def _bench(
    bootstrap: str, prefix: str, producer: DayProducer, day: Day, new_url: str, old_url: str,
    partitions: int, window_s: int, interval_ms: int, raw_sample: int, *, produce: bool,
    workers: int = 1,
) -> None:  # fmt: skip
    quotes = len(day.stamps) * len(producer.base)
    if produce:
        _produce(producer, day, window_s, raw_sample)

    def options(url: str) -> dict[str, Any]:
        return {"kafka_bootstrap": bootstrap, "redis_url": url, "topic_prefix": prefix,
                "partitions": partitions, "rebuild_ticks_s": window_s, "metrics_port": 0,
                "group_id": f"{prefix}bench"}  # fmt: skip

    def settings(url: str) -> StreamsSettings:
        return StreamsSettings(**options(url))

    if workers > 1:
        new = run_parallel_rebuild(options(new_url), workers)
    else:
        new = run_new_rebuild(settings(new_url))
    checked = check_state(new_url, producer, day, window_s * 1000, interval_ms)
    load = os.getloadavg()
    print(f"\n{machine()}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(checked)
    print(
        "\n| rebuild | records read | wall s | process CPU s | Redis CPU s | day of "
        f"{len(producer.base):,} stocks |"
    )
    print("|---|---|---|---|---|---|")
    shape = f"{workers} processes, each its share of the partitions" if workers > 1 else "1 process"
    print(f"| new ({shape}): compacted topics + {window_s} s tail + today's bars, stats, alerts | "
          f"{new.records:,} | {new.seconds:.1f} | {new.cpu_s:.1f} | {new.redis_cpu_s:.1f} | "
          f"{new.seconds:.1f} s (measured) |")  # fmt: skip
    if raw_sample:
        old = run_raw_replay(settings(old_url))
        old_rate = old.records / old.seconds
        old_day_s = quotes / old_rate
        print(f"| old: replay hq.ticks.raw (sample) | {old.records:,} | {old.seconds:.1f} | "
              f"{old.cpu_s:.1f} | {old.redis_cpu_s:.1f} | {old_day_s:,.0f} s at "
              f"{old_rate:,.0f} rec/s ({quotes:,} raw records) |")  # fmt: skip
        print(f"| ratio (old day / new) | | | | | {old_day_s / new.seconds:,.0f}x |")
    print(calibration_row())


def _produce(producer: DayProducer, day: Day, window_s: int, raw_sample: int) -> None:
    quotes = len(day.stamps) * len(producer.base)
    columns = (TextColumn("[bold]producing a day[/]"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[sent]:,} records"), TimeElapsedColumn())  # fmt: skip
    started = time.perf_counter()
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("day", total=len(day.stamps), sent=0)
        for sent in producer.day(day, window_s * 1000 + topics.MINUTE_MS):
            bar.update(task, advance=1 if bar.tasks[0].completed < len(day.stamps) else 0,
                       sent=sent)  # fmt: skip
    if producer.failed:
        raise RuntimeError(f"records of the day not delivered: {producer.failed}")
    raw = producer.raw_sample(raw_sample) if raw_sample else 0
    console.print(f"produced {producer.sent:,} output records ({quotes:,} quotes) and {raw:,} raw "
                  f"lines in {time.perf_counter() - started:.0f}s")  # fmt: skip
