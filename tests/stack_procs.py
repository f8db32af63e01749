"""The pipeline's components as separate processes, for the whole-stack tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from hqstream.local_runner import create_topics, free_ports
from hqstream.stack_checks import gateway_ready
from schemas import topics
from tests.conftest import KafkaEndpoint

__all__ = [
    "alive", "gateway_ready", "pipeline_env", "process", "run_to_exit", "spawn", "stop",
    "wait_until",
]  # fmt: skip


def pipeline_env(
    kafka: KafkaEndpoint, redis_url: str, tmp_path: Path, prefix: str, partitions: int = 4
) -> tuple[dict[str, str], tuple[int, int, int]]:
    """The environment of every component on ``prefix``-ed topics (created here),
    and the feed, receiver-metrics and gateway ports."""
    create_topics(kafka.bootstrap, topics.topic_specs(partitions), prefix=prefix)
    feed_port, metrics_port, gw_port, streams_metrics_port = free_ports(4)
    env = {
        **os.environ,
        "HQ_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "HQ_REDIS_URL": redis_url,
        "HQ_PARTITIONS": str(partitions),
        "HQ_TOPIC_PREFIX": prefix,
        "HQ_FEED_ADDR": f"127.0.0.1:{feed_port}",
        "HQ_FEED_TOKEN": secrets.token_urlsafe(16),
        "HQ_JOURNAL_DIR": str(tmp_path / "journal"),
        "HQ_STREAMS_GROUP_ID": f"{prefix}streams",
        "HQ_STREAMS_METRICS_PORT": str(streams_metrics_port),
        "HQ_STREAMS_DATADIR": str(tmp_path / "streams"),
        "HQ_GATEWAY_STREAMS_GROUP": f"{prefix}streams",
        "HQ_GATEWAY_PRODUCER_METRICS_URL": f"http://127.0.0.1:{metrics_port}/metrics",
        "HQ_GATEWAY_AUTH": "off",  # the stack tests' clients send no key
    }
    return env, (feed_port, metrics_port, gw_port)


def spawn(name: str, args: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    """``hqstream <args>`` in its own session, its output appended to ``logs/<name>.log``."""
    with (logs / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hqstream.cli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_to_exit(
    args: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to its end; past ``timeout``, fail with every thread's Python stack.

    The child runs with faulthandler on, so the SIGABRT sent at the deadline
    makes it print where each of its threads was: a hang is a readable failure.
    """
    proc = subprocess.Popen(
        args,
        env={**env, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(
            f"{args[1:]} still running after {timeout:.0f} s; its stacks and output:\n"
            f"{err[-6000:]}\n{out[-2000:]}"
        ) from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def process(name: str, args: list[str], env: dict[str, str], logs: Path) -> Iterator[None]:
    (logs / f"{name}.log").unlink(missing_ok=True)
    proc = spawn(name, args, env, logs)
    try:
        yield
        assert proc.poll() is None, f"{name} died: {(logs / f'{name}.log').read_text()[-3000:]}"
    finally:
        stop(proc)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
