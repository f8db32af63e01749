"""The Redis start and probe scripts of deploy/k8s/base/redis, run for real.

start-redis.sh writes the ACL users into the config and execs redis-server; a
typo in an ACL rule would crash every Redis pod, and a too-wide rule would
give the gateway write access. This starts the local redis-server with the
generated config on a free loopback port and checks what each user may do,
and that probe.sh tells alive from ready. Skipped without redis-server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.manifests import K8S_DIR

SCRIPTS = K8S_DIR / "base" / "redis"
USERS = ("admin", "replication", "sentinel", "probe", "metrics", "streams", "gateway")


@dataclass(frozen=True)
class RedisUnderTest:
    port: int
    secrets: Path

    def cli(self, user: str | None, *args: str) -> str:
        cmd = ["redis-cli", "--no-auth-warning", "-p", str(self.port)]
        env = dict(os.environ)
        if user is not None:
            cmd += ["--user", user]
            env["REDISCLI_AUTH"] = (self.secrets / user).read_text()
        proc = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, env=env, timeout=10, check=False
        )
        return (proc.stdout + proc.stderr).strip()

    def probe(self, mode: str) -> int:
        env = {**os.environ, "REDIS_SECRETS_DIR": str(self.secrets), "REDIS_PORT": str(self.port)}
        return subprocess.run(
            ["sh", str(SCRIPTS / "probe.sh"), mode], env=env, timeout=20, check=False
        ).returncode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(root: Path, *extra: str, **env_extra: str) -> Iterator[RedisUnderTest]:
    """start-redis.sh on a free loopback port, its secrets, run and data dirs under ``root``."""
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        pytest.skip("redis-server / redis-cli not installed")
    secrets, run, data = root / "secrets", root / "run", root / "data"
    for d in (secrets, run, data):
        d.mkdir()
    for user in USERS:
        (secrets / user).write_text(f"{user}-{os.urandom(8).hex()}")
    port = _free_port()
    env = {
        **os.environ,
        "REDIS_SECRETS_DIR": str(secrets),
        "REDIS_RUN_DIR": str(run),
        "REDIS_DATA_DIR": str(data),
        **env_extra,
    }
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra]
    proc = subprocess.Popen(
        ["sh", str(SCRIPTS / "start-redis.sh"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    under_test = RedisUnderTest(port, secrets)
    try:
        deadline = time.monotonic() + 20
        while under_test.cli("probe", "ping") != "PONG":
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"redis-server exited {proc.returncode}:\n{out}")
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)
        yield under_test
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisUnderTest]:
    yield from _start(tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisUnderTest]:
    """A node of components/redis-cluster (REDIS_CLUSTER=yes), not joined to others."""
    root = tmp_path_factory.mktemp("redis-node")
    bus = ("--cluster-port", str(_free_port()))  # (the default, port + 10000, may not exist)
    yield from _start(root, *bus, REDIS_CLUSTER="yes", POD_NAMESPACE="hqstream")


def test_the_config_keeps_no_password_in_clear(redis: RedisUnderTest) -> None:
    conf = (redis.secrets.parent / "run" / "redis.conf").read_text()
    for user in USERS:
        assert (redis.secrets / user).read_text() not in conf, user


def test_default_user_is_off(redis: RedisUnderTest) -> None:
    assert "NOAUTH" in redis.cli(None, "get", "hq:quote:{000001}") or "WRONGPASS" in redis.cli(
        None, "get", "hq:quote:{000001}"
    )
    assert redis.cli(None, "ping") != "PONG"


def test_streams_writes_hq_keys_and_runs_scripts_only(redis: RedisUnderTest) -> None:
    assert redis.cli("streams", "set", "hq:quote:{000001}", "x") == "OK"
    assert redis.cli("streams", "eval", "return 1", "0") == "1"
    sha = redis.cli("streams", "script", "load", "return redis.call('get', KEYS[1])")
    assert redis.cli("streams", "evalsha", sha, "1", "hq:quote:{000001}") == "x"
    assert redis.cli("streams", "--scan", "--pattern", "hq:*") == "hq:quote:{000001}"
    assert "NOPERM" in redis.cli("streams", "set", "other:key", "x")
    assert "NOPERM" in redis.cli("streams", "flushall")
    assert "NOPERM" in redis.cli("streams", "config", "set", "maxmemory", "1")


def test_gateway_only_reads(redis: RedisUnderTest) -> None:
    assert redis.cli("streams", "set", "hq:market:SH", "m") == "OK"
    assert redis.cli("gateway", "get", "hq:market:SH") == "m"
    assert redis.cli("gateway", "ping") == "PONG"
    assert "NOPERM" in redis.cli("gateway", "set", "hq:market:SH", "x")
    assert "NOPERM" in redis.cli("gateway", "del", "hq:market:SH")
    assert "NOPERM" in redis.cli("gateway", "eval", "return 1", "0")
    assert "NOPERM" in redis.cli("gateway", "keys", "*")


def test_probe_user_pings_and_reads_info_only(redis: RedisUnderTest) -> None:
    assert "role:master" in redis.cli("probe", "info", "replication")
    assert "NOPERM" in redis.cli("probe", "get", "hq:market:SH")
    assert "NOPERM" in redis.cli("metrics", "get", "hq:market:SH")
    assert "maxmemory" in redis.cli("metrics", "config", "get", "maxmemory")


def test_probe_script_alive_and_ready(redis: RedisUnderTest) -> None:
    assert redis.probe("alive") == 0
    assert redis.probe("ready") == 0
    assert redis.probe("nonsense") == 2


def test_probe_script_fails_when_redis_is_gone(redis: RedisUnderTest) -> None:
    gone = RedisUnderTest(_free_port(), redis.secrets)
    assert gone.probe("alive") != 0
    assert gone.probe("ready") != 0


def test_a_cluster_node_announces_its_pod_name_and_clients_read_the_slot_map(
    cluster_node: RedisUnderTest,
) -> None:
    assert "cluster_enabled:1" in cluster_node.cli("probe", "info", "cluster")
    conf = (cluster_node.secrets.parent / "run" / "redis.conf").read_text()
    assert "cluster-announce-hostname " in conf and ".redis-headless.hqstream.svc" in conf
    assert (cluster_node.secrets.parent / "data" / "nodes.conf").exists()
    for user in ("streams", "gateway"):  # what a cluster client asks first
        assert "NOPERM" not in cluster_node.cli(user, "cluster", "slots"), user
        assert "NOPERM" not in cluster_node.cli(user, "cluster", "shards"), user
    assert "NOPERM" in cluster_node.cli("gateway", "set", "hq:market:SH", "x")
    assert "NOPERM" in cluster_node.cli("gateway", "cluster", "reset")
    assert "NOPERM" in cluster_node.cli("streams", "cluster", "addslots", "1")
    assert cluster_node.probe("alive") == 0
