"""A WebSocket echo server that records each opening handshake, and a WebSocket client, both
on wsproto over asyncio streams (plain or TLS), for tests through the proxy.

The server's ``mode`` decides how it answers a handshake: ``echo`` accepts and echoes every
message (``greet`` also says hello first, before the agent sends anything); ``refuse``
answers 403; ``bad-accept`` answers 101 with a ``Sec-WebSocket-Accept`` for another key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

BAD_ACCEPT = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\r\n"  # for another key
)


@dataclass
class Handshake:
    target: str
    head: bytes  # the raw request head as it arrived

    def header(self, name: str) -> list[str]:
        key = name.lower().encode() + b":"
        return [
            line.split(b":", 1)[1].strip().decode("latin-1")
            for line in self.head.split(b"\r\n")[1:]
            if line.lower().startswith(key)
        ]


@dataclass
class EchoServer:
    mode: str = "echo"
    port: int = 0
    handshakes: list[Handshake] = field(default_factory=list)
    messages: list[str | bytes] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        ws = WSConnection(ConnectionType.SERVER)
        raw = bytearray()
        partial: list[str | bytes] = []
        try:
            while True:
                data = await reader.read(65536)
                if len(raw) < 65536:
                    raw.extend(data)
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, Request):
                        head = bytes(raw).split(b"\r\n\r\n", 1)[0]
                        self.handshakes.append(Handshake(event.target, head))
                        if self.mode == "refuse":
                            writer.write(ws.send(RejectConnection(status_code=403, has_body=True)))
                            writer.write(ws.send(RejectData(data=b"go away")))
                            await writer.drain()
                            return
                        if self.mode == "bad-accept":
                            writer.write(BAD_ACCEPT + b"\x81\x02hi")
                            await writer.drain()
                            return
                        writer.write(ws.send(AcceptConnection()))
                        if self.mode == "greet":
                            writer.write(ws.send(TextMessage(data="hello from upstream")))
                    elif isinstance(event, TextMessage | BytesMessage):
                        partial.append(event.data)
                        if event.message_finished:
                            whole = _joined(partial)
                            partial.clear()
                            self.messages.append(whole)
                            writer.write(ws.send(type(event)(data=whole)))  # type: ignore[arg-type]
                    elif isinstance(event, CloseConnection):
                        writer.write(ws.send(event.response()))
                        await writer.drain()
                        return
                await writer.drain()
                if not data:
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def echo_server(
    mode: str = "echo", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[EchoServer]:
    server_state = EchoServer(mode)
    server = await asyncio.start_server(server_state.handle, "127.0.0.1", 0, ssl=ssl_context)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def _joined(parts: list[str | bytes]) -> str | bytes:
    if all(isinstance(p, str) for p in parts):
        return "".join(p for p in parts if isinstance(p, str))
    return b"".join(p for p in parts if isinstance(p, bytes))


@dataclass
class Conversation:
    """What a client got: the handshake answer's status and the messages received."""

    status: int
    received: list[str | bytes] = field(default_factory=list)
    answer: bytes = b""  # a refused handshake's raw answer


async def converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    target: str,
    send: Sequence[str | bytes] = (),
    *,
    headers: Sequence[tuple[str, str]] = (),
    expect: int = 0,
    timeout: float = 10,
) -> Conversation:
    """Open a WebSocket on an established stream (through the proxy), send ``send``, and
    read until ``expect`` messages (default: one per message sent) came back."""
    ws = WSConnection(ConnectionType.CLIENT)
    writer.write(ws.send(Request(host=host, target=target, extra_headers=list(headers))))
    await writer.drain()
    wanted = expect or len(send)
    conversation = Conversation(status=0)
    raw = bytearray()
    partial: list[str | bytes] = []
    async with asyncio.timeout(timeout):
        while True:
            data = await reader.read(65536)
            raw.extend(data)
            ws.receive_data(data or None)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    conversation.status = 101
                    for message in send:
                        kind = TextMessage if isinstance(message, str) else BytesMessage
                        writer.write(ws.send(kind(data=message)))  # type: ignore[arg-type]
                    await writer.drain()
                elif isinstance(event, RejectConnection):
                    conversation.status = event.status_code
                    conversation.answer = bytes(raw)
                    return conversation
                elif isinstance(event, TextMessage | BytesMessage):
                    partial.append(event.data)
                    if event.message_finished:
                        conversation.received.append(_joined(partial))
                        partial.clear()
                elif isinstance(event, CloseConnection):
                    return conversation
            if conversation.status == 101 and len(conversation.received) >= wanted:
                writer.write(ws.send(CloseConnection(code=1000)))
                await writer.drain()
                return conversation
            if not data:
                conversation.answer = bytes(raw)
                return conversation
