"""Header rewriting for the upstream request, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantbox.proxy.rewrite import (
    REDACTED,
    ResponseFraming,
    downstream_response_headers,
    redact,
    upstream_request_headers,
)


def test_every_agent_copy_of_the_injected_header_is_replaced_by_one() -> None:
    headers = [
        (b"Host", b"evil.example"),
        (b"authorization", b"Bearer stale"),
        (b"Accept", b"*/*"),
        (b"AUTHORIZATION", b"Basic eA=="),
    ]
    out = upstream_request_headers(
        headers, host=b"alpha.example", inject=("Authorization", "Bearer fresh")
    )
    assert out == [
        (b"Host", b"alpha.example"),
        (b"Accept", b"*/*"),
        (b"Authorization", b"Bearer fresh"),
    ]


def test_header_style_places_the_raw_token_and_leaves_authorization_alone() -> None:
    headers = [(b"Host", b"a"), (b"Authorization", b"Bearer agent"), (b"x-api-token", b"old")]
    out = upstream_request_headers(headers, host=b"a", inject=("X-Api-Token", "tok"))
    assert out == [
        (b"Host", b"a"),
        (b"Authorization", b"Bearer agent"),
        (b"X-Api-Token", b"tok"),
    ]


def test_no_binding_forwards_headers_untouched_except_hop_by_hop() -> None:
    headers = [
        (b"Host", b"a"),
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Authorization", b"Basic cHJveHk="),
        (b"Proxy-Connection", b"keep-alive"),
        (b"X-Secret-Hop", b"1"),
        (b"Upgrade", b"websocket"),
        (b"TE", b"trailers"),
        (b"Authorization", b"Bearer agent"),
        (b"Content-Length", b"3"),
    ]
    out = upstream_request_headers(headers, host=b"a:8080")
    assert out == [
        (b"Host", b"a:8080"),
        (b"Authorization", b"Bearer agent"),
        (b"Content-Length", b"3"),
    ]


def test_response_headers_lose_hop_by_hop_only() -> None:
    headers = [(b"Content-Type", b"x"), (b"Connection", b"close"), (b"Set-Cookie", b"a=b")]
    assert downstream_response_headers(headers) == [
        (b"Content-Type", b"x"),
        (b"Set-Cookie", b"a=b"),
    ]


def test_redaction_hides_credentials_and_the_binding_header() -> None:
    headers = [
        (b"Authorization", b"Bearer secret"),
        (b"X-Api-Token", b"secret2"),
        (b"Cookie", b"s=secret3"),
        (b"Accept", b"*/*"),
    ]
    shown = redact(headers, extra=["x-api-token"])
    assert shown == [
        ["Authorization", REDACTED.decode()],
        ["X-Api-Token", REDACTED.decode()],
        ["Cookie", REDACTED.decode()],
        ["Accept", "*/*"],
    ]


names = st.sampled_from(
    [b"Authorization", b"authorization", b"AuThOrIzAtIoN", b"Accept", b"X-Other", b"Host"]
)


@given(st.lists(st.tuples(names, st.binary(min_size=1, max_size=8)), max_size=12))
def test_exactly_one_injected_header_whatever_the_agent_sent(
    headers: list[tuple[bytes, bytes]],
) -> None:
    out = upstream_request_headers(headers, host=b"h", inject=("Authorization", "Bearer t"))
    auth = [v for n, v in out if n.lower() == b"authorization"]
    assert auth == [b"Bearer t"]
    assert [v for n, v in out if n.lower() == b"host"] == [b"h"]
    others = [(n, v) for n, v in headers if n.lower() not in (b"authorization", b"host")]
    assert [(n, v) for n, v in out if n.lower() not in (b"authorization", b"host")] == others


def test_connection_cannot_nominate_framing_or_host() -> None:
    headers = [
        (b"Host", b"agent.example"),
        (b"Content-Length", b"5"),
        (b"Connection", b"content-length, transfer-encoding, host, x-drop"),
        (b"X-Drop", b"1"),
    ]
    out = upstream_request_headers(headers, host=b"alpha.example")
    assert out == [(b"Host", b"alpha.example"), (b"Content-Length", b"5")]


@pytest.mark.parametrize(
    ("status", "headers", "close", "head", "chunked"),
    [
        (
            200,
            [(b"Content-Length", b"2")],
            False,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            False,
        ),
        (
            200,
            [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"9")],
            False,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            True,
        ),
        (200, [], False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True),
        (204, [], False, b"HTTP/1.1 204 OK\r\n\r\n", False),
        (
            304,
            [(b"Content-Length", b"5")],
            True,
            b"HTTP/1.1 304 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            False,
        ),
    ],
)
def test_response_framing_is_the_one_h11_would_write(
    status: int, headers: list[tuple[bytes, bytes]], close: bool, head: bytes, chunked: bool
) -> None:
    framing = ResponseFraming()
    assert framing.head(status, b"OK", headers, close=close) == head
    assert framing.chunked is chunked
    body = framing.data(b"hello") + framing.data(b"") + framing.end()
    assert body == (b"5\r\nhello\r\n0\r\n\r\n" if chunked else b"hello")


def test_response_framing_matches_h11_for_a_keep_alive_agent() -> None:
    """Byte for byte what an h11 server connection writes for the same events."""
    import h11

    for headers in ([(b"Content-Length", b"5")], [], [(b"Transfer-Encoding", b"chunked")]):
        server = h11.Connection(h11.SERVER)
        server.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        server.next_event()
        expected = server.send(h11.Response(status_code=200, headers=headers, reason=b"OK"))
        expected = (expected or b"") + (server.send(h11.Data(data=b"hello")) or b"")
        expected += server.send(h11.EndOfMessage()) or b""
        framing = ResponseFraming()
        ours = framing.head(200, b"OK", headers, close=False) + framing.data(b"hello")
        ours += framing.end()
        assert ours.lower() == expected.lower(), (ours, expected)
