"""Grant binding expansion, selection and cross-provider ambiguity."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grantbox.profiles import (
    JWT_BEARER,
    JWT_SPIFFE,
    GrantBinding,
    Profile,
    expand_bindings,
    find_collisions,
    parse_profile,
    tie,
    validate_profile,
)


def make(doc: dict[str, Any]) -> Profile:
    profile, diagnostics = parse_profile(doc, "<test>")
    assert profile is not None, diagnostics
    return profile


def grant_profile(
    endpoints: list[dict[str, Any]],
    overrides: list[dict[str, Any]] | None = None,
    profile_id: str = "api",
    **grant: Any,
) -> Profile:
    token_grant = {"token_endpoint": "https://auth.example.com/token", **grant}
    if overrides is not None:
        token_grant["audience_overrides"] = overrides
    return make(
        {
            "id": profile_id,
            "credentials": [{"name": "tok", "token_grant": token_grant}],
            "endpoints": endpoints,
        }
    )


def selectors(profile: Profile, provider: str = "p") -> list[tuple[str, int, str, str]]:
    return [(b.host, b.port, b.path, b.audience) for b in expand_bindings([(provider, profile)])]


def test_defaults_are_resolved_into_each_binding() -> None:
    profile = grant_profile(
        [{"host": "api.example.com", "port": 443}], audience="api", scopes=["r"]
    )
    (binding,) = expand_bindings([("prov", profile)]).bindings
    assert binding == GrantBinding(
        provider="prov",
        credential="tok",
        profile="api",
        host="api.example.com",
        port=443,
        path="",
        audience="api",
        scopes=("r",),
        token_endpoint="https://auth.example.com/token",
        svid_audience="https://auth.example.com/token",
        assertion_type=JWT_BEARER,
        cache_ttl_seconds=0,
        header_name="Authorization",
        header_style="bearer",
        origin="default",
    )
    assert binding.id == "prov:tok@api.example.com:443/**"
    assert binding.header_value("abc") == "Bearer abc"


def test_keycloak_realm_is_the_derived_svid_audience() -> None:
    profile = grant_profile(
        [{"host": "api.example.com", "port": 443}],
        token_endpoint="https://kc.example.com/realms/acme/protocol/openid-connect/token",
    )
    (binding,) = expand_bindings([("p", profile)]).bindings
    assert binding.svid_audience == "https://kc.example.com/realms/acme"


def test_explicit_svid_audience_and_assertion_type_win() -> None:
    profile = grant_profile(
        [{"host": "api.example.com", "port": 443}],
        jwt_svid_audience="https://issuer.example.com",
        client_assertion_type=JWT_SPIFFE,
    )
    (binding,) = expand_bindings([("p", profile)]).bindings
    assert binding.svid_audience == "https://issuer.example.com"
    assert binding.assertion_type == JWT_SPIFFE


def test_header_style_places_the_raw_token_in_the_named_header() -> None:
    profile = make(
        {
            "id": "keyed",
            "credentials": [
                {
                    "name": "k",
                    "auth_style": "header",
                    "header_name": "X-Api-Key",
                    "token_grant": {"token_endpoint": "https://a.example.com/t"},
                }
            ],
            "endpoints": [{"host": "api.example.com", "port": 443}],
        }
    )
    (binding,) = expand_bindings([("p", profile)]).bindings
    assert (binding.header_name, binding.header_value("abc")) == ("X-Api-Key", "abc")


def test_every_port_gets_its_own_binding() -> None:
    profile = grant_profile([{"host": "api.example.com", "port": 443, "ports": [8443, 443]}])
    assert [(h, p) for h, p, _, _ in selectors(profile)] == [
        ("api.example.com", 443),
        ("api.example.com", 8443),
    ]


def test_an_override_inherits_host_port_and_path_and_replaces_the_default() -> None:
    profile = grant_profile(
        [{"host": "api.example.com", "port": 443, "path": "/v1/**"}],
        overrides=[{"audience": "special", "scopes": ["s"]}],
        audience="default",
    )
    bindings = expand_bindings([("p", profile)]).bindings
    assert [(b.host, b.port, b.path, b.audience, b.scopes, b.origin) for b in bindings] == [
        ("api.example.com", 443, "/v1/**", "special", ("s",), "audience_overrides[0]")
    ]


def test_an_override_narrows_and_never_widens_the_endpoint() -> None:
    profile = grant_profile(
        [{"host": "api.example.com", "port": 443, "path": "/v1/**"}],
        overrides=[{"host": "*.example.com", "path": "/**", "audience": "wide"}],
        audience="default",
    )
    # The override asked for every host and path; it gets only what the endpoint allows.
    assert selectors(profile) == [("api.example.com", 443, "/v1/**", "wide")]


def test_an_override_path_is_intersected_with_the_endpoint_path() -> None:
    profile = grant_profile(
        [{"host": "*.example.com", "port": 443, "path": "/v1/**"}],
        overrides=[{"host": "api.example.com", "path": "/*/admin", "audience": "admin"}],
        audience="default",
    )
    assert selectors(profile) == [
        ("*.example.com", 443, "/v1/**", "default"),
        ("api.example.com", 443, "/v1/admin", "admin"),
    ]


def test_an_override_port_selects_among_the_endpoint_ports() -> None:
    profile = grant_profile(
        [{"host": "api.example.com", "ports": [443, 8443]}],
        overrides=[{"port": 8443, "audience": "alt"}],
        audience="main",
    )
    assert selectors(profile) == [
        ("api.example.com", 443, "", "main"),
        ("api.example.com", 8443, "", "alt"),
    ]


def test_an_override_applies_to_each_endpoint_it_meets() -> None:
    profile = grant_profile(
        [
            {"host": "a.example.com", "port": 443},
            {"host": "b.example.com", "port": 443},
            {"host": "c.example.org", "port": 443},
        ],
        overrides=[{"host": "*.example.com", "scopes": ["com"]}],
        scopes=["base"],
    )
    bindings = expand_bindings([("p", profile)]).bindings
    assert [(b.host, b.scopes) for b in bindings] == [
        ("a.example.com", ("com",)),
        ("b.example.com", ("com",)),
        ("c.example.org", ("base",)),
    ]


def test_several_providers_expand_side_by_side_and_sort_deterministically() -> None:
    one = grant_profile(
        [{"host": "api.example.com", "port": 443, "path": "/v1/**"}], profile_id="one"
    )
    two = grant_profile(
        [{"host": "api.example.com", "port": 443, "path": "/v1/admin/**"}], profile_id="two"
    )
    forward = expand_bindings([("zeta", one), ("alpha", two)])
    backward = expand_bindings([("alpha", two), ("zeta", one)])
    assert forward == backward
    assert [b.owner for b in forward] == ["alpha:tok", "zeta:tok"]
    assert find_collisions(forward) == []
    # The more specific path wins at run time; the broader one covers the rest.
    assert forward.select("api.example.com", 443, "/v1/admin/users").provider == "alpha"
    assert forward.select("API.example.com", 443, "/v1/models?x=1").provider == "zeta"
    assert forward.select("api.example.com", 443, "/v2") is None
    assert forward.select("api.example.com", 8443, "/v1/models") is None


def test_the_content_hash_moves_with_any_input() -> None:
    one = grant_profile([{"host": "api.example.com", "port": 443}], audience="a")
    changed = grant_profile([{"host": "api.example.com", "port": 443}], audience="b")
    assert expand_bindings([("p", one)]).content_hash == expand_bindings([("p", one)]).content_hash
    assert expand_bindings([("p", one)]).content_hash != expand_bindings([("q", one)]).content_hash
    assert (
        expand_bindings([("p", one)]).content_hash != expand_bindings([("p", changed)]).content_hash
    )


def test_a_concrete_path_beats_any_host_only_binding() -> None:
    host_only = grant_profile([{"host": "api.example.com", "port": 443}], profile_id="host-only")
    path_wild_host = grant_profile(
        [{"host": "**.example.com", "port": 443, "path": "/v1/**"}], profile_id="path"
    )
    bindings = expand_bindings([("a", host_only), ("b", path_wild_host)])
    assert bindings.select("api.example.com", 443, "/v1/x").provider == "b"
    assert bindings.select("api.example.com", 443, "/v2/x").provider == "a"


def test_two_providers_binding_the_same_selector_collide_with_a_useful_message() -> None:
    one = grant_profile(
        [{"host": "api.example.com", "port": 443, "path": "/v1/**"}], profile_id="one"
    )
    two = grant_profile(
        [{"host": "API.example.com", "port": 443, "path": "/v1/**"}], profile_id="two"
    )
    (collision,) = find_collisions(expand_bindings([("first", one), ("second", two)]))
    message = collision.message()
    for fragment in (
        "'first:tok'",
        "'second:tok'",
        "api.example.com:443",
        "/v1/**",
        "attach only one",
    ):
        assert fragment in message


def test_the_same_selector_on_different_ports_does_not_collide() -> None:
    one = grant_profile([{"host": "api.example.com", "port": 443}], profile_id="one")
    two = grant_profile([{"host": "api.example.com", "port": 8443}], profile_id="two")
    assert find_collisions(expand_bindings([("a", one), ("b", two)])) == []


def test_binding_round_trips_through_plain_data() -> None:
    profile = grant_profile([{"host": "api.example.com", "port": 443}], scopes=["a", "b"])
    bindings = expand_bindings([("p", profile)])
    again = type(bindings).from_list(bindings.to_list(), bindings.content_hash)
    assert again == bindings


def test_the_demo_profile_lints_clean_and_binds_alpha_and_beta() -> None:
    from pathlib import Path

    from grantbox.profiles import load_file

    path = Path(__file__).parents[2] / "examples/spiffe-token-grant-demo/provider-profile.yaml"
    result = load_file(path)
    assert result.diagnostics == []
    (loaded,) = result.profiles
    assert validate_profile(loaded.profile) == []
    bindings = expand_bindings([("demo", loaded.profile)])
    alpha = bindings.select("alpha.localhost", 18081, "/hello")
    beta = bindings.select("beta.localhost", 18082, "/")
    assert alpha is not None and (alpha.audience, alpha.scopes) == ("alpha", ("alpha",))
    assert beta is not None and (beta.audience, beta.scopes) == ("beta", ("beta",))
    assert bindings.select("alpha.localhost", 18082, "/") is None


# ----------------------------------------------------------------- properties

LABELS = ["a", "b"]


@st.composite
def hosts(draw: st.DrawFn) -> str:
    labels = draw(st.lists(st.sampled_from([*LABELS, "*"]), min_size=1, max_size=2))
    if draw(st.booleans()):
        labels = ["**", *labels]
    return ".".join([*labels, "test"])


@st.composite
def paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(["x", "y", "*"]), min_size=0, max_size=2))
    if not segments or draw(st.booleans()):
        segments.append("**")
    return "/" + "/".join(segments)


def _binding(owner: str, host: str, path: str) -> GrantBinding:
    return GrantBinding(
        provider=owner,
        credential="c",
        profile="p",
        host=host,
        port=443,
        path=path,
        audience="",
        scopes=(),
        token_endpoint="https://t.test/t",
        svid_audience="https://t.test/t",
        assertion_type=JWT_BEARER,
        cache_ttl_seconds=0,
        header_name="Authorization",
        header_style="bearer",
    )


@settings(max_examples=300)
@given(hosts(), paths(), hosts(), paths())
def test_bindings_tie_exactly_when_their_selectors_are_identical(
    h1: str, p1: str, h2: str, p2: str
) -> None:
    a, b = _binding("one", h1, p1), _binding("two", h2, p2)
    from grantbox.profiles import parse_host_pattern, parse_path_pattern

    same = parse_host_pattern(h1) == parse_host_pattern(h2) and parse_path_pattern(
        p1
    ) == parse_path_pattern(p2)
    assert tie(a, b) == same
    assert bool(find_collisions([a, b])) == same


@pytest.mark.parametrize(
    ("host", "path"),
    [("x.a.test", "/x/y"), ("a.test", "/x"), ("b.b.test", "/y/x/z"), ("a.b.test", "/")],
)
@settings(max_examples=100)
@given(st.lists(st.tuples(hosts(), paths()), min_size=1, max_size=6, unique=True))
def test_selection_is_the_unique_most_specific_match(
    host: str, path: str, selectors: list[tuple[str, str]]
) -> None:
    from grantbox.profiles import BindingSet

    bindings = [_binding(f"p{i}", h, p) for i, (h, p) in enumerate(selectors)]
    if find_collisions(bindings):
        return
    chosen = BindingSet(tuple(bindings), "").select(host, 443, path)
    matching = [b for b in bindings if b.matches(host, 443, path)]
    if not matching:
        assert chosen is None
        return
    assert chosen is not None
    assert all(chosen.specificity() > b.specificity() for b in matching if b is not chosen)
