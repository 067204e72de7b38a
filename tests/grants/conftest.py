"""Real parts for grant tests: the local identity agent, a workload socket, a loopback
token endpoint that verifies SVIDs with the agent's JWKS, and an engine wired to them."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine, TokenEndpointClient
from grantbox.identity import JwtSvid, WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from grantbox.profiles import GrantBinding, derive_svid_audience
from tests.support.token_endpoint import TokenEndpoint, running_token_endpoint

from .bindings import make_binding

TRUST_DOMAIN = "example.org"
SANDBOX_PATH = "/grantbox/sandbox/s1"
SANDBOX_ID = f"spiffe://{TRUST_DOMAIN}{SANDBOX_PATH}"


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingSource:
    """The real Workload API client, with a record of the audiences it was asked for."""

    def __init__(self, inner: WorkloadIdentityClient) -> None:
        self.inner = inner
        self.audiences: list[str] = []
        self.tokens: list[str] = []

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid:
        self.audiences.append(audience)
        svid = await self.inner.fetch_jwt_svid(audience)
        self.tokens.append(svid.token)
        return svid


@pytest.fixture
async def agent() -> AsyncIterator[IdentityAgent]:
    # Unix socket paths are short; pytest's tmp_path for a parametrised test may not be.
    with tempfile.TemporaryDirectory(prefix="gbx-") as short:
        running = IdentityAgent(
            socket_dir=Path(short) / "sockets",
            state_dir=Path(short) / "state",
            trust_domain=TRUST_DOMAIN,
            oidc_listen=("127.0.0.1", 0),
        )
        async with running:
            yield running


@pytest.fixture
async def workload_socket(agent: IdentityAgent) -> Path:
    return agent.add_workload("s1", SANDBOX_PATH)


@pytest.fixture
async def identity(workload_socket: Path) -> AsyncIterator[CountingSource]:
    client = WorkloadIdentityClient(str(workload_socket), call_timeout=2.0, deadline=3.0)
    try:
        yield CountingSource(client)
    finally:
        await client.aclose()


@pytest.fixture
async def issuer(agent: IdentityAgent) -> AsyncIterator[TokenEndpoint]:
    assert agent.oidc_url is not None
    async with running_token_endpoint(oidc_url=agent.oidc_url, trust_domain=TRUST_DOMAIN) as ep:
        yield ep


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def engine(
    identity: CountingSource, registry: CollectorRegistry
) -> AsyncIterator[GrantEngine]:
    grants = GrantEngine(identity, connect_timeout=2.0, total_timeout=3.0, registry=registry)
    try:
        yield grants
    finally:
        await grants.aclose()


@pytest.fixture
async def clocked_engine(
    identity: CountingSource, registry: CollectorRegistry, clock: ManualClock
) -> AsyncIterator[GrantEngine]:
    """An engine whose cache runs on :class:`ManualClock` (requests still run in real time)."""
    grants = GrantEngine(
        identity,
        client=TokenEndpointClient(connect_timeout=2.0, total_timeout=3.0),
        registry=registry,
        clock=clock,
        jitter=lambda: 0.0,
    )
    try:
        yield grants
    finally:
        await grants.aclose()


def binding_for(issuer: TokenEndpoint, **overrides: Any) -> GrantBinding:
    """A binding whose token endpoint is ``issuer`` and whose SVID audience is derived from
    it the way profiles do (the realm URL, which is the issuer identifier)."""
    values: dict[str, Any] = {
        "token_endpoint": issuer.token_url,
        "svid_audience": derive_svid_audience(issuer.token_url),
    }
    values.update(overrides)
    return make_binding(**values)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
