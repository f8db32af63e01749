"""streams.lifecycle without Kafka or Redis: waiting, the watchdog, fatal."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from streams import lifecycle, metrics
from streams.lifecycle import Watchdog, wait_for_dependencies
from streams.settings import StreamsSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waits_with_backoff_and_logs_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    settings = StreamsSettings(dependency_retry_max_s=2.0, dependency_log_every_s=10.0)
    clock = FakeClock()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.sleep(seconds)

    def kafka() -> str | None:
        return None if clock.now >= 35 else "KafkaException('broker down')"

    with caplog.at_level(logging.WARNING, logger="streams.lifecycle"):
        waited = wait_for_dependencies(
            settings, probes={"kafka x": kafka, "redis y": lambda: None}, sleep=sleep, clock=clock
        )
    assert 35 <= waited < 37
    assert sleeps[:4] == [0.2, 0.4, 0.8, 1.6] and max(sleeps) == 2.0  # backoff, capped
    waiting = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert len(waiting) == 4  # at 0, ~10, ~20, ~30 s: once per interval, not per attempt
    assert all("waiting for kafka x " in m and "broker down" in m for m in waiting)
    assert "dependencies answer" in caplog.records[-1].getMessage()


def test_returns_at_once_when_everything_answers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="streams.lifecycle"):
        waited = wait_for_dependencies(
            StreamsSettings(), probes={"k": lambda: None}, sleep=pytest.fail, clock=FakeClock()
        )
    assert waited == 0 and not caplog.records


def fake_app(*, assigned: bool = True, active: bool = True, crashed: bool = False) -> Any:
    flow = SimpleNamespace(is_active=lambda: active)
    consumer = SimpleNamespace(assignment=lambda: {1} if assigned else set(), flow_active=active)
    reason = RuntimeError("seek") if crashed else None
    recovery = SimpleNamespace(crashed=crashed, crash_reason=reason)
    return SimpleNamespace(
        flow_control=flow, consumer=consumer, tables=SimpleNamespace(recovery=recovery)
    )


@pytest.fixture
def fatal_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(lifecycle, "fatal", lambda reason, exc=None: calls.append(reason))
    return calls


def test_watchdog_exits_a_worker_whose_flow_never_resumes(fatal_calls: list[str]) -> None:
    clock = FakeClock()
    app = fake_app(active=False)
    dog = Watchdog(app, stall_exit_s=180, clock=clock)
    for _ in range(179):
        assert dog.check() is None
        clock.sleep(1)
    app.consumer.flow_active = True  # resumed in time: the count starts over
    app.flow_control.is_active = lambda: True
    assert dog.check() is None and dog.suspended_since is None
    app.consumer.flow_active = False
    for _ in range(181):
        clock.sleep(1)
        reason = dog.check()
    assert reason is not None and "suspended for 180s" in reason
    assert fatal_calls == [reason]


def test_watchdog_ignores_an_empty_assignment(fatal_calls: list[str]) -> None:
    clock = FakeClock()
    dog = Watchdog(fake_app(assigned=False, active=False), stall_exit_s=5, clock=clock)
    for _ in range(20):
        clock.sleep(1)
        assert dog.check() is None
    assert fatal_calls == []


def test_watchdog_exits_when_faust_recovery_crashed(fatal_calls: list[str]) -> None:
    reason = Watchdog(fake_app(crashed=True), stall_exit_s=180).check()
    assert reason is not None and "recovery service crashed" in reason
    assert fatal_calls == [reason]


def test_fatal_marks_unhealthy_once_and_schedules_the_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    timers: list[tuple[float, Any]] = []

    class Timer:
        def __init__(self, delay: float, action: Any) -> None:
            timers.append((delay, action))
            self.daemon = False

        def start(self) -> None:
            pass

    monkeypatch.setattr(lifecycle.threading, "Timer", Timer)
    monkeypatch.setattr(metrics.HEALTH, "fatal", None)
    monkeypatch.setattr(metrics.HEALTH, "running", True)
    assert metrics.HEALTH.healthy
    lifecycle.fatal("the agent crashed: boom")
    lifecycle.fatal("a second reason")  # ignored: one exit
    assert metrics.HEALTH.fatal == "the agent crashed: boom"
    assert not metrics.HEALTH.healthy
    assert [delay for delay, _ in timers] == [
        lifecycle.FATAL_STOP_DELAY_S,
        lifecycle.FATAL_HARD_EXIT_S,
    ]


class FakeRecovery:
    """What install_resume_streams uses of faust's Recovery service."""

    def __init__(self) -> None:
        self.signal_recovery_start = asyncio.Event()
        self.completed = asyncio.Event()
        self.should_stop = False

    async def wait_first(self, coro: Any, signal: asyncio.Event, timeout: float) -> Any:
        task = asyncio.ensure_future(coro)
        waiter = asyncio.ensure_future(signal.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=timeout, return_when="FIRST_COMPLETED")
        for fut in (task, waiter):
            if not fut.done():
                fut.cancel()
        if task in done and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        return SimpleNamespace(done=[coro] * (task in done) + [signal] * (waiter in done))


