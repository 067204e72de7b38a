"""Byte streams the relay reads and writes: a socket, or TLS the proxy terminates.

Interception terminates TLS over an ``ssl.SSLObject`` with memory BIOs rather than
``start_tls``: the proxy has to look at the first byte of a tunnel (TLS or plain HTTP?)
before choosing, and bytes it has already read must go into the handshake, which the
memory BIO allows and ``start_tls`` does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol

READ_SIZE = 64 * 1024


class ByteStream(Protocol):
    async def recv(self) -> bytes:
        """Up to :data:`READ_SIZE` bytes; ``b""`` at end of stream."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class SocketStream:
    """An asyncio stream pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def recv(self) -> bytes:
        return await self.reader.read(READ_SIZE)

    @property
    def reusable(self) -> bool:
        """Still open in both directions (an idle peer may have hung up meanwhile)."""
        return not self.reader.at_eof() and not self.writer.is_closing()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def write_eof(self) -> None:
        if self.writer.can_write_eof():
            with contextlib.suppress(OSError):
                self.writer.write_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


class TlsServerStream:
    """Server-side TLS over another stream, fed with bytes already read from it."""

    def __init__(self, inner: ByteStream, context: ssl.SSLContext, initial: bytes = b"") -> None:
        self._inner = inner
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        if initial:
            self._incoming.write(initial)

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            await self._inner.send(data)

    async def _fill(self) -> bool:
        data = await self._inner.recv()
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise ConnectionError("client closed during the TLS handshake") from None
        await self._flush()

    @property
    def alpn(self) -> str | None:
        return self._tls.selected_alpn_protocol()

    async def recv(self) -> bytes:
        while True:
            try:
                return self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    with contextlib.suppress(ssl.SSLError):
                        return self._tls.read(READ_SIZE)
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._tls.write(view)
            view = view[written:]
            await self._flush()

    async def close(self) -> None:
        with contextlib.suppress(ssl.SSLError, OSError):
            self._tls.unwrap()
        with contextlib.suppress(OSError, ConnectionError):
            await self._flush()
        await self._inner.close()
