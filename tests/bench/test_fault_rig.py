"""The fault suite's rig (hqstream/bench/fault_rig.py) against the real broker and Redis."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from hqstream.bench.fault_rig import FaultRig
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
