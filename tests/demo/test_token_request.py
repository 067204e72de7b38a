"""The token endpoint's request rules and the access token's claims (pure)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from spiffe_assertion import JWT_BEARER, JWT_SPIFFE, SpiffeClient
from token_request import (
    OAuthError,
    TokenRequest,
    access_token_claims,
    check_client_id,
    check_grant,
    parse_form,
    parse_scope,
    read_token_request,
    token_response,
)

FORM = "application/x-www-form-urlencoded"
SANDBOX = "spiffe://grantbox.local/grantbox/sandbox/sb-1"
AUDIENCES = ("alpha", "beta")
CLIENT = SpiffeClient(spiffe_id=SANDBOX, svid_expires_at=2_000_000_000)


def fields(**overrides: str | None) -> dict[str, str]:
    base: dict[str, str | None] = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_SPIFFE,
        "client_assertion": "h.p.s",
        "audience": "alpha",
        "scope": "alpha",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def refused(fn: object, *args: object, **kwargs: object) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value


def test_a_well_formed_request_is_read() -> None:
    request = read_token_request(fields(scope="alpha beta"), basic_auth=False)
    assert request == TokenRequest(assertion="h.p.s", audience="alpha", scopes=("alpha", "beta"))
    assert "h.p.s" not in repr(request)


@pytest.mark.parametrize(
    ("overrides", "error", "status"),
    [
        ({"grant_type": None}, "invalid_request", 400),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type", 400),
        (
            {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"},
            "unsupported_grant_type",
            400,
        ),
        ({"client_assertion_type": None}, "invalid_client", 401),
        ({"client_assertion_type": JWT_BEARER}, "invalid_client", 401),
        ({"client_assertion_type": JWT_SPIFFE.upper()}, "invalid_client", 401),
        ({"client_assertion": None}, "invalid_client", 401),
        ({"client_assertion": ""}, "invalid_client", 401),
        ({"client_secret": "s3cret"}, "invalid_request", 400),
        ({"audience": None}, "invalid_request", 400),
        ({"audience": ""}, "invalid_request", 400),
        ({"scope": "alpha  beta"}, "invalid_scope", 400),
        ({"scope": 'alpha "beta"'}, "invalid_scope", 400),
        ({"scope": " alpha"}, "invalid_scope", 400),
    ],
)
def test_malformed_requests_get_the_rfc6749_error(
    overrides: dict[str, str | None], error: str, status: int
) -> None:
    exc = refused(read_token_request, fields(**overrides), basic_auth=False)
    assert (exc.error, exc.status) == (error, status)
    assert exc.body() == {"error": error, "error_description": exc.description}


def test_only_one_client_authentication_method() -> None:
    exc = refused(read_token_request, fields(), basic_auth=True)
    assert exc.error == "invalid_request"


@pytest.mark.parametrize(
    ("audience", "scope", "error"),
    [
        ("gamma", "gamma", "invalid_target"),
        ("account", "account", "invalid_target"),
        ("alpha", "", "invalid_scope"),
        ("alpha", "beta", "invalid_scope"),
        ("alpha", "alpha admin", "invalid_scope"),
        ("beta", "alpha", "invalid_scope"),
    ],
)
def test_grant_rules(audience: str, scope: str, error: str) -> None:
    request = read_token_request(fields(audience=audience, scope=scope), basic_auth=False)
    assert refused(check_grant, request, AUDIENCES).error == error


@pytest.mark.parametrize(("audience", "scope"), [("alpha", "alpha"), ("beta", "beta alpha")])
def test_served_audience_with_its_scope_is_granted(audience: str, scope: str) -> None:
    check_grant(
        read_token_request(fields(audience=audience, scope=scope), basic_auth=False), AUDIENCES
    )


def test_client_id_if_given_must_be_the_spiffe_id() -> None:
    named = read_token_request(fields(client_id=SANDBOX), basic_auth=False)
    check_client_id(named, CLIENT)
    check_client_id(read_token_request(fields(), basic_auth=False), CLIENT)
    wrong = read_token_request(fields(client_id="spiffe://grantbox.local/other"), basic_auth=False)
    exc = refused(check_client_id, wrong, CLIENT)
    assert (exc.error, exc.status) == ("invalid_client", 401)


def test_access_token_claims() -> None:
    request = read_token_request(fields(audience="beta", scope="beta"), basic_auth=False)
    claims = access_token_claims(
        request, CLIENT, issuer="http://127.0.0.1:18080", issued_at=1000, lifetime=300, jti="j1"
    )
    assert claims == {
        "iss": "http://127.0.0.1:18080",
        "sub": SANDBOX,
        "aud": ["beta", "account"],
        "scope": "beta profile email",
        "azp": SANDBOX,
        "client_id": SANDBOX,
        "iat": 1000,
        "exp": 1300,
        "jti": "j1",
    }
    assert token_response("tok", claims, 300) == {
        "access_token": "tok",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "beta profile email",
    }


def test_scope_keeps_order_and_drops_duplicates() -> None:
    assert parse_scope("alpha beta alpha") == ("alpha", "beta")
    request = read_token_request(fields(scope="alpha email"), basic_auth=False)
    claims = access_token_claims(request, CLIENT, issuer="i", issued_at=0, lifetime=1, jti="j")
    assert claims["scope"] == "alpha email profile"


def test_form_is_parsed_strictly() -> None:
    body = urlencode(fields()).encode()
    assert parse_form(FORM, body) == fields()
    assert parse_form(f"{FORM}; charset=UTF-8", body) == fields()
    assert parse_form(FORM, b"") == {}
    for content_type in (None, "application/json", "multipart/form-data", "text/plain"):
        assert refused(parse_form, content_type, body).error == "invalid_request"
    assert refused(parse_form, FORM, body + b"&audience=beta").error == "invalid_request"
    assert refused(parse_form, FORM, b"a=%ff").error == "invalid_request"
    assert refused(parse_form, FORM, "a=ä".encode()).error == "invalid_request"
    assert refused(parse_form, FORM, b"novalue&x=1").error == "invalid_request"


@given(st.binary(max_size=200))
def test_any_body_parses_or_is_an_invalid_request(body: bytes) -> None:
    try:
        parsed = parse_form(FORM, body)
    except OAuthError as exc:
        outcome = exc.error
    else:
        outcome = "parsed" if all(isinstance(v, str) for v in parsed.values()) else "odd"
    assert outcome in ("parsed", "invalid_request")


@given(
    st.sampled_from(["alpha", "beta", "gamma", "account"]),
    st.lists(st.sampled_from(["alpha", "beta", "gamma", "profile"]), max_size=4),
)
def test_grant_decision_matches_its_rule(audience: str, scopes: list[str]) -> None:
    """Granted exactly when the audience is served, the scope names it, and names nothing
    the issuer does not serve."""
    request = TokenRequest(assertion="x", audience=audience, scopes=tuple(dict.fromkeys(scopes)))
    expected = audience in AUDIENCES and audience in scopes and set(scopes) <= set(AUDIENCES)
    try:
        check_grant(request, AUDIENCES)
    except OAuthError as exc:
        granted, error = False, exc.error
    else:
        granted, error = True, ""
    assert granted == expected, error
    assert error in ("", "invalid_target", "invalid_scope")
