"""Request smuggling against a real proxy: every trick either gets a 400 or is re-framed so
the upstream sees exactly the request the proxy evaluated - never a second, hidden one.

The policy admits only ``/x/**`` on alpha, so a smuggled ``/admin`` request reaching the
recording upstream (which parses with its own h11) would prove a desync.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grantbox.profiles import EffectiveConfig
from tests.support.proxy_clients import parse_replies, read_all, send_raw, tunnel
from tests.support.proxy_harness import (
    RecordingTokens,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK

SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n"

# Heads whose framing is ambiguous or invalid: refused before anything is dialled.
BAD_FRAMING = {
    "cl_plus_sign": b"Content-Length: +5\r\n",
    "cl_hex": b"Content-Length: 0x5\r\n",
    "cl_negative": b"Content-Length: -1\r\n",
    "cl_list": b"Content-Length: 5, 5\r\n",
    "cl_inner_space": b"Content-Length: 5 5\r\n",
    "cl_huge": b"Content-Length: 99999999999999999999999999999\r\n",
    "cl_unicode_digit": "Content-Length: \u0665\r\n".encode(),
    "cl_lower_and_te_upper": b"content-length: 5\r\nTRANSFER-ENCODING: chunked\r\n",
    "te_twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "te_list": b"Transfer-Encoding: chunked, chunked\r\n",
    "te_identity": b"Transfer-Encoding: identity\r\n",
    "te_xchunked": b"Transfer-Encoding: xchunked\r\n",
    "te_chunked_param": b"Transfer-Encoding: chunked;q=1\r\n",
    "te_vertical_tab": b"Transfer-Encoding:\x0bchunked\r\n",
    "te_nbsp": b"Transfer-Encoding:\xa0chunked\r\n",
    "te_space_before_colon": b"Transfer-Encoding : chunked\r\n",
    "te_tab_before_colon": b"Transfer-Encoding\t: chunked\r\n",
    "te_folded_line": b"X-A: b\r\n Transfer-Encoding: chunked\r\n",
    "te_bare_cr": b"X-A: b\rTransfer-Encoding: chunked\r\n",
    "nul_in_name": b"Transfer-Encoding\x00: chunked\r\n",
    "cl_after_empty_name": b": x\r\nContent-Length: 5\r\n",
}

# A chunked body with a trick in it, then a smuggled request a lenient parser would see.
BAD_CHUNKS = {
    "size_hex_prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "size_negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "size_overflow": b"ffffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "size_lies_short": b"3\r\nhello\r\n0\r\n\r\n",
    "size_lies_long": b"9\r\nhello\r\n0\r\n\r\n",
    "bare_lf": b"5\nhello\n0\n\n",
    "size_plus": b"+5\r\nhello\r\n0\r\n\r\n",
    "ext_with_crlf_in_quotes": b'5;a="x\r\n0\r\n\r\n"\r\nhello\r\n0\r\n\r\n',
}


def _config(upstream: RecordingUpstream, path: str = "/x/**") -> EffectiveConfig:
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", upstream.port, path=path, allowed_ips=LOOPBACK)]
    )
    return make_config(providers=[("alpha", profile)])


def _post(port: int, version: bytes = b"HTTP/1.1") -> bytes:
    return (
        b"POST http://alpha.localhost:%d/x/1 " % port
        + version
        + b"\r\nHost: alpha.localhost:%d\r\n" % port
    )


@pytest.mark.parametrize("case", sorted(BAD_FRAMING))
async def test_ambiguous_framing_is_refused_and_nothing_is_dialled(
    case: str, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    tokens = RecordingTokens()
    async with running_proxy(_config(plain_upstream), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port, _post(plain_upstream.port) + BAD_FRAMING[case] + b"\r\nhello" + SMUGGLED
        )
    replies = parse_replies(raw)
    assert [r.status for r in replies] == [400], raw[:300]
    assert replies[0].json()["error"] == "invalid_request"
    assert plain_upstream.connections == 0 and tokens.asked == []


async def test_chunked_in_http_1_0_is_refused(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing."""
    async with running_proxy(_config(plain_upstream), RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            _post(plain_upstream.port, b"HTTP/1.0")
            + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            + SMUGGLED,
        )
    assert [r.status for r in parse_replies(raw)] == [400]
    assert plain_upstream.connections == 0


