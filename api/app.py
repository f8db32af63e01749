"""The FastAPI application: wiring of store, hub, Kafka feed, routes and dashboard.

``create_app()`` builds everything from :class:`api.settings.GatewaySettings`;
the lifespan starts the Kafka feed thread, the open-bar reader
(:mod:`api.open_bars`), the slow-client watchdog and the
garbage-collector keeper (:func:`keep_gc_off_live_objects`) and stops them on
shutdown. The dashboard (``api/static/``, built separately) is
served at ``/`` and ``/dashboard``; the mount works even when the folder is
missing or empty. Nothing here handles errors by hand (see api/errors.py).

Not open by default: with auth on (the default) and no key configured
``create_app`` raises :class:`api.errors.Misconfigured`; ``HQ_GATEWAY_AUTH=off``
serves anonymous callers (never admins) and says so in a warning at start.
``/readyz`` answers for what this replica can serve: REST needs Redis, push
needs the replica's own Kafka consumer; the answer is cached for
:data:`READY_CACHE_S` so probes cost nothing under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from api.day_replay import DayReplayLimits
from api.errors import KeyInUrlGuard, Misconfigured, NotFound, install_handlers
from api.hub import Hub
from api.kafka_feed import KafkaFeed
from api.limits import FairSlots
from api.models import Health
from api.open_bars import OpenBars
from api.rebuild_watch import RebuildWatch
from api.routes import router
from api.settings import GatewaySettings, get_settings
from api.snapshots import SnapshotReads
from api.status import StatusProbe
from api.store import Store
from api.wire import RawSendMiddleware
from api.ws import websocket_endpoint
from hqcore.kafka_client import close_within

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
READY_CACHE_S = 1.0


class _OptionalStatic(StaticFiles):
    """StaticFiles that answers 404 instead of failing when the folder is missing."""

    async def check_config(self) -> None:
        if self.directory is not None and Path(self.directory).is_dir():
            await super().check_config()

    async def get_response(self, path: str, scope: Scope) -> Response:
        if self.directory is None or not Path(self.directory).is_dir():
            return JSONResponse({"error": "not_found", "message": "not found"}, status_code=404)
        return await super().get_response(path, scope)


async def keep_gc_off_live_objects(hub: Hub, interval_s: float, full_after_closed: int) -> None:
    """Freeze surviving objects every ``interval_s``; a full collection only after churn.

    Each connection keeps hundreds of objects alive; CPython's full collections
    walk all of them (about 1 s at 10,000 connections, growing while clients
    connect), stalling every client. Frozen objects are not walked. Cyclic
    garbage left by closed connections is reclaimed by a full collection once
    ``full_after_closed`` (or a tenth of the open ones) closed since the last.
    """
    closed_at_last_full = hub.removed
    try:
        while True:
            await asyncio.sleep(interval_s)
            closed = hub.removed - closed_at_last_full
            if closed >= max(full_after_closed, len(hub.sessions) // 10):
                started = time.perf_counter()
                gc.unfreeze()
                found = gc.collect()
                closed_at_last_full = hub.removed
                logger.info(
                    "full gc after %d closed connections: %d unreachable, %.0f ms",
                    closed,
                    found,
                    (time.perf_counter() - started) * 1000,
                )
            gc.freeze()
    finally:
        gc.unfreeze()


def create_app(settings: GatewaySettings | None = None, *, consume: bool = True) -> FastAPI:
    """The gateway app. ``consume=False`` skips the Kafka feed (REST-only tests)."""
    cfg = settings or get_settings()
    if cfg.auth_enabled and not cfg.client_keys():
        raise Misconfigured(
            "no API keys configured: set HQ_GATEWAY_API_KEYS (and HQ_GATEWAY_ADMIN_KEYS), "
            "or HQ_GATEWAY_AUTH=off to serve without keys"
        )
    static_dir = Path(cfg.static_dir) if cfg.static_dir else STATIC_DIR

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        store = Store(cfg.redis_url)
        hub = Hub(cfg.flush_interval_ms / 1000)
        app.state.settings = cfg
        app.state.store = store
        app.state.hub = hub
        app.state.probe = StatusProbe(cfg, store)
        app.state.rebuild_watch = RebuildWatch(store)
        app.state.replay_slots = FairSlots(cfg.replay_slots, cfg.replay_slots_per_key)
        app.state.day_replay_limits = DayReplayLimits(cfg.day_replay_slots, cfg.day_replays_per_key)
        app.state.snapshots = SnapshotReads(store, max_age_s=cfg.market_snapshot_max_age_s)
        app.state.ready = (float("-inf"), Health(status="not_ready"))
        feed = KafkaFeed(cfg, hub, loop) if consume else None
        app.state.feed = feed
        if feed is not None:
            feed.start()
        watchdog = loop.create_task(hub.watch_slow_clients(cfg.slow_client_deadline_s))
        open_bars = loop.create_task(
            OpenBars(hub, store, cfg.open_bar_interval_ms / 1000).run(), name="open-bars"
        )
        gc_keeper = None
        if cfg.gc_freeze_interval_s > 0:
            gc_keeper = loop.create_task(
                keep_gc_off_live_objects(hub, cfg.gc_freeze_interval_s, cfg.gc_full_after_closed)
            )
        logger.info("gateway up (kafka %s, redis configured)", cfg.kafka_bootstrap)
        if not cfg.auth_enabled:
            logger.warning(
                "HQ_GATEWAY_AUTH=off: serving callers without an API key (anonymous, never admin)"
            )
        try:
            yield
        finally:
            watchdog.cancel()
            open_bars.cancel()
            if gc_keeper is not None:
                gc_keeper.cancel()
            for session in list(hub.sessions.values()):
                await session.kill(1001, "server shutting down")
            if feed is not None:
                await asyncio.to_thread(feed.stop)
            await close_within(app.state.probe.close, "the status probe's Kafka clients")
            await store.close()

    app = FastAPI(
        title="hqstream gateway",
        version="0.1.0",
        description="Real-time China A-share quotes: REST from Redis, WebSocket push from Kafka "
        "(protocol: docs/websocket.md).",
        lifespan=lifespan,
    )
    install_handlers(app)
    app.add_middleware(RawSendMiddleware)
    app.add_middleware(KeyInUrlGuard)  # added last: outermost
    app.include_router(router)
    app.add_api_websocket_route("/api/realtime/ws", websocket_endpoint)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
    async def readyz(request: Request) -> JSONResponse:
        state = request.app.state
        at, body = state.ready
        now = time.monotonic()
        if now - at >= READY_CACHE_S:
            probe: StatusProbe = state.probe
            feed: KafkaFeed | None = state.feed
            # REST reads Redis; push needs this replica's own consumer. The Kafka
            # cluster's metadata is not asked: an outage that leaves the consumer
            # assigned must not take every replica (and REST) out of service.
            checks = {"redis": (await probe.redis()).ok, "consumer": feed is None or feed.ready}
            ready = all(checks.values())
            body = Health(status="ok" if ready else "not_ready", checks=checks)
            state.ready = (time.monotonic(), body)
        return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        index = static_dir / "index.html"
        if not index.is_file():
            raise NotFound("the dashboard is not installed")
        return FileResponse(index)

    app.mount("/", _OptionalStatic(directory=static_dir, html=True, check_dir=False), "static")
    return app
