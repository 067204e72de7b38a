"""Smuggling attempts are refused and nothing reaches the upstream; every request on a
connection is evaluated, pipelined or not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

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

SMUGGLING = {
    "cl_and_te": (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n"
    ),
    "two_content_lengths": b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "conflicting_content_lengths": b"Content-Length: 5\r\nContent-Length: 30\r\n\r\nhello",
    "obs_fold": b"X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "nul_in_value": b"X-Nul: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "bare_lf_in_value": b"X-Lf: a\nTransfer-Encoding: chunked\r\n\r\n",
    "te_not_chunked": b"Transfer-Encoding: chunked, identity\r\n\r\n",
}


def _config(upstream: RecordingUpstream):  # type: ignore[no-untyped-def]
    profile = grant_profile(
        "alpha", [endpoint("alpha.localhost", upstream.port, allowed_ips=LOOPBACK)]
    )
    return make_config(providers=[("alpha", profile)])


@pytest.mark.parametrize("case", sorted(SMUGGLING))
async def test_forward_proxy_refuses_and_the_upstream_sees_nothing(
    case: str, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    tokens = RecordingTokens()
    async with running_proxy(_config(plain_upstream), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            f"POST http://alpha.localhost:{plain_upstream.port}/x HTTP/1.1\r\n"
            f"Host: alpha.localhost:{plain_upstream.port}\r\n".encode()
            + SMUGGLING[case],
        )
    (reply,) = parse_replies(raw)
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_request"
    assert reply.header("connection") == "close"
    assert plain_upstream.connections == 0 and plain_upstream.received == b""
    assert tokens.asked == []  # refused before any grant


@pytest.mark.parametrize("case", ["cl_and_te", "two_content_lengths", "obs_fold", "nul_in_value"])
async def test_inside_a_tls_tunnel_too(
    case: str, tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    async with (
        running_proxy(
            _config(tls_upstream), RecordingTokens(), tmp_path, upstream_ca_file=upstream_ca_file
        ) as rp,
        tunnel(rp.port, "alpha.localhost", tls_upstream.port, rp.ca_file) as (r, w),
    ):
        w.write(
            f"POST /x HTTP/1.1\r\nHost: alpha.localhost:{tls_upstream.port}\r\n".encode()
            + SMUGGLING[case]
        )
        raw = await read_all(r)
    (reply,) = parse_replies(raw)
    assert reply.status == 400
    assert tls_upstream.connections == 0


async def test_oversized_head_gets_431(plain_upstream: RecordingUpstream, tmp_path: Path) -> None:
    async with running_proxy(_config(plain_upstream), RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            f"GET http://alpha.localhost:{plain_upstream.port}/ HTTP/1.1\r\n".encode()
            + b"X-Big: "
            + b"a" * 70_000
            + b"\r\n\r\n",
        )
    (reply,) = parse_replies(raw)
    assert reply.status == 431 and reply.json()["error"] == "invalid_request"
    assert plain_upstream.connections == 0


async def test_pipelined_second_request_to_another_host_is_evaluated_and_refused(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    tokens = RecordingTokens()
    async with running_proxy(_config(plain_upstream), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            (
                f"GET http://alpha.localhost:{port}/one HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n"
                f"GET http://beta.localhost:{port}/two HTTP/1.1\r\nHost: beta.localhost\r\n\r\n"
                f"GET http://alpha.localhost:{port}/three HTTP/1.1\r\nHost: alpha.localhost\r\n\r\n"
            ).encode(),
        )
    first, second = parse_replies(raw)
    assert first.status == 200 and first.json()["target"] == "/one"
    assert second.status == 403 and second.json()["error"] == "policy_denied"
    assert [r.target for r in plain_upstream.requests] == ["/one"]
    assert b"/two" not in plain_upstream.received and b"/three" not in plain_upstream.received
    denied = [e for e in rp.events if e.get("status_code") == "policy_denied"]
    assert denied and denied[0]["http_request"]["url"]["hostname"] == "beta.localhost"


async def test_pipelined_requests_to_allowed_targets_are_each_injected(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    tokens = RecordingTokens()
    async with running_proxy(_config(plain_upstream), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            (
                f"POST http://alpha.localhost:{port}/a HTTP/1.1\r\nHost: x\r\n"
                "Authorization: Bearer agent\r\nContent-Length: 3\r\n\r\nabc"
                f"GET http://alpha.localhost:{port}/b HTTP/1.1\r\nHost: x\r\n"
                "Connection: close\r\n\r\n"
            ).encode(),
        )
    first, second = parse_replies(raw, [b"POST", b"GET"])
    assert (first.status, second.status) == (200, 200)
    a, b = plain_upstream.requests
    assert (a.target, a.body_bytes, a.header("authorization")) == ("/a", 3, ["Bearer tok-1"])
    assert (b.target, b.header("authorization")) == ("/b", ["Bearer tok-2"])


async def test_tunnel_requests_must_address_the_tunnel_host(
    tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    async with (
        running_proxy(
            _config(tls_upstream), RecordingTokens(), tmp_path, upstream_ca_file=upstream_ca_file
        ) as rp,
        tunnel(rp.port, "alpha.localhost", tls_upstream.port, rp.ca_file) as (r, w),
    ):
        w.write(b"GET /x HTTP/1.1\r\nHost: beta.localhost\r\n\r\n")
        raw = await read_all(r)
    (reply,) = parse_replies(raw)
    assert reply.status == 400 and tls_upstream.connections == 0


async def test_refusals_are_recorded_as_events_and_metrics(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    async with running_proxy(_config(plain_upstream), RecordingTokens(), tmp_path) as rp:
        await send_raw(
            rp.port,
            f"POST http://alpha.localhost:{plain_upstream.port}/ HTTP/1.1\r\nHost: a\r\n".encode()
            + SMUGGLING["cl_and_te"],
        )
    (event,) = [e for e in rp.events if e.get("status_code") == "invalid_request"]
    assert event["activity_id"] == 6 and "Transfer-Encoding" in event["status_detail"]
    assert (
        rp.metric("grantbox_proxy_requests_total", decision="denied", code="invalid_request") == 1
    )


async def test_a_malformed_chunk_in_the_body_is_refused(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    async with running_proxy(_config(plain_upstream), RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            f"POST http://alpha.localhost:{plain_upstream.port}/ HTTP/1.1\r\nHost: a\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n",
        )
    (reply,) = parse_replies(raw, [b"POST"])
    assert reply.status == 400
    assert plain_upstream.requests == []  # the upstream never saw a complete request


async def test_a_broken_upstream_answer_is_a_502(tmp_path: Path) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    try:
        async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
            raw = await send_raw(
                rp.port, f"GET http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\n\r\n".encode()
            )
    finally:
        server.close()
    (reply,) = parse_replies(raw)
    assert reply.status == 502 and reply.json()["error"] == "upstream_unreachable"
