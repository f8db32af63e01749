"""A tiny HTTP server for ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

The receiver is not a web app; this keeps its dependencies to the standard
library plus prometheus-client. It answers only GET on those three paths.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)

StatusFn = Callable[[], tuple[bool, bool, dict[str, Any]]]  # (healthy, ready, details)


async def serve_health(host: str, port: int, status: StatusFn) -> asyncio.Server:
    """Start serving; returns the server (``server.sockets[0]`` has the bound port)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b""):
                pass
            parts = request.split()
            path = parts[1].decode("latin-1").split("?", 1)[0] if len(parts) > 1 else ""
            if path == "/metrics":
                code, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest()
            elif path in ("/healthz", "/readyz"):
                healthy, ready, details = status()
                ok = healthy if path == "/healthz" else ready
                code, ctype = (200 if ok else 503), "application/json"
                body = orjson.dumps({"ok": ok, **details})
            else:
                code, ctype, body = 404, "text/plain", b"not found\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[code]
            writer.write(
                f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    logger.info(
        "metrics and health on http://%s:%d/metrics", host, server.sockets[0].getsockname()[1]
    )
    return server
