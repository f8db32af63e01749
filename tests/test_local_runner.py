"""hqstream.local_runner: cluster ids, the priorities of Redis and of the broker's threads."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import redis

from hqstream.local_runner import (
    BROKER_BACKGROUND_NICE,
    BROKER_BACKGROUND_THREADS,
    REDIS_NICE,
    LocalKafka,
    LocalRedis,
    LocalStack,
    kafka_cluster_id,
    lower_threads,
)
from tests.waits import until


def test_cluster_ids_are_16_byte_uuids_that_never_look_like_an_option() -> None:
    """kafka-storage reads an id starting with '-' as an option: 1 start in 64 failed so."""
    ids = {kafka_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def _nice_by_thread(pid: int) -> dict[str, set[int]]:
    """The nice values (field 19 of ``stat``) of ``pid``'s threads, by thread name."""
    found: dict[str, set[int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        name, fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)
        found.setdefault(name.split("(", 1)[1], set()).add(int(fields.split()[16]))
    return found


def _nice_of_every_thread(pid: int) -> set[int]:
    """The nice value of each thread of ``pid``."""
    return set().union(*_nice_by_thread(pid).values())


#: a process with three named threads (Linux's names: prctl PR_SET_NAME) that waits
THREADS = """
import ctypes, sys, threading
prctl = ctypes.CDLL(None).prctl
def named(name):
    prctl(15, name.encode())
    threading.Event().wait()
for name in ("kafka-log-clean", "C2 CompilerThre", "request-handler"):
    threading.Thread(target=named, args=(name,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def test_only_the_threads_named_are_lowered_by_the_increment_given() -> None:
    own = os.nice(0)
    child = subprocess.Popen([sys.executable, "-c", THREADS], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        until(lambda: len(_nice_by_thread(child.pid)) == 4, "the named threads")
        lowered = lower_threads(child.pid, ("kafka-log-clean", "C1 CompilerThre"), 5)
        assert lowered == ["kafka-log-clean"]  # no C1 thread: none
        assert lower_threads(child.pid, ("kafka-log-clean",), 30) == ["kafka-log-clean"]
        nice = _nice_by_thread(child.pid)
        assert nice.pop("kafka-log-clean") == {19}  # own + 5 + 30, at most 19
        assert set().union(*nice.values()) == {own}  # the others, the main thread too
    finally:
        child.kill()
        child.wait()
    assert lower_threads(child.pid, ("kafka-log-clean",), 5) == []  # the process is gone


def test_redis_runs_below_the_pipeline_s_cpu_priority_when_asked(tmp_path: Path) -> None:
    """`hqstream up` and the speed benchmarks lower their Redis (REDIS_NICE): the server and
    every thread it starts run at that increment above the caller's nice value, in the
    caller's session (a session of its own is an autogroup of its own, where a nice value
    weighs against nothing else); it serves."""
    own = os.nice(0)
    server = LocalRedis(tmp_path, nice=REDIS_NICE)
    server.start()
    try:
        assert server.proc is not None
        assert _nice_of_every_thread(server.proc.pid) == {min(19, own + REDIS_NICE)}
        assert os.getsid(server.proc.pid) == os.getsid(0)
        assert os.getpgid(server.proc.pid) == server.proc.pid  # stopped by its group
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
    finally:
        server.stop()
    assert LocalStack(tmp_path).redis.nice == 0  # the tests' own stacks: the same priority


def test_the_broker_s_log_cleaner_and_jit_compilers_run_below_its_request_threads(
    tmp_path: Path,
) -> None:
    """`hqstream up` and the speed benchmarks lower the broker's housekeeping threads
    (BROKER_BACKGROUND_NICE) by their JVM names: a Kafka or JVM that renamed them
    would leave them at the broker's priority, so the real broker is asked. It
    serves; the other threads keep the caller's nice; it runs in the caller's session (see
    the Redis test); a restart lowers the new ones."""
    own = os.nice(0)
    broker = LocalKafka(tmp_path, background_nice=BROKER_BACKGROUND_NICE)
    broker.start()
    try:
        assert broker.proc is not None
        for _ in range(2):
            nice = _nice_by_thread(broker.proc.pid)
            lowered = {name: nice.pop(name) for name in list(nice)
                       if name.startswith(BROKER_BACKGROUND_THREADS)}  # fmt: skip
            assert {name[:15] for name in lowered} == set(BROKER_BACKGROUND_THREADS)
            assert set().union(*lowered.values()) == {min(19, own + BROKER_BACKGROUND_NICE)}
            assert set().union(*nice.values()) == {own}
            assert os.getsid(broker.proc.pid) == os.getsid(0)
            assert broker._ready()
            broker.kill()
            broker.restart()
            assert broker.proc is not None
    finally:
        broker.stop()
    assert LocalStack(tmp_path).kafka.background_nice == 0  # the tests' own stacks
