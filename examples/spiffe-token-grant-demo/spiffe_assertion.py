"""JWT-SVID client authentication as the IETF SPIFFE client-authentication draft defines it.

``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-spiffe``: the client
presents its JWT-SVID unchanged. The authorization server verifies the signature with the
trust domain's keys, requires ``aud`` to be its own issuer identifier and nothing else,
requires an unexpired ``exp``, and takes the client's identity from ``sub``. Unlike RFC 7523
there is no ``iss``/``jti`` requirement (SPIRE does not put them in a JWT-SVID).

Pure: the caller supplies the key set and the clock. No message here ever contains the
assertion itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from key_set import VerificationKey, key_fits
from spiffe import SpiffeId

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Asymmetric algorithms only: ``none`` and the HMAC family would let anyone holding the
# (public) key set forge an SVID.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}
)


class AssertionRejected(Exception):
    """The client assertion failed verification; ``reason`` is safe to log and return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AssertionPolicy:
    """What this authorization server accepts as a client's JWT-SVID."""

    audience: str
    """The issuer identifier; the SVID's ``aud`` must be exactly this one value."""
    trust_domain: str
    path_prefix: str
    """``sub`` must be a SPIFFE ID whose path continues below this prefix."""
    leeway: float = 0.0
    """Seconds of clock skew tolerated on ``exp``/``nbf``."""

    def __post_init__(self) -> None:
        if not self.audience:
            raise ValueError("the SVID audience must not be empty")
        if not self.path_prefix.startswith("/"):
            raise ValueError("the path prefix must start with '/'")
        if self.leeway < 0:
            raise ValueError("leeway must not be negative")
        SpiffeId(f"spiffe://{self.trust_domain}")


@dataclass(frozen=True)
class SpiffeClient:
    """A client authenticated by its JWT-SVID."""

    spiffe_id: str
    svid_expires_at: int


@dataclass(frozen=True)
class AssertionHeader:
    alg: str
    kid: str


def read_header(assertion: str) -> AssertionHeader:
    """The unverified JOSE header, checked against the algorithm allow-list.

    Done first so a key is looked up (and a key set possibly re-fetched) only for a
    well-formed assertion with an acceptable algorithm.
    """
    if assertion.count(".") != 2:
        raise AssertionRejected("client_assertion is not a signed JWT")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise AssertionRejected("client_assertion is not a signed JWT") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise AssertionRejected(f"algorithm {_printable(alg)} is not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AssertionRejected("client_assertion header has no kid")
    if "crit" in header:
        raise AssertionRejected("critical header extensions are not supported")
    return AssertionHeader(alg=alg, kid=kid)


def verify_assertion(
    assertion: str, keys: Mapping[str, VerificationKey], policy: AssertionPolicy, now: float
) -> SpiffeClient:
    """Verify a JWT-SVID client assertion; return the authenticated client."""
    header = read_header(assertion)
    key = keys.get(header.kid)
    if key is None:
        raise AssertionRejected("client_assertion is signed by an unknown key")
    if key.alg is not None and key.alg != header.alg:
        raise AssertionRejected("client_assertion algorithm does not match its key")
    if not key_fits(header.alg, key.public_key):
        raise AssertionRejected("client_assertion algorithm does not fit its key")
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            key.public_key,
            algorithms=[header.alg],
            options={
                "require": ["sub", "aud", "exp"],
                "verify_aud": False,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise AssertionRejected("client_assertion signature does not verify") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AssertionRejected(f"client_assertion lacks the {exc.claim} claim") from None
    except jwt.PyJWTError as exc:
        raise AssertionRejected(f"client_assertion rejected ({type(exc).__name__})") from None
    _check_audience(claims["aud"], policy.audience)
    _check_times(claims, now, policy.leeway)
    spiffe_id = _check_subject(claims["sub"], policy)
    return SpiffeClient(spiffe_id=spiffe_id, svid_expires_at=int(claims["exp"]))


def _check_audience(aud: Any, expected: str) -> None:
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or audiences != [expected]:
        raise AssertionRejected(f"client_assertion aud must be exactly {expected!r}")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AssertionRejected(f"client_assertion {name} is not a number")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    exp = _number(claims, "exp")
    if exp is None or exp <= now - leeway:
        raise AssertionRejected("client_assertion has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise AssertionRejected("client_assertion is not valid yet")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise AssertionRejected("client_assertion was issued in the future")


def _check_subject(sub: Any, policy: AssertionPolicy) -> str:
    if not isinstance(sub, str):
        raise AssertionRejected("client_assertion sub is not a SPIFFE ID")
    try:
        spiffe_id = SpiffeId(sub)
    except Exception:
        raise AssertionRejected("client_assertion sub is not a SPIFFE ID") from None
    if str(spiffe_id.trust_domain) != policy.trust_domain:
        raise AssertionRejected(
            f"client_assertion sub is outside trust domain {policy.trust_domain!r}"
        )
    prefix = policy.path_prefix if policy.path_prefix.endswith("/") else policy.path_prefix + "/"
    if not spiffe_id.path.startswith(prefix) or len(spiffe_id.path) == len(prefix):
        raise AssertionRejected(f"client_assertion sub is outside path {prefix!r}")
    return str(spiffe_id)


def _printable(value: Any) -> str:
    """A short, single-line rendering of an untrusted header value for messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
