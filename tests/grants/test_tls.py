"""TLS settings of token requests: pinned trust, client certificates loaded from memory (or a
private file that is gone right after), and contexts reused per certificate."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from grantbox.grants import trust_context
from grantbox.grants.tls import ContextCache, load_client_certificate
from grantbox.identity_agent.x509_ca import CertificateAuthority, issue_svid, new_ca
from tests.support.oauth_peer import OAuthPeer, mutual_tls_context, running_peer

SPIFFE_ID = "spiffe://example.org/grantbox/sandbox/t"


@dataclass(frozen=True)
class Certificate:
    spiffe_id: str
    cert_chain_pem: bytes
    private_key_pem: bytes
    fingerprint: str


def certificate(ca: CertificateAuthority) -> Certificate:
    svid = issue_svid(ca, SPIFFE_ID, time.time(), 60)
    chain = svid.certificate.public_bytes(serialization.Encoding.PEM)
    key = svid.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Certificate(SPIFFE_ID, chain, key, hashlib.sha256(chain).hexdigest())


@pytest.fixture
def client_ca() -> CertificateAuthority:
    return new_ca("example.org", time.time())


@pytest.fixture
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def peer(client_ca: CertificateAuthority, server_ca: trustme.CA) -> Iterator[OAuthPeer]:
    bundle = client_ca.certificate.public_bytes(serialization.Encoding.PEM)
    context = mutual_tls_context(server_ca.issue_cert("127.0.0.1"), bundle)
    with running_peer(
        oidc_url=None, trust_domain="example.org", client_auth="tls", server_context=context
    ) as running:
        yield running


@pytest.mark.parametrize("memory", [True, False], ids=["memfd", "private-file"])
async def test_a_loaded_certificate_is_presented_and_leaves_nothing_behind(
    peer: OAuthPeer,
    client_ca: CertificateAuthority,
    server_ca: trustme.CA,
    memory: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private_tmp = tempfile.mkdtemp(prefix="gbx-tls-")
    monkeypatch.setattr(tempfile, "tempdir", private_tmp)
    mine = certificate(client_ca)
    context = trust_context(pinned_ca_pem=server_ca.cert_pem.bytes().decode())
    load_client_certificate(context, mine.cert_chain_pem, mine.private_key_pem, memory=memory)
    assert os.listdir(private_tmp) == []
    os.rmdir(private_tmp)
    async with httpx.AsyncClient(verify=context, trust_env=False) as http:
        answer = await http.post(peer.token_url, data={"grant_type": "client_credentials"})
    assert answer.status_code == 400  # no client_id: but the handshake went through
    assert peer.seen[0].peer_uri == SPIFFE_ID


def test_a_pinned_context_trusts_only_its_ca(server_ca: trustme.CA) -> None:
    context = trust_context(pinned_ca_pem=server_ca.cert_pem.bytes().decode())
    assert len(context.get_ca_certs()) == 1


def test_contexts_are_reused_per_trust_and_certificate(
    client_ca: CertificateAuthority, server_ca: trustme.CA
) -> None:
    cache = ContextCache(max_entries=3)
    first, second = certificate(client_ca), certificate(client_ca)
    pinned = server_ca.cert_pem.bytes().decode()
    assert cache.get() is cache.get()
    assert cache.get(pinned, first) is cache.get(pinned, first)
    assert cache.get(pinned, second) is not cache.get(pinned, first)
    assert cache.get("", first) is not cache.get(pinned, first)
    assert len(cache) == 3
    cache.get(pinned)
    assert len(cache) == 3  # bounded: the least recently used went


def test_a_key_that_does_not_match_is_refused(client_ca: CertificateAuthority) -> None:
    mine, other = certificate(client_ca), certificate(client_ca)
    context = trust_context()
    with pytest.raises(Exception, match=r"KEY_VALUES_MISMATCH|key values mismatch"):
        load_client_certificate(context, mine.cert_chain_pem, other.private_key_pem)
