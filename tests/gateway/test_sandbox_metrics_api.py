"""Sandbox metrics through the real gateway: heartbeat snapshots on ``/metrics``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantbox.drivers import SandboxSpec
from grantbox.gateway import GatewayServer
from grantbox.supervisor import SupervisorClient, SupervisorClientError
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli, grant_profile

ALLOWED = 'grantbox_proxy_requests_total{code="",decision="allowed",sandbox="box-a"}'


def _sample(value: float, code: str = "") -> dict[str, Any]:
    return {
        "name": "grantbox_proxy_requests_total",
        "type": "counter",
        "labels": {"decision": "allowed", "code": code},
        "value": value,
    }


@pytest.fixture
def boxes(gw: GatewayCli, driver: RecordingDriver) -> tuple[SandboxSpec, SandboxSpec]:
    gw.ok("profile", "import", "-f", gw.write("a.yaml", grant_profile("alpha", path="/a/**")))
    gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    gw.ok("sandbox", "create", "--name", "box-a", "--provider", "pa")
    gw.ok("sandbox", "create", "--name", "box-b", "--provider", "pa")
    a, b = driver.created
    return a, b


def _beat(spec: SandboxSpec, tmp_path: Path, revision: str, **kwargs: Any) -> dict[str, Any]:
    token_file = tmp_path / f"token-{spec.sandbox_id}"
    token_file.write_text(spec.supervisor_token)
    token_file.chmod(0o600)

    async def call() -> dict[str, Any]:
        client = SupervisorClient.from_token_file(spec.gateway_url, spec.sandbox_id, token_file)
        async with client:
            return await client.heartbeat(revision, **kwargs)

    return asyncio.run(call())


def _scrape(server: GatewayServer) -> str:
    return httpx.get(f"{server.url}/metrics").text


def test_a_heartbeat_snapshot_is_served_with_the_sandbox_name(
    server: GatewayServer, gw: GatewayCli, boxes: tuple[SandboxSpec, SandboxSpec], tmp_path: Path
) -> None:
    a, b = boxes
    assert "sandbox=" not in _scrape(server)
    _beat(a, tmp_path, "r1", metrics=[_sample(4)])
    assert f"{ALLOWED} 4.0" in _scrape(server)
    _beat(a, tmp_path, "r1", metrics=[_sample(7)])  # the latest replaces the one before
    text = _scrape(server)
    assert f"{ALLOWED} 7.0" in text and f"{ALLOWED} 4.0" not in text
    # an older supervisor sends no snapshot: accepted, and box-b has no series
    assert _beat(b, tmp_path, "rb")["phase"] == "ready"
    assert gw.json("sandbox", "get", "box-b")["applied_revision"] == "rb"
    assert 'sandbox="box-b"' not in _scrape(server)
    gw.ok("sandbox", "delete", "box-a")
    assert 'sandbox="box-a"' not in _scrape(server)


def test_a_refused_snapshot_refuses_the_whole_heartbeat(
    server: GatewayServer, gw: GatewayCli, boxes: tuple[SandboxSpec, SandboxSpec], tmp_path: Path
) -> None:
    a, _ = boxes
    _beat(a, tmp_path, "r1", metrics=[_sample(4)])
    hostile = [
        [{**_sample(5), "name": "process_cpu_seconds_total"}],
        [{**_sample(5), "labels": {"decision": "allowed", "code": "", "host": "evil"}}],
        [_sample(5, code="x\n# TYPE fake counter")],
        [_sample(5, code=f"c{i}") for i in range(501)],  # too many series
        [_sample(5, code="a" * 70_000)],  # too many bytes
    ]
    for metrics in hostile:
        with pytest.raises(SupervisorClientError) as refused:
            _beat(a, tmp_path, "r2", metrics=metrics)
        assert refused.value.status == 422, refused.value
        assert refused.value.code == "invalid_request"
    assert "bytes" in str(refused.value)
    text = _scrape(server)
    assert f"{ALLOWED} 4.0" in text, "the previous snapshot stays"
    assert "evil" not in text and "fake" not in text
    assert gw.json("sandbox", "get", "box-a")["applied_revision"] == "r1", "nothing applied"


def test_a_supervisor_reports_only_for_its_own_sandbox(
    server: GatewayServer, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    a, b = boxes
    response = httpx.post(
        f"{server.url}/api/v1/supervisor/sandboxes/{b.sandbox_id}/heartbeat",
        headers={"Authorization": f"Bearer {a.supervisor_token}"},
        json={"applied_revision": "x", "metrics": [_sample(9)]},
    )
    assert response.status_code == 403
    assert "sandbox=" not in _scrape(server)
