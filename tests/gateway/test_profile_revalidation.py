"""Every write re-checks that a profile's SVID audience identifies its token endpoint:
import, update, and sandbox create/attach for profiles stored before the rule existed."""

from __future__ import annotations

import json
import sqlite3

import yaml

from grantbox.gateway import GatewayServer
from tests.profiles.test_svid_audience import FIELD, KC, svid_profile
from tests.support.gateway_server import GatewayCli, grant_profile


def test_import_and_update_refuse_a_mismatch(gw: GatewayCli) -> None:
    bad = svid_profile("https://kc.example.com/realms/r2", KC)
    error = gw.refused("profile", "import", "-f", gw.write("bad.yaml", bad))
    assert FIELD in error and "does not identify the token endpoint" in error
    assert "api" not in _ids(gw)
    gw.ok("profile", "import", "-f", gw.write("good.yaml", svid_profile("", KC)))
    error = gw.refused("profile", "update", "api", "-f", gw.write("bad2.yaml", bad))
    assert FIELD in error
    exported = yaml.safe_load(gw.ok("profile", "export", "api").stdout)
    assert exported["credentials"][0]["token_grant"].get("jwt_svid_audience", "") == ""


def test_sandbox_create_revalidates_a_stored_profile(gw: GatewayCli, server: GatewayServer) -> None:
    """A profile stored before the rule existed is refused when a sandbox would use it."""
    gw.ok("profile", "import", "-f", gw.write("p.yaml", grant_profile("api")))
    gw.ok("provider", "create", "--name", "pa", "--type", "api", "--runtime-credentials")
    _tamper(server, "api", "https://elsewhere.example.com")
    error = gw.refused("sandbox", "create", "--name", "box", "--provider", "pa")
    assert "provider 'pa' uses profile 'api'" in error and FIELD in error
    assert gw.json("sandbox", "list") == []


def _tamper(server: GatewayServer, profile_id: str, audience: str) -> None:
    """Write a profile document the way an older version (without the rule) stored it."""
    with sqlite3.connect(server.settings.state_dir / "gateway.db") as db:
        (text,) = db.execute("SELECT document FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        document = json.loads(text)
        document["credentials"][0]["token_grant"]["jwt_svid_audience"] = audience
        db.execute(
            "UPDATE profiles SET document = ? WHERE id = ?", (json.dumps(document), profile_id)
        )


def _ids(gw: GatewayCli) -> list[str]:
    return [p["id"] for p in gw.json("profile", "list")]
