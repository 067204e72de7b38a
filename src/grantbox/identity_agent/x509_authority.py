"""The agent's X.509 side: the stored CA, the current SVID per identity, and the bundle.

The CA is kept in the state directory (mode 0600) so that relying parties configured with
the bundle keep trusting it across agent restarts; without a state directory it lives in
memory only. A CA near the end of its life is replaced when the agent starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .keystore import KeystoreError, read_private_file, write_private_file
from .x509_ca import (
    DEFAULT_CA_TTL,
    CertificateAuthority,
    IssuedSvid,
    SvidCache,
    ca_from_pem,
    new_ca,
)

log = logging.getLogger(__name__)

X509_CA_FILE = "x509-ca.pem"


class X509Authority:
    def __init__(
        self,
        *,
        trust_domain: str,
        svid_ttl: float,
        state_dir: Path | None,
        ca_ttl: float = DEFAULT_CA_TTL,
    ) -> None:
        if svid_ttl <= 0 or ca_ttl <= 0:
            raise ValueError("X.509 SVID and CA lifetimes must be positive")
        self.trust_domain = trust_domain
        self.svid_ttl = svid_ttl
        self.ca_ttl = ca_ttl
        self._path = state_dir / X509_CA_FILE if state_dir is not None else None
        self._ca: CertificateAuthority | None = None
        self._svids = SvidCache()

    @property
    def ca(self) -> CertificateAuthority:
        if self._ca is None:
            raise RuntimeError("X.509 authority not loaded")
        return self._ca

    def load(self, now: float) -> None:
        """Load the stored CA (or keep the one in memory), replacing it when it is old."""
        ca = self._ca
        if ca is None and self._path is not None:
            data = read_private_file(self._path)
            if data is not None:
                try:
                    ca = ca_from_pem(data, self.trust_domain)
                except ValueError as exc:
                    raise KeystoreError(f"{self._path} is not a usable X.509 CA: {exc}") from None
        if ca is None or ca.needs_renewal(now):
            ca = new_ca(self.trust_domain, now, self.ca_ttl)
            if self._path is not None:
                write_private_file(self._path, ca.to_pem())
            log.info(
                "x509 ca created",
                extra={"fields": {"trust_domain": self.trust_domain, "not_after": ca.not_after}},
            )
        self._ca = ca

    def svid_for(self, spiffe_id: str, now: float) -> IssuedSvid:
        """The identity's current X.509-SVID (a new one once the last is half-way through)."""
        return self._svids.current(self.ca, spiffe_id, now, self.svid_ttl)

    def forget(self, spiffe_id: str) -> None:
        self._svids.forget(spiffe_id)

    def bundle_der(self) -> bytes:
        """The trust domain's X.509 bundle as the Workload API sends it (DER certificates)."""
        return self.ca.der()
