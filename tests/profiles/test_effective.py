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
