"""The JWT-SVID a workload receives, and the minimal checks a client makes on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jwt
from spiffe import SpiffeId


@dataclass(frozen=True)
class JwtSvid:
    """A JWT-SVID. The token is a bearer credential, so it never appears in ``repr``."""

    token: str = field(repr=False)
    spiffe_id: str
    expires_at: float
    """Unix seconds (the ``exp`` claim)."""


class MalformedSvid(ValueError):
    """The agent returned something that is not a usable JWT-SVID; the message holds no token."""


def read_svid(token: str, audience: str, now: float) -> JwtSvid:
    """Decode (without verifying the signature) and check ``sub``, ``aud`` and ``exp``.

    The signature is the relying party's business; the client only makes sure it got a
    current JWT-SVID for the audience it asked for, so a broken agent fails here and not
    at the token endpoint.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token, options={"verify_signature": False, "verify_exp": False, "verify_aud": False}
        )
    except jwt.PyJWTError as exc:
        raise MalformedSvid(f"not a JWT ({type(exc).__name__})") from None
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise MalformedSvid("missing sub claim")
    try:
        SpiffeId(sub)
    except Exception:
        raise MalformedSvid("sub is not a SPIFFE ID") from None
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or audience not in audiences:
        raise MalformedSvid("aud does not contain the requested audience")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise MalformedSvid("missing or non-numeric exp claim")
    if exp <= now:
        raise MalformedSvid("already expired")
    return JwtSvid(token=token, spiffe_id=sub, expires_at=float(exp))
