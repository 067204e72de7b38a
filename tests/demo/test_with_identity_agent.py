"""The demo workloads against the real local identity agent: SVIDs come from its Workload
API, the issuer finds its keys through its OIDC discovery endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import spiffe
from spiffe_assertion import JWT_SPIFFE

from grantbox.demo import (
    DemoPorts,
    DemoWorkloads,
    IdentitySettings,
    check_answer,
    check_proof_of_life,
    proofs_of_life,
    running_workloads,
)
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import IdentityAgent
from tests.support.identity_agent import running_agent

pytestmark = pytest.mark.asyncio(loop_scope="module")

TD = "demo.test"
SVID_TTL = 3.0


@dataclass
class Setup:
    agent: IdentityAgent
    workloads: DemoWorkloads
    http: httpx.AsyncClient
    tmp: Path

    @property
    def issuer(self) -> str:
        return self.workloads.issuer_url

    def spiffe_id(self, name: str) -> str:
        return f"spiffe://{TD}/grantbox/sandbox/{name}"

    async def svid(self, workload: str = "sb-1", audience: str | None = None) -> str:
        client = WorkloadIdentityClient(str(self.agent.socket_path(workload)))
        async with client:
            svid = await client.fetch_jwt_svid(audience or self.issuer)
        return svid.token

    async def token_request(
        self, assertion: str, audience: str = "alpha", scope: str = "alpha"
    ) -> httpx.Response:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_SPIFFE,
            "client_assertion": assertion,
            "audience": audience,
            "scope": scope,
        }
        return await self.http.post(self.workloads.token_url, data=form)

    async def access_token(self, audience: str, workload: str = "sb-1") -> str:
        response = await self.token_request(await self.svid(workload), audience, audience)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    async def call(self, service: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.http.get(f"{self.workloads.service(service).url}/hello", headers=headers)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    tmp = tmp_path_factory.mktemp("agent")
    workloads = {"sb-1": "grantbox/sandbox/sb-1", "sb-2": "grantbox/sandbox/sb-2",
                 "gateway": "grantbox/gateway"}  # fmt: skip
    async with running_agent(
        tmp, trust_domain=TD, oidc=True, workloads=workloads, svid_ttl=SVID_TTL
    ) as agent:
        assert agent.oidc_url is not None
        identity = IdentitySettings(oidc_url=agent.oidc_url, trust_domain=TD)
        # Starting the workloads does not talk to the agent, so blocking here is harmless.
        with running_workloads(
            identity, tmp / "logs", ports=DemoPorts.any(), jwks_min_refresh=0.2
        ) as running:
            async with httpx.AsyncClient(trust_env=False, timeout=10.0) as http:
                yield Setup(agent, running, http, tmp)


async def test_agent_svid_buys_a_token_alpha_accepts_and_logs(setup: Setup) -> None:
    before = setup.workloads.issuer_stats()
    token = await setup.access_token("alpha")
    response = await setup.call("alpha", token)
    assert response.status_code == 200, response.text
    checks = check_answer("alpha", response.text, setup.spiffe_id("sb-1"))
    assert all(c.ok for c in checks), checks
    assert check_proof_of_life(
        "alpha", setup.workloads.alpha.log_lines(), setup.spiffe_id("sb-1")
    ).ok
    after = setup.workloads.issuer_stats()
    assert (after["token_requests"], after["issued"]) == (
        before["token_requests"] + 1,
        before["issued"] + 1,
    )


async def test_each_sandbox_gets_tokens_in_its_own_name(setup: Setup) -> None:
    response = await setup.call("beta", await setup.access_token("beta", workload="sb-2"))
    assert response.status_code == 200
    assert all(c.ok for c in check_answer("beta", response.text, setup.spiffe_id("sb-2")))
    clients = {p.client for p in proofs_of_life(setup.workloads.beta.log_lines(), "beta")}
    assert setup.spiffe_id("sb-2") in clients


async def test_alpha_refuses_betas_token_none_and_garbage(setup: Setup) -> None:
    assert (await setup.call("alpha", await setup.access_token("beta"))).status_code == 403
    missing = await setup.call("alpha", None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert (await setup.call("alpha", "garbage")).status_code == 401
    # The agent's own SVID is not an access token for alpha.
    assert (await setup.call("alpha", await setup.svid(audience="alpha"))).status_code == 401


async def test_svid_for_another_audience_is_an_invalid_client(setup: Setup) -> None:
    response = await setup.token_request(await setup.svid(audience="http://127.0.0.1:1"))
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert "aud" in response.json()["error_description"]


async def test_svid_with_an_extra_audience_is_an_invalid_client(setup: Setup) -> None:
    def fetch() -> str:
        socket = f"unix:{setup.agent.socket_path('sb-1')}"
        with spiffe.WorkloadApiClient(socket) as client:
            token: str = client.fetch_jwt_svid(audience={setup.issuer, "alpha"}).token
            return token

    assertion = await asyncio.to_thread(fetch)
    response = await setup.token_request(assertion)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert "aud must be exactly" in response.json()["error_description"]


async def test_identity_outside_the_sandbox_path_is_an_invalid_client(setup: Setup) -> None:
    response = await setup.token_request(await setup.svid("gateway"))
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert "path" in response.json()["error_description"]


async def test_svid_of_an_untrusted_agent_is_an_invalid_client(setup: Setup) -> None:
    async with running_agent(
        setup.tmp / "other", trust_domain=TD, workloads={"sb-1": "grantbox/sandbox/sb-1"}
    ) as stranger:
        client = WorkloadIdentityClient(str(stranger.socket_path("sb-1")))
        async with client:
            assertion = (await client.fetch_jwt_svid(setup.issuer)).token
    response = await setup.token_request(assertion)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert "unknown key" in response.json()["error_description"]


async def test_expired_svid_is_an_invalid_client(setup: Setup) -> None:
    assertion = await setup.svid()
    await asyncio.sleep(SVID_TTL + 1.0)
    response = await setup.token_request(assertion)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert "expired" in response.json()["error_description"]


async def test_rotated_agent_key_is_fetched_on_unknown_kid(setup: Setup) -> None:
    await setup.access_token("alpha")
    await setup.agent.rotate_keys()
    await asyncio.sleep(0.3)  # past the issuer's minimum re-fetch interval
    assert await setup.access_token("alpha")
