"""A token endpoint that answers with a token that is not header-safe: the grant fails
(502 ``token_malformed``), nothing reaches the upstream, and the bad value is never cached
or placed in a header. Real identity agent, real token endpoint, real proxy."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from tests.support.proxy_clients import parse_replies, send_raw
from tests.support.proxy_harness import endpoint, grant_profile, make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream
from tests.support.token_endpoint import Behaviour, TokenEndpoint, running_token_endpoint

from .conftest import LOOPBACK

TRUST_DOMAIN = "example.org"

BAD_TOKENS = {
    "crlf_header": "abc\r\nX-Evil: 1",
    "bare_lf": "abc\nX-Evil: 1",
    "bare_cr": "abc\rX-Evil: 1",
    "nul": "abc\x00def",
    "space": "abc def",
    "tab": "abc\tdef",
    "inner_equals": "abc=def",
    "colon": "abc:def",
    "unicode": "abc\u2028def",
    "empty": "",
    "only_padding": "==",
}


@pytest.fixture
async def parts() -> AsyncIterator[tuple[GrantEngine, TokenEndpoint]]:
    with tempfile.TemporaryDirectory(prefix="gbx-tok-") as short:
        agent = IdentityAgent(
            socket_dir=Path(short) / "sockets",
            state_dir=Path(short) / "state",
            trust_domain=TRUST_DOMAIN,
            oidc_listen=("127.0.0.1", 0),
        )
        async with agent:
            path = agent.add_workload("s1", "/grantbox/sandbox/s1")
            client = WorkloadIdentityClient(str(path), call_timeout=2.0, deadline=3.0)
            engine = GrantEngine(
                client, connect_timeout=1.0, total_timeout=3.0, registry=CollectorRegistry()
            )
            assert agent.oidc_url is not None
            try:
                async with running_token_endpoint(
                    oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN
                ) as issuer:
                    yield engine, issuer
            finally:
                await engine.aclose()
                await client.aclose()


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_a_token_that_is_not_token68_never_becomes_a_header(
    case: str,
    parts: tuple[GrantEngine, TokenEndpoint],
    plain_upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    engine, issuer = parts
    issuer.behave(Behaviour.grant(access_token=BAD_TOKENS[case]))
    port = plain_upstream.port
    profile = grant_profile(
        "alpha",
        [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)],
        token_endpoint=issuer.token_url,
    )
    async with running_proxy(make_config(providers=[("alpha", profile)]), engine, tmp_path) as rp:
        raw = await send_raw(
            rp.port, b"GET http://alpha.localhost:%d/ HTTP/1.1\r\nHost: a\r\n\r\n" % port
        )
    (reply,) = parse_replies(raw)
    assert (reply.status, reply.json()["reason"]) == (502, "token_malformed")
    assert plain_upstream.connections == 0
    assert issuer.request_count == 1
    # A remembered failure may be kept (negative cache); a token never is.
    assert engine.cached_keys()
    for key in engine.cached_keys():
        entry = engine._cache.get(key)  # test-only look inside the cache
        assert entry is not None and entry.token is None and entry.failure is not None
    assert b"Evil" not in raw and b"abc" not in raw
