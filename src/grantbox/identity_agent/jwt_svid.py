"""Minting and validating JWT-SVIDs exactly as SPIRE issues them.

Header: ``alg``, ``kid``, ``typ: JWT``. Claims: ``sub``, ``aud`` (always a list), ``exp``,
``iat``, and ``iss`` only when an issuer URL is configured. Nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import jwt
from spiffe import SpiffeId

from .keyring import Keyring
from .keys import ALGORITHMS, SigningKey


def check_issuer(value: str) -> str:
    """An issuer must be an absolute http(s) URL: verifiers match it against OIDC discovery."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"issuer must be an absolute https URL, got {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("issuer must not carry credentials, a query or a fragment")
    return value


def svid_claims(
    spiffe_id: str, audiences: Sequence[str], now: float, ttl: float, issuer: str | None
) -> dict[str, Any]:
    """The claim set of a JWT-SVID; ``exp`` never exceeds ``now + ttl``."""
    if not audiences or any(not a for a in audiences):
        raise ValueError("a JWT-SVID needs at least one non-empty audience")
    claims: dict[str, Any] = {
        "sub": spiffe_id,
        "aud": list(dict.fromkeys(audiences)),
        "exp": math.floor(now + ttl),
        "iat": math.floor(now),
    }
    if issuer:
        claims["iss"] = issuer
    return claims


def mint(key: SigningKey, claims: dict[str, Any]) -> str:
    return jwt.encode(
        claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"}
    )


class InvalidSvid(ValueError):
    """A presented JWT-SVID failed validation; the message never contains the token."""


def validate(token: str, audience: str, ring: Keyring, trust_domain: str) -> dict[str, Any]:
    """Verify a JWT-SVID of our trust domain against the published keys; return its claims."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidSvid("not a JWT") from None
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidSvid(f"algorithm {alg!r} is not allowed")
    kid = header.get("kid")
    key = ring.find(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidSvid("signed by a key this trust domain does not publish")
    if key.algorithm != alg:
        raise InvalidSvid("algorithm does not match the key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.public_key,
            algorithms=[key.algorithm],
            audience=audience,
            options={"require": ["sub", "aud", "exp"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidSvid(f"rejected: {type(exc).__name__}") from None
    try:
        subject = SpiffeId(str(claims["sub"]))
    except Exception:
        raise InvalidSvid("sub is not a SPIFFE ID") from None
    if str(subject.trust_domain) != trust_domain:
        raise InvalidSvid("sub belongs to another trust domain")
    return claims
