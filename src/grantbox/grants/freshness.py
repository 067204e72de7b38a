"""When a refused client assertion deserves one more try with a fresh JWT-SVID.

A Workload API may hand out an SVID that is valid but old: SPIRE's agent serves a cached
JWT-SVID until about half of its lifetime has passed, while Keycloak refuses an assertion
whose ``iat`` is more than 300 s ago (``invalid_client``). Asking again after such a refusal
can only help when the SVID we sent was not brand new, and only when the Workload API then
returns a different one. Everything here is a pure decision over plain values.
"""

from __future__ import annotations

import re
from typing import Any

import jwt

from .errors import GrantFailure

# An SVID younger than this was minted for this request; a new one would be refused alike.
STALE_AFTER_SECONDS = 5.0

# The OAuth error code as ``answer.failure_for_status`` words it in a rejection's detail.
_INVALID_CLIENT = re.compile(r"(?:^|[:;]\s*)error=invalid_client(?:;|$)")


def issued_at(token: str) -> float | None:
    """The ``iat`` claim of a JWT, read without verifying it (None when absent or unreadable).

    Only our own retry decision depends on it; the token endpoint verifies the SVID.
    """
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    value = claims.get("iat")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def refused_as_client(reason: str, detail: str) -> bool:
    """The token endpoint rejected the client itself (``invalid_client``), not the request."""
    return (
        reason == GrantFailure.TOKEN_ENDPOINT_REJECTED
        and _INVALID_CLIENT.search(detail) is not None
    )


def worth_fresh_svid(reason: str, detail: str, presented: str, now: float) -> bool:
    """Whether to fetch a fresh SVID and retry once after this failure.

    ``presented`` is the SVID that was refused, ``now`` wall-clock seconds. An SVID without a
    readable ``iat`` counts as possibly old.
    """
    if not refused_as_client(reason, detail):
        return False
    iat = issued_at(presented)
    return iat is None or now - iat >= STALE_AFTER_SECONDS
