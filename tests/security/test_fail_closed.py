"""Reference defect #4 (502 alignment): a failed grant gets the same answer on every path
the proxy has - forward, plain HTTP inside CONNECT, TLS inside CONNECT - and nothing is
dialled upstream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from grantbox.grants import TokenEndpointTimeout
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


@pytest.mark.parametrize("path", ["forward", "plain-in-connect", "tls-in-connect"])
async def test_a_failed_grant_is_the_same_502_on_every_path(
    path: str, tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    port = tls_upstream.port
    profile = grant_profile("alpha", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    tokens = RecordingTokens(fail=TokenEndpointTimeout("POST https://issuer.internal/token"))
    request = f"GET /x HTTP/1.1\r\nHost: alpha.localhost:{port}\r\n\r\n".encode()
    async with running_proxy(
        make_config(providers=[("alpha", profile)]),
        tokens,
        tmp_path,
        upstream_ca_file=upstream_ca_file,
    ) as rp:
        if path == "forward":
            raw = await send_raw(
                rp.port, request.replace(b"/x", b"http://alpha.localhost:%d/x" % port, 1)
            )
        else:
            ca = rp.ca_file if path == "tls-in-connect" else None
            async with tunnel(rp.port, "alpha.localhost", port, ca) as (reader, writer):
                writer.write(request)
                raw = await asyncio.wait_for(read_all(reader), 10)
    (reply,) = parse_replies(raw)
    assert reply.status == 502
    assert reply.header("connection") == "close"
    assert reply.header("content-type") == "application/json"
    assert reply.json()["error"] == "token_grant_failed"
    assert reply.json()["reason"] == "token_endpoint_timeout"
    assert b"issuer.internal" not in raw
    assert tls_upstream.connections == 0 and len(tokens.asked) == 1
