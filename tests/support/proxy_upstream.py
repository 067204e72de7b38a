"""A recording HTTP/1.1 upstream on loopback (plain, or TLS with a trustme certificate).

It answers every request with JSON describing what it received (method, target, headers,
body size and digest); targets starting ``/chunked`` get that JSON chunked,
``/redirect?to=X`` a 302 to X, and ``/download/N`` N streamed bytes. It keeps connections
alive, streams bodies without keeping them, and records the first bytes of every
connection, so tests can assert exactly what reached it - including that nothing did.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h11

RAW_KEEP = 256 * 1024  # bytes of each connection kept for assertions


@dataclass
class SeenRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body_bytes: int
    sha256: str

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class RecordingUpstream:
    port: int = 0
    tls: bool = False
    requests: list[SeenRequest] = field(default_factory=list)
    raw: list[bytearray] = field(default_factory=list)
    connections: int = 0

    @property
    def received(self) -> bytes:
        return b"".join(bytes(r) for r in self.raw)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        raw = bytearray()
        self.raw.append(raw)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                digest = hashlib.sha256()
                size = 0
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        if len(raw) < RAW_KEEP:
                            raw.extend(data[: RAW_KEEP - len(raw)])
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        size += len(event.data)
                        digest.update(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                seen = SeenRequest(
                    method=request.method.decode(),
                    target=request.target.decode(),
                    headers=[(n.decode(), v.decode()) for n, v in request.headers.raw_items()],
                    body_bytes=size,
                    sha256=digest.hexdigest(),
                )
                self.requests.append(seen)
                body = json.dumps(
                    {
                        "method": seen.method,
                        "target": seen.target,
                        "headers": seen.headers,
                        "body_bytes": size,
                        "sha256": seen.sha256,
                        "tls": self.tls,
                    }
                ).encode()
                if seen.target.startswith("/download/"):
                    # /download/N: N bytes, streamed in blocks, never held whole.
                    size = int(seen.target.rsplit("/", 1)[1])
                    length = ("Content-Length", str(size))
                    writer.write(conn.send(h11.Response(status_code=200, headers=[length])))
                    block = b"d" * 65536
                    for offset in range(0, size, len(block)):
                        writer.write(conn.send(h11.Data(data=block[: size - offset])))
                        await writer.drain()
                elif seen.target.startswith("/chunked"):
                    # No Content-Length: the body goes out chunked, in three pieces.
                    writer.write(conn.send(h11.Response(status_code=200, headers=[])))
                    for piece in (body[:10], body[10:20], body[20:]):
                        writer.write(conn.send(h11.Data(data=piece)))
                        await writer.drain()
                elif seen.target.startswith("/redirect?to="):
                    location = seen.target.split("=", 1)[1]
                    writer.write(
                        conn.send(
                            h11.Response(
                                status_code=302,
                                headers=[("Location", location), ("Content-Length", "0")],
                            )
                        )
                    )
                else:
                    writer.write(
                        conn.send(
                            h11.Response(
                                status_code=200,
                                headers=[
                                    ("Content-Type", "application/json"),
                                    ("Content-Length", str(len(body))),
                                ],
                            )
                        )
                    )
                    if request.method != b"HEAD":
                        writer.write(conn.send(h11.Data(data=body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def running_upstream(
    ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[RecordingUpstream]:
    upstream = RecordingUpstream(tls=ssl_context is not None)
    server = await asyncio.start_server(upstream.handle, host, 0, ssl=ssl_context)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
