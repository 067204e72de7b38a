"""A name ending in a newline is refused through the real CLI, and nothing is created
(issue #12; the validators' property test is tests/security/test_names_and_ids.py)."""

from __future__ import annotations

from tests.support.gateway_server import GatewayCli, grant_profile


def test_cli_refuses_names_ending_in_a_newline_and_creates_nothing(gw: GatewayCli) -> None:
    gw.ok("profile", "import", "-f", gw.write("api.yaml", grant_profile("api")))
    error = gw.refused(
        "provider", "create", "--name", "pa\n", "--type", "api", "--runtime-credentials"
    )
    assert "provider name 'pa\\n' must be 1-63 lowercase letters" in error
    assert gw.json("provider", "list") == []
    gw.ok("provider", "create", "--name", "pa", "--type", "api", "--runtime-credentials")
    error = gw.refused("sandbox", "create", "--name", "ok\n", "--provider", "pa")
    assert "sandbox name 'ok\\n' must be 1-63 lowercase letters" in error
    assert gw.json("sandbox", "list") == []
    error = gw.refused("profile", "import", "-f", gw.write("bad.yaml", grant_profile("bad\n")))
    assert "must be lowercase kebab-case" in error
    ids = [p["id"] for p in gw.json("profile", "list")]
    assert "api" in ids and not any(i.startswith("bad") for i in ids)
