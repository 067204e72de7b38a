"""Each grant kind from a linted profile to the upstream: curl → egress proxy → grant engine
→ local identity agent (JWT- or X.509-SVID) → independent token endpoint (token exchange, or
client credentials over mutual TLS) → the token injected into the request the upstream
receives; and the failure cases, where nothing reaches the upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from grantbox.profiles import Profile, has_errors, parse_profile, validate_profiles
from tests.support.oauth_peer import TOKEN_EXCHANGE, OAuthPeer, mutual_tls_context, running_peer
from tests.support.proxy_clients import curl
from tests.support.proxy_harness import make_config, running_proxy
from tests.support.proxy_upstream import RecordingUpstream, running_upstream

from .conftest import SANDBOX_ID, TRUST_DOMAIN

LOOPBACK = ["127.0.0.1/32"]


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with running_upstream() as running:
        yield running


@pytest.fixture
async def workload_engine(workload_socket: Path) -> AsyncIterator[GrantEngine]:
    """The engine as the supervisor builds it: the Workload API client serves both SVIDs."""
    client = WorkloadIdentityClient(str(workload_socket), call_timeout=2.0, deadline=3.0)
    engine = GrantEngine(client, total_timeout=5.0, registry=CollectorRegistry())
    try:
        yield engine
    finally:
        await engine.aclose()
        await client.aclose()


@pytest.fixture
def server_ca() -> trustme.CA:
    return trustme.CA()


def linted(upstream: RecordingUpstream, **grant: Any) -> Profile:
    """A profile whose one credential has ``grant``; it must lint clean."""
    document = {
        "id": "alpha",
        "credentials": [
            {"name": "token", "required": True, "auth_style": "bearer", "token_grant": grant}
        ],
        "endpoints": [{"host": "alpha.localhost", "port": upstream.port, "allowed_ips": LOOPBACK}],
    }
    profile, problems = parse_profile(document, "<test>")
    assert profile is not None, problems
    found = validate_profiles([profile])
    assert not has_errors(found), found
    return profile


async def fetch(
    profile: Profile, engine: GrantEngine, upstream: RecordingUpstream, tmp_path: Path
) -> Any:
    config = make_config(providers=[("alpha", profile)])
    async with running_proxy(config, engine, tmp_path) as rp:
        return await curl(
            "-H",
            "Authorization: Bearer agent-forged",
            f"http://alpha.localhost:{upstream.port}/v1/whoami",
            proxy=rp.url,
        )


@pytest.fixture
def exchange_peer(agent: IdentityAgent) -> Iterator[OAuthPeer]:
    with running_peer(oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN) as peer:
        yield peer


@pytest.fixture
def mtls_peer(agent: IdentityAgent, server_ca: trustme.CA) -> Iterator[OAuthPeer]:
    context = mutual_tls_context(server_ca.issue_cert("127.0.0.1"), agent.x509_bundle_pem())
    with running_peer(
        oidc_url=agent.oidc_url,
        trust_domain=TRUST_DOMAIN,
        client_auth="tls",
        server_context=context,
    ) as peer:
        yield peer


async def test_token_exchange_token_reaches_the_upstream(
    workload_engine: GrantEngine,
    exchange_peer: OAuthPeer,
    upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    profile = linted(
        upstream,
        token_endpoint=exchange_peer.token_url,
        grant_type="token_exchange",
        audience="alpha",
        resource=["https://alpha.example/"],
        requested_token_type="urn:ietf:params:oauth:token-type:access_token",
    )
    result = await fetch(profile, workload_engine, upstream, tmp_path)
    assert result.status == 200, result.stderr
    (token,) = exchange_peer.issued
    assert [r.header("authorization") for r in upstream.requests] == [[f"Bearer {token}"]]
    form = exchange_peer.forms()[0]
    assert form["grant_type"] == [TOKEN_EXCHANGE]
    assert form["resource"] == ["https://alpha.example/"]
    assert exchange_peer.rejections == []  # it verified the subject token's signature


async def test_mutual_tls_token_reaches_the_upstream(
    workload_engine: GrantEngine,
    mtls_peer: OAuthPeer,
    server_ca: trustme.CA,
    upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    profile = linted(
        upstream,
        token_endpoint=mtls_peer.token_url,
        client_auth="tls_client_auth",
        token_endpoint_ca=server_ca.cert_pem.bytes().decode(),
        scopes=["read"],
    )
    result = await fetch(profile, workload_engine, upstream, tmp_path)
    assert result.status == 200, result.stderr
    (token,) = mtls_peer.issued
    assert [r.header("authorization") for r in upstream.requests] == [[f"Bearer {token}"]]
    assert mtls_peer.seen[0].peer_uri == SANDBOX_ID
    assert "client_assertion" not in mtls_peer.forms()[0]


async def test_a_refused_certificate_is_a_502_and_the_upstream_sees_nothing(
    workload_engine: GrantEngine,
    agent: IdentityAgent,
    server_ca: trustme.CA,
    upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    stranger = trustme.CA().cert_pem.bytes()  # the endpoint trusts another trust domain
    context = mutual_tls_context(server_ca.issue_cert("127.0.0.1"), stranger, tls12=True)
    with running_peer(
        oidc_url=None, trust_domain=TRUST_DOMAIN, client_auth="tls", server_context=context
    ) as peer:
        profile = linted(
            upstream,
            token_endpoint=peer.token_url,
            client_auth="tls_client_auth",
            token_endpoint_ca=server_ca.cert_pem.bytes().decode(),
        )
        result = await fetch(profile, workload_engine, upstream, tmp_path)
    assert result.status == 502
    assert result.json()["error"] == "token_grant_failed"
    assert result.json()["reason"] == "token_endpoint_rejected"
    assert upstream.connections == 0


async def test_an_exchange_answer_that_is_not_an_access_token_is_a_502(
    workload_engine: GrantEngine,
    exchange_peer: OAuthPeer,
    upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    exchange_peer.success_fields = {"token_type": "N_A"}
    profile = linted(upstream, token_endpoint=exchange_peer.token_url, grant_type="token_exchange")
    result = await fetch(profile, workload_engine, upstream, tmp_path)
    assert result.status == 502
    assert result.json()["reason"] == "token_malformed"
    assert exchange_peer.issued[0].encode() not in result.body
    assert upstream.connections == 0
