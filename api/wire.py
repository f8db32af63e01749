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

permessage-deflate without a compressor per connection (:class:`SharedDeflate`):
``websockets`` compresses every frame of every connection separately, with a
window of context per connection, which saturated the gateway's core at 10k
connections. When the negotiated server window allows it, the writer sends
each message as a concatenation of independently compressed pieces instead:
each quote's JSON is compressed once (and cached) for every connection that
gets it, and a message costs a join. This is valid permessage-deflate
(RFC 7692): every piece ends with a sync flush (byte-aligned, not final), a
piece refers only to its own bytes, and the message drops the final
``00 00 ff ff``; a client's decompressor keeps its context as usual. Every
data frame of such a connection is written this way, never by ``websockets``'
own compressor (whose context would then not match the client's).
This module never buffers or conflates (see :mod:`api.ws_session`) and never
writes after the closing handshake has started.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Any, Final

from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.exceptions import InvalidState
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.protocol import State

if TYPE_CHECKING:
    from api.ws_session import Batch


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


#: window bits of the shared pieces: usable when the negotiated server window is at least this
SHARED_WBITS: Final = 10
_SYNC_TRAILER: Final = b"\x00\x00\xff\xff"


class SharedDeflate:
    """Compressed pieces for permessage-deflate messages, shared by all connections."""

    def __init__(self, level: int = 6, max_cached: int = 16_384) -> None:
        self.level = level
        self.max_cached = max_cached
        # Two generations: a full cache becomes the old one instead of being
        # emptied, so the latest quote of every code (a market snapshot's
        # pieces, thousands at once) stays cached across a turnover.
        self._cache: dict[bytes, bytes] = {}
        self._old: dict[bytes, bytes] = {}
        self.comma = self.compress(b",")
        self.tail = self.compress(b"]}")

    def compress(self, data: bytes) -> bytes:
        """``data`` deflated on its own, ending with a sync flush (``... 00 00 ff ff``)."""
        z = zlib.compressobj(self.level, zlib.DEFLATED, -SHARED_WBITS)
        return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)

    def piece(self, data: bytes) -> bytes:
        """:meth:`compress`, cached (a quote's JSON goes to many connections)."""
        found = self._cache.get(data)
        if found is None:
            found = self._old.get(data)
            if found is None:
                found = self.compress(data)
            if len(self._cache) >= self.max_cached:
                self._old, self._cache = self._cache, {}
            self._cache[data] = found
        return found

    def batch_payload(self, batch: Batch) -> bytes:
        """The compressed payload of ``batch`` (RFC 7692: final 00 00 ff ff removed)."""
        piece, comma = self.piece, self.comma
        parts = [piece(batch.head)]
        for i, item in enumerate(batch.items):
            if i:
                parts.append(comma)
            parts.append(piece(item))
        parts.append(self.tail)
        return b"".join(parts)[: -len(_SYNC_TRAILER)]

    def message_payload(self, message: bytes) -> bytes:
        return self.compress(message)[: -len(_SYNC_TRAILER)]


#: one per gateway process
SHARED_DEFLATE: Final = SharedDeflate()


class SansIOWriter:
    """Writes text frames straight to one uvicorn sans-I/O connection."""

    __slots__ = ("_conn", "_deflate", "_plain", "_proto", "_transport")

    def __init__(self, proto: Any, shared: SharedDeflate | None = SHARED_DEFLATE) -> None:
        self._proto = proto
        self._conn = proto.conn
        self._transport = proto.transport
        extensions = self._conn.extensions
        self._plain = not extensions
        self._deflate = shared if shared is not None and _shareable(extensions) else None
        if self._deflate is not None:
            # websockets' own compressor for this connection is never used: free it. Should
            # it ever compress here, it starts each message afresh (always allowed).
            extensions[0].local_no_context_takeover = True
            extensions[0].encoder = None

    def writable(self) -> bool:
        return bool(self._proto.writable.is_set())

    def _open(self) -> bool:
        proto = self._proto
        return not (proto.close_sent or proto.disconnected or self._transport.is_closing())

    def write(self, message: bytes) -> None:
        if not self._open():
            return
        if self._plain:
            if self._conn.state is State.OPEN:
                self._transport.write(text_header(len(message)) + message)
            return
        if self._deflate is not None:
            self._write_deflated(self._deflate.message_payload(message))
            return
        try:
            self._conn.send_text(message)
        except InvalidState:  # closing: the endpoint sees the disconnect
            return
        self._transport.write(b"".join(self._conn.data_to_send()))

    def write_batch(self, batch: Batch) -> None:
        if self._deflate is not None:
            if self._open():
                self._write_deflated(self._deflate.batch_payload(batch))
            return
        self.write(batch.joined())

    def _write_deflated(self, payload: bytes) -> None:
        if self._conn.state is State.OPEN:
            self._transport.write(text_header(len(payload), compressed=True) + payload)

    def abort(self) -> None:
        self._transport.abort()


def _shareable(extensions: list[Any]) -> bool:
    """True when the only extension is permessage-deflate with a server window >= SHARED_WBITS."""
    if len(extensions) != 1 or not isinstance(extensions[0], PerMessageDeflate):
        return False
    return int(extensions[0].local_max_window_bits or 15) >= SHARED_WBITS


def text_header(size: int, compressed: bool = False) -> bytes:
    """Header of an unmasked, final text frame of ``size`` payload bytes (RSV1 if compressed)."""
    if compressed:
        first = 0xC1
    elif size < 126:
        return _SHORT[size]
    else:
        first = 0x81
    if size < 126:
        return bytes((first, size))
    if size < 65536:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


_SHORT = [bytes((0x81, n)) for n in range(126)]


def writer_for(scope: Scope) -> SansIOWriter | None:
    """A direct writer for this WebSocket's connection, or None (use ASGI ``send``)."""
    send = scope.get(RAW_SEND)
    proto = getattr(send, "__self__", None)
    if _SansIO is None or not isinstance(proto, _SansIO) or not proto.handshake_complete:
        return None
    return SansIOWriter(proto)
