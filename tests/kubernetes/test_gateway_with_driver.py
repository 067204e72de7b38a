"""A real gateway driving the kubernetes driver against FakeKubeApiServer, end to end.

Also checks that the Pod's command line is one the real ``grantbox supervisor run`` accepts.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes.aio import client

from grantbox.cli.supervisor import supervisor
from grantbox.drivers.kubernetes import KubernetesDriver, pod_manifest
from grantbox.gateway import GatewayServer
from grantbox.supervisor import SupervisorClient
from tests.support.fake_kube_api import FakeKubeApiServer
from tests.support.gateway_server import GatewayCli, gateway_settings, serving

from .conftest import NAMESPACE, make_config, make_spec


def _wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path, fake_api: FakeKubeApiServer) -> Iterator[GatewayServer]:
    kube = KubernetesDriver(make_config(), client.Configuration(host=fake_api.url))
    kube.RETRY_DELAYS = (0.05, 0.1)
    with serving(gateway_settings(tmp_path), kube) as running:
        yield running


@pytest.fixture
def gw(server: GatewayServer, tmp_path: Path) -> GatewayCli:
    return GatewayCli(server.url, server.operator_token, tmp_path)


def test_sandbox_lifecycle_through_pods(
    gw: GatewayCli, server: GatewayServer, fake_api: FakeKubeApiServer
) -> None:
    created = gw.json("sandbox", "create", "--name", "box", "--", "curl", "-s", "http://alpha/")
    sandbox_id = created["id"]
    name = f"grantbox-sandbox-{sandbox_id}"
    pod = fake_api.objects("pods", NAMESPACE)[name]
    container = pod["spec"]["containers"][0]
    assert container["args"][-4:] == ["--", "curl", "-s", "http://alpha/"]
    assert pod["metadata"]["labels"]["grantbox.dev/sandbox-id"] == sandbox_id
    assert pod["metadata"]["labels"]["grantbox.dev/sandbox"] == "box"
    secret = fake_api.objects("secrets", NAMESPACE)[name]
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert server.gateway.issuer.verify(token).sandbox_id == sandbox_id
    assert gw.json("sandbox", "get", "box")["phase"] == "provisioning"

    # The kubelet starts the pod and the supervisor (here: its client) reports in.
    fake_api.set_pod_status(
        NAMESPACE,
        name,
        {
            "phase": "Running",
            "containerStatuses": [{"name": "supervisor", "state": {"running": {}}}],
        },
    )

    async def beat() -> None:
        async with SupervisorClient(server.url, sandbox_id, token) as supervisor_client:
            await supervisor_client.heartbeat(applied_revision=created["revision"])

    asyncio.run(beat())
    _wait_for(lambda: gw.json("sandbox", "get", "box")["phase"] == "ready")

    fake_api.set_pod_status(
        NAMESPACE,
        name,
        {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "supervisor", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}
            ],
        },
    )
    _wait_for(lambda: gw.json("sandbox", "get", "box")["phase"] == "error")
    assert "supervisor exited with code 3" in gw.json("sandbox", "get", "box")["phase_reason"]

    gw.ok("sandbox", "delete", "box")
    assert fake_api.objects("pods", NAMESPACE) == {}
    assert fake_api.objects("secrets", NAMESPACE) == {}
    assert gw.json("sandbox", "list") == []


def test_refused_pod_shows_as_an_error_and_leaves_nothing_behind(
    gw: GatewayCli, fake_api: FakeKubeApiServer
) -> None:
    fake_api.fail_next("POST", "pods", 403)
    created = gw.json("sandbox", "create", "--name", "box")
    assert created["phase"] == "error"
    assert "create the sandbox Pod: 403" in created["phase_reason"]
    assert fake_api.objects("secrets", NAMESPACE) == {}


def test_the_pod_command_line_is_what_the_supervisor_accepts(tmp_path: Path) -> None:
    spec = make_spec()
    container = pod_manifest(spec, make_config())["spec"]["containers"][0]
    assert container["command"] == ["grantbox", "supervisor", "run"]
    token_file = tmp_path / "token"
    token_file.write_text("x")
    args = [str(token_file) if a.endswith("/token") else a for a in container["args"]]
    run = supervisor.commands["run"]
    context = run.make_context("run", args)
    assert context.params["gateway_url"] == "http://grantbox.grantbox.svc.cluster.local:7443"
    assert context.params["sandbox_id"] == spec.sandbox_id
    assert context.params["identity_socket"] == "unix:///spiffe-workload-api/spire-agent.sock"
    assert context.params["command"] == spec.command
