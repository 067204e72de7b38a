"""TLS interception: a CA minted at start-up (key only in memory) and per-host leaves.

The CA's private key is generated in memory and never serialised. Leaf certificates are
minted on demand for each host the agent CONNECTs to, signed by the CA, all sharing one
leaf key, and kept in a bounded LRU of ready ``SSLContext`` objects. The stdlib can only
load a certificate chain from a path, so the leaf chain is handed to it through an
anonymous memory file (``memfd``), which never reaches a disk.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections import OrderedDict
from pathlib import Path
from threading import Lock

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ALPN = ["http/1.1"]
LEAF_CACHE_SIZE = 512
_LEAF_LIFETIME = datetime.timedelta(days=7)
_BACKDATE = datetime.timedelta(hours=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _load_ca(
    key_pem: bytes, cert_pem: bytes
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the interception CA key must be an EC key")
    if cert.public_key() != key.public_key():
        raise ValueError("the interception CA certificate does not match its key")
    return key, cert


class InterceptionCA:
    """The proxy's CA. ``repr`` shows the subject only."""

    def __init__(
        self,
        common_name: str = "grantbox egress proxy CA",
        *,
        leaf_cache_size: int = LEAF_CACHE_SIZE,
        issued: tuple[bytes, bytes] | None = None,
    ) -> None:
        """``issued``: an existing CA as ``(private key PEM, certificate PEM)`` (a proxy
        worker takes its parent's); otherwise a new one is made."""
        self._leaf_cache_size = leaf_cache_size
        if issued is not None:
            self._key, self._cert = _load_ca(*issued)
        else:
            self._key, self._cert = _new_ca(common_name)
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM)
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._lock = Lock()
        self.minted = 0

    def __repr__(self) -> str:
        return f"InterceptionCA(subject={self._cert.subject.rfc4514_string()!r})"

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def issued(self) -> tuple[bytes, bytes]:
        """``(private key PEM, certificate PEM)``, for a proxy worker of this process only:
        the key goes over a socketpair to a child, never to a file or a log."""
        key = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key, self.cert_pem

    def mint_leaf(self, host: str) -> x509.Certificate:
        """A server certificate for ``host`` (a DNS name or an IP literal)."""
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            san = x509.DNSName(host)
        public = self._leaf_key.public_key()
        now = _now()
        cn = host[:64]
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LEAF_LIFETIME)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    def server_context(self, host: str) -> ssl.SSLContext:
        """A ready server-side context presenting a leaf for ``host`` (cached, bounded)."""
        key = host.lower()
        with self._lock:
            context = self._contexts.get(key)
            if context is not None:
                self._contexts.move_to_end(key)
                return context
        context = self._build_context(self.mint_leaf(key))
        with self._lock:
            self._contexts[key] = context
            self.minted += 1
            while len(self._contexts) > self._leaf_cache_size:
                self._contexts.popitem(last=False)
        return context

    def _build_context(self, leaf: x509.Certificate) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(ALPN)
        chain = leaf.public_bytes(serialization.Encoding.PEM) + self.cert_pem
        _load_chain_from_memory(context, chain, self._leaf_key_pem)
        return context


def _load_chain_from_memory(context: ssl.SSLContext, chain: bytes, key: bytes) -> None:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("grantbox-leaf", os.MFD_CLOEXEC)
        try:
            os.write(fd, chain + key)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="grantbox-leaf-") as directory:  # pragma: no cover
        path = Path(directory) / "leaf.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(chain + key)
        context.load_cert_chain(path)


def upstream_context(extra_ca_file: Path | None = None) -> ssl.SSLContext:
    """Client context for upstreams: system roots, plus an extra CA when given."""
    context = ssl.create_default_context()
    if extra_ca_file is not None:
        context.load_verify_locations(cafile=str(extra_ca_file))
    context.set_alpn_protocols(ALPN)
    return context
