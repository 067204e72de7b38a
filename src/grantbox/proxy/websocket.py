"""WebSocket through the proxy: the opening handshake is one request; what follows, a tunnel.

An agent's opening handshake (RFC 6455 §4.1: ``GET``, HTTP/1.1, ``Upgrade: websocket``,
``Connection: upgrade``, ``Sec-WebSocket-Version: 13`` and a ``Sec-WebSocket-Key`` of 16
base64 bytes, no body) is decided by the request flow like any request: the policy, the
token and stored credentials injected into the handshake, the agent's own copies stripped,
one event. It is forwarded with its ``Upgrade``, and only an upstream answer of ``101`` with
``Upgrade: websocket`` and the ``Sec-WebSocket-Accept`` computed from that key turns the
connection into a tunnel: frames are then copied both ways unread, a read at a time (bounded
by the stream's read size, each write waiting for the peer), until either side ends or both
stay silent for the idle timeout. Any other final answer is relayed as a response and the
connection closed; a ``101`` that does not match the key is a 502 and nothing of it reaches
the agent.

A request that is not a valid handshake never upgrades: its ``Upgrade`` is hop-by-hop, so
it goes upstream as a plain request - and an upstream that answers ``101`` anyway, without
being asked, is refused by the relay's HTTP/1.1 parser.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import h11

from .answers import ErrorCode, ProxyAnswer
from .framing import RequestHead
from .rewrite import ResponseFraming, UnsafeResponse, downstream_response_headers
from .streams import ByteStream, SocketStream

if TYPE_CHECKING:  # the context imports the flow, which reads handshakes from here
    from .context import ProxyContext

log = logging.getLogger("grantbox.proxy")

Headers = list[tuple[bytes, bytes]]

# RFC 6455 §1.3: the GUID the server appends to the key before hashing.
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = b"13"


def handshake_key(head: RequestHead) -> str | None:
    """The ``Sec-WebSocket-Key`` of a valid opening handshake, or None for any other
    request (which is then relayed as a plain request, its ``Upgrade`` dropped)."""
    if head.method != b"GET" or head.version != b"HTTP/1.1" or head.first("upgrade") is None:
        return None
    if head.tokens("upgrade") != {b"websocket"} or b"upgrade" not in head.tokens("connection"):
        return None
    if head.values("sec-websocket-version") != [VERSION]:
        return None
    if (
        head.first("transfer-encoding") is not None
        or (head.first("content-length") or b"0") != b"0"
    ):
        return None
    keys = head.values("sec-websocket-key")
    if len(keys) != 1:
        return None
    try:
        nonce = base64.b64decode(keys[0], validate=True)
    except (binascii.Error, ValueError):
        return None
    return keys[0].decode("ascii") if len(nonce) == 16 else None


def expected_accept(key: str) -> bytes:
    """``Sec-WebSocket-Accept`` for ``key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + ACCEPT_GUID).digest())  # noqa: S324 (the protocol's hash)


def upgrade_request_headers(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The upstream headers of an admitted handshake: the flow's (hop-by-hop stripped,
    credentials in place) with the upgrade asked for again."""
    out = [(n, v) for n, v in headers if n.lower() not in (b"connection", b"upgrade")]
    out += [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    return out


def accept_problem(response: h11.InformationalResponse, key: str) -> str | None:
    """Why an upstream's ``101`` does not complete our handshake, or None."""
    headers = response.headers
    upgrade = {
        v.strip().lower() for n, value in headers if n == b"upgrade" for v in value.split(b",")
    }
    connection = {
        v.strip().lower() for n, value in headers if n == b"connection" for v in value.split(b",")
    }
    accepts = [v for n, v in headers if n == b"sec-websocket-accept"]
    if upgrade != {b"websocket"} or b"upgrade" not in connection:
        return "the upstream switched to something other than websocket"
    if accepts != [expected_accept(key)]:
        return "the upstream's Sec-WebSocket-Accept does not match the handshake's key"
    return None


