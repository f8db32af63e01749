"""A scripted feed server for receiver tests: real TCP on loopback.

It speaks the protocol's auth handshake and then writes whatever chunks the
test gives it, exactly as given (so a test controls packet boundaries).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from producers import protocol


@dataclass
class ScriptedFeed:
    token: str
    port: int = 0
    connections: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _authed: asyncio.Queue[asyncio.StreamWriter] = field(default_factory=asyncio.Queue)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        line = await reader.readline()
        try:
            token = protocol.parse_auth_request(line.strip())
        except protocol.ProtocolError:
            writer.close()
            return
        if token != self.token:
            writer.write(protocol.auth_rejected())
            await writer.drain()
            writer.close()
            return
        writer.write(protocol.auth_ok())
        await writer.drain()
        self._writers.append(writer)
        await self._authed.put(writer)

    async def client(self, timeout: float = 10) -> asyncio.StreamWriter:
        return await asyncio.wait_for(self._authed.get(), timeout)

    async def send(self, writer: asyncio.StreamWriter, *chunks: bytes, pause: float = 0.0) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
