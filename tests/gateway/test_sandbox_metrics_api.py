"""Sandbox metrics through the real gateway: heartbeat snapshots on ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import Counter

from grantbox.drivers import SandboxSpec
from grantbox.gateway import GatewayServer
from grantbox.supervisor import SupervisorClient, SupervisorClientError
from grantbox.supervisor.launch import SupervisorOptions
from grantbox.supervisor.runtime import METRICS_RETRY, Supervisor
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
    # Families and labels this gateway does not know are skipped, never exposed; the rest
    # of the snapshot is taken.
    unknown = [
        {**_sample(5), "name": "process_cpu_seconds_total"},
        {**_sample(5), "labels": {"decision": "allowed", "code": "", "host": "evil"}},
    ]
    _beat(a, tmp_path, "r3", metrics=[_sample(6), *unknown])
    text = _scrape(server)
    assert f"{ALLOWED} 6.0" in text
    assert "evil" not in text and "process_cpu_seconds_total{" not in text


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


def _supervisor(spec: SandboxSpec, tmp_path: Path) -> Supervisor:
    token = tmp_path / f"state-{spec.sandbox_id}" / "supervisor-token"
    token.parent.mkdir()
    token.write_text(spec.supervisor_token)
    token.chmod(0o600)
    return Supervisor(
        SupervisorOptions(
            gateway_url=spec.gateway_url,
            sandbox_id=spec.sandbox_id,
            token_file=token,
            identity_socket=f"unix://{tmp_path}/sockets/agent.sock",
        )
    )


async def test_the_supervisors_heartbeat_carries_its_registry(
    server: GatewayServer, gw: GatewayCli, boxes: tuple[SandboxSpec, SandboxSpec], tmp_path: Path
) -> None:
    a, b = boxes
    good, newer = _supervisor(a, tmp_path), _supervisor(b, tmp_path)
    # A supervisor newer than the gateway, with a family the gateway does not know: that
    # family is skipped, every other series of the sandbox is still served.
    Counter("grantbox_not_allowed", "not on the allow-list", registry=newer.registry).inc()
    try:
        await good._heartbeat("r1")
        await newer._heartbeat("rb")
    finally:
        await good._shutdown()
        await newer._shutdown()
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{server.url}/metrics")).text
    for box in ("box-a", "box-b"):
        assert f'grantbox_token_cache_entries{{sandbox="{box}"}} 0.0' in text
        assert f'grantbox_supervisor_outbox_capacity{{kind="logs",sandbox="{box}"}}' in text
    assert "grantbox_not_allowed" not in text


async def test_a_refused_snapshot_leaves_the_heartbeat_whole_and_is_offered_again_later(
    server: GatewayServer, gw: GatewayCli, boxes: tuple[SandboxSpec, SandboxSpec], tmp_path: Path
) -> None:
    """A snapshot the gateway refuses (a label value that is not plain, as a broken
    supervisor might send; or a gateway predating the field): the heartbeat is sent again
    without it, later ones leave it out for a while, then offer it again."""
    _, b = boxes
    bad = _supervisor(b, tmp_path)
    broken = Counter("grantbox_proxy_requests", "x", ["decision", "code"], registry=bad.registry)
    broken.labels("allowed", "not\nplain").inc()
    try:
        await bad._heartbeat("rb")
        assert bad._metrics_from > time.monotonic() + METRICS_RETRY / 2
        await bad._heartbeat("rb2")
        got = await asyncio.to_thread(gw.json, "sandbox", "get", "box-b")
        assert got["applied_revision"] == "rb2"
        async with httpx.AsyncClient() as client:
            assert 'sandbox="box-b"' not in (await client.get(f"{server.url}/metrics")).text
        bad.registry.unregister(broken)
        bad._metrics_from = time.monotonic()  # the retry time has come
        await bad._heartbeat("rb3")
    finally:
        await bad._shutdown()
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{server.url}/metrics")).text
    assert 'grantbox_token_cache_entries{sandbox="box-b"} 0.0' in text


def test_a_snapshot_too_deep_to_measure_is_refused_not_a_server_error(
    server: GatewayServer, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    a, _ = boxes
    deep = "[" * 300 + "]" * 300  # orjson reads 1024 levels but writes only 255
    response = httpx.post(
        f"{server.url}/api/v1/supervisor/sandboxes/{a.sandbox_id}/heartbeat",
        headers={
            "Authorization": f"Bearer {a.supervisor_token}",
            "Content-Type": "application/json",
        },
        content=f'{{"applied_revision": "x", "metrics": [{deep}]}}',
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
