"""TLS for token requests: whom the grant client trusts, and which certificate it presents.

Trust: the system roots plus any extra CA the supervisor was given (``--upstream-ca``), or,
for a binding with ``token_endpoint_ca``, that CA alone (the operator named who signs this
endpoint, so nobody else may). Client certificate: the X.509-SVID, for RFC 8705 mutual-TLS
client authentication.

Python's ``ssl`` loads a certificate and key only from a path. The key is handed over
through an anonymous memory file (``memfd_create``, opened as ``/proc/self/fd/N``), so it
never reaches a filesystem; only where that is impossible does it go to a 0600 file in a
fresh 0700 directory, removed as soon as it is loaded. Either way the key lives on only in
the context's memory, which is in the supervisor's process and nowhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import ssl
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

MAX_CONTEXTS = 32
MAX_CA_FILE_BYTES = 4 * 1024 * 1024


class ClientCertificate(Protocol):
    """What a grant needs of an X.509-SVID (``grantbox.identity.X509Svid`` fits)."""

    @property
    def spiffe_id(self) -> str: ...

    @property
    def cert_chain_pem(self) -> bytes: ...

    @property
    def private_key_pem(self) -> bytes: ...

    @property
    def fingerprint(self) -> str: ...


def trust_context(*, extra_ca_pem: str = "", pinned_ca_pem: str = "") -> ssl.SSLContext:
    """A client context that verifies servers: ``pinned_ca_pem`` alone when given, else the
    system roots plus ``extra_ca_pem``."""
    if pinned_ca_pem:
        return ssl.create_default_context(cadata=pinned_ca_pem)
    context = ssl.create_default_context()
    if extra_ca_pem:
        context.load_verify_locations(cadata=extra_ca_pem)
    return context


def read_ca_file(path: Path) -> str:
    """The certificates of an operator's CA file (``--upstream-ca``), as PEM.

    Checked when it is given, so a wrong file is one clear error at start rather than every
    sandbox's supervisor failing later with an SSL library message. Text between the PEM
    blocks (the comments of bundles such as curl's) is allowed; a private key is not: a CA
    file is public, and a key in it would be spread to every supervisor that reads it.
    Raises ``ValueError`` with one line that names the file, never its content.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CA_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(
            f"upstream CA file {path} cannot be read: {exc.strerror or 'error'}"
        ) from None
    if len(data) > MAX_CA_FILE_BYTES:
        raise ValueError(
            f"upstream CA file {path} is larger than {MAX_CA_FILE_BYTES // 1024 // 1024} MiB"
        )
    if b"PRIVATE KEY-----" in data:
        raise ValueError(
            f"upstream CA file {path} holds a private key; give it the CA certificates only"
        )
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(
            f"upstream CA file {path} holds no PEM certificate that can be read "
            "(-----BEGIN CERTIFICATE-----)"
        ) from None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path that reads ``data`` from memory; never a file on disk."""
    fd = os.memfd_create("grantbox-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        path = f"/proc/self/fd/{fd}"
        if not os.path.exists(path):
            raise OSError("/proc is not mounted")
        yield path
    finally:
        os.close(fd)


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A 0600 file in a fresh 0700 directory, removed when the block ends."""
    directory = tempfile.mkdtemp(prefix="grantbox-tls-")
    try:
        path = Path(directory) / "identity.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield str(path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def load_client_certificate(
    context: ssl.SSLContext, chain_pem: bytes, key_pem: bytes, *, memory: bool = True
) -> None:
    """Make ``context`` present ``chain_pem`` with ``key_pem`` (see the module docstring)."""
    data = chain_pem + key_pem
    opener = _memory_file if memory and hasattr(os, "memfd_create") else _private_file
    try:
        with opener(data) as path:
            context.load_cert_chain(path)
    except OSError:
        if opener is _private_file:
            raise
        with _private_file(data) as path:
            context.load_cert_chain(path)


class ContextCache:
    """SSL contexts by (trust, client certificate), so a rotated SVID gets a new context and
    an unchanged one is not reloaded for every request. Bounded; an evicted context stays
    valid for connections that still use it."""

    def __init__(self, extra_ca_pem: str = "", max_entries: int = MAX_CONTEXTS) -> None:
        self.extra_ca_pem = extra_ca_pem
        self.max_entries = max_entries
        self._contexts: OrderedDict[tuple[str, str], ssl.SSLContext] = OrderedDict()

    def __len__(self) -> int:
        return len(self._contexts)

    def get(
        self, pinned_ca_pem: str = "", certificate: ClientCertificate | None = None
    ) -> ssl.SSLContext:
        trust = hashlib.sha256(pinned_ca_pem.encode()).hexdigest() if pinned_ca_pem else ""
        key = (trust, certificate.fingerprint if certificate is not None else "")
        context = self._contexts.get(key)
        if context is not None:
            self._contexts.move_to_end(key)
            return context
        context = trust_context(extra_ca_pem=self.extra_ca_pem, pinned_ca_pem=pinned_ca_pem)
        if certificate is not None:
            load_client_certificate(
                context, certificate.cert_chain_pem, certificate.private_key_pem
            )
        self._contexts[key] = context
        while len(self._contexts) > self.max_entries:
            self._contexts.popitem(last=False)
        return context
