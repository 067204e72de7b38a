"""Upstream answers read without h11: a strict subset of h11's reading, h11 for the rest.

The fast reader (:func:`parse_response_head`) must never accept what h11 refuses, and must
read whatever it accepts exactly as h11 does: the property tests hold it to h11 on generated
heads, the table names the shapes it leaves to h11. Through a running proxy: kept-alive
upstream connections are reused only after a clean exchange, and bytes an upstream sends
past its body reach nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from grantbox.proxy.framing import (
    MAX_RESPONSE_HEAD,
    FramingError,
    parse_response_head,
    request_head_bytes,
    response_head_end,
)
from grantbox.proxy.rewrite import ResponseFraming, downstream_response_headers, relayed_head
from tests.support.proxy_clients import connection, read_reply
from tests.support.proxy_harness import RecordingTokens, endpoint, make_config, running_proxy

from .conftest import LOOPBACK

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 14:53:42 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n"
    b'ETag: "6b1424c2-400"\r\n\r\n'
)


def test_a_common_answer_is_read_without_h11() -> None:
    head = parse_response_head(NGINX)
    assert head is not None
    assert (head.status, head.reason, head.length, head.close) == (200, b"OK", 1024, False)
    assert head.headers[0] == (b"Server", b"nginx/1.22.1")
    assert (b"ETag", b'"6b1424c2-400"') in head.headers
    closing = NGINX.replace(b"keep-alive", b"Keep-Alive, Close")
    assert parse_response_head(closing).close  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # close-delimited
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 21 + b"\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\n",  # no reason phrase
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\n",  # a bare LF
        b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x1b[2J\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x7f\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nSet-Cookie : evil=1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\n",  # folding
        b"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 2\r\n\r\n",
        b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    ],
)
def test_every_other_shape_is_left_to_h11(raw: bytes) -> None:
    assert parse_response_head(raw) is None


def test_where_a_response_head_ends() -> None:
    assert response_head_end(NGINX + b"body") == len(NGINX)
    assert response_head_end(NGINX[:-1]) == 0  # more bytes needed
    assert response_head_end(b"") == 0
    # ended by a bare LF first: h11's to read
    assert response_head_end(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n") == -1
    assert response_head_end(b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n") == -1
    assert response_head_end(b"HTTP/1.1 200 OK\n\nX\r\n\r\n") == -1
    # longer than h11 would hold an incomplete head: h11's to refuse
    assert response_head_end(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_RESPONSE_HEAD) == -1
    assert response_head_end(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_RESPONSE_HEAD - 40)) == 0


def _h11_reading(
    raw: bytes, body: bytes
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
    """What h11 makes of ``raw`` + ``body`` as the answer to a GET (raises if it refuses):
    status, reason, headers, body, and whether the connection must close after it."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw + body)
    response = conn.next_event()
    assert isinstance(response, h11.Response)
    received = bytearray()
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            received += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise AssertionError(f"h11 wanted more than the body: {event!r}")
    closes = conn.their_state is not h11.DONE
    return (
        response.status_code,
        response.reason,
        list(response.headers.raw_items()),
        received,
        closes,
    )


# Mostly well-formed heads from a grammar, with odd bytes where h11 is picky and one
# arbitrary byte dropped in now and then: about half of them are in the fast subset.
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NAMES = st.one_of(
    st.sampled_from([b"Content-Length", b"transfer-encoding", b"Connection", b"X-A", b"ETag"]),
    st.binary(min_size=1, max_size=8).map(lambda b: bytes(_TOKEN[x % len(_TOKEN)] for x in b)),
)
_CLEAN = [*range(0x21, 0x7F), 0x80, 0xFF]
_ODD = [0x00, 0x01, 0x09, 0x0B, 0x0D, 0x0A, 0x1B, 0x20, 0x7F]
_VALUE_BYTES = st.sampled_from(_CLEAN * 4 + _ODD)
_VALUES = st.one_of(
    st.sampled_from([b"2", b"02", b"+2", b"close", b"chunked", b"keep-alive, close", b""]),
    st.lists(_VALUE_BYTES, max_size=6).map(bytes),
)
_SPACE = st.sampled_from([b"", b"", b" ", b"\t", b"  "])


@st.composite
def _fields(draw: st.DrawFn) -> bytes:
    name = draw(_NAMES)
    before = draw(st.sampled_from([b""] * 9 + [b" "]))  # space before the colon
    return name + before + b":" + draw(_SPACE) + draw(_VALUES) + draw(_SPACE)


@st.composite
def _heads(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([b"HTTP/1.1"] * 12 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]))
    good = [b"200", b"404", b"503"] * 4
    status = draw(st.sampled_from([*good, b"204", b"304", b"101", b"20", b"2x0"]))
    reason = draw(
        st.one_of(
            st.sampled_from([b" OK", b" Not Found", b" ", b""]),
            st.lists(st.sampled_from(_CLEAN * 8 + _ODD), max_size=8).map(lambda b: b" " + bytes(b)),
        )
    )
    lines = [version + b" " + status + reason, *draw(st.lists(_fields(), max_size=4))]
    if draw(st.integers(0, 4)):
        lines.insert(draw(st.integers(1, len(lines))), b"Content-Length: 2")
    raw = bytearray(b"\r\n".join(lines) + b"\r\n\r\n")
    if not draw(st.integers(0, 5)):  # one arbitrary byte somewhere
        raw.insert(draw(st.integers(0, len(raw))), draw(st.integers(0, 255)))
    return bytes(raw)


