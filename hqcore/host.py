"""How busy the host is for a process: how long its main thread waits for a core.

A process of the pipeline pays a few fixed milliseconds for each request or
batch it makes (a fetch, a produce request, a Redis pipeline), whatever it
holds. On a host with cores to spare that buys latency; on a full host every
quote queues behind those fixed costs, and fewer, larger requests are what
gives the host its headroom back (docs/architecture.md, "Cost per tick"). The
stream worker's fetch window (:class:`streams.faust_transport.FetchWindow`)
and the receiver's produce hold (:class:`producers.forwarder.Forwarder`) so
follow the host, measured here:

* :func:`main_thread_run_delay_ns`: the kernel's figure of how long the
  process's main thread was ready to run and waited for a core.
* :class:`CoreWait`: that wait as a share of a period, and how busy it makes
  the host from 0 (cores to spare) to 1 (none), between two thresholds that
  depend on the thread (how often it wakes).
* :class:`BusyNotice`: when to tell the operator, once, that the host became
  busy, and that it is not any more.

Pure but for the one read of ``/proc``; the clock and the reading are injected.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Final

#: :class:`CoreWait`'s period, and the stream worker's thresholds: the shares of
#: it its main thread waits for a core on a host with cores to spare (up to
#: IDLE) and with none (from BUSY)
CORE_WAIT_PERIOD_S: Final = 2.0
CORE_WAIT_IDLE: Final = 0.10
CORE_WAIT_BUSY: Final = 0.25
#: at most one warning this often that the host is busy (each followed by a line
#: once it is not)
BUSY_LOG_EVERY_S: Final = 60.0


def main_thread_run_delay_ns() -> int | None:
    """How long the process's main thread has waited for a core while ready to run, in ns
    (the second figure of Linux's ``/proc/<pid>/task/<pid>/schedstat``); None where
    the kernel does not say (another OS, a kernel without scheduler statistics)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/schedstat", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


class CoreWait:
    """How busy the host is for a process, from 0 to 1: the share of the last
    :data:`CORE_WAIT_PERIOD_S` its main thread was ready to run and waited for a
    core, 0 up to ``idle``, 1 from ``busy``, in proportion between.

    The share is what a busy host does to the process, whatever makes it busy
    (the other processes of the pipeline, a neighbour, a hypervisor taking the
    cores). How large it is on an idle host depends on how often the thread
    wakes, so each process has its thresholds: the stream worker's main thread
    waited 4-6 % of the time at the full market's steady rate and in its
    bursts on an idle 2-core host, 32 % when 60 % of each core was taken from
    it (``hqstream bench --steal 0.6``); the receiver's 2.5 % and 14-17 %.
    Always 0 where the kernel does not keep the figure
    (:func:`main_thread_run_delay_ns`).
    """

    def __init__(
        self,
        read: Callable[[], int | None] = main_thread_run_delay_ns,
        clock: Callable[[], float] = time.monotonic,
        idle: float = CORE_WAIT_IDLE,
        busy: float = CORE_WAIT_BUSY,
    ) -> None:
        if not 0 <= idle < busy:
            raise ValueError(f"CoreWait thresholds: 0 <= idle < busy, got {idle} and {busy}")
        self._read, self._clock = read, clock
        self.idle, self.full = idle, busy
        self.share = 0.0  # of the last period, waiting for a core
        self._delay: int | None = None
        self._since = 0.0

    def busy(self) -> float:
        """0-1 (see the class); measured anew at most once a period."""
        now = self._clock()
        if self._delay is not None and now - self._since < CORE_WAIT_PERIOD_S:
            return self._busy()
        delay = self._read()
        if delay is None:
            self.share = 0.0
        elif self._delay is not None and now > self._since:
            self.share = max(0.0, (delay - self._delay) / 1e9 / (now - self._since))
        self._delay, self._since = delay, now
        return self._busy()

    def _busy(self) -> float:
        return min(1.0, max(0.0, (self.share - self.idle) / (self.full - self.idle)))


class BusyNotice:
    """When to tell that the host became busy (``busy`` from 0.5), at most once per
    :data:`BUSY_LOG_EVERY_S`, and that it is not any more (below 0.5, once after
    each warning): the caller says what it changed, in its own words."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._told_busy = False  # a warning said the host is busy (and no line since)
        self._told_at = -BUSY_LOG_EVERY_S  # when the last warning did

    def update(self, busy: float) -> bool | None:
        """True: warn now that the host is busy; False: say it is not any more; None:
        nothing to say."""
        if busy >= 0.5 and not self._told_busy:
            now = self._clock()
            if now - self._told_at >= BUSY_LOG_EVERY_S:
                self._told_busy, self._told_at = True, now
                return True
        elif busy < 0.5 and self._told_busy:
            self._told_busy = False
            return False
        return None
