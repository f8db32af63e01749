"""``hq.bars.state`` checkpoints: a fifth of the stocks a minute, and nothing lost by it.

A worker stores every changed stock's bar series in Redis each minute but
produces a stock's checkpoint to Kafka only every few minutes
(``streams.bars.TimeframeBars.take_checkpoints``); the state rebuild makes a
lost Redis whole again from the newest checkpoint and the closed 1-minute
candles after it. Checked here on a simulated trading day, with stocks that
skip minutes (their higher-timeframe bars close by the timer) and the lunch
break: at every minute, a checkpoint plus the minutes after it gives the
series the worker holds, byte for byte; a minute carries about a fifth of
the stocks; no stock's checkpoint lags far behind.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from schemas.timeframes import CLOSE_GRACE_MS, MINUTE_MS, candle_end, minute_ts_of
from streams.bars import CHECKPOINT_EVERY_MIN, TimeframeBars

DAY = 1_795_363_200_000  # 2026-11-23 00:00 Shanghai, epoch ms
STOCKS = [f"{600000 + i:06d}" for i in range(60)]


def minute(code: str, minute_ts: int, rng: random.Random) -> dict[str, Any]:
    """A closed 1-minute candle, as ``hq.candles.1m`` carries it."""
    low = round(rng.uniform(9.0, 10.0), 2)
    high = round(low + rng.uniform(0.0, 0.5), 2)
    return {
        "code": code, "market": "SH", "trade_date": "2026-11-23", "minute_ts": minute_ts,
        "open": low, "high": high, "low": low, "close": round(rng.uniform(low, high), 2),
        "volume": rng.randint(100, 10_000), "amount": round(rng.uniform(1e3, 1e5), 2),
        "ticks": rng.randint(1, 20), "closed": True,
    }  # fmt: skip


def rebuilt(checkpoint: dict[str, bytes] | None, day: list[dict[str, Any]]) -> dict[str, bytes]:
    """What the state rebuild writes for a stock: its checkpoint with the minutes after it
    (every minute of the ``day`` into a fresh series without a checkpoint)."""
    through = -1
    if checkpoint is not None:
        through = min(orjson.loads(series)["through"] for series in checkpoint.values())
    newer = [m for m in day if m["minute_ts"] > through]
    if not newer:
        assert checkpoint is not None
        return checkpoint
    code = newer[0]["code"]
    frames = TimeframeBars()
    if checkpoint is not None:
        frames.restore(code, checkpoint)
    frames.add_minute_records(newer)
    return frames.take_changed()[code]


def joined(fields: dict[str, bytes]) -> dict[str, bytes]:
    """The whole form of each series stored in ``fields`` (a whole form and any open part
    of each timeframe, as ``hq:bars:{code}`` holds them)."""
    frames = TimeframeBars()
    frames.restore("000000", fields)
    return {tf: series.dumps() for tf, series in frames.series_of("000000").items()}


class Worker:
    """A worker's bars over a day: each minute's candles, then its timer, then its outputs."""

    def __init__(self) -> None:
        self.frames = TimeframeBars()
        self.redis: dict[str, dict[str, bytes]] = {}
        self.kafka: dict[str, dict[str, bytes]] = {}  # compacted: the newest per stock
        self.minutes: dict[str, list[dict[str, Any]]] = {code: [] for code in STOCKS}
        self.published_at: dict[str, list[int]] = {code: [] for code in STOCKS}

    def run_minute(self, candles: list[dict[str, Any]], clock_ms: int) -> dict[str, Any]:
        """Fold ``candles`` (closed at ``clock_ms``), close what the timer closes, store."""
        self.frames.add_minute_records(candles)
        for candle in candles:
            self.minutes[candle["code"]].append(candle)
        gaps = self.frames.flush(clock_ms)
        stored = self.frames.take_changed()
        for code, fields in stored.items():  # (HSET: the fields given, the others kept)
            self.redis.setdefault(code, {}).update(fields)
        due = self.frames.take_checkpoints(clock_ms // MINUTE_MS, stored)
        self.kafka.update(due)
        for code in due:
            self.published_at[code].append(clock_ms // MINUTE_MS)
        return {"gaps": gaps, "due": due}


def trading_day(worker: Worker, seed: int, trade_p: float = 0.8) -> list[dict[str, Any]]:
    """Every trading minute of the day (lunch included); after each, the rebuild is checked."""
    rng = random.Random(seed)
    rounds = []
    for index in range(240):
        start = minute_ts_of(DAY, index)
        candles = [minute(code, start, rng) for code in STOCKS if rng.random() < trade_p]
        clock = candle_end(start) + CLOSE_GRACE_MS + 1  # past every bar this minute may end
        rounds.append(worker.run_minute(candles, clock))
        for code, stored in worker.redis.items():
            checkpoint = worker.kafka.get(code)
            assert joined(rebuilt(checkpoint, worker.minutes[code])) == joined(stored), (
                index,
                code,
            )
    return rounds


def test_a_checkpoint_and_the_minutes_after_it_give_the_series_at_every_minute() -> None:
    worker = Worker()
    rounds = trading_day(worker, seed=3)
    assert any(r["gaps"] for r in rounds)  # the timer closed bars of stocks that skipped minutes
    assert worker.kafka.keys() == set(STOCKS)
    # at the day's end every stock's checkpoint is whole: its daily bar closed
    for code in STOCKS:
        assert worker.kafka[code] == joined(worker.redis[code])
        assert orjson.loads(worker.kafka[code]["1d"])["partial"] is None


def test_a_minute_carries_a_fifth_of_the_stocks() -> None:
    worker = Worker()
    rounds = trading_day(worker, seed=4, trade_p=1.0)  # every stock every minute: no gaps
    counts = [len(r["due"]) for r in rounds]
    share = sum(counts[:-1]) / (len(counts) - 1) / len(STOCKS)
    assert 1 / CHECKPOINT_EVERY_MIN - 0.02 < share < 1 / CHECKPOINT_EVERY_MIN + 0.02, share
    assert max(counts[:-1]) < len(STOCKS) / 2, counts  # the first minute too
    assert counts[-1] == len(STOCKS)  # the daily bars closed


def test_a_stock_that_stops_trading_is_checkpointed_within_the_period() -> None:
    """Ten stocks stop at 10:30 (their 60-minute bar closed with their last minute: no
    bar of theirs is left for the timer to close until the day's end)."""
    worker = Worker()
    rng = random.Random(5)
    stopped = STOCKS[:10]
    for index in range(75):
        start = minute_ts_of(DAY, index)
        trading = STOCKS if index < 60 else STOCKS[10:]
        worker.run_minute([minute(code, start, rng) for code in trading], candle_end(start) + 1)
    last_change = candle_end(minute_ts_of(DAY, 59)) // MINUTE_MS
    for code in stopped:
        assert worker.kafka[code] == joined(worker.redis[code])
        published = worker.published_at[code][-1]
        assert last_change <= published <= last_change + CHECKPOINT_EVERY_MIN, (code, published)


def test_restored_stocks_wait_their_slot_and_forgotten_ones_go_out_no_more() -> None:
    first = Worker()
    rng = random.Random(6)
    for index in range(3):
        start = minute_ts_of(DAY, index)
        first.run_minute([minute(code, start, rng) for code in STOCKS], candle_end(start) + 1)
    second = Worker()  # takes the stocks over from Redis
    for code in STOCKS:
        second.frames.restore(code, first.redis[code])
    start = minute_ts_of(DAY, 3)
    due = second.run_minute([minute(code, start, rng) for code in STOCKS], candle_end(start) + 1)
    assert 0 < len(due["due"]) < len(STOCKS) / 2  # a slot's share, not every stock at once
    second.frames.forget(STOCKS[:30])
    later = set()
    for index in range(4, 12):
        start = minute_ts_of(DAY, index)
        clock = candle_end(start) + 1
        candles = [minute(code, start, rng) for code in STOCKS[30:]]
        later |= second.run_minute(candles, clock)["due"].keys()
    assert later == set(STOCKS[30:])


def test_the_index_of_open_bars_follows_every_series_through_the_day() -> None:
    """The timer finds a bar by the index of open bars' ends, which a minute that only
    extends an open bar leaves as it is: at every minute it is what each series says."""
    worker = Worker()
    frames = worker.frames
    original = worker.run_minute

    def checked(candles: list[dict[str, Any]], clock_ms: int) -> dict[str, Any]:
        frames.add_minute_records(candles)  # the index before the timer's flush, too
        check_index(frames)
        out = original(candles, clock_ms)
        check_index(frames)
        return out

    worker.run_minute = checked  # type: ignore[method-assign]
    rounds = trading_day(worker, seed=7, trade_p=0.7)
    assert any(r["gaps"] for r in rounds)


def check_index(frames: TimeframeBars) -> None:
    expected: dict[tuple[str, str], int] = {}
    for code, series in frames._series.items():
        for tf, one in series.items():
            last = one.last_minute()
            if tf != "1m" and last is not None:
                expected[(code, tf)] = candle_end(last, frames.close_grace_ms)
    assert frames._end_of == expected
    by_end: dict[int, set[tuple[str, str]]] = {}
    for key, end in expected.items():
        by_end.setdefault(end, set()).add(key)
    assert frames._open_by_end == by_end
