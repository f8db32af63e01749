"""``hqstream bench --steal``: the takers' cycles, their scheduling, and their end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from hqstream.bench import steal
from hqstream.bench.cli import bench_app
from tests.stack_procs import alive, wait_until


class FakeTime:
    """A clock that moves ``spin_s`` each time it is read (a busy loop's turn) and
    a sleep that overshoots by ``overshoot_s``."""

    def __init__(self, spin_s: float, overshoot_s: float) -> None:
        self.now, self.spin_s, self.overshoot_s = 0.0, spin_s, overshoot_s
        self.slept = 0.0
        self.busy_spells: list[float] = []
        self._awake_since = 0.0

    def clock(self) -> float:
        self.now += self.spin_s
        return self.now

    def sleep(self, seconds: float) -> None:
        self.busy_spells.append(self.now - self._awake_since)
        self.now += seconds + self.overshoot_s
        self.slept += seconds + self.overshoot_s
        self._awake_since = self.now


@pytest.mark.parametrize("overshoot_s", [0.0, 0.00015])
def test_the_cycles_take_their_share_whatever_a_sleep_overshoots(overshoot_s: float) -> None:
    fake = FakeTime(spin_s=0.000_01, overshoot_s=overshoot_s)
    steal.cycles(0.6, 0.002, lambda now: now < 1.0, fake.clock, fake.sleep)
    share = 1 - fake.slept / fake.now
    assert share == pytest.approx(0.6, abs=0.02)
    assert len(fake.busy_spells) == pytest.approx(500, abs=2)  # one a period


def test_a_missed_cycle_starts_afresh_without_catching_up() -> None:
    """A taker held off its core for many periods does not then take them all back."""
    fake = FakeTime(spin_s=0.000_01, overshoot_s=0.0)
    sleep = fake.sleep

    def sleep_once_long(seconds: float) -> None:
        sleep(seconds)
        if len(fake.busy_spells) == 10:
            fake.now += 0.05  # 25 periods off the core
            fake._awake_since = fake.now

    steal.cycles(0.5, 0.002, lambda now: now < 0.2, fake.clock, sleep_once_long)
    assert max(fake.busy_spells) <= 0.001 + 0.000_05  # a few clock reads


def _may_run_real_time() -> bool:
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


real_time = pytest.mark.skipif(
    not _may_run_real_time(), reason="this process may not start real-time processes"
)


@real_time
def test_one_real_time_taker_pinned_to_each_core_until_stop() -> None:
    cpus = os.sched_getaffinity(0)
    taken = steal.start(0.3)
    try:
        assert steal.running() is taken
        assert set(taken.cpus) == cpus
        assert len(taken.processes) == len(cpus)
        pinned = [os.sched_getaffinity(p.pid) for p in taken.processes]
        assert sorted(pinned, key=min) == [{cpu} for cpu in sorted(cpus)]
        assert all(os.sched_getscheduler(p.pid) == os.SCHED_FIFO for p in taken.processes)
        assert "30% of each core" in steal.described()
    finally:
        steal.stop()
    assert all(p.returncode is not None for p in taken.processes)
    assert steal.running() is None
    assert steal.described() == ""


@real_time
def test_the_takers_end_when_the_bench_dies_without_stopping_them() -> None:
    bench = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import os
            from hqstream.bench import steal
            print(*(p.pid for p in steal.start(0.2).processes), flush=True)
            os._exit(0)  # no atexit, no stop(): as a SIGKILL would
        """)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    pids = [int(pid) for pid in bench.stdout.split()]
    assert len(pids) == len(os.sched_getaffinity(0)), bench.stderr
    wait_until(lambda: not any(map(alive, pids)), 10, "the takers to end with the bench")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv to drop the capability")
@real_time
def test_without_the_permission_the_bench_says_what_it_needs() -> None:
    out = subprocess.run(
        ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", sys.executable, "-c",
         "from hqstream.bench import steal\n"
         "try:\n    steal.start(0.2)\n"
         "except steal.StealError as exc:\n    print(exc)\n"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert "needs root or CAP_SYS_NICE" in out.stdout, out.stderr


def test_a_steal_above_what_linux_lets_real_time_take_is_refused() -> None:
    result = CliRunner().invoke(bench_app, ["--steal", "0.95", "e2e", "--help"])
    assert result.exit_code == 2
    assert steal.running() is None
