"""Health, readiness, metrics and request logs (which never carry a token)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from grantbox.gateway import GatewayServer
from grantbox.gateway.api.observability import request_record
from grantbox.logformat import JsonFormatter
from tests.support.gateway_server import GatewayCli, grant_profile


def test_health_and_readiness(server: GatewayServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "sqlite"}


def test_readiness_fails_when_the_database_is_gone(server: GatewayServer) -> None:
    server.gateway.store.engine.dispose()
    database = server.settings.state_dir / "gateway.db"
    database.rename(database.with_suffix(".moved"))
    database.mkdir()  # a directory where the database file was: every open fails
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    headers = {"Authorization": f"Bearer {server.operator_token}"}
    listed = httpx.get(f"{server.url}/api/v1/profiles", headers=headers)
    assert (listed.status_code, listed.json()["error"]) == (503, "unavailable")
    assert "grantbox_gateway_requests_total" in httpx.get(f"{server.url}/metrics").text


def test_metrics_count_requests_and_refusals(gw: GatewayCli, server: GatewayServer) -> None:
    gw.ok("profile", "import", "-f", gw.write("a.yaml", grant_profile("alpha")))
    gw.refused("profile", "import", "-f", gw.write("a2.yaml", grant_profile("alpha")))
    text = httpx.get(f"{server.url}/metrics").text
    assert (
        'grantbox_gateway_requests_total{method="POST",route="/api/v1/profiles",status="201"} 1.0'
        in text
    )
    assert 'grantbox_gateway_refused_writes_total{code="already_exists"} 1.0' in text
    assert "grantbox_gateway_request_seconds_bucket" in text
    assert 'grantbox_gateway_sandboxes{phase="ready"} 0.0' in text
    gw.ok("sandbox", "create", "--name", "box")
    text = httpx.get(f"{server.url}/metrics").text
    assert 'grantbox_gateway_sandboxes{phase="provisioning"} 1.0' in text


def test_request_logs_are_structured_and_carry_no_token(
    gw: GatewayCli, server: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="grantbox.gateway.access")
    gw.ok("profile", "list")
    gw.run("profile", "export", "missing")
    expected = {("/api/v1/profiles", 200), ("/api/v1/profiles/{profile_id}", 404)}
    deadline = time.monotonic() + 10
    while True:  # a record is written just after its response is sent
        records = [
            json.loads(JsonFormatter().format(r))
            for r in caplog.records
            if r.name.endswith("access")
        ]
        if {(r["route"], r["status"]) for r in records} >= expected:
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.05)
    # The one log format: time, level, logger and message, then the request's fields.
    assert all(r["event"] == "http_request" and r["message"] == "request" for r in records)
    assert all(
        r["logger"] == "grantbox.gateway.access" and r["time"].endswith("Z") for r in records
    )
    assert server.operator_token not in caplog.text
    assert "Bearer" not in caplog.text


def test_request_record_has_no_room_for_headers() -> None:
    record = request_record("GET", "/x/{id}", "/x/1", 200, 0.0123, "127.0.0.1:5")
    assert set(record) == {"event", "method", "route", "path", "status", "duration_ms", "client"}
    assert record["duration_ms"] == 12.3


def test_oversized_bodies_are_refused_before_parsing(server: GatewayServer) -> None:
    headers = {"Authorization": f"Bearer {server.operator_token}"}
    big = {"documents": [{"id": "x", "description": "y" * (5 * 1024 * 1024)}]}
    response = httpx.post(f"{server.url}/api/v1/profiles", json=big, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"

    def chunks() -> Iterator[bytes]:
        for _ in range(6):
            yield b" " * (1024 * 1024)

    streamed = httpx.post(
        f"{server.url}/api/v1/profiles",
        content=chunks(),
        headers=headers | {"content-type": "application/json"},
    )
    assert streamed.status_code == 413
