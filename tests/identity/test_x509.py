"""X.509-SVIDs: the agent issues them from its CA (shape, lifetime, rotation streamed at
half-life, bundle, persistence), py-spiffe reads them, and our client checks what it gets."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from spiffe import TrustDomain, WorkloadApiClient

from grantbox.identity import (
    IdentityDenied,
    IdentityUnavailable,
    MalformedX509Svid,
    WorkloadIdentityClient,
    X509Svid,
    read_x509_svid,
)
from grantbox.identity import workload_api as wapi
from grantbox.identity_agent import IdentityAgent
from grantbox.identity_agent.x509_authority import X509_CA_FILE, X509Authority
from grantbox.identity_agent.x509_ca import SvidCache, issue_svid, new_ca
from tests.support.identity_agent import running_agent

from .conftest import SANDBOX_ID, SANDBOX_PATH, TRUST_DOMAIN, call
from .test_client import ScriptedWorkloadApi, scripted_server

NOW = 1_800_000_000.0


def leaf_of(svid: X509Svid) -> x509.Certificate:
    return x509.load_pem_x509_certificates(svid.cert_chain_pem)[0]


async def test_client_receives_a_spiffe_shaped_svid_that_chains_to_the_bundle(
    agent: IdentityAgent,
) -> None:
    async with WorkloadIdentityClient(str(agent.socket_path("s1"))) as client:
        before = time.time()
        svid = await client.fetch_x509_svid()
    assert svid.spiffe_id == SANDBOX_ID
    leaf = leaf_of(svid)
    (ca,) = x509.load_pem_x509_certificates(svid.bundle_pem)
    assert ca.public_bytes(serialization.Encoding.PEM) == agent.x509_bundle_pem()
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [SANDBOX_ID]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    purposes = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in purposes
    assert ExtendedKeyUsageOID.SERVER_AUTH in purposes
    # Default lifetime: an hour, like SPIRE's.
    assert before + 3590 <= svid.expires_at <= time.time() + 3600
    key = serialization.load_pem_private_key(svid.private_key_pem, None)
    assert key.public_key() == leaf.public_key()
    assert b"PRIVATE KEY" not in repr(svid).encode()
    assert svid.private_key_pem.decode() not in repr(svid)


async def test_pyspiffe_reads_our_x509_svid_and_bundles(agent: IdentityAgent) -> None:
    """An independent parser (py-spiffe) accepts what the agent streams."""
    socket = f"unix:{agent.socket_path('s1')}"

    def use_pyspiffe() -> tuple[Any, Any]:
        with WorkloadApiClient(socket, default_timeout=5.0) as client:
            return client.fetch_x509_context(), client.fetch_x509_bundles()

    context, bundles = await asyncio.to_thread(use_pyspiffe)
    svid = context.default_svid
    assert str(svid.spiffe_id) == SANDBOX_ID
    bundle = bundles.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert bundle is not None
    (authority,) = bundle.x509_authorities
    svid.leaf.verify_directly_issued_by(authority)
    streamed = context.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(TRUST_DOMAIN))
    assert streamed is not None and streamed.x509_authorities == bundle.x509_authorities


async def test_rotation_is_streamed_at_half_life_with_a_new_key(tmp_path: Path) -> None:
    async with (
        running_agent(tmp_path, workloads={"s1": SANDBOX_PATH}, x509_svid_ttl=4.0) as agent,
        grpc.aio.insecure_channel(f"unix:{agent.socket_path('s1')}") as channel,
    ):
        stream = wapi.WorkloadApiStub(channel).FetchX509SVID(
            wapi.X509SVIDRequest(), metadata=wapi.SECURITY_METADATA, timeout=20
        )
        try:
            first = await stream.read()
            received = time.time()
            second = await stream.read()
            rotated = time.time()
        finally:
            stream.cancel()
    one, two = (
        read_x509_svid(
            m.svids[0].spiffe_id,
            m.svids[0].x509_svid,
            m.svids[0].x509_svid_key,
            m.svids[0].bundle,
            time.time() - 0.5,
        )
        for m in (first, second)
    )
    assert one.fingerprint != two.fingerprint
    assert one.private_key_pem != two.private_key_pem  # never the same key twice
    assert two.expires_at > one.expires_at
    # Sent again about half-way through the first SVID's four seconds, not at its end.
    assert 0.5 <= rotated - received <= 3.5
    assert rotated < one.expires_at


async def test_callers_share_the_current_svid_until_it_is_rotated(agent: IdentityAgent) -> None:
    async with WorkloadIdentityClient(str(agent.socket_path("s1"))) as client:
        first, again = await client.fetch_x509_svid(), await client.fetch_x509_svid()
    assert first.fingerprint == again.fingerprint


async def test_each_workload_gets_its_own_identity(agent: IdentityAgent) -> None:
    other = agent.add_workload("s2", "grantbox/sandbox/s2")
    async with WorkloadIdentityClient(str(other)) as client:
        theirs = await client.fetch_x509_svid()
    assert theirs.spiffe_id == "spiffe://example.org/grantbox/sandbox/s2"


async def test_a_caller_outside_the_uid_list_is_denied(agent: IdentityAgent) -> None:
    socket = agent.add_workload("locked", "grantbox/locked", uids=[65534])
    assert os.geteuid() != 65534
    async with WorkloadIdentityClient(str(socket), call_timeout=0.5, deadline=1.0) as client:
        with pytest.raises(IdentityDenied) as info:
            await client.fetch_x509_svid()
    assert info.value.reason == "workload_identity_denied"


async def test_the_ca_survives_a_restart_of_the_agent(tmp_path: Path) -> None:
    async with running_agent(tmp_path, workloads={"s1": SANDBOX_PATH}) as first:
        bundle = first.x509_bundle_pem()
    stored = tmp_path / "identity-state" / X509_CA_FILE
    assert stored.stat().st_mode & 0o777 == 0o600
    async with running_agent(tmp_path, workloads={"s1": SANDBOX_PATH}) as second:
        assert second.x509_bundle_pem() == bundle
        async with WorkloadIdentityClient(str(second.socket_path("s1"))) as client:
            svid = await client.fetch_x509_svid()
    assert svid.bundle_pem == bundle


def test_a_ca_near_its_end_is_replaced_and_one_of_another_domain_refused(tmp_path: Path) -> None:
    authority = X509Authority(
        trust_domain="example.org", svid_ttl=60, state_dir=tmp_path, ca_ttl=1000
    )
    authority.load(NOW)
    original = authority.ca.certificate
    again = X509Authority(trust_domain="example.org", svid_ttl=60, state_dir=tmp_path, ca_ttl=1000)
    again.load(NOW + 850)  # 150 s of 1000 left: kept
    assert again.ca.certificate == original
    renewed = X509Authority(
        trust_domain="example.org", svid_ttl=60, state_dir=tmp_path, ca_ttl=1000
    )
    renewed.load(NOW + 950)  # 50 s left: replaced
    assert renewed.ca.certificate != original
    foreign = X509Authority(trust_domain="other.org", svid_ttl=60, state_dir=tmp_path)
    with pytest.raises(Exception, match="another trust domain"):
        foreign.load(NOW)


def test_an_svid_never_outlives_its_ca() -> None:
    ca = new_ca("example.org", NOW, ttl=100)
    svid = issue_svid(ca, SANDBOX_ID, NOW + 50, ttl=3600)
    assert svid.expires_at == ca.not_after
    with pytest.raises(ValueError, match="expired"):
        issue_svid(ca, SANDBOX_ID, NOW + 200, ttl=60)


def test_the_cache_rotates_at_half_life_and_forgets() -> None:
    ca = new_ca("example.org", NOW)
    cache = SvidCache()
    first = cache.current(ca, SANDBOX_ID, NOW, 100)
    assert cache.current(ca, SANDBOX_ID, NOW + 49, 100) is first
    second = cache.current(ca, SANDBOX_ID, NOW + 50, 100)
    assert second is not first
    cache.forget(SANDBOX_ID)
    assert cache.current(ca, SANDBOX_ID, NOW + 51, 100) is not second
    renewed_ca = new_ca("example.org", NOW + 60)
    assert cache.current(renewed_ca, SANDBOX_ID, NOW + 61, 100).certificate.issuer == (
        renewed_ca.certificate.subject
    )


def _message(
    ca_time: float = NOW,
    *,
    spiffe_id: str = SANDBOX_ID,
    foreign_bundle: bool = False,
    other_key: bool = False,
    ttl: float = 60,
) -> tuple[str, bytes, bytes, bytes]:
    ca = new_ca("example.org", ca_time)
    svid = issue_svid(ca, SANDBOX_ID, ca_time, ttl)
    bundle = new_ca("example.org", ca_time).der() if foreign_bundle else ca.der()
    key = svid.key_der()
    if other_key:
        key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return spiffe_id, svid.chain_der(), key, bundle


@pytest.mark.parametrize(
    ("message", "now", "why"),
    [
        (_message(foreign_bundle=True), NOW, "does not lead to the trust bundle"),
        (_message(other_key=True), NOW, "key does not belong"),
        (_message(spiffe_id="spiffe://example.org/else"), NOW, "differs from the one announced"),
        (_message(), NOW + 61, "expired"),
        (_message(), NOW - 3600, "not valid yet"),
        (("spiffe://example.org/x", b"junk", b"junk", b"junk"), NOW, "not an X.509-SVID"),
    ],
)
def test_read_x509_svid_refuses(
    message: tuple[str, bytes, bytes, bytes], now: float, why: str
) -> None:
    with pytest.raises(MalformedX509Svid, match=why) as info:
        read_x509_svid(*message, now)
    assert "PRIVATE" not in str(info.value)


class ScriptedX509(ScriptedWorkloadApi):
    """A foreign Workload API whose X.509 answers are scripted."""

    def __init__(
        self, code: grpc.StatusCode | None, message: tuple[str, bytes, bytes, bytes] | None = None
    ) -> None:
        super().__init__(code)
        self.message = message

    async def FetchX509SVID(self, request: Any, context: Any) -> Any:
        self.calls += 1
        if self.code is not None:
            await context.abort(self.code, "scripted")
        if self.message is None:
            return
        spiffe_id, chain, key, bundle = self.message
        yield wapi.X509SVIDResponse(
            svids=[
                wapi.X509SVID(
                    spiffe_id=spiffe_id, x509_svid=chain, x509_svid_key=key, bundle=bundle
                )
            ]
        )
        await asyncio.sleep(30)


async def test_an_unusable_answer_is_unavailable() -> None:
    now = time.time()
    async with (
        scripted_server(ScriptedX509(None, _message(now, other_key=True))) as path,
        WorkloadIdentityClient(path, call_timeout=1.0, deadline=2.0) as client,
    ):
        with pytest.raises(IdentityUnavailable, match=r"unusable X\.509-SVID"):
            await client.fetch_x509_svid()


async def test_a_stream_that_ends_at_once_is_unavailable() -> None:
    async with (
        scripted_server(ScriptedX509(None, None)) as path,
        WorkloadIdentityClient(path, call_timeout=1.0, deadline=2.0) as client,
    ):
        with pytest.raises(IdentityUnavailable, match=r"closed the X\.509-SVID stream"):
            await client.fetch_x509_svid()


async def test_unimplemented_x509_is_not_retried() -> None:
    """A Workload API with the X.509 profile disabled (the spec allows it)."""
    servicer = ScriptedX509(grpc.StatusCode.UNIMPLEMENTED)
    async with (
        scripted_server(servicer) as path,
        WorkloadIdentityClient(path, call_timeout=1.0, deadline=5.0) as client,
    ):
        with pytest.raises(IdentityUnavailable, match="UNIMPLEMENTED"):
            await client.fetch_x509_svid()
    assert servicer.calls == 1


async def test_a_good_answer_from_a_foreign_api_is_read() -> None:
    now = time.time()
    async with (
        scripted_server(ScriptedX509(None, _message(now))) as path,
        WorkloadIdentityClient(path, call_timeout=1.0, deadline=2.0) as client,
    ):
        svid = await client.fetch_x509_svid()
    assert svid.spiffe_id == SANDBOX_ID
    assert leaf_of(svid).not_valid_after_utc <= datetime.datetime.fromtimestamp(
        now + 61, datetime.UTC
    )


async def test_bundle_stream_sends_the_trust_domain_bundle(agent: IdentityAgent) -> None:
    response = await call(agent.socket_path("s1"), "FetchX509Bundles", wapi.X509BundlesRequest())
    assert dict(response.bundles) == {
        f"spiffe://{TRUST_DOMAIN}": x509.load_pem_x509_certificate(
            agent.x509_bundle_pem()
        ).public_bytes(serialization.Encoding.DER)
    }
