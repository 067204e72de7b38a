"""Ways an agent could make an upstream hand the injected token back to it.

TRACE (and IIS's TRACK) is defined to echo the request it received - headers included -
so on a request that gets a token it would return the token to the agent. The proxy never
injects into them. (An upstream that reflects headers on ordinary methods is outside what
a proxy can prevent: see README.md, "Gaps".)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.proxy_clients import parse_replies, send_raw
from tests.support.proxy_harness import (
    RecordingTokens,
    endpoint,
    grant_profile,
    make_config,
    running_proxy,
)
from tests.support.proxy_upstream import RecordingUpstream

from .conftest import LOOPBACK


@pytest.mark.parametrize("method", ["TRACE", "TRACK", "trace"])
async def test_echoing_methods_never_carry_a_token(
    method: str, plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    profile = grant_profile("alpha", [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    tokens = RecordingTokens(token="granted-secret")
    async with running_proxy(make_config(providers=[("alpha", profile)]), tokens, tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            f"{method} http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
    (reply,) = parse_replies(raw, [method.encode()])
    assert (reply.status, reply.json()["error"]) == (403, "policy_denied")
    assert b"granted-secret" not in raw and tokens.asked == []
    assert plain_upstream.connections == 0


async def test_trace_without_a_binding_is_the_policys_business(
    plain_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    port = plain_upstream.port
    config = make_config(policy=[endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)])
    async with running_proxy(config, RecordingTokens(), tmp_path) as rp:
        raw = await send_raw(
            rp.port,
            f"TRACE http://alpha.localhost:{port}/ HTTP/1.1\r\nHost: a\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
    assert [r.status for r in parse_replies(raw, [b"TRACE"])] == [200]