@settings(max_examples=500)
@given(_heads())
@example(NGINX)
@example(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n")
@example(b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nConnection: x, close\r\nContent-Length: 2\r\n\r\n")
@example(
    b"HTTP/1.1 200 OK\r\nConnection: X-A\r\nX-A: 1\r\nKeep-Alive: 5\r\nContent-Length: 2\r\n\r\n"
)
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\nX-A:\r\nContent-Length: 0\r\n\r\n")
@example(b"HTTP/1.1 200 \xffok\r\nX-A: \xfe b\tc\r\nContent-Length: 0\r\n\r\n")
def test_what_the_fast_reader_accepts_h11_reads_the_same(raw: bytes) -> None:
    end = response_head_end(raw)
    head = parse_response_head(raw[:end]) if end > 0 else None
    if head is None:
        return
    body = b"x" * head.length
    reading = _h11_reading(raw[:end], body)
    assert reading == (head.status, head.reason, list(head.headers), body, head.close)
    # the agent's head is what the general path writes for it
    for close in (False, True):
        general = ResponseFraming().head(
            head.status, head.reason, downstream_response_headers(head.headers), close=close
        )
        assert relayed_head(head.status, head.reason, head.headers, close=close) == general
    # and nothing in it can reach the agent as a control byte
    assert all(not any((b < 0x20 and b != 0x09) or b == 0x7F for b in v) for _, v in head.headers)


def test_the_request_head_sent_upstream() -> None:
    head = request_head_bytes(b"GET", b"/a?b=1", [(b"Host", b"a:1"), (b"Authorization", b"B t")])
    assert head == b"GET /a?b=1 HTTP/1.1\r\nHost: a:1\r\nAuthorization: B t\r\n\r\n"
    for bad in (b"a\r\nX-Evil: 1", b"a\nb", b"a\x00", b"a\x7f"):
        with pytest.raises(FramingError):
            request_head_bytes(b"GET", b"/", [(b"Host", b"a"), (b"X-A", bad)])
    with pytest.raises(FramingError):
        request_head_bytes(b"GET", b"/ HTTP/1.1\r\nX: y", [(b"Host", b"a")])


# -- through a running proxy ----------------------------------------------------------------


@dataclass
class ScriptedUpstream:
    """Answers each request on a connection with the next of ``answers`` (cycling)."""

    answers: list[bytes]
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        index = 0
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                self.requests.append(head)
                writer.write(self.answers[index % len(self.answers)])
                await writer.drain()
                index += 1
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(*answers: bytes) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(list(answers))
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()


def _get(port: int, n: int) -> bytes:
    return f"GET http://beta.localhost:{port}/{n} HTTP/1.1\r\nHost: beta.localhost\r\n\r\n".encode()


async def _three_requests(upstream: ScriptedUpstream, tmp_path: Path) -> list[tuple[int, bytes]]:
    config = make_config(policy=[endpoint("beta.localhost", upstream.port, allowed_ips=LOOPBACK)])
    replies = []
    async with (
        running_proxy(config, RecordingTokens(), tmp_path) as rp,
        connection(rp.port) as (reader, writer),
    ):
        for n in range(3):
            writer.write(_get(upstream.port, n))
            await writer.drain()
            reply = await read_reply(reader)
            replies.append((reply.status, reply.body))
    return replies


async def test_a_clean_exchange_keeps_the_upstream_connection(tmp_path: Path) -> None:
    async with scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc") as upstream:
        replies = await _three_requests(upstream, tmp_path)
    assert replies == [(200, b"abc")] * 3
    assert upstream.connections == 1 and len(upstream.requests) == 3


@pytest.mark.parametrize(
    "answer",
    [
        # bytes past the body: never relayed, and that connection is not used again
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nX-Evil: 1\r\n\r\n",
        # the upstream says it closes
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    ],
)
async def test_an_upstream_connection_is_not_reused_after_an_unclean_exchange(
    answer: bytes, tmp_path: Path
) -> None:
    async with scripted(answer) as upstream:
        replies = await _three_requests(upstream, tmp_path)
    assert replies == [(200, b"abc")] * 3
    assert upstream.connections == 3


async def test_a_body_is_passed_on_as_it_arrives(tmp_path: Path) -> None:
    """The head and the first part of a body reach the agent before the rest exists."""
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
        await writer.drain()
        await release.wait()
        writer.write(b"-last")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = make_config(policy=[endpoint("beta.localhost", port, allowed_ips=LOOPBACK)])
    try:
        async with (
            running_proxy(config, RecordingTokens(), tmp_path) as rp,
            connection(rp.port) as (reader, writer),
        ):
            writer.write(_get(port, 0))
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert await asyncio.wait_for(reader.readexactly(5), 10) == b"first"
            release.set()
            assert await asyncio.wait_for(reader.readexactly(5), 10) == b"-last"
    finally:
        server.close()
