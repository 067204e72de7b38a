"""A protected service's decision on a bearer token (pure)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bearer_check import BearerRejected, ServicePolicy, bearer_token, check_access_token
from key_set import parse_key_set

from tests.support.demo_keys import DemoKey, hmac_signed, jwks, make_key, unsigned, with_header

ISSUER = "http://127.0.0.1:18080"
SANDBOX = "spiffe://grantbox.local/grantbox/sandbox/sb-1"
ALPHA = ServicePolicy(name="alpha", issuer=ISSUER)


@pytest.fixture(scope="module")
def signer() -> DemoKey:
    return make_key("ES256")


def access_claims(audience: str = "alpha", **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": SANDBOX,
        "aud": [audience, "account"],
        "scope": f"{audience} profile email",
        "azp": SANDBOX,
        "client_id": SANDBOX,
        "iat": now,
        "exp": now + 300,
        "jti": "j-1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def refusal(token: str, signer: DemoKey, policy: ServicePolicy = ALPHA) -> BearerRejected:
    with pytest.raises(BearerRejected) as info:
        check_access_token(token, parse_key_set(jwks(signer)), policy, time.time())
    assert token not in str(info.value)
    return info.value


def test_alphas_token_is_accepted_and_its_claims_echoed(signer: DemoKey) -> None:
    claims = access_claims()
    echoed = check_access_token(
        signer.sign(claims), parse_key_set(jwks(signer)), ALPHA, time.time()
    )
    assert echoed == claims


def test_unknown_claims_are_not_echoed(signer: DemoKey) -> None:
    token = signer.sign(access_claims(secret_note="x"))
    echoed = check_access_token(token, parse_key_set(jwks(signer)), ALPHA, time.time())
    assert "secret_note" not in echoed


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": ["beta", "account"], "scope": "beta profile email"},
        {"aud": ["beta", "account"]},
        {"aud": ["account"]},
        {"aud": "alphabet"},
        {"scope": "beta profile email"},
        {"scope": "alphas profile"},
        {"scope": ""},
    ],
)
def test_genuine_token_for_another_service_is_forbidden(
    signer: DemoKey, changes: dict[str, Any]
) -> None:
    exc = refusal(signer.sign(access_claims(**changes)), signer)
    assert (exc.status, exc.error) == (403, "insufficient_scope")
    assert exc.challenge == 'Bearer realm="alpha", error="insufficient_scope"'


def test_beta_rejects_alphas_token_and_accepts_its_own(signer: DemoKey) -> None:
    beta = ServicePolicy(name="beta", issuer=ISSUER)
    assert refusal(signer.sign(access_claims("alpha")), signer, beta).status == 403
    token = signer.sign(access_claims("beta"))
    assert (
        check_access_token(token, parse_key_set(jwks(signer)), beta, time.time())["aud"][0]
        == "beta"
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": int(time.time()) - 1},
        {"exp": None},
        {"exp": "later"},
        {"iss": "http://127.0.0.1:9999"},
        {"iss": None},
        {"aud": None},
        {"scope": None},
    ],
    ids=["expired", "no-exp", "text-exp", "other-issuer", "no-iss", "no-aud", "no-scope"],
)
def test_invalid_tokens_are_unauthorized(signer: DemoKey, changes: dict[str, Any]) -> None:
    exc = refusal(signer.sign(access_claims(**changes)), signer)
    assert (exc.status, exc.error) == (401, "invalid_token")


def test_forgeries_are_unauthorized(signer: DemoKey) -> None:
    claims = access_claims()
    forgeries = [
        make_key("ES256").sign(claims),  # unknown key
        make_key("ES256", kid=signer.kid).sign(claims),  # same kid, other key
        hmac_signed(claims, signer.kid),
        unsigned(claims, signer.kid),
        with_header(make_key("RS256", kid=signer.kid).sign(claims), alg="ES256"),
        make_key("ES384", kid=signer.kid).sign(claims),
        with_header(signer.sign(claims), kid=None),
        "garbage",
        "a.b.c",
    ]
    for token in forgeries:
        exc = refusal(token, signer)
        assert (exc.status, exc.error) == (401, "invalid_token"), token


def test_rsa_key_under_the_right_kid_cannot_verify() -> None:
    rsa_key = make_key("RS256")
    token = with_header(rsa_key.sign(access_claims()), alg="ES256")
    assert refusal(token, rsa_key).status == 401


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ([], 401, None),
        (["Basic dXNlcjpwYXNz"], 401, "invalid_token"),
        (["Bearer"], 401, "invalid_token"),
        (["Bearer "], 401, "invalid_token"),
        (["Bearer a b"], 401, "invalid_token"),
        (["Bearer a", "Bearer b"], 400, "invalid_request"),
    ],
)
def test_authorization_header_forms(headers: list[str], status: int, error: str | None) -> None:
    with pytest.raises(BearerRejected) as info:
        bearer_token(headers, "alpha")
    assert (info.value.status, info.value.error) == (status, error)
    if error is None:
        assert info.value.challenge == 'Bearer realm="alpha"'


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token(["bearer abc.def.ghi"], "alpha") == "abc.def.ghi"
    assert bearer_token(["  Bearer   abc  "], "alpha") == "abc"
