"""Leader election on a Lease: only the holder reads the feed, and a holder that
cannot renew stops before anyone else takes over.

Runs against a small fake of the Kubernetes Lease API (GET/POST/PUT with
resourceVersion conflicts, bearer tokens) on loopback; a candidate is
"partitioned" by making the server hang its requests.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from producers.lease import (
    EXIT_LEASE_LOST,
    LeaseConfig,
    LeaseElector,
    run_as_leader,
)
from tests.waits import eventually

NS = "hqstream"
PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"


class FakeLeaseApi:
    """Leases in memory, with the API server's optimistic concurrency."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.lock = threading.Lock()
        self.partitioned: set[str] = set()  # tokens whose requests hang
        self.conflicts = 0
        self.after_get: dict[str, Callable[[], None]] = {}  # token -> hook
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _auth(self) -> bool:
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if token in api.partitioned:
                    time.sleep(5)  # the packets go nowhere; the client times out
                    return False
                if not token:
                    self._reply(401, {"reason": "Unauthorized"})
                    return False
                return True

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length", 0))
                return dict(json.loads(self.rfile.read(length)))

            def do_GET(self) -> None:
                if not self._auth():
                    return
                name = self.path.rsplit("/", 1)[-1]
                with api.lock:
                    lease = copy.deepcopy(api.leases.get(name))
                hook = api.after_get.pop(self.headers["Authorization"][7:], None)
                if hook is not None:
                    hook()  # runs after the read, before this client can write
                if lease is None:
                    self._reply(404, {"reason": "NotFound"})
                else:
                    self._reply(200, lease)

            def do_POST(self) -> None:
                if not self._auth():
                    return
                lease = self._body()
                name = lease["metadata"]["name"]
                with api.lock:
                    if name in api.leases:
                        api.conflicts += 1
                        self._reply(409, {"reason": "AlreadyExists"})
                        return
                    api.version += 1
                    lease["metadata"]["resourceVersion"] = str(api.version)
                    api.leases[name] = lease
                    self._reply(201, lease)

            def do_PUT(self) -> None:
                if not self._auth():
                    return
                lease = self._body()
                name = self.path.rsplit("/", 1)[-1]
                with api.lock:
                    current = api.leases.get(name)
                    if current is None:
                        self._reply(404, {"reason": "NotFound"})
                        return
                    sent = lease["metadata"].get("resourceVersion")
                    if sent != current["metadata"]["resourceVersion"]:
                        api.conflicts += 1
                        self._reply(409, {"reason": "Conflict"})
                        return
                    api.version += 1
                    lease["metadata"]["resourceVersion"] = str(api.version)
                    api.leases[name] = lease
                    self._reply(200, lease)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def bump(self, holder: str, name: str = "feed") -> None:
        """Another client's write: new holder, new resourceVersion."""
        with self.lock:
            self.version += 1
            self.leases[name]["spec"]["holderIdentity"] = holder
            self.leases[name]["metadata"]["resourceVersion"] = str(self.version)

    def holder(self, name: str = "feed") -> str:
        with self.lock:
            return str(self.leases.get(name, {}).get("spec", {}).get("holderIdentity", ""))

    def spec(self, name: str = "feed") -> dict[str, Any]:
        with self.lock:
            return dict(self.leases[name]["spec"])


@pytest.fixture
def api() -> Iterator[FakeLeaseApi]:
    fake = FakeLeaseApi()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _elector(api: FakeLeaseApi, tmp_path: Path, who: str, **timing: float) -> LeaseElector:
    token = tmp_path / f"{who}.token"
    token.write_text(f"token-{who}\n")
    config = LeaseConfig(
        name="feed",
        namespace=NS,
        identity=who,
        api_url=api.url,
        token_path=token,
        ca_path=None,
        **(
            # generous margins: the machine running the tests may be busy
            {"duration_s": 3.0, "renew_deadline_s": 2.0, "retry_s": 0.2, "request_timeout_s": 1.0}
            | timing
        ),
    )
    return LeaseElector(config)