@pytest.mark.parametrize("case", sorted(BAD_CHUNKS))
async def test_chunk_tricks_never_let_a_second_request_through(
    case: str, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    async with running_proxy(_config(plain_upstream), RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            _post(plain_upstream.port)
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + BAD_CHUNKS[case]
            + SMUGGLED,
        )
    statuses = [r.status for r in parse_replies(raw)]
    assert all(t.startswith("/x/") for t in (r.target for r in plain_upstream.requests))
    # Whatever the proxy made of the body, no answer is a 2xx for the smuggled request:
    # either the bad chunk is refused, or the next head (origin-form on a forward
    # connection) is refused by the proxy itself.
    assert statuses and statuses[-1] in (400, 502), (statuses, raw[:300])


async def test_chunk_extensions_are_dropped_and_the_body_reframed(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    async with running_proxy(_config(plain_upstream), RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            _post(plain_upstream.port)
            + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"5;name=value;other\r\nhello\r\n0\r\n\r\n",
        )
    assert [r.status for r in parse_replies(raw)] == [200]
    (seen,) = plain_upstream.requests
    assert seen.body_bytes == 5 and b"name=value" not in plain_upstream.received


async def test_trailers_never_carry_an_agent_credential_upstream(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """A trailer named like the injected header (or any trailer) is not forwarded."""
    tokens = RecordingTokens(token="granted")
    async with running_proxy(_config(plain_upstream), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            _post(plain_upstream.port)
            + b"Transfer-Encoding: chunked\r\nTrailer: Authorization\r\nConnection: close\r\n\r\n"
            + b"5\r\nhello\r\n0\r\nAuthorization: Bearer agent-trailer\r\n\r\n",
        )
    assert [r.status for r in parse_replies(raw)] == [200]
    (seen,) = plain_upstream.requests
    assert seen.header("authorization") == ["Bearer granted"]
    assert b"agent-trailer" not in plain_upstream.received
    assert b"Trailer:" not in plain_upstream.received


async def test_a_spaced_trailer_is_a_bad_body_and_never_forwarded(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    async with running_proxy(_config(plain_upstream), RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            _post(plain_upstream.port)
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"5\r\nhello\r\n0\r\nauthorization : Bearer spaced\r\n\r\n",
        )
    assert [r.status for r in parse_replies(raw)] == [400]
    assert b"spaced" not in plain_upstream.received
    assert plain_upstream.requests == []  # the upstream never saw a complete request


async def test_trailers_inside_a_tls_tunnel_are_dropped_too(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    tokens = RecordingTokens(token="granted")
    async with (
        running_proxy(
            _config(tls_upstream), tokens, tmp_path, upstream_ca_file=upstream_ca_file
        ) as rp,
        tunnel(rp.port, "alpha.localhost", port, rp.ca_file) as (reader, writer),
    ):
        writer.write(
            b"POST /x/1 HTTP/1.1\r\nHost: alpha.localhost:%d\r\n" % port
            + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"5\r\nhello\r\n0\r\nAuthorization: Bearer agent-trailer\r\n\r\n"
        )
        raw = await read_all(reader)
    assert [r.status for r in parse_replies(raw)] == [200]
    (seen,) = tls_upstream.requests
    assert seen.header("authorization") == ["Bearer granted"]
    assert b"agent-trailer" not in tls_upstream.received


@pytest.mark.parametrize(
    "nominated", [b"content-length", b"transfer-encoding", b"host", b"authorization"]
)
async def test_connection_cannot_strip_framing_or_the_injected_header(
    nominated: bytes, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """``Connection: <name>`` makes <name> hop-by-hop, but never the proxy's own framing,
    Host or credential: the upstream still gets one complete, injected request."""
    tokens = RecordingTokens(token="granted")
    if nominated == b"transfer-encoding":
        framing, body = b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"
    else:
        framing, body = b"Content-Length: 5\r\n", b"hello"
    async with running_proxy(_config(plain_upstream), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            _post(plain_upstream.port)
            + framing
            + b"Connection: close, "
            + nominated
            + b"\r\n\r\n"
            + body,
        )
    assert [r.status for r in parse_replies(raw)] == [200], raw[:300]
    (seen,) = plain_upstream.requests
    assert seen.body_bytes == 5
    assert seen.header("authorization") == ["Bearer granted"]
    assert seen.header("host") == [f"alpha.localhost:{plain_upstream.port}"]
