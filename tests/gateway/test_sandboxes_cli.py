"""Sandboxes through the CLI: driver hand-off, phases, attach/detach, logs, delete."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from grantbox.drivers import DriverState, DriverStatus
from grantbox.gateway import GatewayServer
from grantbox.supervisor import SupervisorClient
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli, gateway_settings, grant_profile, serving


def _wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture
def provider(gw: GatewayCli) -> str:
    gw.ok("profile", "import", "-f", gw.write("alpha.yaml", grant_profile("alpha", path="/a/**")))
    gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    return "pa"


def test_create_hands_the_driver_a_spec_with_a_token_for_this_sandbox(
    gw: GatewayCli, server: GatewayServer, driver: RecordingDriver, provider: str
) -> None:
    created = gw.json(
        "sandbox", "create", "--name", "box", "--provider", provider, "--", "sleep", "30"
    )
    assert created["phase"] == "provisioning"
    assert created["providers"] == ["pa"]
    [spec] = driver.created
    assert (spec.sandbox_id, spec.name, spec.command) == (created["id"], "box", ("sleep", "30"))
    assert spec.gateway_url == server.url
    assert spec.spiffe_path == f"/grantbox/sandbox/{created['id']}"
    assert server.gateway.issuer.verify(spec.supervisor_token).sandbox_id == created["id"]
    assert spec.supervisor_token not in repr(spec)


def test_phase_follows_driver_status_and_heartbeats(
    gw: GatewayCli, driver: RecordingDriver, server: GatewayServer, provider: str
) -> None:
    created = gw.json("sandbox", "create", "--name", "box", "--provider", provider)
    spec = driver.created[0]

    async def beat() -> None:
        async with SupervisorClient(spec.gateway_url, spec.sandbox_id, spec.supervisor_token) as c:
            await c.heartbeat(applied_revision=created["revision"])

    asyncio.run(beat())
    got = gw.json("sandbox", "get", "box")
    assert (got["phase"], got["applied_revision"]) == ("ready", created["revision"])
    driver.report(spec.sandbox_id, DriverStatus(DriverState.FAILED, "supervisor exited 3"))
    _wait_for(lambda: gw.json("sandbox", "get", "box")["phase"] == "error")
    assert gw.json("sandbox", "get", "box")["phase_reason"] == "supervisor exited 3"


def test_driver_failure_on_create_shows_as_error(
    gw: GatewayCli, driver: RecordingDriver, provider: str
) -> None:
    driver.fail_create = "no capacity"
    created = gw.json("sandbox", "create", "--name", "box", "--provider", provider)
    assert created["phase"] == "error"
    assert "no capacity" in created["phase_reason"]


def test_attach_and_detach_change_the_effective_config(gw: GatewayCli, provider: str) -> None:
    gw.ok("profile", "import", "-f", gw.write("beta.yaml", grant_profile("beta", path="/b/**")))
    gw.ok("provider", "create", "--name", "pb", "--type", "beta", "--runtime-credentials")
    created = gw.json("sandbox", "create", "--name", "box", "--provider", provider)
    attached = gw.json("sandbox", "attach", "--name", "box", "--provider", "pb")
    assert attached["providers"] == ["pa", "pb"]
    assert attached["revision"] != created["revision"]
    config = gw.json("sandbox", "config", "box")
    assert {e["name"] for e in config["policy"]["network"]} == {"_provider_pa", "_provider_pb"}
    assert {b["provider"] for b in config["bindings"]} == {"pa", "pb"}
    assert "already attached" in gw.refused(
        "sandbox", "attach", "--name", "box", "--provider", "pb"
    )
    detached = gw.json("sandbox", "detach", "--name", "box", "--provider", "pb")
    assert detached["providers"] == ["pa"]
    assert detached["revision"] == created["revision"]
    assert "not attached" in gw.refused("sandbox", "detach", "--name", "box", "--provider", "pb")


def test_policy_file_and_reserved_entry_names(gw: GatewayCli, provider: str) -> None:
    policy = {"network": [{"name": "pypi", "endpoints": [{"host": "pypi.org", "port": 443}]}]}
    created = gw.json("sandbox", "create", "--name", "box", "--policy", gw.write("p.yaml", policy))
    assert created["policy"]["network"][0]["name"] == "pypi"
    reserved = {"network": [{"name": "_provider_x", "endpoints": []}]}
    error = gw.refused(
        "sandbox", "create", "--name", "box2", "--policy", gw.write("r.yaml", reserved)
    )
    assert "reserved" in error
    assert "box2" not in [s["name"] for s in gw.json("sandbox", "list")]
    bad = {"network": [{"name": "x", "endpoints": [{"host": "a.example", "port": 70000}]}]}
    assert "policy" in gw.refused(
        "sandbox", "create", "--name", "box3", "--policy", gw.write("b.yaml", bad)
    )
    # Semantic rules are the same as for profile endpoints: bad patterns, no usable port and
    # metadata addresses are refused with the field named, and nothing is written.
    semantic = {
        "network": [
            {"name": "x", "endpoints": [{"host": "api*.example.com", "port": 443}]},
            {"name": "y", "endpoints": [{"host": "m.example.com", "allowed_ips": ["169.254.0.1"]}]},
        ]
    }
    error = gw.refused(
        "sandbox", "create", "--name", "box4", "--policy", gw.write("s.yaml", semantic)
    )
    for field in ("network[0].endpoints[0].host", "network[1].endpoints[0].port"):
        assert field in error
    assert "box4" not in [s["name"] for s in gw.json("sandbox", "list")]


def test_logs_shipped_by_the_supervisor_are_shown(
    gw: GatewayCli, driver: RecordingDriver, provider: str
) -> None:
    gw.ok("sandbox", "create", "--name", "box", "--provider", provider)
    spec = driver.created[0]

    async def ship() -> None:
        async with SupervisorClient(spec.gateway_url, spec.sandbox_id, spec.supervisor_token) as c:
            await c.ship_logs([{"stream": "agent", "message": f"line {i}"} for i in range(3)])
            await c.ship_events([{"kind": "policy_denied", "host": "evil.example"}])

    asyncio.run(ship())
    out = gw.ok("sandbox", "logs", "box").stdout
    assert [line.split("] ", 1)[1] for line in out.splitlines()] == ["line 0", "line 1", "line 2"]
    raw = gw.ok("sandbox", "logs", "box", "--tail", "2", "-o", "json").stdout.splitlines()
    assert [json.loads(line)["message"] for line in raw] == ["line 1", "line 2"]
    lines = gw.ok("sandbox", "events", "box", "-o", "json").stdout.splitlines()
    [event] = [json.loads(line) for line in lines]
    assert (event["kind"], event["data"]["host"]) == ("policy_denied", "evil.example")


def test_delete_stops_the_sandbox_and_revokes_its_supervisor(
    gw: GatewayCli, driver: RecordingDriver, provider: str
) -> None:
    gw.ok("sandbox", "create", "--name", "box", "--provider", provider)
    spec = driver.created[0]
    assert "attached to sandbox(es) box" in gw.refused("provider", "delete", "pa")
    driver.fail_delete = "api down"
    assert "driver failed: api down" in gw.refused("sandbox", "delete", "box")
    assert gw.json("sandbox", "get", "box")["phase"] == "deleting"
    driver.fail_delete = ""
    gw.ok("sandbox", "delete", "box")
    assert driver.deleted == [spec.sandbox_id]
    assert gw.json("sandbox", "list") == []

    async def fetch() -> int:
        async with SupervisorClient(spec.gateway_url, spec.sandbox_id, spec.supervisor_token) as c:
            try:
                await c.config()
            except Exception as exc:
                return int(getattr(exc, "status", 0))
        return 200

    assert asyncio.run(fetch()) == 404
    gw.ok("provider", "delete", "pa")


def test_without_a_driver_sandboxes_are_refused_clearly(tmp_path: Path) -> None:
    with serving(gateway_settings(tmp_path)) as server:
        gw = GatewayCli(server.url, server.operator_token, tmp_path)
        error = gw.refused("sandbox", "create", "--name", "box")
        assert "no compute driver" in error
        assert "HTTP 503" in error
        assert gw.json("sandbox", "list") == []
