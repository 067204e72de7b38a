"""The token request form and the cache key (DESIGN §3.3)."""

from __future__ import annotations

from typing import Any

import pytest

from grantbox.grants import GrantMisconfigured, cache_key, token_request_form
from grantbox.grants.request import encode_form
from grantbox.profiles import JWT_BEARER

from .bindings import make_binding


def test_form_has_exactly_the_design_fields_in_order() -> None:
    form = token_request_form(make_binding(), "svid.jwt.sig")
    assert form == [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"),
        ("client_assertion", "svid.jwt.sig"),
        ("audience", "alpha"),
        ("scope", "alpha read"),
    ]
    assert "client_id" not in dict(form)


def test_form_omits_empty_audience_and_scope() -> None:
    form = token_request_form(make_binding(audience="", scopes=()), "s")
    assert [name for name, _ in form] == ["grant_type", "client_assertion_type", "client_assertion"]


def test_form_encoding_is_urlencoded() -> None:
    encoded = encode_form(token_request_form(make_binding(scopes=("a", "b c")), "x+y=z"))
    assert b"scope=a+b+c" in encoded
    assert b"client_assertion=x%2By%3Dz" in encoded


def test_cache_key_sorts_and_deduplicates_scopes() -> None:
    assert cache_key(make_binding(scopes=("b", "a", "b"))).scopes == ("a", "b")
    assert cache_key(make_binding(scopes=("b", "a"))) == cache_key(make_binding(scopes=("a", "b")))


@pytest.mark.parametrize(
    "change",
    [
        {"audience": "beta"},
        {"scopes": ("alpha",)},
        {"token_endpoint": "https://other.example/token"},
        {"svid_audience": "https://other.example"},
        {"assertion_type": str(JWT_BEARER)},
        {"host": "beta.example"},
        {"port": 8443},
        {"path": "/v1/**"},
        {"provider": "other"},
        {"credential": "other"},
    ],
)
def test_cache_key_changes_with_every_request_parameter(change: dict[str, Any]) -> None:
    assert cache_key(make_binding(**change)) != cache_key(make_binding())


@pytest.mark.parametrize(
    "change",
    [{"cache_ttl_seconds": 60}, {"header_name": "X-Token", "header_style": "header"}],
)
def test_cache_key_ignores_how_a_token_is_kept_or_placed(change: dict[str, Any]) -> None:
    assert cache_key(make_binding(**change)) == cache_key(make_binding())


# -- every grant kind, over plain data -------------------------------------------------------

TE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT = "urn:ietf:params:oauth:token-type:jwt"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
ID = "spiffe://example.org/grantbox/sandbox/s1"
RESOURCES = ("https://alpha.example/", "https://alpha.example/v2/")


@pytest.mark.parametrize(
    ("binding", "svid", "tls_id", "form"),
    [
        pytest.param(
            {"client_id": "app-1"},
            "s.v.g",
            "",
            [
                ("grant_type", "client_credentials"),
                ("client_id", "app-1"),
                ("client_assertion_type", SPIFFE),
                ("client_assertion", "s.v.g"),
                ("audience", "alpha"),
                ("scope", "alpha read"),
            ],
            id="client_credentials, jwt_svid, client_id",
        ),
        pytest.param(
            {"client_auth": "tls_client_auth", "resource": RESOURCES},
            "",
            ID,
            [
                ("grant_type", "client_credentials"),
                ("client_id", ID),
                ("audience", "alpha"),
                ("resource", RESOURCES[0]),
                ("resource", RESOURCES[1]),
                ("scope", "alpha read"),
            ],
            id="client_credentials, tls_client_auth: client_id is the SPIFFE ID",
        ),
        pytest.param(
            {"client_auth": "self_signed_tls_client_auth", "client_id": "c9", "scopes": ()},
            "",
            ID,
            [("grant_type", "client_credentials"), ("client_id", "c9"), ("audience", "alpha")],
            id="client_credentials, self_signed_tls_client_auth, configured client_id",
        ),
        pytest.param(
            {"grant_type": "token_exchange", "client_auth": "none", "resource": RESOURCES[:1]},
            "s.v.g",
            "",
            [
                ("grant_type", TE),
                ("subject_token", "s.v.g"),
                ("subject_token_type", JWT),
                ("audience", "alpha"),
                ("resource", RESOURCES[0]),
                ("scope", "alpha read"),
            ],
            id="token_exchange, no client auth",
        ),
        pytest.param(
            {
                "grant_type": "token_exchange",
                "client_auth": "jwt_svid",
                "requested_token_type": ACCESS,
                "audience": "",
                "scopes": (),
            },
            "s.v.g",
            "",
            [
                ("grant_type", TE),
                ("subject_token", "s.v.g"),
                ("subject_token_type", JWT),
                ("requested_token_type", ACCESS),
                ("client_assertion_type", SPIFFE),
                ("client_assertion", "s.v.g"),
            ],
            id="token_exchange, jwt_svid client auth, requested type",
        ),
        pytest.param(
            {"grant_type": "token_exchange", "client_auth": "tls_client_auth", "audience": ""},
            "s.v.g",
            ID,
            [
                ("grant_type", TE),
                ("subject_token", "s.v.g"),
                ("subject_token_type", JWT),
                ("client_id", ID),
                ("scope", "alpha read"),
            ],
            id="token_exchange, tls_client_auth",
        ),
    ],
)
def test_form_for_every_grant_kind(
    binding: dict[str, Any], svid: str, tls_id: str, form: list[tuple[str, str]]
) -> None:
    assert token_request_form(make_binding(**binding), svid, tls_spiffe_id=tls_id) == form


@pytest.mark.parametrize(
    ("binding", "svid", "tls_id", "why"),
    [
        ({"grant_type": "password"}, "s", "", "unknown grant_type"),
        ({"client_auth": "client_secret_basic"}, "s", "", "unknown client_auth"),
        ({"client_auth": "none"}, "s", "", "needs client authentication"),
        ({"requested_token_type": ACCESS}, "s", "", "only to token_exchange"),
        ({}, "", "", "needs a JWT-SVID"),
        ({"grant_type": "token_exchange", "client_auth": "none"}, "", "", "needs a JWT-SVID"),
        ({"client_auth": "tls_client_auth"}, "", "", "needs the X.509-SVID's SPIFFE ID"),
    ],
)
def test_a_binding_that_cannot_work_fails_closed(
    binding: dict[str, Any], svid: str, tls_id: str, why: str
) -> None:
    with pytest.raises(GrantMisconfigured, match=why):
        token_request_form(make_binding(**binding), svid, tls_spiffe_id=tls_id)


@pytest.mark.parametrize(
    "change",
    [
        {"grant_type": "token_exchange", "client_auth": "none"},
        {"client_auth": "tls_client_auth"},
        {"client_id": "other"},
        {"resource": ("https://beta.example/",)},
        {"grant_type": "token_exchange", "client_auth": "none", "requested_token_type": JWT},
    ],
)
def test_cache_key_changes_with_the_grant_kind(change: dict[str, Any]) -> None:
    assert cache_key(make_binding(**change)) != cache_key(make_binding())


def test_cache_key_treats_resources_as_a_set_and_ignores_the_endpoint_ca() -> None:
    assert cache_key(make_binding(resource=RESOURCES)) == cache_key(
        make_binding(resource=RESOURCES[::-1] + RESOURCES[:1])
    )
    assert cache_key(make_binding(token_endpoint_ca="-----BEGIN…")) == cache_key(make_binding())
