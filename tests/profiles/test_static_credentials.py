"""Stored credentials in profiles: their bindings, their rules, and several credentials on
one request (one per header), over plain data."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from grantbox.profiles import (
    EffectiveConfig,
    Profile,
    SandboxPolicy,
    Severity,
    StaticSecrets,
    build_effective_config,
    expand_bindings,
    expand_statics,
    find_collisions,
    most_specific_each,
    parse_profile,
    validate_policy,
    validate_profiles,
    variable_conflicts,
)

GRANT = {"token_endpoint": "https://auth.example.com/token"}
B64 = base64.b64encode(b"v").decode()
C0 = "credentials[0]"


def doc(
    *credentials: dict[str, Any], endpoints: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "id": "api",
        "credentials": list(credentials),
        "endpoints": endpoints or [{"host": "api.example.com", "port": 443, "path": "/v1/**"}],
    }


def errors(document: dict[str, Any]) -> list[tuple[str, str]]:
    profile, diagnostics = parse_profile(document, "<t>")
    if profile is not None:
        diagnostics = diagnostics + validate_profiles([profile])
    return [(d.field, d.message) for d in diagnostics if d.severity is Severity.ERROR]


def profile(document: dict[str, Any]) -> Profile:
    return Profile.model_validate(document)


def test_a_stored_credential_binds_every_endpoint_and_port_but_raw_tunnels() -> None:
    p = profile(
        doc(
            {"name": "api-key.v2", "auth_style": "header", "header_name": "X-Api-Key"},
            endpoints=[
                {"host": "api.example.com", "ports": [443, 8443], "path": "/v1/**"},
                {"host": "up.example.com", "port": 443, "credential_body_rewrite": True},
                {"host": "raw.example.com", "port": 22, "tls": "skip"},
            ],
        )
    )
    statics = expand_statics([("prov", p)])
    assert [(b.host, b.port, b.path, b.body_rewrite) for b in statics] == [
        ("api.example.com", 443, "/v1/**", False),
        ("up.example.com", 443, "", True),
        ("api.example.com", 8443, "/v1/**", False),
    ]
    binding = statics.bindings[0]
    assert binding.owner == "prov:api-key.v2"
    assert binding.env_var == "API_KEY_V2"  # derived: upper-case, '-' and '.' as '_'
    assert binding.placement_key == "x-api-key"
    assert statics.matching("api.example.com", 443, "/v1/x") == (binding,)
    assert statics.matching("api.example.com", 443, "/v2/x") == ()
    assert type(statics).from_list(statics.to_list()) == statics


@pytest.mark.parametrize(
    ("credential", "key", "value"),
    [
        ({"name": "k"}, "", None),
        ({"name": "k", "auth_style": "bearer"}, "authorization", "Bearer v"),
        ({"name": "k", "auth_style": "header", "header_name": "X-K"}, "x-k", "v"),
        ({"name": "k", "auth_style": "basic"}, "authorization", "Basic " + B64),
        ({"name": "k", "auth_style": "query", "query_param": "key"}, "?key", None),
    ],
)  # fmt: skip
def test_auth_style_says_where_a_stored_credential_is_placed(
    credential: dict[str, Any], key: str, value: str | None
) -> None:
    (binding, *_) = expand_statics([("p", profile(doc(credential)))])
    assert binding.placement_key == key
    if value is not None:
        assert binding.header_value("v") == value


@pytest.mark.parametrize(
    ("credential", "field", "fragment"),
    [
        ({"name": "k", "header_name": "X-K"}, f"{C0}.header_name", "needs auth_style"),
        ({"name": "k", "env_var": "1BAD"}, f"{C0}.env_var", "not a valid"),
        ({"name": "k", "env_var": "HTTPS_PROXY"}, f"{C0}.env_var", "set by the sandbox"),
        ({"name": "k", "env_var": "GRANTBOX_KEY"}, f"{C0}.env_var", "reserved"),
        ({"name": "path"}, f"{C0}.name", "set by the sandbox"),
        ({"name": "k", "env_var": "K", "token_grant": GRANT}, f"{C0}.env_var", "never reaches"),
        ({"name": "k", "auth_style": "header", "header_name": "Host"}, f"{C0}.header_name",
         "frames"),
    ],
)  # fmt: skip
def test_stored_credential_rules(credential: dict[str, Any], field: str, fragment: str) -> None:
    found = errors(doc(credential))
    assert any(f == field and fragment in m for f, m in found), found


def test_two_credentials_may_not_share_a_variable() -> None:
    found = errors(doc({"name": "a", "env_var": "KEY"}, {"name": "b", "env_var": "KEY"}))
    assert any(f == "credentials[1].env_var" and "$KEY" in m for f, m in found)


def test_credential_body_rewrite_needs_a_stored_credential_and_a_profile() -> None:
    endpoint = {"host": "a.example.com", "port": 443, "credential_body_rewrite": True}
    found = errors(doc({"name": "t", "token_grant": GRANT}, endpoints=[endpoint]))
    assert any("no stored credential" in m for _, m in found)
    assert errors(doc({"name": "k"}, endpoints=[endpoint])) == []
    policy = SandboxPolicy.model_validate({"network": [{"name": "n", "endpoints": [endpoint]}]})
    (diagnostic,) = validate_policy(policy)
    assert diagnostic.field == "network[0].endpoints[0].credential_body_rewrite"


def test_a_stored_credential_next_to_a_raw_tunnel_is_only_a_warning() -> None:
    p, _ = parse_profile(
        doc({"name": "k"}, endpoints=[{"host": "raw.example.com", "port": 22, "tls": "skip"}]),
        "<t>",
    )
    assert p is not None
    found = validate_profiles([p])
    assert [d.severity for d in found] == [Severity.WARNING]


# -- several credentials on one request -------------------------------------------------


@pytest.mark.parametrize(
    ("second", "clash"),
    [
        # a second grant in its own header: both go on the request
        ({"name": "b", "auth_style": "header", "header_name": "X-B", "token_grant": GRANT}, False),
        # a stored credential in its own header, or placing nothing
        ({"name": "b", "auth_style": "header", "header_name": "X-B"}, False),
        ({"name": "b"}, False),
        # the same header, the same endpoints: ambiguous
        ({"name": "b", "token_grant": GRANT}, True),
        ({"name": "b", "auth_style": "bearer"}, True),
        ({"name": "b", "auth_style": "basic"}, True),
        ({"name": "b", "auth_style": "header", "header_name": "authorization"}, True),
    ],
)  # fmt: skip
def test_each_header_takes_one_credential(second: dict[str, Any], clash: bool) -> None:
    found = errors(doc({"name": "a", "token_grant": GRANT}, second))
    ambiguous = [m for _, m in found if "two candidates" in m]
    assert bool(ambiguous) == clash, found
    if clash:
        assert "header 'authorization'" in ambiguous[0]


def test_across_providers_the_same_header_collides_and_distinct_headers_do_not() -> None:
    grant = profile(doc({"name": "token", "token_grant": GRANT}))
    keyed = profile(doc({"name": "key", "auth_style": "header", "header_name": "X-Api-Key"}))
    bearer = profile(doc({"name": "key", "auth_style": "bearer"}))
    pairs = [("g", grant), ("k", keyed)]
    assert find_collisions(expand_bindings(pairs), expand_statics(pairs)) == []
    pairs = [("g", grant), ("b", bearer)]
    (collision,) = find_collisions(expand_bindings(pairs), expand_statics(pairs))
    message = collision.message()
    assert message.startswith("credentials 'b:key' and 'g:token' are ambiguous")
    assert "header 'authorization'" in message and "another header" in message


def test_a_more_specific_binding_wins_its_header_and_each_header_is_chosen_once() -> None:
    broad = profile(
        doc(
            {"name": "t", "token_grant": GRANT},
            endpoints=[{"host": "api.example.com", "port": 443}],
        )
    )
    narrow = profile(doc({"name": "k", "auth_style": "bearer"}))
    extra = profile(doc({"name": "x", "auth_style": "header", "header_name": "X-Extra"}))
    pairs = [("broad", broad), ("narrow", narrow), ("extra", extra)]
    bindings = [*expand_bindings(pairs), *expand_statics(pairs)]
    assert find_collisions(expand_bindings(pairs), expand_statics(pairs)) == []
    chosen = most_specific_each(bindings, "api.example.com", 443, "/v1/x")
    assert [b.owner for b in chosen] == ["narrow:k", "extra:x"]
    chosen = most_specific_each(bindings, "api.example.com", 443, "/v2/x")
    assert [b.owner for b in chosen] == ["broad:t"]


def test_two_providers_may_not_set_one_variable() -> None:
    one = profile(doc({"name": "token", "env_var": "API_TOKEN"}))
    two = profile({**doc({"name": "key", "env_var": "API_TOKEN"}), "id": "two"})
    (message,) = variable_conflicts(expand_statics([("a", one), ("b", two)]))
    assert "'a:token', 'b:key'" in message and "$API_TOKEN" in message


def test_the_effective_config_carries_bindings_but_never_values() -> None:
    p = profile(doc({"name": "key", "auth_style": "bearer"}))
    config = build_effective_config("s", None, [("gh", p)], credential_versions={"gh": 1})
    moved = build_effective_config("s", None, [("gh", p)], credential_versions={"gh": 2})
    assert config.revision != moved.revision  # a stored value updated: supervisors refetch
    secret = config.with_secrets(StaticSecrets({"gh:key": "hunter2"}, {"gh:key": "p"}))
    data = secret.to_dict()
    assert data["static_bindings"][0]["env_var"] == "KEY"
    assert "hunter2" not in repr(secret) and "hunter2" not in str(data)
    again = EffectiveConfig.from_dict(data)
    assert again == secret and again.secrets.values == {}
