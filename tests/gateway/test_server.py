"""Running the gateway as a task of an existing event loop (how `grantbox up` embeds it)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from grantbox.drivers import DriverError, driver_names, make_driver, register_driver
from grantbox.gateway import running_gateway
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import gateway_settings


async def test_running_gateway_serves_and_stops(tmp_path: Path) -> None:
    driver = RecordingDriver()
    async with running_gateway(gateway_settings(tmp_path), driver) as server:
        headers = {"Authorization": f"Bearer {server.operator_token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            assert (await client.get("/healthz")).status_code == 200
            created = await client.post("/api/v1/sandboxes", json={"name": "box"})
            assert created.status_code == 201
        assert driver.created[0].gateway_url == server.url
        url = server.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")


def test_driver_registry(tmp_path: Path) -> None:
    register_driver("recording-test", RecordingDriver)
    assert "recording-test" in driver_names()
    assert isinstance(make_driver("recording-test"), RecordingDriver)
    with pytest.raises(DriverError, match="unknown compute driver 'nope'"):
        make_driver("nope")


def test_built_in_drivers_load_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRANTBOX_K8S_NAMESPACE", raising=False)
    assert "kubernetes" in driver_names()
    with pytest.raises(DriverError):
        make_driver("kubernetes")  # imported and registered, then refuses: no cluster settings
