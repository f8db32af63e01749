"""``hqstream bench --steal F``: a slower host, emulated on this one.

The machines this project is measured on are shared hosts whose speed moves
from day to day: the calibration loop (:func:`hqstream.bench.common.calibration_s`)
has read 0.19 to 1.64 s, and on the slow days every process of the pipeline
took about as many times more CPU per burst as the loop did (docs/benchmarks.md).
A fast host cannot show how the pipeline fares on such a day, and a slow day
cannot be waited for.

What a shared host does to its guest on a slow day is to run something else
on its cores (the hypervisor's *steal*): each core is the guest's only part of
the time, in slices of a few milliseconds. This emulates that: one process per
core, pinned to it and real-time (``SCHED_FIFO``: it preempts every ordinary
process at once), busy for ``F`` of each :data:`PERIOD_S` and asleep for the
rest. Every process of the bench (the pipeline, the client, the calibration
loop) gets the rest of each core, so the calibration printed with the run
reads about ``1 / (1 - F)`` times the host's own, and the tables say the run
was slowed (:func:`described`).

It must never outlive the bench: each process ends when its parent does (it
checks every period) or after :data:`MAX_S`, whichever comes first, and the
bench stops them on its way out (:func:`stop`). Only a process allowed to
run real-time processes (root, or ``CAP_SYS_NICE``) can start it.
"""

from __future__ import annotations

import atexit
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: one busy-then-asleep cycle: short against a 50 ms latency budget, long
#: against a sleep's ~0.1 ms of overshoot
PERIOD_S = 0.002
#: the most of a core it may take: Linux lets real-time processes have 95 %
#: of a core (``sched_rt_runtime_us``), and the bench itself must go on
MAX_STEAL = 0.9
#: no run of a bench is longer: a taker still running then ends on its own
MAX_S = 6 * 3600.0
#: how long a taker may take to say it is ready (or why it cannot be)
START_S = 10.0


class StealError(RuntimeError):
    """The cores could not be taken (no permission for real-time processes)."""


@dataclass(frozen=True, slots=True)
class Steal:
    """What the takers of this process hold: ``fraction`` of each of ``cpus``."""

    fraction: float
    cpus: tuple[int, ...]
    processes: tuple[subprocess.Popen[bytes], ...]


_running: Steal | None = None


def start(fraction: float) -> Steal:
    """Take ``fraction`` of every core this process may run on, until :func:`stop`
    (or this process ends). Raises :class:`StealError` if it cannot."""
    global _running
    if not 0 < fraction <= MAX_STEAL:
        raise ValueError(f"a steal is a fraction of a core above 0 and at most {MAX_STEAL}")
    stop()
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for cpu in cpus:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", __name__, str(cpu), repr(fraction), str(os.getpid())],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        for process in processes:
            _wait_ready(process)
    except BaseException:
        _end(processes)
        raise
    _running = Steal(fraction, cpus, tuple(processes))
    atexit.register(stop)
    return _running


def _wait_ready(process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None and process.stderr is not None
    readable, _, _ = select.select([process.stdout], [], [], START_S)
    line = process.stdout.readline() if readable else b""
    if line.strip() == b"ready":
        return
    process.kill()
    why = process.stderr.read().decode(errors="replace").strip().splitlines()
    raise StealError(
        "could not take a share of the cores: "
        + (why[-1] if why else f"no answer in {START_S:.0f} s")
    )


def stop() -> None:
    """End the takers (if any); the cores are the bench's again when this returns."""
    global _running
    if _running is not None:
        _end(_running.processes)
        _running = None


def _end(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def running() -> Steal | None:
    return _running


def described() -> str:
    """The steal in force, as the tables print it beside the calibration ('' if none)."""
    if _running is None:
        return ""
    return (
        f"an emulated slower host: {_running.fraction:.0%} of each core taken by a "
        f"real-time process in {PERIOD_S * 1000:g} ms cycles (--steal {_running.fraction:g})"
    )


def take(cpu: int, fraction: float, parent: int) -> None:
    """Be busy on ``cpu`` for ``fraction`` of every :data:`PERIOD_S` as a real-time
    process, until ``parent`` is gone or :data:`MAX_S` passed (a taker's main)."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    print("ready", flush=True)
    until = time.perf_counter() + MAX_S
    cycles(fraction, PERIOD_S, lambda now: now < until and os.getppid() == parent)


def cycles(
    fraction: float,
    period_s: float,
    going: Callable[[float], bool],
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Busy for ``fraction`` of each ``period_s``, asleep for the rest, while
    ``going(now)``.

    Each busy spell lasts ``fraction * period_s`` from when it began, and the
    cycles start on a fixed grid: a sleep that overshoots shortens the next
    sleep, so the share taken stays ``fraction``; a cycle missed altogether
    (held off the core by the kernel's real-time limit) starts the grid afresh
    with its sleep, rather than catching up."""
    busy_s = fraction * period_s
    start_at = clock()
    while going(start_at):
        busy_until = clock() + busy_s
        while clock() < busy_until:
            pass
        start_at += period_s
        pause = start_at - clock()
        if pause <= 0:  # missed: this cycle's sleep now, on a grid from here
            pause = period_s - busy_s
            start_at = clock() + pause
        sleep(pause)


if __name__ == "__main__":  # pragma: no cover - run as a taker by start()
    try:
        take(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
    except PermissionError:
        sys.exit("running a real-time process needs root or CAP_SYS_NICE")
