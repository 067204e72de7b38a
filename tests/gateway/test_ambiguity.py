"""Every write that could make a sandbox's grants ambiguous is refused with nothing written.

The refusal names the sandbox, both ``provider:credential`` owners, the host and port and
both path selectors, so the operator knows exactly what to change.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support.gateway_server import GatewayCli, grant_profile


def _state(gw: GatewayCli) -> dict[str, Any]:
    """Everything a refused write must leave untouched."""
    return {
        "profiles": gw.json("profile", "list"),
        "providers": gw.json("provider", "list"),
        "sandboxes": [
            {k: v for k, v in s.items() if k != "phase_reason"} for s in gw.json("sandbox", "list")
        ],
        "configs": {
            s["name"]: gw.json("sandbox", "config", s["name"]) for s in gw.json("sandbox", "list")
        },
    }


def _assert_names_the_collision(error: str, sandbox: str, first: str, second: str) -> None:
    assert f"sandbox '{sandbox}'" in error
    assert f"'{first}:access_token'" in error
    assert f"'{second}:access_token'" in error
    assert "api.example.com:443" in error
    assert "ambiguous" in error
    assert "HTTP 409" in error


@pytest.fixture
def world(gw: GatewayCli) -> GatewayCli:
    """alpha binds /v1/**, beta binds /v2/**, clash binds /v1/** like alpha."""
    docs = [
        grant_profile("alpha", path="/v1/**"),
        grant_profile("beta", path="/v2/**"),
        grant_profile("clash", path="/v1/**"),
    ]
    gw.ok("profile", "import", "-f", gw.write("profiles.yaml", docs))
    for name, profile in (("pa", "alpha"), ("pb", "beta"), ("pc", "clash")):
        gw.ok("provider", "create", "--name", name, "--type", profile, "--runtime-credentials")
    return gw


def test_sandbox_create(world: GatewayCli) -> None:
    before = _state(world)
    error = world.refused(
        "sandbox", "create", "--name", "box", "--provider", "pa", "--provider", "pc"
    )
    _assert_names_the_collision(error, "box", "pa", "pc")
    assert "'/v1/**' and '/v1/**'" in error
    assert _state(world) == before


def test_attach(world: GatewayCli) -> None:
    world.ok("sandbox", "create", "--name", "box", "--provider", "pa", "--provider", "pb")
    before = _state(world)
    error = world.refused("sandbox", "attach", "--name", "box", "--provider", "pc")
    _assert_names_the_collision(error, "box", "pa", "pc")
    assert _state(world) == before


def test_provider_update(world: GatewayCli) -> None:
    world.ok("sandbox", "create", "--name", "box", "--provider", "pa", "--provider", "pb")
    world.ok("sandbox", "create", "--name", "other", "--provider", "pb")
    before = _state(world)
    error = world.refused("provider", "update", "pb", "--type", "clash", "--runtime-credentials")
    _assert_names_the_collision(error, "box", "pa", "pb")
    assert "sandbox 'other'" not in error
    assert _state(world) == before


def test_profile_update(world: GatewayCli) -> None:
    world.ok("sandbox", "create", "--name", "box", "--provider", "pa", "--provider", "pb")
    before = _state(world)
    exported = yaml.safe_load(world.ok("profile", "export", "beta").stdout)
    exported["endpoints"][0]["path"] = "/v1/**"
    error = world.refused("profile", "update", "beta", "-f", world.write("beta.yaml", exported))
    _assert_names_the_collision(error, "box", "pa", "pb")
    assert "profile update refused" in error
    assert _state(world) == before


def test_profile_update_checks_every_sandbox_using_the_profile(world: GatewayCli) -> None:
    world.ok("sandbox", "create", "--name", "one", "--provider", "pa")
    world.ok("sandbox", "create", "--name", "two", "--provider", "pa", "--provider", "pb")
    before = _state(world)
    exported = yaml.safe_load(world.ok("profile", "export", "alpha").stdout)
    exported["endpoints"][0]["path"] = "/v2/**"
    error = world.refused("profile", "update", "alpha", "-f", world.write("a.yaml", exported))
    _assert_names_the_collision(error, "two", "pa", "pb")
    assert _state(world) == before


def test_profile_import_of_a_colliding_profile_cannot_touch_a_sandbox(world: GatewayCli) -> None:
    """Import is create-only and providers need an existing profile, so a new profile is never
    attached anywhere: importing one that binds the same selectors is accepted and changes no
    sandbox. The import's own ambiguity refusal is reachable only from state a race between
    replicas leaves behind; test_store.py builds that state and checks the refusal."""
    world.ok("sandbox", "create", "--name", "box", "--provider", "pa")
    before = _state(world)["configs"]
    world.ok(
        "profile", "import", "-f", world.write("d.yaml", grant_profile("delta", path="/v1/**"))
    )
    assert _state(world)["configs"] == before


def test_the_same_provider_credential_never_collides_with_itself(world: GatewayCli) -> None:
    world.ok("sandbox", "create", "--name", "box", "--provider", "pa", "--provider", "pb")
    world.ok("sandbox", "detach", "--name", "box", "--provider", "pb")
    world.ok("sandbox", "attach", "--name", "box", "--provider", "pb")
