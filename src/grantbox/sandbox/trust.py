"""The CA bundle the agent trusts: the system roots plus the proxy's interception CA."""

from __future__ import annotations

import ssl
from pathlib import Path

_FALLBACK_ROOTS = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


def system_roots_pem() -> str:
    """The host's CA roots as PEM text, or empty when the host has none."""
    candidates = [ssl.get_default_verify_paths().cafile, *_FALLBACK_ROOTS]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text(encoding="ascii", errors="ignore")
    return ""


def trust_bundle(proxy_ca_pem: str, roots_pem: str | None = None) -> str:
    """System roots followed by the proxy CA; the proxy CA must be a PEM certificate."""
    if "-----BEGIN CERTIFICATE-----" not in proxy_ca_pem:
        raise ValueError("proxy CA is not a PEM certificate")
    roots = system_roots_pem() if roots_pem is None else roots_pem
    parts = [part.strip() for part in (roots, proxy_ca_pem) if part.strip()]
    return "\n".join(parts) + "\n"
