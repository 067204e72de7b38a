"""Who may call what: the operator token and per-sandbox supervisor tokens.

The operator token is a random bearer secret created on first start. Supervisor tokens are
Ed25519-signed JWTs with the gateway as audience, bound to exactly one sandbox id and short
lived; a supervisor renews its token before it expires. Neither is ever logged or shown in
a ``repr``.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .secret_files import read_or_create

ISSUER = "grantbox-gateway"
SUPERVISOR_SCOPE = "supervisor"
_LEEWAY_SECONDS = 5


class TokenError(Exception):
    """A presented token is missing, malformed, expired or for something else."""


@dataclass(frozen=True, slots=True)
class OperatorToken:
    """The operator's bearer secret; compared in constant time."""

    value: str = field(repr=False)

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(self.value.encode(), presented.encode())

    @classmethod
    def load_or_create(cls, path: Path) -> OperatorToken:
        data = read_or_create(path, lambda: (secrets.token_urlsafe(32) + "\n").encode())
        return cls(data.decode().strip())


@dataclass(frozen=True, slots=True)
class SupervisorClaims:
    """What a valid supervisor token says: which sandbox, and until when."""

    sandbox_id: str
    expires_at: int
    token_id: str


class SupervisorTokenIssuer:
    """Mints and verifies supervisor tokens with the gateway's Ed25519 key."""

    def __init__(self, key: Ed25519PrivateKey, audience: str, ttl_seconds: int) -> None:
        self._key = key
        self._public: Ed25519PublicKey = key.public_key()
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    def __repr__(self) -> str:
        return f"SupervisorTokenIssuer(audience={self.audience!r}, ttl={self.ttl_seconds})"

    @classmethod
    def load_or_create(cls, path: Path, audience: str, ttl_seconds: int) -> SupervisorTokenIssuer:
        def make() -> bytes:
            return Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )

        key = serialization.load_pem_private_key(read_or_create(path, make), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise TokenError(f"{path} does not hold an Ed25519 private key")
        return cls(key, audience, ttl_seconds)

    def mint(self, sandbox_id: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": ISSUER,
            "aud": self.audience,
            "sub": f"sandbox:{sandbox_id}",
            "sandbox_id": sandbox_id,
            "scope": SUPERVISOR_SCOPE,
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA")

    def verify(self, token: str) -> SupervisorClaims:
        """Check signature, algorithm, issuer, audience, expiry and the sandbox binding."""
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["EdDSA"],
                audience=self.audience,
                issuer=ISSUER,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"supervisor token rejected: {type(exc).__name__}") from None
        sandbox_id = claims.get("sandbox_id")
        if (
            not isinstance(sandbox_id, str)
            or not sandbox_id
            or claims.get("sub") != f"sandbox:{sandbox_id}"
            or claims.get("scope") != SUPERVISOR_SCOPE
        ):
            raise TokenError("supervisor token is not bound to a sandbox")
        return SupervisorClaims(sandbox_id, int(claims["exp"]), str(claims.get("jti", "")))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
