"""Real parts for proxy tests: loopback upstreams (plain, and TLS via trustme), and the
local identity agent with a grant engine and a token endpoint trusting it."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from tests.support.identity_agent import running_agent
from tests.support.proxy_upstream import RecordingUpstream, running_upstream
from tests.support.token_endpoint import TokenEndpoint, running_token_endpoint

LOOPBACK = ["127.0.0.1/32", "::1/128"]
TRUST_DOMAIN = "example.org"


@pytest.fixture(scope="session")
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def upstream_ca_file(upstream_ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "upstream-ca.pem"
    upstream_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def plain_upstream() -> AsyncIterator[RecordingUpstream]:
    async with running_upstream() as upstream:
        yield upstream


@pytest.fixture
async def tls_upstream(upstream_ca: trustme.CA) -> AsyncIterator[RecordingUpstream]:
    cert = upstream_ca.issue_cert(
        "alpha.localhost", "beta.localhost", "alpha.test", "localhost", "127.0.0.1"
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    async with running_upstream(context) as upstream:
        yield upstream


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[IdentityAgent]:
    async with running_agent(tmp_path, trust_domain=TRUST_DOMAIN, oidc=True) as running:
        yield running


@pytest.fixture
async def engine(agent: IdentityAgent) -> AsyncIterator[GrantEngine]:
    """The grant engine of sandbox ``s1``, minting its SVIDs at ``agent``."""
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
    """A token endpoint verifying SVIDs with ``agent``'s keys."""
    assert agent.oidc_url is not None
    async with running_token_endpoint(oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN) as ep:
        yield ep
