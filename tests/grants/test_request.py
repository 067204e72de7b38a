"""The token request form and the cache key (DESIGN §3.3)."""

from __future__ import annotations

from typing import Any

import pytest

from grantbox.grants import cache_key, token_request_form
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
