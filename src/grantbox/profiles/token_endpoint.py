"""Token endpoint URL rules and the SVID audience derived from the endpoint."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .hosts import cleartext_allowed

_REALM = re.compile(r"^(?P<base>.*/realms/[^/]+)/")


def token_endpoint_problem(url: str) -> str | None:
    """Why a token endpoint URL is unacceptable, or ``None`` when it is fine."""
    if url != url.strip() or not url:
        return "token_endpoint must be an absolute URL without surrounding whitespace"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"token_endpoint is not a valid URL: {exc}"
    del port
    if not parts.scheme or not parts.hostname:
        return "token_endpoint must be an absolute URL"
    if parts.username is not None or parts.password is not None:
        return "token_endpoint must not carry credentials in the URL"
    if parts.fragment:
        return "token_endpoint must not have a fragment"
    scheme = parts.scheme.lower()
    if scheme == "https":
        return None
    if scheme == "http" and cleartext_allowed(parts.hostname):
        return None
    return "token_endpoint must use https, except http for loopback or in-cluster service hosts"


def derive_svid_audience(token_endpoint: str) -> str:
    """The JWT-SVID audience when none is configured.

    Keycloak expects its realm issuer (``…/realms/<name>``); anything else gets the token
    endpoint URL itself.
    """
    parts = urlsplit(token_endpoint)
    match = _REALM.match(parts.path)
    if match:
        return f"{parts.scheme}://{parts.netloc}{match.group('base')}"
    return token_endpoint


def resource_problem(value: str) -> str | None:
    """Why a resource indicator is unacceptable (RFC 8707 §2: an absolute URI without a
    fragment; we also insist on http(s) and a host so that it names a service)."""
    if not value or value != value.strip() or any(ch.isspace() for ch in value):
        return "resource must be an absolute URL without whitespace"
    if not value.isprintable():
        return "resource must not contain control characters"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return f"resource is not a valid URL: {exc}"
    del port
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        return "resource must be an absolute http(s) URL such as https://api.example.com/"
    if parts.username is not None or parts.password is not None:
        return "resource must not carry credentials in the URL"
    if parts.fragment or value.endswith("#"):
        return "resource must not have a fragment (RFC 8707)"
    return None
