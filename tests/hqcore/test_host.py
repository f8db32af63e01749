"""hqcore.host: how long a process's main thread waits for a core, and what it makes of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hqcore.host import (
    BUSY_LOG_EVERY_S,
    CORE_WAIT_PERIOD_S,
    BusyNotice,
    CoreWait,
    main_thread_run_delay_ns,
)
from tests.hqcore.host_fakes import ManualClock, ManualRunDelay


def test_core_wait_is_the_share_of_a_period_spent_waiting_for_a_core() -> None:
    clock, delay = ManualClock(), ManualRunDelay()
    wait = CoreWait(delay, clock)
    assert wait.busy() == 0.0  # the first reading: nothing measured yet
    for share, busy in [(0.05, 0.0), (0.10, 0.0), (0.175, 0.5), (0.25, 1.0), (0.60, 1.0)]:
        clock.now += CORE_WAIT_PERIOD_S
        delay.wait(share * CORE_WAIT_PERIOD_S)
        assert wait.busy() == pytest.approx(busy)
        assert wait.share == pytest.approx(share)
    reads = delay.reads
    clock.now += CORE_WAIT_PERIOD_S / 2
    delay.wait(1.0)  # a second of waiting, not measured before the period is over
    assert wait.busy() == 1.0 and delay.reads == reads
    clock.now += CORE_WAIT_PERIOD_S / 2
    assert wait.share == pytest.approx(0.60) and wait.busy() == 1.0
    assert wait.share == pytest.approx(0.5)  # over the whole period since the last reading


def test_core_wait_takes_the_thresholds_of_its_thread() -> None:
    clock, delay = ManualClock(), ManualRunDelay()
    wait = CoreWait(delay, clock, idle=0.05, busy=0.12)
    wait.busy()
    for share, busy in [(0.025, 0.0), (0.05, 0.0), (0.085, 0.5), (0.15, 1.0)]:
        clock.now += CORE_WAIT_PERIOD_S
        delay.wait(share * CORE_WAIT_PERIOD_S)
        assert wait.busy() == pytest.approx(busy)
    with pytest.raises(ValueError, match="idle < busy"):
        CoreWait(delay, clock, idle=0.2, busy=0.1)


def test_core_wait_is_nothing_where_the_kernel_does_not_say() -> None:
    clock, delay = ManualClock(), ManualRunDelay()
    delay.ns = None
    wait = CoreWait(delay, clock)
    for _ in range(3):
        clock.now += CORE_WAIT_PERIOD_S
        assert wait.busy() == 0.0


def test_the_busy_notice_warns_once_a_minute_and_says_when_it_is_over() -> None:
    clock = ManualClock()
    notice = BusyNotice(clock)
    assert [notice.update(b) for b in (0.0, 0.49, 0.5, 1.0, 0.7)] == [None, None, True, None, None]
    assert notice.update(0.2) is False and notice.update(0.0) is None
    clock.now += BUSY_LOG_EVERY_S / 2
    assert notice.update(1.0) is None  # busy again within the minute: not told again
    assert notice.update(0.0) is None  # (so nothing to take back either)
    clock.now += BUSY_LOG_EVERY_S / 2
    assert notice.update(0.9) is True and notice.update(0.1) is False


def test_the_main_thread_s_run_delay_grows_while_it_waits_for_a_core() -> None:
    """The kernel's figure, on a core this test fills with two spinning processes."""
    first = main_thread_run_delay_ns()
    if first is None:
        pytest.skip("this kernel keeps no scheduler statistics")
    cpu = min(os.sched_getaffinity(0))
    spin = f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\nend = time.monotonic() + 60\n"
    spin += "while time.monotonic() < end: pass\n"
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    affinity = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
        before, cpu_before = main_thread_run_delay_ns(), time.thread_time()
        while time.thread_time() - cpu_before < 0.3:  # 0.3 s of CPU among three on one core
            pass
        after = main_thread_run_delay_ns()
    finally:
        os.sched_setaffinity(0, affinity)
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert before is not None and after is not None
    assert (after - before) / 1e9 > 0.1  # ~0.5 s: two others ran while it was ready
