"""Providers through the CLI: credential sources, secrecy, update and delete rules."""

from __future__ import annotations

import sqlite3

from grantbox.gateway import GatewayServer
from tests.support.gateway_server import GatewayCli, grant_profile


def test_runtime_credentials_only_for_profiles_resolved_at_run_time(gw: GatewayCli) -> None:
    gw.ok("profile", "import", "-f", gw.write("alpha.yaml", grant_profile("alpha")))
    created = gw.json(
        "provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials"
    )
    assert created["runtime_credentials"] is True
    assert created["credentials"] == []
    error = gw.refused(
        "provider", "create", "--name", "gh", "--type", "github", "--runtime-credentials"
    )
    assert "only valid for profiles whose required credentials" in error
    assert "github" in error
    assert "neither" not in error
    assert "or --runtime-credentials for profiles resolved at run time" in gw.refused(
        "provider", "create", "--name", "x", "--type", "alpha"
    )


def test_stored_credentials_are_never_shown_nor_stored_in_clear(
    gw: GatewayCli, server: GatewayServer
) -> None:
    secret = "ghp_averyprivatevalue42"
    created = gw.ok(
        "provider", "create", "--name", "gh", "--type", "github", "--credential", f"token={secret}"
    )
    assert secret not in created.stdout
    for args in (("provider", "get", "gh", "-o", "json"), ("provider", "list", "-o", "yaml")):
        assert secret not in gw.ok(*args).stdout
    assert gw.json("provider", "get", "gh")["credentials"] == ["token"]
    db = server.settings.state_dir / "gateway.db"
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT * FROM providers").fetchall()
    assert rows and secret not in repr(rows)
    for file in server.settings.state_dir.iterdir():
        assert secret.encode() not in file.read_bytes()


def test_credential_names_are_checked_against_the_profile(gw: GatewayCli) -> None:
    gw.ok("profile", "import", "-f", gw.write("alpha.yaml", grant_profile("alpha")))
    assert "has no credential 'nope'" in gw.refused(
        "provider", "create", "--name", "gh", "--type", "github", "--credential", "nope=x"
    )
    assert "obtained at run time" in gw.refused(
        "provider", "create", "--name", "pa", "--type", "alpha", "--credential", "access_token=x"
    )
    assert "not found" in gw.refused(
        "provider", "create", "--name", "px", "--type", "missing", "--runtime-credentials"
    )
    assert "must be 1-63 lowercase" in gw.refused(
        "provider", "create", "--name", "Bad_Name", "--type", "alpha", "--runtime-credentials"
    )


def test_update_and_delete(gw: GatewayCli) -> None:
    gw.ok("profile", "import", "-f", gw.write("alpha.yaml", grant_profile("alpha")))
    gw.ok("provider", "create", "--name", "gh", "--type", "github", "--credential", "token=one")
    updated = gw.json("provider", "update", "gh", "--credential", "token=two")
    assert updated["resource_version"] == 2
    stale = gw.refused(
        "provider", "update", "gh", "--resource-version", "1", "--credential", "token=3"
    )
    assert "resource_version 2, not 1" in stale
    switched = gw.json("provider", "update", "gh", "--type", "alpha", "--runtime-credentials")
    assert (switched["type"], switched["runtime_credentials"]) == ("alpha", True)
    gw.ok("provider", "delete", "gh")
    assert "not found" in gw.refused("provider", "get", "gh")
