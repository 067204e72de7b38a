"""How a protected service decides on a request's bearer token (RFC 6750).

No token → 401 with a bare ``WWW-Authenticate: Bearer`` challenge. A token that is not
genuine (malformed, unknown key, bad signature, wrong issuer, expired) → 401
``invalid_token``. A genuine token that is not for this service (audience or scope
lacking its name) → 403 ``insufficient_scope``. Pure: keys and clock come from the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from key_set import VerificationKey, key_fits

# The demo issuer signs with ES256 only; accepting anything else would only widen the door.
ACCESS_TOKEN_ALGORITHMS = ("ES256",)
# Claims a service echoes back so a caller can see what it was granted.
ECHOED_CLAIMS = ("iss", "sub", "aud", "scope", "azp", "client_id", "iat", "exp", "jti")


class BearerRejected(Exception):
    """A refused request; ``challenge`` is the ``WWW-Authenticate`` value to send."""

    def __init__(self, status: int, error: str | None, description: str, realm: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.realm = realm

    @property
    def challenge(self) -> str:
        if self.error is None:
            return f'Bearer realm="{self.realm}"'
        return f'Bearer realm="{self.realm}", error="{self.error}"'

    def body(self) -> dict[str, str]:
        return {"error": self.error or "unauthorized", "error_description": self.description}


@dataclass(frozen=True)
class ServicePolicy:
    name: str
    """The service's audience and the scope a caller needs."""
    issuer: str
    leeway: float = 0.0


def bearer_token(authorization: Sequence[str], realm: str) -> str:
    """The token of exactly one ``Authorization: Bearer`` header."""
    if not authorization:
        raise BearerRejected(401, None, "a bearer token is required", realm)
    if len(authorization) > 1:
        raise BearerRejected(400, "invalid_request", "more than one Authorization header", realm)
    scheme, _, token = authorization[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise BearerRejected(
            401, "invalid_token", "expected 'Authorization: Bearer <token>'", realm
        )
    return token


def token_kid(token: str, realm: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise BearerRejected(401, "invalid_token", "the token is not a JWT", realm) from None
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise BearerRejected(401, "invalid_token", "the token names no key", realm)
    return kid


def check_access_token(
    token: str, keys: Mapping[str, VerificationKey], policy: ServicePolicy, now: float
) -> dict[str, Any]:
    """The token's claims if it is genuine and grants access to this service."""
    realm = policy.name
    key = keys.get(token_kid(token, realm))
    if key is None:
        raise BearerRejected(401, "invalid_token", "the token is signed by an unknown key", realm)
    if not all(key_fits(alg, key.public_key) for alg in ACCESS_TOKEN_ALGORITHMS):
        raise BearerRejected(401, "invalid_token", "the token's key is not an ES256 key", realm)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.public_key,
            algorithms=list(ACCESS_TOKEN_ALGORITHMS),
            issuer=policy.issuer,
            leeway=policy.leeway,
            options={
                "require": ["iss", "aud", "exp", "scope"],
                "verify_aud": False,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise BearerRejected(
            401, "invalid_token", f"the token is not valid ({type(exc).__name__})", realm
        ) from None
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float) or exp <= now - policy.leeway:
        raise BearerRejected(401, "invalid_token", "the token has expired", realm)
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or policy.name not in audiences:
        raise BearerRejected(403, "insufficient_scope", f"the token is not for {realm}", realm)
    scope = claims["scope"]
    if not isinstance(scope, str) or policy.name not in scope.split(" "):
        raise BearerRejected(
            403, "insufficient_scope", f"the token's scope does not include {realm}", realm
        )
    return {name: claims[name] for name in ECHOED_CLAIMS if name in claims}
