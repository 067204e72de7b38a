"""The gateway over HTTP with PostgreSQL as its store: CLI flow and the 409 on a race."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_postgres import reset_database
from tests.support.gateway_server import GatewayCli, gateway_settings, grant_profile, serving


def test_cli_flow_and_concurrent_updates_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    reset_database(postgres_url)
    driver = RecordingDriver()
    with serving(gateway_settings(tmp_path, db_url=postgres_url), driver) as server:
        assert httpx.get(f"{server.url}/readyz").json()["database"] == "postgresql"
        gw = GatewayCli(server.url, server.operator_token, tmp_path)
        docs = [grant_profile("alpha", path="/a/**"), grant_profile("clash", path="/a/**")]
        gw.ok("profile", "import", "-f", gw.write("p.yaml", docs))
        gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
        gw.ok("provider", "create", "--name", "pc", "--type", "clash", "--runtime-credentials")
        gw.ok("sandbox", "create", "--name", "box", "--provider", "pa")
        error = gw.refused("sandbox", "attach", "--name", "box", "--provider", "pc")
        assert "sandbox 'box'" in error
        assert gw.json("sandbox", "get", "box")["providers"] == ["pa"]

        barrier = threading.Barrier(2)
        headers = {"Authorization": f"Bearer {server.operator_token}"}

        def update(index: int) -> int:
            doc = grant_profile("alpha", path="/a/**", audience=f"w{index}")
            with httpx.Client(base_url=server.url, headers=headers) as client:
                barrier.wait()
                body = {"document": doc | {"resource_version": 1}}
                return client.put("/api/v1/profiles/alpha", json=body).status_code

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(update, [0, 1])) == [200, 409]
        gw.ok("sandbox", "delete", "box")
        assert driver.deleted
