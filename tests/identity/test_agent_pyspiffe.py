"""The agent speaks the real Workload API: py-spiffe's own clients work against it, and
issuers verify its SVIDs with the keys from OIDC discovery."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from spiffe import JwtSource, TrustDomain, WorkloadApiClient
from spiffe.svid.jwt_svid import JwtSvid as SpiffeJwtSvid
from spiffe.workloadapi.errors import ValidateJwtSvidError

from grantbox.identity import workload_api as wapi
from grantbox.identity_agent import IdentityAgent
from tests.support.identity_agent import running_agent

from .conftest import (
    AUDIENCE,
    SANDBOX_ID,
    SANDBOX_PATH,
    TRUST_DOMAIN,
    call,
    oidc_documents,
    oidc_jwks,
    verify,
)


async def test_pyspiffe_client_fetch_bundles_validate(agent: IdentityAgent) -> None:
    socket = f"unix:{agent.socket_path('s1')}"

    def use_pyspiffe() -> tuple[Any, Any, Any]:
        with WorkloadApiClient(socket, default_timeout=5.0) as client:
            svid = client.fetch_jwt_svid({AUDIENCE})
            bundles = client.fetch_jwt_bundles()
            validated = client.validate_jwt_svid(svid.token, AUDIENCE)
            with pytest.raises(ValidateJwtSvidError):
                client.validate_jwt_svid(svid.token, "https://someone-else.example")
            return svid, bundles, validated

    svid, bundles, validated = await asyncio.to_thread(use_pyspiffe)
    assert str(svid.spiffe_id) == SANDBOX_ID
    assert svid.audience == {AUDIENCE}
    assert str(validated.spiffe_id) == SANDBOX_ID
    bundle = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert bundle is not None
    # py-spiffe verifies the signature with the bundle the agent streamed.
    checked = SpiffeJwtSvid.parse_and_validate(svid.token, bundle, {AUDIENCE})
    assert str(checked.spiffe_id) == SANDBOX_ID


async def test_jwt_source_fetches_and_receives_bundle_updates(agent: IdentityAgent) -> None:
    socket = f"unix:{agent.socket_path('s1')}"
    updates: list[set[str]] = []

    def authorities(source: JwtSource) -> set[str]:
        bundle = source.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
        assert bundle is not None
        return set(bundle.jwt_authorities)

    def open_source() -> tuple[JwtSource, Any]:
        source = JwtSource(socket_path=socket, timeout_in_seconds=5.0)
        svid = source.fetch_svid({AUDIENCE})
        source.subscribe_for_updates(lambda: updates.append(authorities(source)))
        return source, svid

    source, svid = await asyncio.to_thread(open_source)
    try:
        assert str(svid.spiffe_id) == SANDBOX_ID
        before = authorities(source)
        kid = jwt.get_unverified_header(svid.token)["kid"]
        assert kid in before
        await agent.rotate_keys()
        deadline = time.monotonic() + 10
        while not updates and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert updates, "JwtSource saw no bundle update after rotation"
        assert before < updates[-1]  # the old keys stay, a new upcoming key appears
    finally:
        await asyncio.to_thread(source.close)


async def test_svids_verify_with_oidc_discovery_keys(oidc_agent: IdentityAgent) -> None:
    agent = oidc_agent
    assert agent.oidc_url is not None and agent.oidc_url.startswith("http://127.0.0.1:")
    response = await call(
        agent.socket_path("s1"), "FetchJWTSVID", wapi.JWTSVIDRequest(audience=[AUDIENCE])
    )
    token = response.svids[0].svid
    assert response.svids[0].spiffe_id == SANDBOX_ID
    discovery, document = await oidc_documents(agent.oidc_url)
    assert discovery["jwks_uri"] == f"{agent.oidc_url}/keys"
    assert discovery["issuer"] == agent.oidc_url
    for key in document["keys"]:
        assert key["use"] == "sig" and key["kid"] and key["alg"] == "ES256"
        assert "d" not in key
    jwks = await oidc_jwks(agent.oidc_url)
    claims = verify(token, jwks)
    assert claims["sub"] == SANDBOX_ID
    with pytest.raises(jwt.InvalidAudienceError):
        verify(token, jwks, audience="https://other.example")


async def test_bundle_matches_spiffe_format(agent: IdentityAgent) -> None:
    message = await call(agent.socket_path("s1"), "FetchJWTBundles", wapi.JWTBundlesRequest())
    assert list(message.bundles) == [f"spiffe://{TRUST_DOMAIN}"]
    document = json.loads(message.bundles[f"spiffe://{TRUST_DOMAIN}"])
    assert document["spiffe_sequence"] >= 1
    assert len(document["keys"]) == 2  # active and upcoming
    for key in document["keys"]:
        assert key["use"] == "jwt-svid"
        assert key["kid"]
        assert key["kty"] == "EC" and key["crv"] == "P-256"
        assert "d" not in key  # never the private half


async def test_bundle_endpoint_serves_the_workload_api_bundle(oidc_agent: IdentityAgent) -> None:
    """The HTTP bundle endpoint (what Keycloak's SPIFFE provider reads) publishes the same
    JWT bundle as the Workload API, keys marked ``jwt-svid``, and SVIDs verify against it;
    a rotation shows up there with a higher ``spiffe_sequence``."""
    agent = oidc_agent
    assert agent.bundle_url == f"{agent.oidc_url}/bundle"
    async with httpx.AsyncClient(trust_env=False) as http:
        answer = await http.get(agent.bundle_url)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.headers["cache-control"] == "no-store"
        served = answer.json()
        message = await call(agent.socket_path("s1"), "FetchJWTBundles", wapi.JWTBundlesRequest())
        assert served == json.loads(message.bundles[f"spiffe://{TRUST_DOMAIN}"])
        assert set(served) == {"keys", "spiffe_sequence", "spiffe_refresh_hint"}
        assert served["spiffe_refresh_hint"] == 300
        for key in served["keys"]:
            assert key["use"] == "jwt-svid" and key["kid"] and "d" not in key
        response = await call(
            agent.socket_path("s1"), "FetchJWTSVID", wapi.JWTSVIDRequest(audience=[AUDIENCE])
        )
        assert verify(response.svids[0].svid, jwt.PyJWKSet.from_dict(served))["sub"] == SANDBOX_ID
        await agent.rotate_keys()
        rotated = (await http.get(agent.bundle_url)).json()
    assert rotated["spiffe_sequence"] > served["spiffe_sequence"]
    assert {k["kid"] for k in served["keys"]} < {k["kid"] for k in rotated["keys"]}


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
async def test_svid_shape_with_issuer(tmp_path: Path, algorithm: str) -> None:
    issuer = "https://oidc.example.org"
    async with running_agent(
        tmp_path,
        oidc=True,
        workloads={"s1": SANDBOX_PATH},
        issuer=issuer,
        algorithm=algorithm,
        svid_ttl=120.0,
    ) as running:
        before = time.time()
        response = await call(
            running.socket_path("s1"), "FetchJWTSVID", wapi.JWTSVIDRequest(audience=[AUDIENCE, "b"])
        )
        token = response.svids[0].svid
        header = jwt.get_unverified_header(token)
        assert set(header) == {"alg", "kid", "typ"}
        assert header["alg"] == algorithm and header["typ"] == "JWT"
        assert running.oidc_url is not None
        claims = verify(token, await oidc_jwks(running.oidc_url))
        assert set(claims) == {"sub", "aud", "exp", "iat", "iss"}
        assert claims["iss"] == issuer
        assert claims["aud"] == [AUDIENCE, "b"]
        assert before - 1 <= claims["iat"] <= time.time()
        assert claims["exp"] - claims["iat"] in (119, 120)
        discovery, _ = await oidc_documents(running.oidc_url)
        assert discovery["issuer"] == issuer
        assert discovery["id_token_signing_alg_values_supported"] == [algorithm]


async def test_svid_without_issuer_has_no_iss(agent: IdentityAgent) -> None:
    response = await call(
        agent.socket_path("s1"), "FetchJWTSVID", wapi.JWTSVIDRequest(audience=[AUDIENCE])
    )
    claims = jwt.decode(response.svids[0].svid, options={"verify_signature": False})
    assert set(claims) == {"sub", "aud", "exp", "iat"}
    assert claims["exp"] - claims["iat"] in (299, 300)
