"""Leader election for the feed receiver on a Kubernetes ``coordination.k8s.io/v1`` Lease.

The vendor accepts one connection per token, and a Deployment with
``replicas: 1`` does not guarantee one pod: a partitioned node keeps its pod
running while the controller starts a replacement. So the receiver connects to
the vendor only while it holds the Lease, and stops the feed when it cannot
renew it in time:

* **acquire** before connecting: create the Lease, or take it over when its
  holder has not renewed it for ``leaseDurationSeconds`` (measured on *our*
  monotonic clock from when we last saw the record change, as client-go does,
  so clock skew between nodes does not matter);
* **renew** every ``retry_s``; every write carries the ``resourceVersion`` we
  read, so two candidates never both win (the API server answers 409);
* **give up** when no renewal succeeded for ``renew_deadline_s`` (shorter than
  the lease duration) or someone else holds the Lease: the feed connection is
  stopped *before* another candidate may consider the Lease expired;
* **release** on a clean exit (holder cleared), so a rollout does not wait.

Talks HTTP to the API server with the pod's projected service-account token
(re-read on every request: the kubelet rotates it) and the cluster CA. Never
logs the token. Disabled (the receiver runs at once) when ``HQ_LEASE_NAME`` is
empty, as in the local runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from producers.errors import ProducersError
from producers.settings import ReceiverSettings

logger = logging.getLogger(__name__)

EXIT_LEASE_LOST = 3
"""Exit code of ``hqstream produce`` when the Lease was lost (Kubernetes restarts it)."""

_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_API = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"


class LeaseError(ProducersError):
    """The Lease API answered something we cannot act on."""


@dataclass(frozen=True)
class LeaseConfig:
    """Where the Lease is, who we are, and the timing (seconds)."""

    name: str
    namespace: str
    identity: str
    api_url: str = "https://kubernetes.default.svc"
    token_path: Path = _SA_DIR / "token"
    ca_path: Path | None = _SA_DIR / "ca.crt"
    duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0
    request_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.retry_s < self.renew_deadline_s < self.duration_s:
            raise ValueError("lease timing needs retry_s < renew_deadline_s < duration_s")


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """One candidate for one Lease; see the module docstring."""

    def __init__(self, config: LeaseConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._own_client = client is None
        self._client = client or self._make_client()
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self.held = False
        self.last_renew = 0.0  # monotonic time of the last successful write

    def _make_client(self) -> httpx.AsyncClient:
        verify: ssl.SSLContext | bool = True
        if self.config.ca_path is not None and self.config.api_url.startswith("https"):
            verify = ssl.create_default_context(cafile=str(self.config.ca_path))
        return httpx.AsyncClient(
            base_url=self.config.api_url, verify=verify, timeout=self.config.request_timeout_s
        )

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def _headers(self) -> dict[str, str]:
        token = self.config.token_path.read_text().strip()
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _url(self, named: bool = True) -> str:
        base = _API.format(ns=self.config.namespace)
        return f"{base}/{self.config.name}" if named else base

    def _spec(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = _now_micro()
        spec = dict(previous or {})
        taking_over = spec.get("holderIdentity") != self.config.identity
        spec["holderIdentity"] = self.config.identity
        spec["leaseDurationSeconds"] = math.ceil(self.config.duration_s)
        spec["renewTime"] = now
        if taking_over:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if previous else 0
            )
        return spec

    def _expired(self, spec: dict[str, Any]) -> bool:
        """Has the holder failed to renew for a lease duration, on our clock?"""
        holder = str(spec.get("holderIdentity") or "")
        if not holder:
            return True
        record = (holder, str(spec.get("renewTime") or ""))
        now = time.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
            return False
        duration = float(spec.get("leaseDurationSeconds") or self.config.duration_s)
        return now - self._observed_at > duration

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards. Network errors -> False."""
        try:
            return await self._attempt()
        except (httpx.HTTPError, OSError) as exc:
            logger.warning("lease %s: API server unreachable (%s)", self.config.name, exc)
            return False

    async def _attempt(self) -> bool:
        got = await self._client.get(self._url(), headers=self._headers())
        if got.status_code == 404:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                "spec": self._spec(None),
            }
            made = await self._client.post(
                self._url(named=False), json=body, headers=self._headers()
            )
            if made.status_code == 409:
                return False  # another candidate created it first
            self._raise_for(made)
            return self._won()
        self._raise_for(got)
        lease = got.json()
        spec = lease.get("spec") or {}
        mine = spec.get("holderIdentity") == self.config.identity
        if not mine and not self._expired(spec):
            self.held = False
            return False
        lease["spec"] = self._spec(spec)
        put = await self._client.put(self._url(), json=lease, headers=self._headers())
        if put.status_code == 409:
            return False  # resourceVersion moved: someone else wrote first
        self._raise_for(put)
        return self._won()

    def _won(self) -> bool:
        if not self.held:
            logger.info("lease %s acquired by %s", self.config.name, self.config.identity)
        self.held = True
        self.last_renew = time.monotonic()
        self._observed = (self.config.identity, "")
        return True

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.status_code >= 400:
            raise LeaseError(f"lease API answered {response.status_code}: {response.text[:200]}")

    async def acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Wait until we hold the Lease (True) or ``stop`` is set (False)."""
        stop = stop or asyncio.Event()
        logger.info("waiting for lease %s as %s", self.config.name, self.config.identity)
        while not stop.is_set():
            try:
                if await self.try_acquire_or_renew():
                    return True
            except LeaseError as exc:
                logger.warning("%s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.retry_s)
        return False

    async def keep(self) -> None:
        """Renew until the Lease is lost; returns when it is (never while held).

        Returns at the latest ``renew_deadline_s`` after the last successful
        renewal: a hanging request is cut off at that deadline, not at its own
        timeout, so the feed stops before any other candidate may take over.
        """
        while True:
            deadline = self.last_renew + self.config.renew_deadline_s
            await asyncio.sleep(max(0.0, min(self.config.retry_s, deadline - time.monotonic())))
            remaining = deadline - time.monotonic()
            ok = False
            if remaining > 0:
                try:
                    ok = await asyncio.wait_for(self.try_acquire_or_renew(), remaining)
                except (LeaseError, TimeoutError) as exc:
                    logger.warning("lease %s: renewal failed (%s)", self.config.name, exc)
            if ok:
                continue
            holder = self._observed[0] if self._observed is not None else ""
            if holder not in ("", self.config.identity):
                logger.error("lease %s taken by %s", self.config.name, holder)
                self.held = False
                return
            if time.monotonic() >= deadline:
                logger.error(
                    "lease %s not renewed for %.1fs: giving up the feed",
                    self.config.name,
                    self.config.renew_deadline_s,
                )
                self.held = False
                return

    async def release(self) -> None:
        """Clear the holder if it is still us, so the next candidate need not wait."""
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(httpx.HTTPError, OSError, LeaseError, ValueError):
            got = await self._client.get(self._url(), headers=self._headers())
            self._raise_for(got)
            lease = got.json()
            if (lease.get("spec") or {}).get("holderIdentity") != self.config.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["leaseDurationSeconds"] = 1
            await self._client.put(self._url(), json=lease, headers=self._headers())
            logger.info("lease %s released", self.config.name)


async def run_as_leader(
    elector: LeaseElector | None,
    main: Callable[[], Awaitable[int]],
    stop: asyncio.Event | None = None,
) -> int:
    """Run ``main`` only while holding the Lease; no elector = run it at once.

    Returns ``main``'s exit code, or :data:`EXIT_LEASE_LOST` when the Lease was
    lost (``main`` is cancelled first, which closes the feed connection).
    """
    if elector is None:
        return await main()
    try:
        if not await elector.acquire(stop):
            return 0
        work = asyncio.ensure_future(main())
        keeper = asyncio.ensure_future(elector.keep())
        await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await elector.release()
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        return EXIT_LEASE_LOST
    finally:
        await elector.aclose()


def elector_for(settings: ReceiverSettings) -> LeaseElector | None:
    """The receiver's elector from its settings; None when ``HQ_LEASE_NAME`` is empty."""
    if not settings.lease_name:
        return None
    namespace = settings.lease_namespace or (_SA_DIR / "namespace").read_text().strip()
    config = LeaseConfig(
        name=settings.lease_name,
        namespace=namespace,
        identity=settings.lease_identity or socket.gethostname(),
        api_url=settings.kube_api_url,
        duration_s=settings.lease_duration_s,
        renew_deadline_s=settings.lease_renew_deadline_s,
        retry_s=settings.lease_retry_s,
    )
    return LeaseElector(config)
