"""A hostile or broken upstream: redirects are handed back (never followed, never given a
token), broken or split responses never reach the agent as headers, and oversized heads
fail closed. Uses raw-byte upstreams so every answer is exactly what the test wrote."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from grantbox.profiles import EffectiveConfig
from tests.support.proxy_clients import parse_replies, send_raw
from tests.support.proxy_harness import (
    RecordingTokens,
    RunningProxy,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_raw_upstream import RawUpstream, raw_upstream
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK


def _config(port: int) -> EffectiveConfig:
    profile = grant_profile("alpha", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    return make_config(
        policy=[endpoint("beta.localhost", port, allowed_ips=LOOPBACK)],
        providers=[("alpha", profile)],
    )


def _proxy(
    upstream: RawUpstream, tokens: RecordingTokens, directory: Path
) -> AbstractAsyncContextManager[RunningProxy]:
    return running_proxy(_config(upstream.port), tokens, directory)


def _get(port: int, path: str = "/") -> bytes:
    return (
        f"GET http://alpha.localhost:{port}{path} HTTP/1.1\r\nHost: alpha.localhost:{port}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://beta.localhost:{p}/steal",
        "http://alpha.localhost:{p}/elsewhere",
        "/relative",
    ],
)
async def test_redirects_go_back_to_the_agent_untouched_and_unfollowed(
    location: str, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    target = location.format(p=port)
    tokens = RecordingTokens(token="granted")
    async with running_proxy(_config(port), tokens, tmp_path) as rp:
        raw = await send_raw(rp.port, _get(port, f"/redirect?to={target}"))
    (reply,) = parse_replies(raw)
    assert reply.status == 302 and reply.header("location") == target
    assert len(plain_upstream.requests) == 1 and len(tokens.asked) == 1
    assert b"granted" not in raw


@pytest.mark.parametrize(
    "answer",
    [
        # a CR/LF pair smuggled into a header value
        b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00Set-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
        # ambiguous framing in a response
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nSet-Cookie : evil=1\r\nContent-Length: 2\r\n\r\nok",
        # control bytes other than HTAB in a value (h11 alone would pass these on)
        b"HTTP/1.1 200 OK\r\nSet-Cookie: evil=1\x01\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nSet-Cookie: evil=1\x1b[2J\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nSet-Cookie: evil=1\x7f\r\nContent-Length: 2\r\n\r\nok",
        # switching protocols nobody asked for, then a request smuggled in the "tunnel"
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nSet-Cookie: evil=1\r\nContent-Length: 0\r\n\r\n",
        # not HTTP at all
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
    ],
)
async def test_split_or_broken_responses_are_a_502_and_nothing_of_them_reaches_the_agent(
    answer: bytes, tmp_path: Path
) -> None:
    async with (
        raw_upstream(answer) as upstream,
        _proxy(upstream, RecordingTokens(), tmp_path) as rp,
    ):
        raw = await send_raw(rp.port, _get(upstream.port))
    (reply,) = parse_replies(raw)
    assert reply.status == 502 and reply.json()["error"] == "upstream_unreachable"
    assert b"evil" not in raw and b"SSH" not in raw


async def test_bare_lf_line_ends_reach_the_agent_as_clean_crlf_lines(tmp_path: Path) -> None:
    """h11 reads a bare LF as a line end (RFC 9112 §2.2 allows it); the agent then gets
    the same reading as separate CRLF lines, never a bare LF or CR it might read otherwise."""
    answer = b"HTTP/1.1 200 OK\nX-A: a\nX-B: b\r\nContent-Length: 2\r\n\r\nok"
    async with (
        raw_upstream(answer) as upstream,
        _proxy(upstream, RecordingTokens(), tmp_path) as rp,
    ):
        raw = await send_raw(rp.port, _get(upstream.port))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\n" not in head.replace(b"\r\n", b"") and b"\r" not in head.replace(b"\r\n", b"")
    (reply,) = parse_replies(raw)
    assert (reply.status, reply.header("x-a"), reply.header("x-b")) == (200, "a", "b")


async def test_content_length_with_chunked_response_is_not_passed_on_ambiguously(
    tmp_path: Path,
) -> None:
    """Upstream answers with both framings: the agent must get one consistent framing."""
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    async with (
        raw_upstream(answer) as upstream,
        _proxy(upstream, RecordingTokens(), tmp_path) as rp,
    ):
        raw = await send_raw(rp.port, _get(upstream.port))
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert not (b"content-length" in head and b"transfer-encoding" in head), raw


async def test_an_oversized_response_head_is_refused(tmp_path: Path) -> None:
    answer = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\nContent-Length: 0\r\n\r\n"
    async with (
        raw_upstream(answer) as upstream,
        _proxy(upstream, RecordingTokens(), tmp_path) as rp,
    ):
        raw = await send_raw(rp.port, _get(upstream.port))
    (reply,) = parse_replies(raw)
    assert reply.status == 502 and len(raw) < 1000


@pytest.mark.parametrize(
    "echo",
    [
        b"X-Echo: Bearer granted-secret\x01\r\n",
        b"X-Echo: Bearer granted-secret\x00\r\n",
        b"X-Echo Bearer granted-secret\r\n",
        b"X-Echo : Bearer granted-secret\r\n",
    ],
)
async def test_a_broken_answer_echoing_the_token_is_never_quoted_by_the_proxy(
    echo: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy's 502 for a broken upstream, its events and its logs never quote what the
    upstream said (here: the granted token echoed in a broken header line)."""
    caplog.set_level(logging.DEBUG)
    tokens = RecordingTokens(token="granted-secret")
    answer = b"HTTP/1.1 200 OK\r\n" + echo + b"Content-Length: 0\r\n\r\n"
    async with raw_upstream(answer) as upstream, _proxy(upstream, tokens, tmp_path) as rp:
        raw = await send_raw(rp.port, _get(upstream.port))
    assert parse_replies(raw)[0].status == 502
    assert b"Bearer granted-secret" in upstream.received  # the token did go upstream
    assert b"granted-secret" not in raw
    assert "granted-secret" not in str(rp.events)
    assert "granted-secret" not in caplog.text
