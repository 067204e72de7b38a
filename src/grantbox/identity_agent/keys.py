"""Signing keys for JWT-SVIDs: generation and their public JWK form."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

Algorithm = Literal["ES256", "RS256"]
ALGORITHMS: tuple[Algorithm, ...] = ("ES256", "RS256")
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

RSA_BITS = 2048


def check_algorithm(value: str) -> Algorithm:
    """Validate a configured algorithm name; unknown values are errors, never defaulted."""
    for algorithm in ALGORITHMS:
        if value == algorithm:
            return algorithm
    raise ValueError(f"unsupported JWT-SVID algorithm {value!r} (choose {', '.join(ALGORITHMS)})")


def generate_private_key(algorithm: Algorithm) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def new_key_id() -> str:
    """A random key id, as SPIRE uses (not derived from the key)."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class SigningKey:
    """One signing key and its life: created, then active, then retired, then dropped.

    ``activated_at`` is None while the key waits its turn; ``retired_at``/``drop_after`` are
    None until it is retired. ``drop_after`` is when the last SVID it can have signed expires.
    """

    kid: str
    algorithm: Algorithm
    private_key: PrivateKey = field(repr=False, compare=False)
    created_at: float
    activated_at: float | None = None
    retired_at: float | None = None
    drop_after: float | None = None

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def public_jwk(self, use: str) -> dict[str, Any]:
        """The public half as a JWK carrying ``kid`` and the given ``use``."""
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk = {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y", "n", "e")}
        jwk["kid"] = self.kid
        jwk["use"] = use
        return jwk

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def new_signing_key(algorithm: Algorithm, now: float) -> SigningKey:
    return SigningKey(
        kid=new_key_id(),
        algorithm=algorithm,
        private_key=generate_private_key(algorithm),
        created_at=now,
    )


def load_private_key(pem: bytes, algorithm: Algorithm) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if algorithm == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise ValueError("ES256 key is not on P-256")
        return key
    if algorithm == "RS256" and isinstance(key, rsa.RSAPrivateKey):
        return key
    raise ValueError(f"stored key does not match algorithm {algorithm}")
