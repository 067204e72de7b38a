"""Profiles through the CLI against a live gateway: import, list, export, update, delete."""

from __future__ import annotations

import yaml

from tests.support.gateway_server import GatewayCli, grant_profile


def test_import_list_export_update_round_trip(gw: GatewayCli) -> None:
    gw.ok("profile", "import", "-f", gw.write("alpha.yaml", grant_profile("alpha")))
    listed = {p["id"]: p for p in gw.json("profile", "list")}
    assert listed["alpha"]["builtin"] is False
    assert listed["alpha"]["runtime_credentials"] is True
    assert listed["github"]["builtin"] is True

    exported = yaml.safe_load(gw.ok("profile", "export", "alpha").stdout)
    assert exported["resource_version"] == 1
    exported["credentials"][0]["token_grant"]["audience"] = "alpha-api"
    path = gw.write("alpha-edit.yaml", exported)
    updated = gw.json("profile", "update", "alpha", "-f", path)
    assert updated["resource_version"] == 2
    again = yaml.safe_load(gw.ok("profile", "export", "alpha").stdout)
    assert again["credentials"][0]["token_grant"]["audience"] == "alpha-api"

    error = gw.refused("profile", "update", "alpha", "-f", path)
    assert "resource_version 2, not 1" in error
    assert "HTTP 409" in error


def test_import_from_a_directory_is_all_or_nothing(gw: GatewayCli) -> None:
    (gw.workdir / "profiles").mkdir()
    gw.write("profiles/a.yaml", grant_profile("alpha"))
    bad = grant_profile("beta")
    bad["credentials"][0]["token_grant"]["token_endpoint"] = "http://issuer.example.com/token"
    gw.write("profiles/b.yaml", bad)
    error = gw.refused("profile", "import", "--from", str(gw.workdir / "profiles"))
    assert "beta" in error
    assert "token_endpoint" in error
    assert [p["id"] for p in gw.json("profile", "list")] == ["github"]


def test_import_is_create_only(gw: GatewayCli) -> None:
    path = gw.write("alpha.yaml", grant_profile("alpha"))
    gw.ok("profile", "import", "-f", path)
    assert "already exists" in gw.refused("profile", "import", "-f", path)


def test_update_needs_the_exported_version_and_a_matching_id(gw: GatewayCli) -> None:
    gw.ok("profile", "import", "-f", gw.write("alpha.yaml", grant_profile("alpha")))
    no_version = gw.write("nov.yaml", grant_profile("alpha"))
    assert "resource_version" in gw.refused("profile", "update", "alpha", "-f", no_version)
    other = gw.write("other.yaml", grant_profile("beta") | {"resource_version": 1})
    assert "does not match" in gw.refused("profile", "update", "alpha", "-f", other)
    missing = gw.write("missing.yaml", grant_profile("gamma") | {"resource_version": 1})
    assert "not found" in gw.refused("profile", "update", "gamma", "-f", missing)


def test_built_in_profiles_are_read_only(gw: GatewayCli) -> None:
    exported = yaml.safe_load(gw.ok("profile", "export", "github").stdout)
    path = gw.write("github.yaml", exported)
    assert "read-only" in gw.refused("profile", "update", "github", "-f", path)
    assert "read-only" in gw.refused("profile", "delete", "github")
    exported.pop("resource_version")
    assert "read-only" in gw.refused("profile", "import", "-f", gw.write("gh2.yaml", exported))


def test_delete_is_refused_while_a_provider_uses_the_profile(gw: GatewayCli) -> None:
    gw.ok("profile", "import", "-f", gw.write("alpha.yaml", grant_profile("alpha")))
    gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    assert "used by provider(s) pa" in gw.refused("profile", "delete", "alpha")
    gw.ok("provider", "delete", "pa")
    gw.ok("profile", "delete", "alpha")
    assert "not found" in gw.refused("profile", "export", "alpha")


def test_errors_are_one_line_and_json_output_is_stable(gw: GatewayCli) -> None:
    gw.ok("profile", "import", "-f", gw.write("alpha.yaml", grant_profile("alpha")))
    first = gw.ok("profile", "list", "-o", "json").stdout
    assert first == gw.ok("profile", "list", "-o", "json").stdout
    result = gw.run("profile", "export", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: profile 'nope' not found")


def test_unreachable_gateway_is_one_clear_line(gw: GatewayCli) -> None:
    down = GatewayCli("http://127.0.0.1:9", gw.token, gw.workdir)
    assert "cannot reach the gateway at http://127.0.0.1:9" in down.refused("profile", "list")
    wrong = GatewayCli(gw.url, "not-the-token", gw.workdir)
    refused = wrong.refused("profile", "list")
    assert "invalid operator token; check GRANTBOX_TOKEN" in refused
    assert refused.endswith("(HTTP 401)")


def test_a_file_that_does_not_parse_is_one_line_and_nothing_is_sent(gw: GatewayCli) -> None:
    path = gw.write("bad.yaml", "id: alpha\nid: again\n")
    result = gw.run("profile", "import", "-f", path)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "duplicate key" in result.stderr
    assert [p["id"] for p in gw.json("profile", "list")] == ["github"]
