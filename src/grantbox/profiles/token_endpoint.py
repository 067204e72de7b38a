"""Token endpoint URL rules, and which JWT-SVID audience may be sent to an endpoint.

An SVID is a bearer credential for whoever its audience names. Handing one minted for
issuer I to a token endpoint E lets E replay it at I and get tokens in the sandbox's name,
so the audience must identify the endpoint it is sent to: the endpoint's origin, or an
issuer URL the endpoint is served under (a Keycloak realm URL for its realm's token
endpoint), compared segment by segment so ``/realms/r`` never covers ``/realms/r2``.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

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


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def svid_audience_problem(audience: str, token_endpoint: str) -> str | None:
    """Why an SVID for ``audience`` must not be sent to ``token_endpoint``, or None.

    Empty means derived from the endpoint, which always fits. Otherwise the audience must
    be an absolute URL without credentials, query or fragment, on the endpoint's origin
    (scheme, host ignoring case, port with defaults filled in), whose path is empty or
    whole leading segments of the endpoint's path (a trailing slash is allowed).
    """
    if not audience:
        return None
    reason = (
        f"jwt_svid_audience {audience!r} does not identify the token endpoint "
        f"{token_endpoint!r}: an SVID minted for another issuer could be replayed there. Use "
        "the endpoint's origin or the issuer URL it is served under (for Keycloak, the realm "
        "URL), or leave it empty to derive it"
    )
    try:
        wanted = urlsplit(audience)
        served = urlsplit(token_endpoint)
        origins_match = _origin(wanted) == _origin(served)
    except ValueError:
        return reason
    if not wanted.hostname or not origins_match or "@" in wanted.netloc:
        return reason
    if "?" in audience or "#" in audience:
        return reason
    prefix = wanted.path.split("/")
    if prefix[-1] == "":
        prefix.pop()  # a trailing slash, or the empty path
    path = served.path.split("/")
    if prefix and prefix != path[: len(prefix)]:
        return reason
    return None


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