class FakeFeed:
    """Stands in for run_receiver: 'connected' from start until cancelled or stopped."""

    def __init__(self) -> None:
        self.connected: dict[str, bool] = {}
        self.log: list[tuple[float, str, str]] = []  # (monotonic, who, "up"|"down")
        self.stop: dict[str, asyncio.Event] = {}

    def main(self, who: str) -> Any:
        async def run() -> int:
            self.stop[who] = asyncio.Event()
            self.connected[who] = True
            self.log.append((time.monotonic(), who, "up"))
            try:
                await self.stop[who].wait()
                return 0
            finally:
                self.connected[who] = False
                self.log.append((time.monotonic(), who, "down"))

        return run

    def holders(self) -> list[str]:
        return [w for w, up in self.connected.items() if up]

    def never_overlapped(self) -> bool:
        up: set[str] = set()
        for _t, who, what in sorted(self.log):
            if what == "up":
                up.add(who)
                if len(up) > 1:
                    return False
            else:
                up.discard(who)
        return True


async def test_one_holder_and_takeover_after_the_holder_stops_renewing(
    api: FakeLeaseApi, tmp_path: Path
) -> None:
    feed = FakeFeed()
    a, b = _elector(api, tmp_path, "pod-a"), _elector(api, tmp_path, "pod-b")
    runs = {
        "pod-a": asyncio.create_task(run_as_leader(a, feed.main("pod-a"))),
        "pod-b": asyncio.create_task(run_as_leader(b, feed.main("pod-b"))),
    }
    await eventually(lambda: len(feed.holders()) == 1, "one candidate connects")
    first = feed.holders()[0]
    second = "pod-b" if first == "pod-a" else "pod-a"
    assert api.holder() == first
    # Several lease durations with both candidates running: the holder keeps it.
    for _ in range(40):
        await asyncio.sleep(0.1)
        assert feed.holders() == [first]
    assert api.spec()["leaseTransitions"] == 0

    api.partitioned.add(f"token-{first}")  # the holder can no longer renew
    lost_at = time.monotonic()
    assert await asyncio.wait_for(runs[first], 10) == EXIT_LEASE_LOST
    assert time.monotonic() - lost_at < 3.0, "the old holder stops before the lease expires"
    await eventually(lambda: feed.holders() == [second], "the standby takes over")
    assert feed.never_overlapped(), feed.log
    spec = api.spec()
    assert spec["holderIdentity"] == second
    assert spec["leaseTransitions"] == 1
    assert spec["leaseDurationSeconds"] == 3

    feed.stop[second].set()
    assert await asyncio.wait_for(runs[second], 5) == 0
    assert api.holder() == "", "a clean exit releases the lease"


async def test_a_released_lease_is_taken_without_waiting_for_expiry(
    api: FakeLeaseApi, tmp_path: Path
) -> None:
    feed = FakeFeed()
    slow = {"duration_s": 30.0, "renew_deadline_s": 20.0, "retry_s": 0.1}
    a = _elector(api, tmp_path, "pod-a", **slow)
    run_a = asyncio.create_task(run_as_leader(a, feed.main("pod-a")))
    await eventually(lambda: feed.holders() == ["pod-a"], "pod-a connects")
    b = _elector(api, tmp_path, "pod-b", **slow)
    run_b = asyncio.create_task(run_as_leader(b, feed.main("pod-b")))
    feed.stop["pod-a"].set()  # SIGTERM: the receiver returns, the lease is released
    assert await run_a == 0
    await eventually(lambda: feed.holders() == ["pod-b"], "pod-b connects", timeout=10)
    assert feed.never_overlapped()
    feed.stop["pod-b"].set()
    assert await run_b == 0


async def test_a_stale_resource_version_loses(api: FakeLeaseApi, tmp_path: Path) -> None:
    a, b = _elector(api, tmp_path, "pod-a"), _elector(api, tmp_path, "pod-b")
    assert await a.try_acquire_or_renew()
    await a.release()
    assert api.holder() == ""
    # pod-b reads the free lease; pod-a writes it again before pod-b's PUT lands.
    api.after_get["token-pod-b"] = lambda: api.bump("pod-a")
    before = api.conflicts
    assert not await b.try_acquire_or_renew()
    assert api.conflicts == before + 1
    assert api.holder() == "pod-a"
    assert not b.held
    await a.aclose()
    await b.aclose()


async def test_without_a_lease_the_receiver_runs_at_once() -> None:
    async def main() -> int:
        return 7

    assert await run_as_leader(None, main) == 7


def test_timing_must_leave_room_before_expiry() -> None:
    with pytest.raises(ValueError, match="renew_deadline_s"):
        LeaseConfig(name="x", namespace="y", identity="z", duration_s=10, renew_deadline_s=10)
