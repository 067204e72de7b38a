"""A hostile upstream for proxy attack tests: answers every connection with fixed bytes.

It records what it received and then writes ``answer`` (optionally trickled) regardless of
what was asked, so tests can feed the proxy response splitting, framing lies and
oversized heads byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class RawUpstream:
    answer: bytes
    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0
    close_after: bool = True

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.received.extend(head)
            writer.write(self.answer)
            await writer.drain()
            if not self.close_after:
                while data := await asyncio.wait_for(reader.read(65536), 5):
                    self.received.extend(data)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def raw_upstream(answer: bytes, *, close_after: bool = True) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(answer, close_after=close_after)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
