"""Effective config: policy entries per provider, bindings and a revision that moves exactly
when an input moves."""

from __future__ import annotations

import json

import pytest

from grantbox.profiles import (
    EffectiveConfig,
    Profile,
    SandboxPolicy,
    build_effective_config,
    parse_profile,
)


def profile(audience: str = "a") -> Profile:
    doc = {
        "id": "api",
        "credentials": [
            {
                "name": "tok",
                "token_grant": {"token_endpoint": "https://t.example.com/t", "audience": audience},
            }
        ],
        "endpoints": [{"host": "api.example.com", "port": 443}],
    }
    parsed, diagnostics = parse_profile(doc, "<t>")
    assert parsed is not None, diagnostics
    return parsed


POLICY = SandboxPolicy.model_validate(
    {"network": [{"name": "pypi", "endpoints": [{"host": "pypi.org", "port": 443}]}]}
)


def test_policy_gets_one_entry_per_provider_after_the_sandbox_entries() -> None:
    config = build_effective_config("sb", POLICY, [("zed", profile()), ("abe", profile())])
    assert [e.name for e in config.policy.network] == ["pypi", "_provider_abe", "_provider_zed"]
    assert [b.provider for b in config.bindings] == ["abe", "zed"]


def test_revision_is_stable_and_moves_with_each_input() -> None:
    base = build_effective_config("sb", POLICY, [("p", profile())]).revision
    assert build_effective_config("sb", POLICY, [("p", profile())]).revision == base
    assert build_effective_config("sb", None, [("p", profile())]).revision != base
    assert build_effective_config("sb", POLICY, [("q", profile())]).revision != base
    assert build_effective_config("sb", POLICY, [("p", profile("b"))]).revision != base
    assert build_effective_config("sb", POLICY, []).revision != base
    assert build_effective_config("other", POLICY, [("p", profile())]).revision != base


def test_provider_entry_names_are_reserved() -> None:
    policy = SandboxPolicy.model_validate({"network": [{"name": "_provider_x"}]})
    with pytest.raises(ValueError, match="reserved"):
        build_effective_config("sb", policy, [])


def test_round_trips_through_json() -> None:
    config = build_effective_config("sb", POLICY, [("p", profile())])
    again = EffectiveConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def _policy(doc: dict[str, object]) -> SandboxPolicy:
    return SandboxPolicy.model_validate(doc)


def test_policy_endpoints_obey_the_profile_endpoint_rules() -> None:
    from grantbox.profiles import validate_policy

    good = _policy(
        {"network": [{"name": "web", "endpoints": [{"host": "*.example.com", "port": 443}]}]}
    )
    assert validate_policy(good) == []
    bad = _policy(
        {
            "network": [
                {"name": "web", "endpoints": [{"host": "a*.example.com", "port": 443}]},
                {"name": "web", "endpoints": [{"host": "x.example.com"}]},
                {"name": "_provider_x", "binaries": ["curl"]},
                {
                    "name": "meta",
                    "endpoints": [
                        {"host": "m.example.com", "port": 80, "allowed_ips": ["169.254.169.254"]}
                    ],
                },
            ]
        }
    )
    fields = sorted(d.field for d in validate_policy(bad))
    assert fields == [
        "network[0].endpoints[0].host",
        "network[1].endpoints[0].port",
        "network[1].name",
        "network[2].binaries[0]",
        "network[2].name",
        "network[3].endpoints[0].allowed_ips[0]",
    ]
    assert all(d.profile == "policy" for d in validate_policy(bad))
