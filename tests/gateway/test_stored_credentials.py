"""Stored credentials at the gateway: checked at every write, delivered only to the
sandbox's own supervisor, never shown to an operator, and a new value moves the revision."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from grantbox.drivers import SandboxSpec
from grantbox.gateway import GatewayServer
from grantbox.supervisor import SupervisorClient
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli

SECRET = "ghp_0123456789abcdef"


def stored(profile_id: str, env_var: str, header: str = "X-Key") -> dict[str, Any]:
    return {
        "id": profile_id,
        "credentials": [
            {
                "name": "key",
                "required": True,
                "auth_style": "header",
                "header_name": header,
                "env_var": env_var,
            }
        ],
        "endpoints": [{"host": f"{profile_id}.example.com", "port": 443}],
    }


@pytest.fixture
def box(gw: GatewayCli, driver: RecordingDriver) -> SandboxSpec:
    gw.ok("profile", "import", "-f", gw.write("svc.yaml", stored("svc", "SVC_KEY")))
    gw.ok("provider", "create", "--name", "svc", "--type", "svc", "--credential", f"key={SECRET}")
    gw.ok("sandbox", "create", "--name", "box", "--provider", "svc")
    (spec,) = driver.created
    return spec


def supervisor_config(server: GatewayServer, spec: SandboxSpec) -> Any:
    async def fetch() -> Any:
        async with SupervisorClient(server.url, spec.sandbox_id, spec.supervisor_token) as c:
            return await c.config()

    return asyncio.run(fetch())


def test_the_supervisor_alone_gets_the_value(
    server: GatewayServer, gw: GatewayCli, box: SandboxSpec
) -> None:
    config = supervisor_config(server, box)
    assert config.secrets.values == {"svc:key": SECRET}
    assert SECRET not in repr(config)
    assert [(b.owner, b.env_var) for b in config.statics] == [("svc:key", "SVC_KEY")]
    # What operators see: the bindings, never the value.
    for shown in (
        gw.run("sandbox", "config", "box", "-o", "json").stdout,
        gw.run("provider", "get", "svc", "-o", "json").stdout,
        gw.run("sandbox", "get", "box", "-o", "json").stdout,
        httpx.get(
            f"{server.url}/api/v1/sandboxes/box/config",
            headers={"Authorization": f"Bearer {server.operator_token}"},
        ).text,
    ):
        assert SECRET not in shown
    assert "SVC_KEY" in gw.run("sandbox", "config", "box", "-o", "json").stdout


def test_an_updated_value_moves_the_revision_and_a_detach_drops_it(
    server: GatewayServer, gw: GatewayCli, box: SandboxSpec
) -> None:
    before = supervisor_config(server, box)
    gw.ok("provider", "update", "svc", "--credential", "key=new-value")
    after = supervisor_config(server, box)
    assert after.revision != before.revision
    assert after.secrets.values == {"svc:key": "new-value"}
    gw.ok("sandbox", "detach", "--name", "box", "--provider", "svc")
    detached = supervisor_config(server, box)
    assert detached.secrets.values == {} and len(detached.statics) == 0


@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\x00b", "tab\x1bescape"])
def test_a_value_with_control_characters_is_refused_at_write(gw: GatewayCli, bad: str) -> None:
    gw.ok("profile", "import", "-f", gw.write("svc.yaml", stored("svc", "SVC_KEY")))
    error = gw.refused(
        "provider", "create", "--name", "svc", "--type", "svc", "--credential", f"key={bad}"
    )
    assert "control characters" in error and bad not in error
    gw.ok("provider", "create", "--name", "svc", "--type", "svc", "--credential", "key=fine")
    error = gw.refused("provider", "update", "svc", "--credential", f"key={bad}")
    assert "control characters" in error


def test_two_providers_that_would_share_a_header_or_a_variable_are_refused(
    gw: GatewayCli, box: SandboxSpec
) -> None:
    # Same variable, another header: the agent's environment would be ambiguous.
    same_var = stored("other", "SVC_KEY", header="X-Other")
    same_var["endpoints"] = [{"host": "svc.example.com", "port": 443}]
    gw.ok("profile", "import", "-f", gw.write("o.yaml", same_var))
    gw.ok("provider", "create", "--name", "other", "--type", "other", "--credential", "key=x")
    error = gw.refused("sandbox", "attach", "--name", "box", "--provider", "other")
    assert "$SVC_KEY" in error
    # Same header on the same endpoint: refused too; a header of its own is fine.
    clash = stored("clash", "CLASH_KEY", header="x-key")
    clash["endpoints"] = [{"host": "svc.example.com", "port": 443}]
    gw.ok("profile", "import", "-f", gw.write("c.yaml", clash))
    gw.ok("provider", "create", "--name", "clash", "--type", "clash", "--credential", "key=x")
    error = gw.refused("sandbox", "attach", "--name", "box", "--provider", "clash")
    assert "header 'x-key'" in error
    fine = stored("fine", "FINE_KEY", header="X-Fine")
    fine["endpoints"] = [{"host": "svc.example.com", "port": 443}]
    gw.ok("profile", "import", "-f", gw.write("f.yaml", fine))
    gw.ok("provider", "create", "--name", "fine", "--type", "fine", "--credential", "key=x")
    gw.ok("sandbox", "attach", "--name", "box", "--provider", "fine")
