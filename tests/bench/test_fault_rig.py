"""The fault suite's rig (hqstream/bench/fault_rig.py) against the real broker and Redis."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from hqstream.bench.fault_rig import FaultRig, _unread_at_kills, digest
from tests.conftest import KafkaEndpoint


def test_a_reused_run_dir_starts_empty(
    tmp_path: Path, kafka: KafkaEndpoint, redis_url: str
) -> None:
    """`bench faults --run-dir D` twice: the first run's sent log must not count as sent
    (and lost) in the second; it was appended to and showed 86,500 lost ticks."""
    run_dir = tmp_path / "broker-kill"
    run_dir.mkdir()
    (run_dir / "sent.log").write_bytes(b"sh600000 1795417197000\n" * 3)
    (run_dir / "journal").mkdir()
    stack = SimpleNamespace(
        kafka=SimpleNamespace(bootstrap=kafka.bootstrap), redis=SimpleNamespace(url=redis_url)
    )
    db = int(redis_url.rsplit("/", 1)[1])  # the test's own database: the rig flushes it
    rig = FaultRig(cast(Any, stack), run_dir, redis_db=db, stocks=5, interval_s=3.0, spread=False)
    try:
        assert list(run_dir.iterdir()) == []
        rig.sent_log.update()
        assert rig.sent_log.newest == {}
    finally:
        rig.delete_topics()


def _lines(n: int) -> list[bytes]:
    return [f"sh{600000 + i}$x".encode() for i in range(n)]


def test_unread_lines_are_those_after_the_killed_receivers_newest_read_line() -> None:
    """What a feed pushed into the dead connection, after the newest line in the killed
    receiver's write-ahead log, up to the first line its successor delivered; lines the
    receiver had read and Kafka lacks stay lost (the receiver's fault)."""
    lines = _lines(12)
    d = [digest(line) for line in lines]
    one = SimpleNamespace(feeds=("a",), receiver_kills=[("a", lines[4])])
    delivered = {b"vendor": {*d[:3], *d[8:]}}  # d[3], d[4]: read, then lost; d[5:8] unread
    assert _unread_at_kills(cast(Any, one), {"a": d}, delivered) == set(d[5:8])

    # two feeds: feed a's receiver read up to line 4; what feed b delivered does not
    # end a's unread run (only a line a's successor delivered does)
    two = SimpleNamespace(feeds=("a", "b"), receiver_kills=[("a", lines[4])])
    by_source = {b"a": {*d[:5], *d[9:]}, b"b": set(d[:12:2])}
    assert _unread_at_kills(cast(Any, two), {"a": d, "b": d[::2]}, by_source) == set(d[5:9])

    never_logged = SimpleNamespace(feeds=("a",), receiver_kills=[("a", None)])
    assert _unread_at_kills(cast(Any, never_logged), {"a": d}, delivered) == set()
