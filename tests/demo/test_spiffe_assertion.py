"""JWT-SVID client authentication (the issuer's side of the IETF SPIFFE draft), as pure
functions over keys the test makes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from key_set import parse_key_set
from spiffe_assertion import (
    ALLOWED_ALGORITHMS,
    AssertionPolicy,
    AssertionRejected,
    read_header,
    verify_assertion,
)

from tests.support.demo_keys import (
    DemoKey,
    hmac_signed,
    jwks,
    make_key,
    svid_claims,
    unsigned,
    with_header,
)

ISSUER = "http://127.0.0.1:18080"
TD = "grantbox.local"
SANDBOX = f"spiffe://{TD}/grantbox/sandbox/sb-1"
POLICY = AssertionPolicy(audience=ISSUER, trust_domain=TD, path_prefix="/grantbox/sandbox/")


@pytest.fixture(scope="module")
def es256() -> DemoKey:
    return make_key("ES256")


def rejected(
    token: str, keys: Any, policy: AssertionPolicy = POLICY, now: float | None = None
) -> str:
    with pytest.raises(AssertionRejected) as info:
        verify_assertion(token, keys, policy, time.time() if now is None else now)
    assert token not in str(info.value)
    assert token not in info.value.reason
    return info.value.reason


@pytest.mark.parametrize("alg", sorted(ALLOWED_ALGORITHMS))
def test_valid_svid_of_each_allowed_algorithm_authenticates_the_client(alg: str) -> None:
    key = make_key(alg)
    token = key.sign(svid_claims(SANDBOX, ISSUER))
    client = verify_assertion(token, parse_key_set(jwks(key)), POLICY, time.time())
    assert client.spiffe_id == SANDBOX
    assert client.svid_expires_at > time.time()


def test_string_audience_equal_to_the_issuer_is_accepted(es256: DemoKey) -> None:
    token = es256.sign(svid_claims(SANDBOX, ISSUER) | {"aud": ISSUER})
    assert (
        verify_assertion(token, parse_key_set(jwks(es256)), POLICY, time.time()).spiffe_id
        == SANDBOX
    )


def test_keys_published_with_spiffe_bundle_use_verify(es256: DemoKey) -> None:
    token = es256.sign(svid_claims(SANDBOX, ISSUER))
    keys = parse_key_set(jwks(es256, use="jwt-svid"))
    assert verify_assertion(token, keys, POLICY, time.time()).spiffe_id == SANDBOX


@pytest.mark.parametrize(
    "aud",
    [
        ["http://127.0.0.1:18081"],
        [ISSUER, "alpha"],
        ["alpha", ISSUER],
        [],
        [ISSUER + "/"],
        "alpha",
        [ISSUER, ISSUER],
        42,
    ],
    ids=[
        "other",
        "extra-after",
        "extra-before",
        "empty",
        "trailing-slash",
        "string-other",
        "duplicate",
        "number",
    ],
)
def test_aud_must_be_exactly_the_issuer(es256: DemoKey, aud: Any) -> None:
    token = es256.sign(svid_claims(SANDBOX, ISSUER) | {"aud": aud})
    assert "aud" in rejected(token, parse_key_set(jwks(es256)))


def test_expired_svid_is_rejected_and_leeway_is_honoured(es256: DemoKey) -> None:
    now = time.time()
    token = es256.sign(svid_claims(SANDBOX, ISSUER) | {"exp": int(now) - 2})
    keys = parse_key_set(jwks(es256))
    assert "expired" in rejected(token, keys, now=now)
    lenient = AssertionPolicy(ISSUER, TD, "/grantbox/sandbox/", leeway=10)
    assert verify_assertion(token, keys, lenient, now).spiffe_id == SANDBOX


def test_svid_expiring_exactly_now_is_rejected(es256: DemoKey) -> None:
    now = float(int(time.time()))
    token = es256.sign(svid_claims(SANDBOX, ISSUER) | {"exp": int(now)})
    assert "expired" in rejected(token, parse_key_set(jwks(es256)), now=now)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_svid_from_the_future_is_rejected(es256: DemoKey, claim: str) -> None:
    token = es256.sign(svid_claims(SANDBOX, ISSUER) | {claim: int(time.time()) + 60})
    rejected(token, parse_key_set(jwks(es256)))


@pytest.mark.parametrize("claim", ["sub", "aud", "exp"])
def test_required_claims(es256: DemoKey, claim: str) -> None:
    claims = svid_claims(SANDBOX, ISSUER)
    del claims[claim]
    assert claim in rejected(es256.sign(claims), parse_key_set(jwks(es256)))


@pytest.mark.parametrize("exp", ["soon", True, None])
def test_non_numeric_exp_is_rejected(es256: DemoKey, exp: Any) -> None:
    token = es256.sign(svid_claims(SANDBOX, ISSUER) | {"exp": exp})
    rejected(token, parse_key_set(jwks(es256)))


@pytest.mark.parametrize(
    ("sub", "why"),
    [
        ("spiffe://other.domain/grantbox/sandbox/sb-1", "trust domain"),
        ("spiffe://grantbox.local.evil/grantbox/sandbox/sb-1", "trust domain"),
        (f"spiffe://{TD}/grantbox/gateway", "path"),
        (f"spiffe://{TD}/grantbox/sandboxes/sb-1", "path"),
        (f"spiffe://{TD}/grantbox/sandbox", "path"),
        (f"spiffe://{TD}/other/grantbox/sandbox/sb-1", "path"),
        (f"https://{TD}/grantbox/sandbox/sb-1", "SPIFFE ID"),
        (f"spiffe://{TD}/grantbox/sandbox/../sb-1", "SPIFFE ID"),
        (f"spiffe://{TD}/grantbox/sandbox/sb-1/", "SPIFFE ID"),
        (f"spiffe://{TD}/grantbox/sandbox/sb-1?x=1", "SPIFFE ID"),
        ("", "SPIFFE ID"),
    ],
)
def test_sub_must_be_a_sandbox_of_the_trust_domain(es256: DemoKey, sub: str, why: str) -> None:
    token = es256.sign(svid_claims(sub, ISSUER))
    assert why in rejected(token, parse_key_set(jwks(es256)))


def test_non_string_sub_is_rejected(es256: DemoKey) -> None:
    token = es256.sign(svid_claims(SANDBOX, ISSUER) | {"sub": 7})
    rejected(token, parse_key_set(jwks(es256)))


def test_deeper_paths_below_the_prefix_are_accepted(es256: DemoKey) -> None:
    sub = f"spiffe://{TD}/grantbox/sandbox/sb-1/agent"
    token = es256.sign(svid_claims(sub, ISSUER))
    assert verify_assertion(token, parse_key_set(jwks(es256)), POLICY, time.time()).spiffe_id == sub


def test_prefix_without_trailing_slash_means_the_same(es256: DemoKey) -> None:
    policy = AssertionPolicy(ISSUER, TD, "/grantbox/sandbox")
    keys = parse_key_set(jwks(es256))
    assert verify_assertion(es256.sign(svid_claims(SANDBOX, ISSUER)), keys, policy, time.time())
    sibling = es256.sign(svid_claims(f"spiffe://{TD}/grantbox/sandboxes/x", ISSUER))
    rejected(sibling, keys, policy)


def test_unknown_kid_is_rejected(es256: DemoKey) -> None:
    stranger = make_key("ES256")
    token = stranger.sign(svid_claims(SANDBOX, ISSUER))
    assert "unknown key" in rejected(token, parse_key_set(jwks(es256)))


def test_same_kid_other_key_fails_the_signature_check(es256: DemoKey) -> None:
    impostor = make_key("ES256", kid=es256.kid)
    token = impostor.sign(svid_claims(SANDBOX, ISSUER))
    assert "signature" in rejected(token, parse_key_set(jwks(es256)))


def test_tampered_claims_fail_the_signature_check(es256: DemoKey) -> None:
    token = es256.sign(svid_claims(SANDBOX, ISSUER))
    other = es256.sign(svid_claims(f"spiffe://{TD}/grantbox/sandbox/sb-2", ISSUER))
    header, _, signature = token.split(".")
    spliced = ".".join([header, other.split(".")[1], signature])
    assert "signature" in rejected(spliced, parse_key_set(jwks(es256)))


def test_hs256_is_refused_even_with_a_known_kid(es256: DemoKey) -> None:
    token = hmac_signed(svid_claims(SANDBOX, ISSUER), es256.kid)
    assert "not allowed" in rejected(token, parse_key_set(jwks(es256)))


def test_alg_none_is_refused(es256: DemoKey) -> None:
    token = unsigned(svid_claims(SANDBOX, ISSUER), es256.kid)
    assert "not allowed" in rejected(token, parse_key_set(jwks(es256)))


def test_algorithm_must_fit_the_key_type() -> None:
    rsa_key = make_key("RS256")
    # Signed with RSA, but the header claims ES256 for an RSA key: PyJWT must not verify it.
    token = rsa_key.sign(svid_claims(SANDBOX, ISSUER))
    forged = token.replace(
        token.split(".")[0], make_key("ES256", rsa_key.kid).sign({}).split(".")[0]
    )
    rejected(forged, parse_key_set(jwks(rsa_key)))


def test_curve_must_fit_the_algorithm() -> None:
    p256 = make_key("ES256")
    p384_signer = make_key("ES384", kid=p256.kid)
    token = p384_signer.sign(svid_claims(SANDBOX, ISSUER))
    assert "does not fit" in rejected(token, parse_key_set(jwks(p256)))


def test_declared_key_algorithm_must_match_the_header() -> None:
    key = make_key("PS256")
    token = key.sign(svid_claims(SANDBOX, ISSUER))
    keys = parse_key_set({"keys": [key.public_jwk(use="sig", alg="RS256")]})
    assert "does not match" in rejected(token, keys)


def test_keys_for_other_uses_never_verify(es256: DemoKey) -> None:
    token = es256.sign(svid_claims(SANDBOX, ISSUER))
    for use in ("enc", "x509-svid"):
        assert "unknown key" in rejected(token, parse_key_set(jwks(es256, use=use)))


def test_critical_header_extensions_are_refused(es256: DemoKey) -> None:
    token = es256.sign(svid_claims(SANDBOX, ISSUER), crit=["exp"])
    rejected(token, parse_key_set(jwks(es256)))


@pytest.mark.parametrize("kid", ["", 5, None, ["k"]])
def test_missing_or_odd_kid_is_refused(es256: DemoKey, kid: Any) -> None:
    token = with_header(es256.sign(svid_claims(SANDBOX, ISSUER)), kid=kid)
    rejected(token, parse_key_set(jwks(es256)))


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "a.b.c.d", "....", "e30.e30.e30"])
def test_malformed_assertions_are_rejected(token: str) -> None:
    with pytest.raises(AssertionRejected):
        read_header(token)


@given(st.text(max_size=300))
def test_arbitrary_text_is_only_ever_rejected(text: str) -> None:
    with pytest.raises(AssertionRejected) as info:
        verify_assertion(text, {}, POLICY, time.time())
    assert len(text) < 8 or text not in info.value.reason


def test_policy_rejects_nonsense_configuration() -> None:
    with pytest.raises(ValueError, match="audience"):
        AssertionPolicy("", TD, "/grantbox/sandbox/")
    with pytest.raises(ValueError, match="path prefix"):
        AssertionPolicy(ISSUER, TD, "grantbox/sandbox/")
    with pytest.raises(ValueError, match="leeway"):
        AssertionPolicy(ISSUER, TD, "/p/", leeway=-1)
    with pytest.raises(Exception):  # noqa: B017,PT011 - py-spiffe's own error type
        AssertionPolicy(ISSUER, "not a domain!", "/p/")
