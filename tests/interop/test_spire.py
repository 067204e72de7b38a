"""Real SPIRE as the identity source of ``grantbox proxy run``; and a Go (go-spiffe v2)
Workload API client against both SPIRE and our own identity agent."""

from __future__ import annotations

import json
import subprocess

import httpx
import jwt

from grantbox.demo.peers import Peers
from grantbox.identity import WorkloadIdentityClient
from tests.support.peers import Daemon
from tests.support.proxy_clients import curl
from tests.support.proxy_upstream import running_upstream
from tests.support.token_endpoint import TOKEN_PATH, running_token_endpoint

from .conftest import LOCAL_WORKLOAD_ID, SPIRE_WORKLOAD_ID, LocalAgent, SpireSetup
from .harness import running_proxy

AUDIENCE = "https://issuer.example/realms/grantbox"


async def test_the_workload_api_client_gets_an_svid_from_spire(spire: SpireSetup) -> None:
    async with WorkloadIdentityClient(str(spire.spire.agent.socket)) as client:
        svid = await client.fetch_jwt_svid(AUDIENCE)
    assert svid.spiffe_id == SPIRE_WORKLOAD_ID
    claims = jwt.decode(svid.token, options={"verify_signature": False})
    assert claims["aud"] == [AUDIENCE]
    assert claims["exp"] - claims["iat"] == 300  # the entry's JWT-SVID TTL


async def test_proxy_obtains_a_token_with_an_svid_from_spire(spire: SpireSetup) -> None:
    """``grantbox proxy run --identity-socket <SPIRE agent>``: the token endpoint verifies
    the SVID with the keys SPIRE's OIDC Discovery Provider publishes."""
    oidc = spire.spire.oidc
    async with (
        running_token_endpoint(oidc_url=oidc.url, trust_domain=spire.spire.trust_domain) as issuer,
        running_upstream() as upstream,
    ):
        profile = {
            "id": "spire-alpha",
            "credentials": [
                {
                    "name": "token",
                    "required": True,
                    "token_grant": {
                        "token_endpoint": issuer.token_url,
                        "client_assertion_type": (
                            "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
                        ),
                    },
                }
            ],
            "endpoints": [
                {"host": "alpha.localhost", "port": upstream.port, "allowed_ips": ["127.0.0.1"]}
            ],
        }
        with running_proxy(profile, spire.spire.agent.socket) as proxy:
            answer = await curl(f"http://alpha.localhost:{upstream.port}/orders", proxy=proxy.url)
    assert answer.status == 200, (answer.body, proxy.log())
    assert issuer.subjects == [SPIRE_WORKLOAD_ID]  # verified with SPIRE's published keys
    (token,) = issuer.issued
    assert upstream.requests[0].header("authorization") == [f"Bearer {token}"]
    assert issuer.token_requests[0].path == TOKEN_PATH
    (form,) = issuer.forms()
    svid_claims = jwt.decode(form["client_assertion"][0], options={"verify_signature": False})
    assert svid_claims["aud"] == [issuer.issuer]  # derived from the /realms/<name>/ path
    async with httpx.AsyncClient(trust_env=False) as http:
        keys = (await http.get(oidc.keys_url)).json()["keys"]
    assert jwt.get_unverified_header(form["client_assertion"][0])["kid"] in {k["kid"] for k in keys}


def spiffe_check(peers: Peers, socket: str, audience: str, log: Daemon) -> dict[str, object]:
    done = subprocess.run(
        [str(peers.spiffe_check), "-socket", socket, "-audience", audience],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr}\n{log.name} log:\n{log.log_tail()}"
    report: dict[str, object] = json.loads(done.stdout)
    return report


async def test_go_spiffe_client_validates_an_svid_from_our_identity_agent(
    peers: Peers, local_agent: LocalAgent
) -> None:
    """A non-Python client (go-spiffe v2) fetches a JWT-SVID and the JWT bundles from
    ``grantbox identity serve`` and validates one with the other."""
    report = spiffe_check(peers, str(local_agent.socket("s1")), AUDIENCE, local_agent.daemon)
    assert report["spiffe_id"] == LOCAL_WORKLOAD_ID
    assert report["audience"] == [AUDIENCE]
    assert report["trust_domains"] == ["spiffe://local.test"]
    assert report["wrong_audience_refused"] is True
    async with httpx.AsyncClient(trust_env=False) as http:
        bundle = (await http.get(local_agent.bundle_url)).json()
    assert report["key_ids"] == sorted(k["kid"] for k in bundle["keys"])


async def test_go_spiffe_client_agrees_with_spire(peers: Peers, spire: SpireSetup) -> None:
    """The same Go client against SPIRE itself: the reference it is measured by."""
    assert spire.spire.agent.daemon is not None
    report = spiffe_check(peers, str(spire.spire.agent.socket), AUDIENCE, spire.spire.agent.daemon)
    assert report["spiffe_id"] == SPIRE_WORKLOAD_ID
    assert report["trust_domains"] == ["spiffe://spire.test"]
    assert report["wrong_audience_refused"] is True
