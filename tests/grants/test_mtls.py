"""RFC 8705 mutual-TLS client authentication with the X.509-SVID, end to end: the real
identity agent issues it, the real Workload API client fetches it, the engine presents it
from memory, and an independent TLS token endpoint checks that it chains to the agent's
X.509 bundle and that its SPIFFE ID URI SAN is the ``client_id``."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantEngine, GrantError, TokenEndpointClient
from grantbox.identity import JwtSvid, WorkloadIdentityClient, X509Svid
from grantbox.identity_agent import IdentityAgent
from grantbox.profiles import GrantBinding
from tests.support.identity_agent import running_agent
from tests.support.oauth_peer import TOKEN_EXCHANGE, OAuthPeer, mutual_tls_context, running_peer

from .bindings import make_binding
from .conftest import SANDBOX_ID, SANDBOX_PATH, TRUST_DOMAIN, ManualClock


class RecordingIdentity:
    """The real Workload API client, with a record of what the engine asked it for."""

    def __init__(self, inner: WorkloadIdentityClient) -> None:
        self.inner = inner
        self.jwt_audiences: list[str] = []
        self.x509: list[X509Svid] = []

    async def fetch_jwt_svid(self, audience: str) -> JwtSvid:
        self.jwt_audiences.append(audience)
        return await self.inner.fetch_jwt_svid(audience)

    async def fetch_x509_svid(self) -> X509Svid:
        svid = await self.inner.fetch_x509_svid()
        self.x509.append(svid)
        return svid


@pytest.fixture
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def recording(workload_socket: Path) -> AsyncIterator[RecordingIdentity]:
    client = WorkloadIdentityClient(str(workload_socket), call_timeout=2.0, deadline=3.0)
    try:
        yield RecordingIdentity(client)
    finally:
        await client.aclose()


@pytest.fixture
async def mtls_engine(recording: RecordingIdentity) -> AsyncIterator[GrantEngine]:
    engine = GrantEngine(recording, total_timeout=5.0, registry=CollectorRegistry())
    try:
        yield engine
    finally:
        await engine.aclose()


def peer_for(
    agent: IdentityAgent, server_ca: trustme.CA, *, bundle: bytes | None = None, **tls: Any
) -> Any:
    """A mutual-TLS token endpoint trusting ``bundle`` (the agent's X.509 bundle)."""
    context = mutual_tls_context(
        server_ca.issue_cert("127.0.0.1"),
        agent.x509_bundle_pem() if bundle is None else bundle,
        **tls,
    )
    return running_peer(
        oidc_url=agent.oidc_url,
        trust_domain=TRUST_DOMAIN,
        client_auth="tls",
        server_context=context,
    )


@pytest.fixture
def peer(agent: IdentityAgent, server_ca: trustme.CA) -> Iterator[OAuthPeer]:
    with peer_for(agent, server_ca) as running:
        yield running


def mtls(peer: OAuthPeer, server_ca: trustme.CA, **overrides: Any) -> GrantBinding:
    values: dict[str, Any] = {
        "token_endpoint": peer.token_url,
        "svid_audience": "",
        "client_auth": "tls_client_auth",
        "token_endpoint_ca": server_ca.cert_pem.bytes().decode(),
        "audience": "alpha",
        "scopes": ("read",),
    }
    values.update(overrides)
    return make_binding(**values)


async def failure(engine: GrantEngine, binding: GrantBinding) -> GrantError:
    with pytest.raises(GrantError) as caught:
        await engine.obtain(binding)
    return caught.value


@pytest.mark.parametrize("client_auth", ["tls_client_auth", "self_signed_tls_client_auth"])
async def test_client_credentials_over_mutual_tls(
    mtls_engine: GrantEngine,
    peer: OAuthPeer,
    server_ca: trustme.CA,
    recording: RecordingIdentity,
    client_auth: str,
) -> None:
    token = await mtls_engine.obtain(mtls(peer, server_ca, client_auth=client_auth))
    assert token.value == peer.issued[0]
    assert peer.rejections == []
    # No client assertion, and the client_id is the SPIFFE ID (RFC 8705 §2).
    assert peer.forms() == [
        {
            "grant_type": ["client_credentials"],
            "client_id": [SANDBOX_ID],
            "audience": ["alpha"],
            "scope": ["read"],
        }
    ]
    (seen,) = peer.seen
    assert seen.peer_uri == SANDBOX_ID  # the endpoint saw the certificate, chained to the bundle
    assert recording.jwt_audiences == []  # no JWT-SVID was minted
    (presented,) = recording.x509
    leaf = x509.load_pem_x509_certificates(presented.cert_chain_pem)[0]
    assert seen.peer_serial == leaf.serial_number  # the certificate the Workload API served


async def test_token_exchange_authenticated_by_mutual_tls(
    mtls_engine: GrantEngine, peer: OAuthPeer, server_ca: trustme.CA, recording: RecordingIdentity
) -> None:
    binding = mtls(peer, server_ca, grant_type="token_exchange", svid_audience=peer.token_url)
    token = await mtls_engine.obtain(binding)
    assert token.value == peer.issued[0]
    form = peer.forms()[0]
    assert form["grant_type"] == [TOKEN_EXCHANGE]
    assert form["client_id"] == [SANDBOX_ID]
    assert "client_assertion" not in form
    assert recording.jwt_audiences == [peer.token_url]
    assert peer.seen[0].peer_uri == SANDBOX_ID


async def test_a_configured_client_id_is_sent_and_checked_by_the_endpoint(
    mtls_engine: GrantEngine, peer: OAuthPeer, server_ca: trustme.CA
) -> None:
    error = await failure(mtls_engine, mtls(peer, server_ca, client_id="someone-else"))
    assert error.reason == "token_endpoint_rejected"
    assert "certificate URI SAN does not match client_id" in error.detail
    assert peer.forms()[0]["client_id"] == ["someone-else"]


async def test_rotation_changes_the_certificate_and_keeps_cached_tokens(
    tmp_path: Path, server_ca: trustme.CA
) -> None:
    clock = ManualClock()
    async with running_agent(
        tmp_path, oidc=True, workloads={"s1": SANDBOX_PATH}, x509_svid_ttl=4.0
    ) as agent:
        client = WorkloadIdentityClient(str(agent.socket_path("s1")))
        recording = RecordingIdentity(client)
        engine = GrantEngine(recording, registry=CollectorRegistry(), clock=clock)
        try:
            with peer_for(agent, server_ca) as peer:
                alpha = mtls(peer, server_ca)
                first = await engine.obtain(alpha)
                fingerprint = recording.x509[0].fingerprint
                async with asyncio.timeout(10):  # the agent rotates at half-life (2 s)
                    while (await client.fetch_x509_svid()).fingerprint == fingerprint:
                        await asyncio.sleep(0.2)
                clock.advance(60.0)
                assert await engine.obtain(alpha) == first  # still cached: no new request
                assert peer.request_count == 1
                await engine.obtain(mtls(peer, server_ca, audience="beta"))
                assert peer.request_count == 2
                assert recording.x509[-1].fingerprint != fingerprint
                assert peer.seen[0].peer_serial != peer.seen[1].peer_serial
                assert {s.peer_uri for s in peer.seen} == {SANDBOX_ID}
                assert await engine.obtain(alpha) == first
        finally:
            await engine.aclose()
            await client.aclose()


async def test_no_x509_svid_for_a_denied_caller(
    agent: IdentityAgent, peer: OAuthPeer, server_ca: trustme.CA
) -> None:
    socket = agent.add_workload("locked", "/grantbox/sandbox/locked", uids=[65534])
    client = WorkloadIdentityClient(str(socket), call_timeout=0.5, deadline=1.0)
    engine = GrantEngine(client, registry=CollectorRegistry())
    try:
        error = await failure(engine, mtls(peer, server_ca))
    finally:
        await engine.aclose()
        await client.aclose()
    assert error.reason == "workload_identity_denied"
    assert "X.509-SVID" in error.detail
    assert peer.request_count == 0


async def test_no_x509_svid_without_a_workload_api(
    peer: OAuthPeer, server_ca: trustme.CA, tmp_path: Path
) -> None:
    client = WorkloadIdentityClient(str(tmp_path / "gone.sock"), call_timeout=0.3, deadline=0.6)
    engine = GrantEngine(client, registry=CollectorRegistry())
    try:
        error = await failure(engine, mtls(peer, server_ca))
    finally:
        await engine.aclose()
        await client.aclose()
    assert error.reason == "workload_identity_unavailable"
    assert peer.request_count == 0


async def test_a_source_that_cannot_serve_x509_is_unavailable(
    engine: GrantEngine, peer: OAuthPeer, server_ca: trustme.CA
) -> None:
    """The JWT-only identity of the shared fixtures has no fetch_x509_svid."""
    error = await failure(engine, mtls(peer, server_ca))
    assert error.reason == "workload_identity_unavailable"
    assert "no X.509-SVID source" in error.detail


async def test_a_certificate_refused_in_the_handshake_is_rejected(
    agent: IdentityAgent, mtls_engine: GrantEngine, server_ca: trustme.CA
) -> None:
    """A TLS 1.2 endpoint that trusts another CA refuses our certificate with an alert."""
    with peer_for(agent, server_ca, bundle=trustme.CA().cert_pem.bytes(), tls12=True) as peer:
        error = await failure(mtls_engine, mtls(peer, server_ca))
        assert error.reason == "token_endpoint_rejected"
        assert "refused the client certificate (TLSV1_ALERT_UNKNOWN_CA)" in error.detail
        assert peer.request_count == 0
        await settled(peer)


async def settled(peer: OAuthPeer) -> None:
    """Wait (bounded) until the endpoint's thread has recorded the handshake it refused."""
    async with asyncio.timeout(5):
        while not peer.tls_failures:
            await asyncio.sleep(0.01)


async def test_a_certificate_refused_after_a_tls13_handshake_fails_closed(
    agent: IdentityAgent, mtls_engine: GrantEngine, server_ca: trustme.CA
) -> None:
    """TLS 1.3 refuses after the client's handshake is done; the alert may be lost."""
    with peer_for(agent, server_ca, bundle=trustme.CA().cert_pem.bytes()) as peer:
        error = await failure(mtls_engine, mtls(peer, server_ca))
        assert peer.request_count == 0
        await settled(peer)
    assert error.reason in ("token_endpoint_rejected", "token_endpoint_error")
    if error.reason == "token_endpoint_error":
        assert "may have refused the client certificate" in error.detail


async def test_the_endpoint_ca_is_pinned(
    mtls_engine: GrantEngine, peer: OAuthPeer, server_ca: trustme.CA
) -> None:
    other = trustme.CA().cert_pem.bytes().decode()
    error = await failure(mtls_engine, mtls(peer, server_ca, token_endpoint_ca=other))
    assert error.reason == "token_endpoint_unreachable"
    assert "CERTIFICATE_VERIFY_FAILED" in error.detail
    error = await failure(mtls_engine, mtls(peer, server_ca, token_endpoint_ca="", audience="b"))
    assert error.reason == "token_endpoint_unreachable"
    assert peer.request_count == 0


async def test_a_pinned_ca_excludes_the_extra_ca(
    recording: RecordingIdentity, peer: OAuthPeer, server_ca: trustme.CA
) -> None:
    """token_endpoint_ca names who signs this endpoint: --upstream-ca does not widen it."""
    engine = GrantEngine(
        recording,
        client=TokenEndpointClient(extra_ca_pem=server_ca.cert_pem.bytes().decode()),
        registry=CollectorRegistry(),
    )
    other = trustme.CA().cert_pem.bytes().decode()
    try:
        error = await failure(engine, mtls(peer, server_ca, token_endpoint_ca=other))
    finally:
        await engine.aclose()
    assert error.reason == "token_endpoint_unreachable"
    assert "CERTIFICATE_VERIFY_FAILED" in error.detail
    assert peer.request_count == 0


async def test_the_extra_ca_serves_endpoints_without_their_own(
    recording: RecordingIdentity, peer: OAuthPeer, server_ca: trustme.CA
) -> None:
    engine = GrantEngine(
        recording,
        client=TokenEndpointClient(extra_ca_pem=server_ca.cert_pem.bytes().decode()),
        registry=CollectorRegistry(),
    )
    try:
        token = await engine.obtain(mtls(peer, server_ca, token_endpoint_ca=""))
    finally:
        await engine.aclose()
    assert token.value == peer.issued[0]


async def test_the_key_never_touches_the_temporary_directory(
    mtls_engine: GrantEngine,
    peer: OAuthPeer,
    server_ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
    recording: RecordingIdentity,
) -> None:
    private_tmp = tempfile.mkdtemp(prefix="gbx-keys-")
    monkeypatch.setattr(tempfile, "tempdir", private_tmp)
    before = set(os.listdir("/proc/self/fd"))
    await mtls_engine.obtain(mtls(peer, server_ca))
    assert os.listdir(private_tmp) == []
    os.rmdir(private_tmp)
    key = recording.x509[0].private_key_pem
    leaked = [fd for fd in set(os.listdir("/proc/self/fd")) - before if _is_memfd(fd)]
    assert leaked == [], "the memory file holding the key must be closed after loading"
    assert key  # the key existed, in memory only
    assert time.time() < recording.x509[0].expires_at


def _is_memfd(fd: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
    except OSError:  # closed meanwhile (the event loop's own descriptors come and go)
        return False
