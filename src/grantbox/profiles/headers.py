"""Header names a credential may be placed in."""

from __future__ import annotations

import re

# RFC 9110 token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Headers that frame the message or the connection: a credential there could smuggle a
# request or break the proxy's own framing.
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
    }
)


def header_name_problem(name: str) -> str | None:
    """Why ``name`` cannot carry a credential, or ``None`` when it can."""
    if not _TOKEN.fullmatch(name):
        return f"'{name}' is not a valid HTTP header name"
    if name.lower() in FORBIDDEN_HEADERS:
        return f"'{name}' frames the message or connection and may not carry a credential"
    return None
