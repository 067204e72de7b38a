"""The loopback token endpoint really authenticates clients the way the SPIFFE draft says;
otherwise the integration tests that rely on it would prove nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx

from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from tests.support.token_endpoint import JWT_SPIFFE, TokenEndpoint, running_token_endpoint

from .conftest import SANDBOX_ID, TRUST_DOMAIN, CountingSource


async def post(endpoint: TokenEndpoint, form: dict[str, str], **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as http:
        return await http.post(endpoint.token_url, data=form, headers=headers)


def client_form(svid: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_SPIFFE,
        "client_assertion": svid,
    }


async def test_accepts_a_valid_svid(issuer: TokenEndpoint, identity: CountingSource) -> None:
    svid = await identity.fetch_jwt_svid(issuer.issuer)
    answer = await post(issuer, client_form(svid.token))
    assert answer.status_code == 200
    assert answer.json()["access_token"] == issuer.issued[0]
    assert issuer.subjects == [SANDBOX_ID]


async def test_refuses_client_id_and_authorization(
    issuer: TokenEndpoint, identity: CountingSource
) -> None:
    svid = await identity.fetch_jwt_svid(issuer.issuer)
    with_id = await post(issuer, {**client_form(svid.token), "client_id": SANDBOX_ID})
    with_basic = await post(issuer, client_form(svid.token), Authorization="Basic eDp5")
    assert with_id.status_code == 400
    assert with_basic.status_code == 400
    assert issuer.issued == []


async def test_refuses_wrong_audience_and_garbage(
    issuer: TokenEndpoint, identity: CountingSource
) -> None:
    wrong_aud = await identity.fetch_jwt_svid(issuer.token_url)
    assert (await post(issuer, client_form(wrong_aud.token))).status_code == 401
    assert (await post(issuer, client_form("not.a.jwt"))).status_code == 401
    assert issuer.issued == []


async def test_refuses_a_foreign_trust_domain(
    agent: IdentityAgent, identity: CountingSource
) -> None:
    assert agent.oidc_url is not None
    async with running_token_endpoint(oidc_url=agent.oidc_url, trust_domain="other.org") as ep:
        svid = await identity.fetch_jwt_svid(ep.issuer)
        answer = await post(ep, client_form(svid.token))
        assert answer.status_code == 401
        assert ep.rejections == ["sub is not in the trusted trust domain"]


async def test_refuses_an_svid_signed_by_another_agent(issuer: TokenEndpoint) -> None:
    with tempfile.TemporaryDirectory(prefix="gbx-") as short:
        stranger = IdentityAgent(socket_dir=Path(short) / "s", trust_domain=TRUST_DOMAIN)
        async with stranger:
            socket = stranger.add_workload("s1", "/grantbox/sandbox/s1")
            async with WorkloadIdentityClient(str(socket)) as client:
                svid = await client.fetch_jwt_svid(issuer.issuer)
        answer = await post(issuer, client_form(svid.token))
    assert answer.status_code == 401
    assert issuer.rejections == ["unknown signing key"]
