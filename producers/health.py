"""The receiver's ``/metrics``, ``/healthz`` and ``/readyz``, answered from its event loop.

The routing is :func:`hqcore.probe_server.probe_response` (as for the other
processes); probes answer JSON (``{"ok": ..., **details}``). The receiver is
not a web app: this is a minimal HTTP/1.1 responder on asyncio streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from hqcore.probe_server import probe_response

logger = logging.getLogger(__name__)

StatusFn = Callable[[], tuple[bool, bool, dict[str, Any]]]  # (healthy, ready, details)


async def serve_health(host: str, port: int, status: StatusFn) -> asyncio.Server:
    """Start serving; returns the server (``server.sockets[0]`` has the bound port)."""

    def healthz() -> tuple[bool, bytes]:
        healthy, _, details = status()
        return healthy, orjson.dumps({"ok": healthy, **details})

    def readyz() -> tuple[bool, bytes]:
        _, ready, details = status()
        return ready, orjson.dumps({"ok": ready, **details})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b""):
                pass
            parts = request.split()
            path = parts[1].decode("latin-1") if len(parts) > 1 else ""
            code, ctype, body = probe_response(path, healthz, readyz, "application/json")
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
