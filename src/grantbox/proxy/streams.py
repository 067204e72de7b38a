"""Byte streams the relay reads and writes: a socket, or TLS the proxy terminates.

:class:`SocketStream` is the transport's protocol itself: what arrives is kept as the
chunks the loop delivered and handed out whole, and writes go straight to the transport.
asyncio's ``StreamReader``/``StreamWriter`` pair does the same with more layers (a copy
into a buffer and out again on every read, a coroutine per drain); on a request path of a
few reads and writes that difference is a measurable share of the proxy's time.

Interception terminates TLS over an ``ssl.SSLObject`` with memory BIOs rather than
``start_tls``: the proxy has to look at the first byte of a tunnel (TLS or plain HTTP?)
before choosing, and bytes it has already read must go into the handshake, which the
memory BIO allows and ``start_tls`` does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Protocol, cast

READ_SIZE = 64 * 1024
# Bytes a stream holds unread before it stops reading from its socket (back-pressure).
STREAM_LIMIT = 2**20
CLOSE_TIMEOUT = 2.0


class ByteStream(Protocol):
    async def recv(self) -> bytes:
        """The bytes that have arrived (waiting for some); ``b""`` at end of stream."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class SocketStream(asyncio.Protocol):
    """One connection, read and written through its transport (plain TCP, or TLS to an
    upstream). Open one with :meth:`connect` or :meth:`accepted`."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._reading: asyncio.Future[None] | None = None  # a recv() waiting for bytes
        self._writing: asyncio.Future[None] | None = None  # a send() waiting for room
        self._write_paused = False
        self._read_paused = False
        self._over_tls = False
        self._lost: asyncio.Future[None] = self._loop.create_future()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> SocketStream:
        loop = asyncio.get_running_loop()
        _transport, stream = await loop.create_connection(
            cls, host, port, ssl=tls, server_hostname=server_hostname
        )
        return stream

    @classmethod
    async def accepted(cls, sock: socket.socket) -> SocketStream:
        loop = asyncio.get_running_loop()
        _transport, stream = await loop.connect_accepted_socket(cls, sock)
        return stream

    # -- the transport's side ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._over_tls = transport.get_extra_info("sslcontext") is not None

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= STREAM_LIMIT and not self._read_paused and self._transport:
            self._read_paused = True
            self._transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return not self._over_tls  # keep our side open (half-close); TLS cannot

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._error = exc
        self._wake_reader()
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            writing.set_exception(ConnectionResetError("connection lost"))
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            writing.set_result(None)

    def _wake_reader(self) -> None:
        reading, self._reading = self._reading, None
        if reading is not None and not reading.done():
            reading.set_result(None)

    # -- the relay's side -------------------------------------------------------------

    async def recv(self) -> bytes:
        if not self._chunks:
            if self._eof:
                if self._error is not None:
                    raise ConnectionResetError(str(self._error) or "connection lost")
                return b""
            self._reading = self._loop.create_future()
            await self._reading
            if not self._chunks:
                return await self.recv()
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        """Still open in both directions (an idle peer may have hung up meanwhile)."""
        transport = self._transport
        return not self._eof and transport is not None and not transport.is_closing()

    async def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        transport.write(data)
        if self._write_paused:
            if self._writing is None or self._writing.done():
                self._writing = self._loop.create_future()
            # Shielded: one waiter cancelled must not cancel the wait of another.
            await asyncio.shield(self._writing)

    async def write_eof(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._lost), CLOSE_TIMEOUT)


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
