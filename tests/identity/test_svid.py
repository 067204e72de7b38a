from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from grantbox.identity import JwtSvid
from grantbox.identity.svid import MalformedSvid, read_svid

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = 1_800_000_000.0


def token(**claims: object) -> str:
    base: dict[str, object] = {"sub": "spiffe://example.org/w", "aud": ["a"], "exp": NOW + 60}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, KEY, algorithm="ES256")


def test_reads_sub_and_exp() -> None:
    svid = read_svid(token(), "a", NOW)
    assert svid == JwtSvid(
        token=svid.token, spiffe_id="spiffe://example.org/w", expires_at=NOW + 60
    )


def test_single_string_audience_is_accepted() -> None:
    assert read_svid(token(aud="a"), "a", NOW).spiffe_id == "spiffe://example.org/w"


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"sub": None}, "sub"),
        ({"sub": "not-a-spiffe-id"}, "SPIFFE"),
        ({"aud": ["b"]}, "aud"),
        ({"aud": None}, "aud"),
        ({"exp": None}, "exp"),
        ({"exp": "soon"}, "exp"),
        ({"exp": NOW - 1}, "expired"),
    ],
)
def test_rejects(claims: dict[str, object], problem: str) -> None:
    with pytest.raises(MalformedSvid, match=problem):
        read_svid(token(**claims), "a", NOW)


def test_garbage_is_rejected_without_echoing_it() -> None:
    with pytest.raises(MalformedSvid) as info:
        read_svid("secret-garbage-value", "a", NOW)
    assert "secret-garbage-value" not in str(info.value)


def test_repr_hides_the_token() -> None:
    svid = JwtSvid(token="eyJ.secret.token", spiffe_id="spiffe://td/x", expires_at=1.0)
    assert "secret" not in repr(svid) and "secret" not in str(svid)
    assert "spiffe://td/x" in repr(svid)
