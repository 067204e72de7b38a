"""The X.509-SVID a workload receives, checked the way a client should before using it.

py-spiffe parses the Workload API's DER fields and enforces the X.509-SVID leaf rules (one
SPIFFE ID URI SAN, not a CA, digitalSignature). On top of that the key must match the leaf
and the chain must lead to a CA of the bundle the agent sent with it and be valid now, so a
broken agent fails here rather than in a TLS handshake with a token endpoint.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from spiffe import X509Bundle
from spiffe import X509Svid as SpiffeX509Svid
from spiffe.errors import PySpiffeError


class MalformedX509Svid(ValueError):
    """The agent returned something that is not a usable X.509-SVID; never holds key bytes."""


@dataclass(frozen=True)
class X509Svid:
    """An X.509-SVID with its key and trust bundle, in PEM. The key never appears in ``repr``."""

    spiffe_id: str
    cert_chain_pem: bytes = field(repr=False)
    private_key_pem: bytes = field(repr=False)
    bundle_pem: bytes = field(repr=False)
    expires_at: float
    """Unix seconds: the leaf's notAfter."""
    fingerprint: str
    """SHA-256 of the leaf certificate (hex): tells one SVID from its successor."""


def _pem(certificates: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def read_x509_svid(
    spiffe_id: str, chain_der: bytes, key_der: bytes, bundle_der: bytes, now: float
) -> X509Svid:
    """Parse and check one ``X509SVID`` message of ``FetchX509SVID``."""
    try:
        svid = SpiffeX509Svid.parse_raw(chain_der, key_der)
    except (PySpiffeError, ValueError) as exc:
        raise MalformedX509Svid(f"not an X.509-SVID ({type(exc).__name__})") from None
    if svid.leaf.public_key() != svid.private_key.public_key():
        raise MalformedX509Svid("private key does not belong to the certificate")
    if str(svid.spiffe_id) != spiffe_id:
        raise MalformedX509Svid("certificate SPIFFE ID differs from the one announced")
    try:
        bundle = X509Bundle.parse_raw(svid.spiffe_id.trust_domain, bundle_der)
    except (PySpiffeError, ValueError) as exc:
        raise MalformedX509Svid(f"unusable X.509 bundle ({type(exc).__name__})") from None
    chain = svid.cert_chain
    for child, parent in itertools.pairwise(chain):
        if not _issued_by(child, parent):
            raise MalformedX509Svid("certificate chain is not in issuing order")
    authorities = list(bundle.x509_authorities)
    if not any(_issued_by(chain[-1], ca) for ca in authorities):
        raise MalformedX509Svid("certificate chain does not lead to the trust bundle")
    for certificate in chain:
        if not certificate.not_valid_before_utc.timestamp() <= now:
            raise MalformedX509Svid("certificate is not valid yet")
        if certificate.not_valid_after_utc.timestamp() <= now:
            raise MalformedX509Svid("certificate has expired")
    key_pem = svid.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    leaf = svid.leaf
    return X509Svid(
        spiffe_id=spiffe_id,
        cert_chain_pem=_pem(chain),
        private_key_pem=key_pem,
        bundle_pem=_pem(sorted(authorities, key=lambda c: c.serial_number)),
        expires_at=leaf.not_valid_after_utc.timestamp(),
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )
