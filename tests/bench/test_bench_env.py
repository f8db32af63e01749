"""``hqstream bench ...`` does what docs/benchmarks.md says about its endpoints:
with HQ_KAFKA_BOOTSTRAP/HQ_REDIS_URL unset it starts its own broker and Redis;
with an endpoint that cannot be reached it prints one line and exits 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KafkaEndpoint
from tests.stack_procs import alive, wait_until

ROOT = Path(__file__).resolve().parents[2]
HQSTREAM = [sys.executable, "-m", "hqstream.cli"]


def _env(**over: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HQ_")}
    env.update(over)
    return env


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.integration
@pytest.mark.parametrize("unreachable", ["kafka", "redis"])
def test_unreachable_endpoint_is_one_clear_line(
    unreachable: str, kafka: KafkaEndpoint, redis_url: str
) -> None:
    """No traceback: what was tried and which variable to set."""
    dead = _closed_port()
    if unreachable == "kafka":
        env = _env(HQ_KAFKA_BOOTSTRAP=f"127.0.0.1:{dead}", HQ_REDIS_URL=redis_url)
        variable = "HQ_KAFKA_BOOTSTRAP"
    else:
        env = _env(HQ_KAFKA_BOOTSTRAP=kafka.bootstrap, HQ_REDIS_URL=f"redis://127.0.0.1:{dead}/0")
        variable = "HQ_REDIS_URL"
    proc = subprocess.run(
        [*HQSTREAM, "bench", "streams", "--records", "1000"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert "cannot reach" in out and variable in out and str(dead) in out, out


@pytest.mark.integration
def test_bench_streams_starts_its_own_stack_when_unset() -> None:
    """The newcomer's command from issue 9: no variables, a small run, zero loss."""
    proc = subprocess.run(
        [*HQSTREAM, "bench", "streams", "--records", "4000", "--stocks", "1000"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "starting a local Kafka broker and Redis" in out, out[-4000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| faust worker")]
    assert rows and rows[0].rstrip(" |").endswith("| 0"), out[-4000:]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children in sessions of their own included)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


@pytest.mark.integration
def test_sigterm_stops_everything_the_bench_started() -> None:
    """``kill`` (or a CI timeout) on a bench leaves no broker, Redis or worker behind."""
    proc = subprocess.Popen(
        [*HQSTREAM, "bench", "streams", "--records", "400000", "--stocks", "1000"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("local Kafka"):
                break
        assert seen and seen[-1].startswith("local Kafka"), "".join(seen)[-4000:]
        started = _descendants(proc.pid)
        assert any("java" in Path(f"/proc/{p}/cmdline").read_text() for p in started if alive(p))
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_until(lambda: not [p for p in started if alive(p)], 60, "the bench's processes to stop")