def switching_head(response: h11.InformationalResponse) -> bytes:
    """The ``101`` the agent receives: the upstream's headers, hop-by-hop ones dropped
    (control bytes refused), the upgrade stated again."""
    headers = downstream_response_headers(response.headers.raw_items())
    headers += [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    lines = [b"HTTP/1.1 101 Switching Protocols\r\n"]
    lines += [b"%s: %s\r\n" % (name, value) for name, value in headers]
    return b"".join(lines) + b"\r\n"


async def serve_websocket(
    ctx: ProxyContext,
    client: ByteStream,
    upstream: SocketStream,
    conn: h11.Connection,
    request: h11.Request,
    key: str,
    leftover: bytes,
) -> None:
    """Send the admitted handshake on ``upstream`` (``conn`` its h11 state) and carry out
    the answer: a tunnel after a matching ``101``, the response otherwise. Closes
    ``upstream``; the agent's connection ends with it."""
    try:
        await upstream.send(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
        answer = await _answer(ctx, conn, upstream)
        if isinstance(answer, h11.InformationalResponse):
            problem = accept_problem(answer, key)
            if problem is not None:
                await _refuse(client, problem)
                return
            head = switching_head(answer)
            await client.send(head)
            early, _closed = conn.trailing_data
            await _tunnel(ctx, client, upstream, leftover, bytes(early))
        else:
            await _relay_response(ctx, client, conn, upstream, answer)
    except (h11.ProtocolError, UnsafeResponse, OSError, ConnectionError, TimeoutError) as exc:
        log.info("websocket handshake with the upstream failed: %s", _named(exc))
        await _refuse(client, f"websocket handshake failed: {_named(exc)}")
    finally:
        await upstream.close()


async def _answer(
    ctx: ProxyContext, conn: h11.Connection, upstream: SocketStream
) -> h11.InformationalResponse | h11.Response:
    """The upstream's ``101`` or final response (``100``s skipped)."""
    async with asyncio.timeout(ctx.limits.idle_timeout):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await upstream.recv())
                continue
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return event
                continue
            if isinstance(event, h11.Response):
                return event
            raise ConnectionError("the upstream closed before answering the handshake")


async def _relay_response(
    ctx: ProxyContext,
    client: ByteStream,
    conn: h11.Connection,
    upstream: SocketStream,
    response: h11.Response,
) -> None:
    """An upstream that declined the upgrade: its answer goes to the agent, then close."""
    headers = downstream_response_headers(response.headers.raw_items())
    framing = ResponseFraming()
    await client.send(framing.head(response.status_code, response.reason, headers, close=True))
    downstream = ctx.metrics.bytes.labels("downstream")
    async with asyncio.timeout(ctx.limits.idle_timeout):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await upstream.recv())
            elif isinstance(event, h11.Data):
                downstream.inc(len(event.data))
                await client.send(framing.data(event.data))
            else:
                break
    await client.send(framing.end())


async def _tunnel(
    ctx: ProxyContext,
    client: ByteStream,
    upstream: SocketStream,
    up_first: bytes,
    down_first: bytes,
) -> None:
    """Copy frames both ways until one side ends or both are idle for the idle timeout."""
    loop = asyncio.get_running_loop()
    idle = ctx.limits.idle_timeout
    last = [loop.time()]

    async def copy(src: ByteStream, dst: ByteStream, first: bytes, direction: str) -> None:
        metric = ctx.metrics.bytes.labels(direction)
        data = first
        while True:
            if data:
                last[0] = loop.time()
                metric.inc(len(data))
                await dst.send(data)
            try:
                async with asyncio.timeout(idle):
                    data = await src.recv()
            except TimeoutError:
                if loop.time() - last[0] < idle:
                    data = b""
                    continue
                return
            if not data:
                return

    directions = [
        asyncio.ensure_future(copy(client, upstream, up_first, "upstream")),
        asyncio.ensure_future(copy(upstream, client, down_first, "downstream")),
    ]
    try:
        await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in directions:
            task.cancel()
        results = await asyncio.gather(*directions, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, OSError | ConnectionError):
            log.warning("websocket tunnel failed: %s", _named(result))


async def _refuse(client: ByteStream, detail: str) -> None:
    answer = ProxyAnswer(ErrorCode.UPSTREAM_UNREACHABLE, detail=detail)
    with contextlib.suppress(OSError, ConnectionError):
        await client.send(answer.to_bytes())


def _named(exc: BaseException) -> str:
    """An exception by its kind; h11 quotes the offending line, which may echo a token."""
    if isinstance(exc, h11.ProtocolError):
        return f"malformed answer ({type(exc).__name__})"
    return str(exc) or type(exc).__name__
