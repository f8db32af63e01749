"""A minimal RFC 6455 client for load and abuse: many sockets, little CPU each.

The ``websockets`` library costs tens of microseconds per received frame
(task wake-ups, a queue, assembling, UTF-8 checks), so 10,000 of its clients in
one process saturate a core before the gateway does. :class:`LightClient` is
an ``asyncio.Protocol``: it sends the opening handshake and masked text frames,
reads unmasked server frames (fragments, ping -> pong, close), inflates
permessage-deflate messages, and hands each text message to a callback.

For the benchmarks (fan-out, the hostile clients) and the gateway's tests that
write frames by hand: no TLS, no extensions besides permessage-deflate, no
validation beyond what they need. Never used by the services.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import struct
import zlib
from collections.abc import Callable

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_WBITS = re.compile(rb"server_max_window_bits=(\d+)")

OnMessage = Callable[[bytes], None]


def client_frame(opcode: int, data: bytes, compressed: bool = False) -> bytes:
    """One masked client frame (RFC 6455 5.3); ``compressed`` sets RSV1 (permessage-deflate)."""
    n = len(data)
    first = 0x80 | opcode | (0x40 if compressed else 0)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = os.urandom(4)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    masked = (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")
    return header + mask + masked


class LightClient(asyncio.Protocol):
    """One WebSocket connection; ``opened`` resolves after the handshake."""

    def __init__(self, host: str, port: int, path: str, on_message: OnMessage,
                 compression: bool) -> None:  # fmt: skip
        self._request_head = (host, port, path)
        self._on_message = on_message
        self._compression = compression
        self._buf = bytearray()
        self._open = False
        self._inflate: zlib._Decompress | None = None
        self._parts: list[bytes] = []
        self._compressed = False
        self._key = base64.b64encode(os.urandom(16))
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.close_code = 0

    # ---- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port, path = self._request_head
        ext = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        transport.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
            + self._key + b"\r\nSec-WebSocket-Version: 13\r\n"
            + (ext if self._compression else b"") + b"\r\n"
        )  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code or 1006)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._open and not self._handshake():
            return
        self._frames()

    # ---- sending ----------------------------------------------------------------------

    def send_text(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(0x1, data))

    def close(self) -> None:
        """Send a close frame and drop the connection (no closing handshake wait)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(0x8, struct.pack("!H", 1000)))
            self.transport.close()

    # ---- receiving --------------------------------------------------------------------

    def _handshake(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buf[:end]).lower()
        del self._buf[: end + 4]
        accept = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).lower()
        if not head.startswith(b"http/1.1 101") or accept not in head:
            self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
            assert self.transport is not None
            self.transport.close()
            return False
        if b"permessage-deflate" in head:
            found = _WBITS.search(head)
            self._inflate = zlib.decompressobj(-int(found.group(1)) if found else -15)
        self._open = True
        self.opened.set_result(None)
        return True

    def _frames(self) -> None:
        buf = self._buf
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, length = buf[pos], buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if size - start < length:
                break
            self._frame(b0, bytes(buf[start : start + length]))
            pos = start + length
        if pos:
            del buf[:pos]

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if opcode in (0x1, 0x2):
            self._parts = [payload]
            self._compressed = bool(b0 & 0x40)
        elif opcode == 0x0:
            self._parts.append(payload)
        elif opcode == 0x9:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(client_frame(0xA, payload))
            return
        elif opcode == 0x8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.closed.done():
                self.closed.set_result(self.close_code)
            self.close()
            return
        else:
            return
        if not b0 & 0x80:
            return  # more fragments follow
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []
        if self._compressed and self._inflate is not None:
            data = self._inflate.decompress(data + b"\x00\x00\xff\xff")
        self._on_message(data)


async def connect(host: str, port: int, path: str, on_message: OnMessage,
                  compression: bool) -> LightClient:  # fmt: skip
    """An open :class:`LightClient` (raises if the handshake fails)."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: LightClient(host, port, path, on_message, compression), host, port
    )
    await proto.opened
    return proto
