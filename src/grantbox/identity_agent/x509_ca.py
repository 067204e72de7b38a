"""The trust domain's X.509 authority: a CA that issues short-lived X.509-SVIDs.

Certificates are shaped as the X.509-SVID specification asks: the leaf carries exactly one
URI SAN (the SPIFFE ID), ``CA=false``, key usage ``digitalSignature`` only and both TLS
extended key usages, and it never outlives its CA. The CA is a self-signed signing
certificate whose URI SAN is the trust domain's ID; it is the X.509 bundle.

Every SVID gets a fresh key (the key is never reused across rotations). An SVID is handed to
every caller of the same identity until half of its life has passed, then a new one is
minted (SPIRE rotates at the same point), so streams have something new to send.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_X509_SVID_TTL = 3600.0
DEFAULT_CA_TTL = 365 * 24 * 3600.0
CA_RENEW_FRACTION = 0.1
"""A stored CA with less than this share of its life left is replaced at start."""
BACKDATE = 10.0
"""notBefore lies this far in the past, so a relying party with a slightly slow clock
accepts a certificate minted a moment ago."""


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(seconds), tz=datetime.UTC)


def _serial() -> int:
    return secrets.randbits(127) | 1


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA certificate and its key. The key never leaves this object but to be stored."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)

    @property
    def not_after(self) -> float:
        return self.certificate.not_valid_after_utc.timestamp()

    @property
    def not_before(self) -> float:
        return self.certificate.not_valid_before_utc.timestamp()

    def needs_renewal(self, now: float) -> bool:
        life = self.not_after - self.not_before
        return self.not_after - now < life * CA_RENEW_FRACTION

    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def to_pem(self) -> bytes:
        """Certificate and key as PEM, for the agent's private state file."""
        key = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self.certificate.public_bytes(serialization.Encoding.PEM) + key


def ca_from_pem(data: bytes, trust_domain: str) -> CertificateAuthority:
    """The stored CA, checked to belong to ``trust_domain`` and to match its key."""
    certificate = x509.load_pem_x509_certificate(data)
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("stored X.509 CA key is not an EC key")
    if key.public_key() != certificate.public_key():
        raise ValueError("stored X.509 CA key does not match its certificate")
    uris = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [f"spiffe://{trust_domain}"]:
        raise ValueError("stored X.509 CA belongs to another trust domain")
    return CertificateAuthority(certificate, key)


def new_ca(trust_domain: str, now: float, ttl: float = DEFAULT_CA_TTL) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "grantbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"grantbox identity agent CA {trust_domain}"),
        ]
    )
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(_serial())
        .not_valid_before(_utc(now - BACKDATE))
        .not_valid_after(_utc(now + ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(certificate, key)


@dataclass(frozen=True)
class IssuedSvid:
    """One X.509-SVID as the Workload API sends it: DER chain, PKCS#8 DER key, DER bundle."""

    spiffe_id: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)
    issued_at: float
    expires_at: float

    @property
    def rotate_at(self) -> float:
        """When callers should get a new SVID: half-way through this one's life."""
        return self.issued_at + (self.expires_at - self.issued_at) / 2

    def chain_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def key_der(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue_svid(ca: CertificateAuthority, spiffe_id: str, now: float, ttl: float) -> IssuedSvid:
    """A fresh key and a leaf for ``spiffe_id``, valid for ``ttl`` but never past the CA."""
    if ttl <= 0:
        raise ValueError("X.509-SVID ttl must be positive")
    if now >= ca.not_after:
        raise ValueError("the X.509 CA has expired")
    expires = min(now + ttl, ca.not_after)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "grantbox")]))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(_serial())
        .not_valid_before(_utc(max(now - BACKDATE, ca.not_before)))
        .not_valid_after(_utc(expires))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    # The certificate's own notAfter is whole seconds; the rotation math uses the same value.
    return IssuedSvid(
        spiffe_id=spiffe_id,
        certificate=certificate,
        key=key,
        issued_at=now,
        expires_at=certificate.not_valid_after_utc.timestamp(),
    )


class SvidCache:
    """The current X.509-SVID of each identity, minted on demand and replaced at half-life."""

    def __init__(self) -> None:
        self._current: dict[str, IssuedSvid] = {}

    def current(
        self, ca: CertificateAuthority, spiffe_id: str, now: float, ttl: float
    ) -> IssuedSvid:
        svid = self._current.get(spiffe_id)
        if svid is None or now >= svid.rotate_at or not _issued_by(svid, ca):
            svid = issue_svid(ca, spiffe_id, now, ttl)
            self._current = {k: v for k, v in self._current.items() if v.expires_at > now}
            self._current[spiffe_id] = svid
        return svid

    def forget(self, spiffe_id: str) -> None:
        self._current.pop(spiffe_id, None)


def _issued_by(svid: IssuedSvid, ca: CertificateAuthority) -> bool:
    return svid.certificate.issuer == ca.certificate.subject and (
        svid.certificate.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        ).value.key_identifier
        == x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key()).digest
    )
