"""RFC 8705 mutual TLS with an X.509-SVID issued by real SPIRE (issue #17 item 2).

``grantbox proxy run --identity-socket <SPIRE agent>`` with a ``tls_client_auth`` grant: the
proxy fetches its X.509-SVID from SPIRE's Workload API and presents it to a token endpoint
that trusts only SPIRE's X.509 bundle (``spire-server bundle show``) and requires the
certificate's URI SAN to be the ``client_id``. Our own identity agent is not involved, so
this holds the grant client to SPIRE's certificates, not to ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import trustme
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from grantbox.identity import WorkloadIdentityClient
from tests.support.oauth_peer import OAuthPeer, mutual_tls_context, running_peer
from tests.support.proxy_clients import CurlResult, curl
from tests.support.proxy_upstream import SeenRequest, running_upstream

from .conftest import SPIRE_WORKLOAD_ID, SpireSetup
from .harness import running_proxy


def _profile(token_url: str, server_ca: trustme.CA, port: int) -> dict[str, object]:
    return {
        "id": "spire-mtls",
        "credentials": [
            {
                "name": "token",
                "required": True,
                "token_grant": {
                    "token_endpoint": token_url,
                    "client_auth": "tls_client_auth",
                    "token_endpoint_ca": server_ca.cert_pem.bytes().decode(),
                    "audience": "alpha",
                },
            }
        ],
        "endpoints": [{"host": "alpha.localhost", "port": port, "allowed_ips": ["127.0.0.1"]}],
    }


def _issued_by(leaf: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass
class Attempt:
    answer: CurlResult
    peer: OAuthPeer
    upstream_requests: list[SeenRequest]
    proxy_log: str


async def _request_through_proxy(spire: SpireSetup, client_bundle: bytes) -> Attempt:
    """One request through ``proxy run`` (SVIDs from SPIRE) whose grant authenticates with
    mutual TLS to a token endpoint that trusts ``client_bundle`` for client certificates."""
    spire.restore_entry()
    server_ca = trustme.CA()
    context = mutual_tls_context(server_ca.issue_cert("127.0.0.1"), client_bundle, tls12=True)
    with running_peer(
        oidc_url=None,
        trust_domain=spire.spire.trust_domain,
        client_auth="tls",
        server_context=context,
    ) as peer:
        async with running_upstream() as upstream:
            profile = _profile(peer.token_url, server_ca, upstream.port)
            with running_proxy(profile, spire.spire.agent.socket) as proxy:
                answer = await curl(
                    f"http://alpha.localhost:{upstream.port}/orders", proxy=proxy.url
                )
                return Attempt(answer, peer, list(upstream.requests), proxy.log())


async def test_proxy_presents_the_x509_svid_spire_issued(spire: SpireSetup) -> None:
    bundle = spire.spire.server.bundle_pem().encode()
    attempt = await _request_through_proxy(spire, bundle)
    answer, peer = attempt.answer, attempt.peer
    assert answer.status == 200, (answer.body, attempt.proxy_log, peer.tls_failures)
    # The endpoint's TLS layer chained the certificate to SPIRE's bundle; the peer then
    # matched its URI SAN to the client_id. No client assertion was sent.
    assert peer.rejections == [] and peer.tls_failures == []
    (seen,) = peer.seen
    assert seen.peer_uri == SPIRE_WORKLOAD_ID
    form = seen.fields()
    assert form["client_id"] == [SPIRE_WORKLOAD_ID]
    assert "client_assertion" not in form
    (token,) = peer.issued
    assert attempt.upstream_requests[0].header("authorization") == [f"Bearer {token}"]

    # What SPIRE serves this workload chains to the same bundle and names the same ID.
    async with WorkloadIdentityClient(str(spire.spire.agent.socket)) as client:
        svid = await client.fetch_x509_svid()
    assert svid.spiffe_id == SPIRE_WORKLOAD_ID
    leaf = x509.load_pem_x509_certificate(svid.cert_chain_pem)
    assert any(_issued_by(leaf, root) for root in x509.load_pem_x509_certificates(bundle))


async def test_an_endpoint_of_another_trust_domain_refuses_the_certificate(
    spire: SpireSetup,
) -> None:
    """A token endpoint that trusts another CA turns SPIRE's certificate down in the
    handshake: the request fails closed with ``token_endpoint_rejected`` semantics (a 502
    ``token_grant_failed``) and the upstream sees nothing."""
    attempt = await _request_through_proxy(spire, trustme.CA().cert_pem.bytes())
    answer, peer = attempt.answer, attempt.peer
    assert answer.status == 502, answer.body
    refusal = answer.json()
    assert refusal["error"] == "token_grant_failed"
    assert refusal["reason"] == "token_endpoint_rejected"
    assert peer.request_count == 0 and peer.tls_failures
    assert attempt.upstream_requests == []
