"""Direct frame writes to uvicorn's sans-I/O WebSocket protocol (the fan-out's fast path).

Through ASGI every outbound frame costs several awaits (Starlette's wrappers,
then uvicorn's ``send``). Under ``ws="websockets-sansio"`` the connection is a
:class:`websockets.server.ServerProtocol` plus an asyncio transport, so a text
frame can be written synchronously: :class:`SansIOWriter`. With
permessage-deflate negotiated ``websockets`` frames and compresses it; without
extensions the writer prepends the 2-10 byte header itself (a server frame is
unmasked, RFC 6455 5.2), which halves the Python work per frame.

:class:`RawSendMiddleware` keeps the server's own ``send`` callable in the
scope, so the endpoint can find the protocol behind it. Any other server (or
Starlette's TestClient) yields no writer and the session falls back to ASGI.
This module never buffers or conflates (see :mod:`api.session`) and never
writes after the closing handshake has started.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.exceptions import InvalidState
from websockets.protocol import State

logger = logging.getLogger(__name__)

RAW_SEND = "hqstream.raw_send"

try:  # uvicorn >= 0.35 ships the sans-I/O implementation
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol as _SansIO,
    )
except ImportError:  # pragma: no cover - older uvicorn: ASGI path only
    _SansIO = None  # type: ignore[assignment,misc]


class RawSendMiddleware:
    """Outermost-possible ASGI middleware: records the server's ``send`` for WebSockets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)


class SansIOWriter:
    """Writes text frames straight to one uvicorn sans-I/O connection."""

    __slots__ = ("_conn", "_plain", "_proto", "_transport")

    def __init__(self, proto: Any) -> None:
        self._proto = proto
        self._conn = proto.conn
        self._transport = proto.transport
        self._plain = not self._conn.extensions

    def writable(self) -> bool:
        return bool(self._proto.writable.is_set())

    def write(self, message: bytes) -> None:
        proto = self._proto
        if proto.close_sent or proto.disconnected or self._transport.is_closing():
            return
        if self._plain:
            if self._conn.state is State.OPEN:
                self._transport.write(text_header(len(message)) + message)
            return
        try:
            self._conn.send_text(message)
        except InvalidState:  # closing: the endpoint sees the disconnect
            return
        self._transport.write(b"".join(self._conn.data_to_send()))

    def abort(self) -> None:
        self._transport.abort()


def text_header(size: int) -> bytes:
    """Header of an unmasked, final text frame of ``size`` payload bytes."""
    if size < 126:
        return _SHORT[size]
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)


_SHORT = [bytes((0x81, n)) for n in range(126)]


def writer_for(scope: Scope) -> SansIOWriter | None:
    """A direct writer for this WebSocket's connection, or None (use ASGI ``send``)."""
    send = scope.get(RAW_SEND)
    proto = getattr(send, "__self__", None)
    if _SansIO is None or not isinstance(proto, _SansIO) or not proto.handshake_complete:
        return None
    return SansIOWriter(proto)
