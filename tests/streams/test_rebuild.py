"""``hqstream streams --rebuild-from-raw``: replay into empty Redis == live processing."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from hqcore.redis_client import sync_client
from producers.sample_feed import generate
from streams.rebuild import RebuildRefused, run_rebuild
from streams.settings import StreamsSettings
from tests.conftest import ON_BOTH_REDIS
from tests.streams.test_integration import Stack, run_to_end, stack, state, valid_quotes

__all__ = ["stack"]  # the fixture, shared with test_integration

pytestmark = pytest.mark.integration


def settings_for(stack: Stack, url: str) -> StreamsSettings:
    return StreamsSettings(
        kafka_bootstrap=stack.kafka.bootstrap, redis_url=url, topic_prefix=stack.prefix,
        group_id=stack.kafka.group("rb"), metrics_port=0, candle_quiet_s=3600,
    )  # fmt: skip


@ON_BOTH_REDIS
def test_rebuild_equals_live_processing(stack: Stack, redis_url: str) -> None:
    """Live on one server, rebuilt on ``redis_url`` (one server, then a cluster)."""
    lines, _ = generate(400, 4, bad_fraction=0.02, seed=21)
    quotes, bad = valid_quotes(lines)
    stack.produce(lines)
    live_url, rebuilt_url = stack.redis_server.next_url(), redis_url
    group = stack.kafka.group("live")
    stack.worker(group, live_url, "live")
    run_to_end(stack, group, live_url, quotes)

    summary = run_rebuild(settings_for(stack, rebuilt_url))
    assert (summary.records, summary.quotes, summary.dead) == (
        len(lines), len(quotes), sum(bad.values()),
    )  # fmt: skip
    assert state(rebuilt_url) == state(live_url)


@ON_BOTH_REDIS
def test_rebuild_refuses_a_non_empty_redis_and_force_deletes_only_hq_keys(
    stack: Stack, redis_url: str
) -> None:
    lines, _ = generate(50, 2, seed=22)
    stack.produce(lines)
    url = redis_url
    client: Any = sync_client(url)
    client.set("hq:stale", "1")
    client.set("other:key", "kept")
    with pytest.raises(RebuildRefused):
        run_rebuild(settings_for(stack, url))
    assert client.get("hq:stale") == b"1"
    # the CLI: exit code 2 without --force, success with it
    env_cmd = [
        sys.executable, "-c",
        "import typer; from streams.cli import streams; typer.run(streams)", "--rebuild-from-raw",
    ]  # fmt: skip
    env = {
        "HQ_KAFKA_BOOTSTRAP": stack.kafka.bootstrap, "HQ_REDIS_URL": url,
        "HQ_TOPIC_PREFIX": stack.prefix, "HQ_STREAMS_METRICS_PORT": "0", "PATH": "/usr/bin",
    }  # fmt: skip
    refused = subprocess.run(env_cmd, env=env, capture_output=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    forced = subprocess.run([*env_cmd, "--force"], env=env, capture_output=True, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert b"rebuild done: 100 raw records" in forced.stdout
    assert client.get("hq:stale") is None
    assert client.get("other:key") == b"kept"
