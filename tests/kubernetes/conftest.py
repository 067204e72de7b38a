"""Shared fixtures: driver configs, sandbox specs, and the fake API with a real client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from kubernetes.aio import client

from grantbox.drivers import SandboxSpec
from grantbox.drivers.kubernetes import KubernetesDriver, KubernetesDriverConfig
from tests.support.fake_kube_api import FakeKubeApiServer, running_fake_kube_api

NAMESPACE = "grantbox-sandboxes"
SANDBOX_ID = "0123456789abcdef0123456789abcdef"
TOKEN = "eyJhbGciOiJFZERTQSJ9.c3VwZXJ2aXNvci10b2tlbg.c2lnbmF0dXJl"


def make_config(**overrides: object) -> KubernetesDriverConfig:
    values: dict[str, object] = {
        "namespace": NAMESPACE,
        "image": "registry.example/grantbox-sandbox:0.1.0",
        "gateway_url": "http://grantbox.grantbox.svc.cluster.local:7443",
    }
    values.update(overrides)
    return KubernetesDriverConfig(**values)  # type: ignore[arg-type]


def make_spec(sandbox_id: str = SANDBOX_ID, **overrides: object) -> SandboxSpec:
    values: dict[str, object] = {
        "sandbox_id": sandbox_id,
        "name": "agent",
        "command": ("curl", "-s", "http://alpha.example/hello"),
        "gateway_url": "http://0.0.0.0:7443",
        "supervisor_token": TOKEN,
        "spiffe_path": f"/grantbox/sandbox/{sandbox_id}",
        "labels": {"grantbox.dev/sandbox": "agent", "grantbox.dev/sandbox-id": sandbox_id},
    }
    values.update(overrides)
    return SandboxSpec(**values)  # type: ignore[arg-type]


@pytest.fixture
def config() -> KubernetesDriverConfig:
    return make_config()


@pytest.fixture
def spec() -> SandboxSpec:
    return make_spec()


@pytest.fixture
def fake_api() -> Iterator[FakeKubeApiServer]:
    with running_fake_kube_api() as server:
        yield server


@pytest.fixture
async def driver(
    fake_api: FakeKubeApiServer, config: KubernetesDriverConfig
) -> AsyncIterator[KubernetesDriver]:
    """The driver over the real ``kubernetes`` asyncio client, pointed at the fake API."""
    api_config = client.Configuration(host=fake_api.url)
    kube = KubernetesDriver(config, api_config)
    kube.WAIT_INITIAL = 0.05
    kube.WAIT_MAX = 0.1
    try:
        yield kube
    finally:
        await kube.aclose()
