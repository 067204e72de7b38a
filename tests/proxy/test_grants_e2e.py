"""The whole chain with real parts: curl → proxy → GrantEngine → local identity agent
(JWT-SVID over the Workload API) → loopback token endpoint (verifies the SVID with the
agent's JWKS) → token injected into the request the TLS upstream receives."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from tests.support.identity_agent import running_agent
from tests.support.proxy_clients import curl
from tests.support.proxy_harness import endpoint, grant_profile, make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream
from tests.support.token_endpoint import Behaviour, TokenEndpoint, running_token_endpoint

from .conftest import LOOPBACK

TRUST_DOMAIN = "example.org"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[IdentityAgent]:
    async with running_agent(tmp_path, trust_domain=TRUST_DOMAIN, oidc=True) as running:
        yield running


@pytest.fixture
async def engine(agent: IdentityAgent) -> AsyncIterator[GrantEngine]:
    workload = agent.add_workload("s1", "/grantbox/sandbox/s1")
    client = WorkloadIdentityClient(str(workload), call_timeout=2.0, deadline=3.0)
    grants = GrantEngine(
        client, connect_timeout=1.0, total_timeout=3.0, registry=CollectorRegistry()
    )
    try:
        yield grants
    finally:
        await grants.aclose()
        await client.aclose()


@pytest.fixture
async def issuer(agent: IdentityAgent) -> AsyncIterator[TokenEndpoint]:
    assert agent.oidc_url is not None
    async with running_token_endpoint(oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN) as ep:
        yield ep


async def test_token_from_the_real_issuer_is_injected_and_cached(
    engine: GrantEngine,
    issuer: TokenEndpoint,
    tls_upstream: RecordingUpstream,
    upstream_ca_file: Path,
    tmp_path: Path,
) -> None:
    port = tls_upstream.port
    profile = grant_profile(
        "alpha",
        [endpoint("alpha.localhost", port, allowed_ips=LOOPBACK)],
        token_endpoint=issuer.token_url,
    )
    config = make_config(providers=[("alpha", profile)])
    async with running_proxy(config, engine, tmp_path, upstream_ca_file=upstream_ca_file) as rp:
        url = f"https://alpha.localhost:{port}/v1/whoami"
        first = await curl(
            "-H", "Authorization: Bearer forged", url, proxy=rp.url, cacert=rp.ca_file
        )
        second = await curl(url, proxy=rp.url, cacert=rp.ca_file)
    assert (first.status, second.status) == (200, 200), first.stderr
    (token,) = issuer.issued
    assert [r.header("authorization") for r in tls_upstream.requests] == [
        [f"Bearer {token}"],
        [f"Bearer {token}"],
    ]
    assert issuer.request_count == 1  # the second request used the cached token
    assert issuer.forms()[0]["audience"] == ["api://alpha"]
    text = json.dumps(rp.events)
    assert token not in text and "forged" not in text


async def test_token_endpoint_down_gives_502_with_reason_and_the_upstream_sees_nothing(
    engine: GrantEngine, tls_upstream: RecordingUpstream, upstream_ca_file: Path, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    profile = grant_profile(
        "alpha",
        [endpoint("alpha.localhost", tls_upstream.port, allowed_ips=LOOPBACK)],
        token_endpoint=f"http://127.0.0.1:{closed}/realms/grantbox/protocol/openid-connect/token",
    )
    config = make_config(providers=[("alpha", profile)])
    async with running_proxy(config, engine, tmp_path, upstream_ca_file=upstream_ca_file) as rp:
        result = await curl(
            f"https://alpha.localhost:{tls_upstream.port}/x", proxy=rp.url, cacert=rp.ca_file
        )
    assert result.status == 502
    body = result.json()
    assert body["error"] == "token_grant_failed"
    assert body["reason"] == "token_endpoint_unreachable"
    assert str(closed) not in result.body.decode()
    assert tls_upstream.connections == 0


async def test_issuer_rejection_is_reported_as_rejected(
    engine: GrantEngine,
    issuer: TokenEndpoint,
    plain_upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    issuer.behave(Behaviour.invalid_client("assertion signature did not verify"))
    profile = grant_profile(
        "alpha",
        [endpoint("alpha.localhost", plain_upstream.port, allowed_ips=LOOPBACK)],
        token_endpoint=issuer.token_url,
    )
    async with running_proxy(make_config(providers=[("alpha", profile)]), engine, tmp_path) as rp:
        result = await curl(f"http://alpha.localhost:{plain_upstream.port}/", proxy=rp.url)
    assert result.status == 502
    assert result.json()["reason"] == "token_endpoint_rejected"
    assert b"signature" not in result.body
    assert plain_upstream.connections == 0
