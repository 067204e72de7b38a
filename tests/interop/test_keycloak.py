"""Real Keycloak as the token endpoint, trusting both identity sources (SPIRE and our local
identity agent) through SPIFFE identity providers; the protected service verifies
Keycloak's access tokens with Keycloak's JWKS. Then every failure against the real peers,
each with its documented reason and nothing sent upstream, and the fresh-SVID retry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from prometheus_client import CollectorRegistry

from grantbox.demo.keycloak import Keycloak
from grantbox.demo.workloads import WorkloadProcess
from grantbox.grants import GrantEngine, GrantError
from grantbox.identity import JwtSvid, WorkloadIdentityClient
from grantbox.identity_agent import jwt_svid
from grantbox.identity_agent.keystore import KeyStore
from grantbox.profiles import JWT_SPIFFE, derive_svid_audience
from tests.grants.bindings import make_binding

from .conftest import (
    LOCAL_WORKLOAD_ID,
    REALM,
    SPIRE_WORKLOAD_ID,
    LocalAgent,
    SpireSetup,
    curl_through,
)
from .harness import (
    keycloak_profile,
    protected_service,
    requests_seen,
    running_proxy,
    service_port,
)


@pytest.fixture(scope="module")
def alpha(
    keycloak: Keycloak, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkloadProcess]:
    with protected_service("alpha", keycloak, tmp_path_factory.mktemp("alpha")) as service:
        yield service


def test_the_derived_svid_audience_is_the_real_realm_issuer(keycloak: Keycloak) -> None:
    token_endpoint = keycloak.discovery(REALM)["token_endpoint"]
    assert token_endpoint == keycloak.token_url(REALM)
    assert derive_svid_audience(token_endpoint) == keycloak.discovery(REALM)["issuer"]


def claims_of(body: str) -> dict[str, object]:
    answer = json.loads(body)
    claims: dict[str, object] = answer["claims"]
    return claims


@pytest.mark.parametrize("source", ["spire", "local"])
def test_a_sandbox_identity_gets_a_keycloak_token_the_service_accepts(
    source: str,
    spire: SpireSetup,
    local_agent: LocalAgent,
    keycloak: Keycloak,
    alpha: WorkloadProcess,
) -> None:
    """The proxy presents the SVID (``jwt-spiffe``); Keycloak authenticates the client
    through the SPIFFE provider of that trust domain; ``audience_overrides`` become the
    ``alpha`` client scope, whose audience mapper puts ``aud: alpha`` in the token."""
    socket = spire.spire.agent.socket if source == "spire" else local_agent.socket("s1")
    spiffe_id = SPIRE_WORKLOAD_ID if source == "spire" else LOCAL_WORKLOAD_ID
    port = service_port(alpha)
    with running_proxy(keycloak_profile(keycloak, "alpha", port), socket) as proxy:
        status, body = curl_through(proxy.url, f"http://alpha.localhost:{port}/hello")
        again, _ = curl_through(proxy.url, f"http://alpha.localhost:{port}/hello")
    assert status == 200, (body, proxy.log()[-3000:])
    assert again == 200
    claims = claims_of(body)
    assert claims["iss"] == keycloak.realm_url(REALM)
    assert claims["aud"] == "alpha"  # exactly the override's audience, nothing else
    assert "alpha" in str(claims["scope"]).split()
    assert claims["azp"] == spiffe_id
    assert claims["client_id"] == spiffe_id
    accepted = [line for line in alpha.log_lines() if "accepted request" in line]
    assert any(spiffe_id in line for line in accepted)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown client", "token_endpoint_rejected"),
        ("untrusted trust domain", "token_endpoint_rejected"),
        ("no registration entry", "workload_identity_denied"),
        ("spire agent stopped", "workload_identity_unavailable"),
    ],
)
def test_failures_against_the_real_peers(
    case: str,
    reason: str,
    spire: SpireSetup,
    local_agent: LocalAgent,
    stranger_agent: LocalAgent,
    keycloak: Keycloak,
    alpha: WorkloadProcess,
) -> None:
    socket = {
        "unknown client": local_agent.socket("nobody"),
        "untrusted trust domain": stranger_agent.socket("s1"),
    }.get(case, spire.spire.agent.socket)
    port = service_port(alpha)
    before = requests_seen(alpha)
    try:
        if case == "no registration entry":
            spire.spire.server.delete_entry(spire.entry)
            spire.spire.agent.wait_for_no_identity()
        elif case == "spire agent stopped":
            spire.spire.agent.stop()
        with running_proxy(keycloak_profile(keycloak, "alpha", port), socket) as proxy:
            status, body = curl_through(proxy.url, f"http://alpha.localhost:{port}/hello")
    finally:
        if case == "spire agent stopped":
            spire.spire.agent.restart()
        if case in ("no registration entry", "spire agent stopped"):
            spire.restore_entry()
    assert status == 502, body
    answer = json.loads(body)
    assert (answer["error"], answer["reason"]) == ("token_grant_failed", reason), proxy.log()
    assert requests_seen(alpha) == before  # nothing reached the service


def old_svid(agent: LocalAgent, audience: str, age: float) -> JwtSvid:
    """A JWT-SVID signed by the agent's real active key, issued ``age`` seconds ago and still
    valid: what a Workload API cache may serve (SPIRE's agent, up to ~55 % of the TTL)."""
    ring = KeyStore(agent.state_dir).load()
    assert ring is not None
    now = time.time()
    claims = jwt_svid.svid_claims(LOCAL_WORKLOAD_ID, [audience], now - age, 3600, None)
    return JwtSvid(jwt_svid.mint(ring.active, claims), LOCAL_WORKLOAD_ID, float(claims["exp"]))


class CachedFirst:
    """Hands out the old SVID first, then whatever the real Workload API serves."""

    def __init__(self, first: JwtSvid, real: WorkloadIdentityClient) -> None:
        self.first: JwtSvid | None = first
        self.real = real
        self.served: list[str] = []

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid:
        svid, self.first = (self.first, None) if self.first else (None, None)
        svid = svid or await self.real.fetch_jwt_svid(audience)
        self.served.append(svid.token)
        return svid


async def test_keycloak_refuses_an_old_svid_and_the_engine_retries_with_a_fresh_one(
    local_agent: LocalAgent, keycloak: Keycloak, tmp_path: Path
) -> None:
    audience = keycloak.realm_url(REALM)
    stale = old_svid(local_agent, audience, age=400)
    async with httpx.AsyncClient(trust_env=False) as http:
        refused = await http.post(
            keycloak.token_url(REALM),
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": str(JWT_SPIFFE),
                "client_assertion": stale.token,
            },
        )
    assert refused.status_code in (400, 401), refused.text
    assert refused.json()["error"] == "invalid_client"  # the premise: too old for Keycloak

    registry = CollectorRegistry()
    async with WorkloadIdentityClient(str(local_agent.socket("s1"))) as real:
        source = CachedFirst(stale, real)
        engine = GrantEngine(source, registry=registry)
        try:
            binding = make_binding(
                token_endpoint=keycloak.token_url(REALM),
                svid_audience=derive_svid_audience(keycloak.token_url(REALM)),
                audience="alpha",
                scopes=("alpha",),
            )
            try:
                token = await engine.obtain(binding)
            except GrantError as error:
                pytest.fail(f"{error!r}\nagent log:\n{local_agent.daemon.log_tail()}")
        finally:
            await engine.aclose()
    assert source.served[0] == stale.token and len(source.served) == 2
    assert registry.get_sample_value("grantbox_token_fresh_svid_retries_total") == 1
    claims = jwt.decode(token.value, options={"verify_signature": False})
    assert claims["azp"] == LOCAL_WORKLOAD_ID and claims["aud"] == "alpha"