def resume_app(seek_failures: int) -> Any:
    calls = SimpleNamespace(seeks=0, resumed_flow=0)

    async def perform_seek() -> None:
        calls.seeks += 1
        if calls.seeks <= seek_failures:
            raise RuntimeError("NotCoordinatorForGroupError")

    async def noop_send() -> None:
        return None

    async def maybe_start() -> None:
        return None

    consumer = SimpleNamespace(
        assignment=lambda: {1, 2},
        resume_partitions=lambda tps: None,
        perform_seek=perform_seek,
        resume_flow=lambda: setattr(calls, "resumed_flow", calls.resumed_flow + 1),
    )
    app = SimpleNamespace(
        consumer=consumer,
        consumer_generation_id=7,
        conf=SimpleNamespace(broker_request_timeout=5.0),
        tables=SimpleNamespace(
            recovery=FakeRecovery(), on_actives_ready=lambda: None, on_standbys_ready=lambda: None
        ),
        on_rebalance_complete=SimpleNamespace(send=noop_send),
        flow_control=SimpleNamespace(resume=lambda: None),
        _fetcher=SimpleNamespace(maybe_start=maybe_start),
        on_rebalance_end=lambda: None,
    )
    return app, calls


def test_resume_streams_retries_a_failed_seek_then_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle.asyncio, "sleep", _no_sleep)
    app, calls = resume_app(seek_failures=2)
    lifecycle.install_resume_streams(app)
    asyncio.run(app.tables.recovery._resume_streams(generation_id=7))
    assert calls.seeks == 3  # faust's own step crashed its recovery on the first failure
    assert calls.resumed_flow == 1 and app.tables.recovery.completed.is_set()


def test_resume_streams_leaves_a_newer_generation_alone() -> None:
    app, calls = resume_app(seek_failures=0)
    lifecycle.install_resume_streams(app)
    asyncio.run(app.tables.recovery._resume_streams(generation_id=6))
    assert calls.seeks == 0 and calls.resumed_flow == 0


async def _no_sleep(seconds: float) -> None:
    return None


def test_liveness_ignores_dependencies_readiness_needs_the_group_and_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kubernetes probes: 30 s of Redis outage must not get a worker killed
    (liveness), but it is not ready until it joined its group and writes Redis."""
    for field, value in (
        ("fatal", None),
        ("running", False),
        ("joined", False),
        ("redis_ok", True),
    ):
        monkeypatch.setattr(metrics.HEALTH, field, value)
    assert metrics.HEALTH.healthy  # waiting for Kafka/Redis is alive
    assert "starting" in (metrics.HEALTH.not_ready() or "")
    metrics.HEALTH.running = True
    assert "consumer group" in (metrics.HEALTH.not_ready() or "")
    metrics.HEALTH.joined = True
    assert metrics.HEALTH.not_ready() is None
    metrics.HEALTH.redis_ok = False
    assert metrics.HEALTH.healthy and "redis" in (metrics.HEALTH.not_ready() or "")
    metrics.HEALTH.fatal = "the agent crashed"
    assert not metrics.HEALTH.healthy and metrics.HEALTH.not_ready() == "the agent crashed"
