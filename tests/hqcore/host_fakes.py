"""A clock and a main thread's run delay that tests set by hand (hqcore.host)."""

from __future__ import annotations


class ManualClock:
    """A monotonic clock the test moves (``now``, seconds)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class ManualRunDelay:
    """A main thread's run delay, ns, as the test makes it (None: the kernel does not say)."""

    def __init__(self) -> None:
        self.ns: int | None = 0
        self.reads = 0

    def __call__(self) -> int | None:
        self.reads += 1
        return self.ns

    def wait(self, seconds: float) -> None:
        """The thread waited ``seconds`` more for a core."""
        assert self.ns is not None
        self.ns += round(seconds * 1e9)
