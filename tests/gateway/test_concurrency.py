"""Optimistic concurrency over HTTP: two writers with one resource_version, one winner."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from grantbox.gateway import GatewayServer
from tests.support.gateway_server import GatewayCli, grant_profile


def _race(server: GatewayServer, send: Callable[[httpx.Client, int], httpx.Response]) -> list[int]:
    barrier = threading.Barrier(2)
    headers = {"Authorization": f"Bearer {server.operator_token}"}

    def one(index: int) -> int:
        with httpx.Client(base_url=server.url, headers=headers) as client:
            barrier.wait()
            return send(client, index).status_code

    with ThreadPoolExecutor(2) as pool:
        return sorted(pool.map(one, [0, 1]))


def test_concurrent_profile_updates_with_one_version(gw: GatewayCli, server: GatewayServer) -> None:
    gw.ok("profile", "import", "-f", gw.write("a.yaml", grant_profile("alpha")))
    for version in range(1, 6):

        def send(client: httpx.Client, index: int, v: int = version) -> httpx.Response:
            doc = grant_profile("alpha", audience=f"writer-{index}") | {"resource_version": v}
            return client.put("/api/v1/profiles/alpha", json={"document": doc})

        assert _race(server, send) == [200, 409]
        assert gw.json("profile", "list")[0]["resource_version"] == version + 1


def test_concurrent_provider_updates_with_one_version(
    gw: GatewayCli, server: GatewayServer
) -> None:
    gw.ok("provider", "create", "--name", "gh", "--type", "github", "--credential", "token=t0")
    for version in range(1, 4):

        def send(client: httpx.Client, index: int, v: int = version) -> httpx.Response:
            body = {"resource_version": v, "credentials": {"token": f"t{index}"}}
            return client.patch("/api/v1/providers/gh", json=body)

        assert _race(server, send) == [200, 409]


def test_concurrent_attaches_with_one_sandbox_version(
    gw: GatewayCli, server: GatewayServer
) -> None:
    docs = [grant_profile("alpha", path="/a/**"), grant_profile("beta", path="/b/**")]
    gw.ok("profile", "import", "-f", gw.write("p.yaml", docs))
    gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    gw.ok("provider", "create", "--name", "pb", "--type", "beta", "--runtime-credentials")
    created = gw.json("sandbox", "create", "--name", "box")

    def send(client: httpx.Client, index: int) -> httpx.Response:
        body = {"provider": ["pa", "pb"][index], "resource_version": created["resource_version"]}
        return client.post("/api/v1/sandboxes/box/providers", json=body)

    assert _race(server, send) == [200, 409]
    assert len(gw.json("sandbox", "get", "box")["providers"]) == 1
