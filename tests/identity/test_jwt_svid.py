"""JWT-SVIDs exactly as SPIRE issues them, and the validation behind ValidateJWTSVID."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from grantbox.identity_agent.jwt_svid import InvalidSvid, check_issuer, mint, svid_claims, validate
from grantbox.identity_agent.keyring import new_keyring, rotate
from grantbox.identity_agent.keys import new_signing_key

NOW = 1_800_000_000.0
TD = "example.org"
PEM, SPKI = Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
SUB = "spiffe://example.org/grantbox/sandbox/s1"


@pytest.fixture(scope="module", params=["ES256", "RS256"])
def ring(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    alg = request.param
    return new_keyring(new_signing_key(alg, NOW), new_signing_key(alg, NOW), NOW, 300.0)


def test_header_and_claims_are_exactly_spires(ring) -> None:  # type: ignore[no-untyped-def]
    token = mint(ring.active, svid_claims(SUB, ["aud1"], NOW + 0.7, 300.0, None))
    header = jwt.get_unverified_header(token)
    assert header == {"alg": ring.active.algorithm, "kid": ring.active.kid, "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {"sub": SUB, "aud": ["aud1"], "exp": int(NOW) + 300, "iat": int(NOW)}


def test_iss_only_with_an_issuer() -> None:
    claims = svid_claims(SUB, ["a", "b", "a"], NOW, 60.0, "https://oidc.example.org")
    assert claims["iss"] == "https://oidc.example.org"
    assert claims["aud"] == ["a", "b"]
    assert set(claims) == {"sub", "aud", "exp", "iat", "iss"}


@given(st.floats(0, 4e9), st.floats(1, 86400))
def test_exp_never_exceeds_the_ttl(now: float, ttl: float) -> None:
    claims = svid_claims(SUB, ["a"], now, ttl, None)
    assert claims["exp"] <= now + ttl
    assert claims["iat"] <= now < claims["iat"] + 1


def test_audience_is_required() -> None:
    with pytest.raises(ValueError, match="audience"):
        svid_claims(SUB, [], NOW, 60.0, None)
    with pytest.raises(ValueError, match="audience"):
        svid_claims(SUB, [""], NOW, 60.0, None)


def test_validate_accepts_current_and_retired_keys(ring) -> None:  # type: ignore[no-untyped-def]
    old = mint(ring.active, svid_claims(SUB, ["a"], time.time(), 3600.0, None))
    rotated = rotate(ring, NOW, new_signing_key(ring.active.algorithm, NOW), 300.0)
    new = mint(rotated.active, svid_claims(SUB, ["a"], time.time(), 3600.0, None))
    assert validate(old, "a", rotated, TD)["sub"] == SUB
    assert validate(new, "a", rotated, TD)["sub"] == SUB


def _forge(header: dict[str, object], claims: dict[str, object], sig: bytes = b"x") -> str:
    def enc(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([enc(json.dumps(header).encode()), enc(json.dumps(claims).encode()), enc(sig)])


def _hs256(claims: dict[str, object], kid: str, secret: bytes) -> str:
    """An HMAC token keyed with the public key: the classic algorithm-confusion forgery."""
    unsigned = _forge({"alg": "HS256", "kid": kid}, claims, b"").rsplit(".", 1)[0]
    sig = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return unsigned + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def test_validate_rejections(ring) -> None:  # type: ignore[no-untyped-def]
    key = ring.active
    good_claims = svid_claims(SUB, ["a"], time.time(), 3600.0, None)
    cases = {
        "wrong audience": mint(key, svid_claims(SUB, ["b"], time.time(), 3600.0, None)),
        "expired": mint(key, svid_claims(SUB, ["a"], 1000.0, 300.0, None)),
        "other trust domain": mint(
            key, svid_claims("spiffe://evil.org/x", ["a"], time.time(), 60, None)
        ),
        "not spiffe": mint(key, {**good_claims, "sub": "alice"}),
        "no exp": mint(key, {k: v for k, v in good_claims.items() if k != "exp"}),
        "unknown kid": _forge({"alg": key.algorithm, "kid": "nope", "typ": "JWT"}, good_claims),
        "alg none": _forge({"alg": "none", "kid": key.kid}, good_claims, b""),
        "hs256 confusion": _hs256(good_claims, key.kid, key.public_key.public_bytes(PEM, SPKI)),
        "bad signature": _forge({"alg": key.algorithm, "kid": key.kid}, good_claims),
        "garbage": "not-a-jwt",
    }
    for name, token in cases.items():
        with pytest.raises(InvalidSvid) as info:
            validate(token, "a", ring, TD)
        assert token not in str(info.value), name


@pytest.mark.parametrize("value", ["https://oidc.example.org", "http://127.0.0.1:8080/td"])
def test_issuer_accepted(value: str) -> None:
    assert check_issuer(value) == value


@pytest.mark.parametrize(
    "value",
    ["spiffe://example.org", "oidc.example.org", "https://", "https://u:p@h/", "https://h/?q"],
)
def test_issuer_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="issuer"):
        check_issuer(value)
