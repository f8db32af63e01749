"""CPU time of processes and of a JVM's compiler threads, and the time they waited for a
core, read from /proc.

A process group stands for a component with every process it started (the
benchmarks start each in a session of its own): :func:`group_cpu_s` sums them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

CLK_TCK = os.sysconf("SC_CLK_TCK")
JIT_THREADS = (b"C1 CompilerThre", b"C2 CompilerThre")  # a JVM's compiler threads (comm)


def cpu_s(stat: bytes) -> float:
    """User + system CPU seconds in the text of a /proc ``stat`` file."""
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _group_stats(pgid: int) -> Iterator[tuple[str, bytes]]:
    """(pid, text of /proc/<pid>/stat) of every live process in process group ``pgid``."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[2]) == pgid:
            yield entry.name, stat


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    return sum(cpu_s(stat) for _, stat in _group_stats(pgid))


def sched_ns(pid: int | str) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for one) of every live thread of ``pid``,
    from each thread's ``schedstat``. The wait is what sharing the cores costs a process
    beyond its own CPU (a thread that ended takes its counts along)."""
    ran = waited = 0
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"{task.path}/schedstat", "rb") as fh:
                    fields = fh.read().split()
                ran += int(fields[0])
                waited += int(fields[1])
    return ran, waited


def group_sched_ns(pgid: int) -> tuple[int, int]:
    """:func:`sched_ns` summed over every live process in process group ``pgid``."""
    readings = [sched_ns(pid) for pid, _ in _group_stats(pgid)]
    return sum(r for r, _ in readings), sum(w for _, w in readings)


def jit_cpu_s(pgid: int) -> dict[str, float]:
    """CPU seconds of each JIT compiler thread (``pid/tid``) of the JVMs in process
    group ``pgid``. A JVM starts and ends compiler threads as it needs them, so
    compare two readings thread by thread (:func:`jit_share`), not their sums."""
    threads: dict[str, float] = {}
    for pid, _ in _group_stats(pgid):
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    with open(f"{task.path}/comm", "rb") as fh:
                        if not fh.read().startswith(JIT_THREADS):
                            continue
                    with open(f"{task.path}/stat", "rb") as fh:
                        threads[f"{pid}/{task.name}"] = cpu_s(fh.read())
    return threads


def jit_share(before: dict[str, float], after: dict[str, float], seconds: float) -> float:
    """The share of a core the compiler threads used between two readings: the
    threads alive at the second (one that started in between counts whole; the
    last seconds of one that ended in between are missed)."""
    used = sum(cpu - before.get(thread, 0.0) for thread, cpu in after.items())
    return used / seconds
