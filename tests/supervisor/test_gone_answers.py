"""How a supervisor learns its sandbox is gone: the gateway's answers and the client's reading."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from grantbox.gateway.auth import SupervisorTokenIssuer
from grantbox.supervisor import SupervisorClient, SupervisorClientError
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli, gateway_settings, serving


def test_every_sandbox_route_answers_sandbox_gone_after_delete(tmp_path: Path) -> None:
    driver = RecordingDriver()
    with serving(gateway_settings(tmp_path), driver) as server:
        gw = GatewayCli(server.url, server.operator_token, tmp_path)
        gw.ok("sandbox", "create", "--name", "box")
        (spec,) = driver.created
        base = f"/api/v1/supervisor/sandboxes/{spec.sandbox_id}"
        calls = [
            ("GET", "/config", None),
            ("POST", "/heartbeat", {"applied_revision": "", "error": ""}),
            ("POST", "/logs", {"lines": [{"message": "m", "stream": "stdout", "ts": 1.0}]}),
            ("POST", "/events", {"events": [{"kind": "k", "ts": 1.0}]}),
            ("GET", "/exec/next", None),
            ("POST", "/token", None),
        ]
        headers = {"Authorization": f"Bearer {spec.supervisor_token}"}
        with httpx.Client(base_url=server.url + base, headers=headers) as client:
            for method, path, body in calls:
                live = client.request(method, path, json=body, params={"timeout": 0})
                assert live.status_code in (200, 204), (path, live.text)
            gw.ok("sandbox", "delete", "box")
            for method, path, body in calls:
                gone = client.request(method, path, json=body, params={"timeout": 0})
                assert gone.status_code == 404, (path, gone.text)
                assert gone.json()["error"] == "sandbox_gone", path
            # A missing exec is not a missing sandbox.
            exec_path = "/exec/abc/exit"
            stranger = client.post(exec_path, json={"exit_code": 0})
            assert stranger.json()["error"] in ("sandbox_gone", "not_found")


@pytest.mark.parametrize(
    ("status", "code", "gone"),
    [(404, "sandbox_gone", True), (401, "unauthenticated", True), (404, "not_found", False),
     (403, "forbidden", False), (503, "unavailable", False), (0, "", False)],
)  # fmt: skip
def test_the_client_reads_gone_from_the_answer(status: int, code: str, gone: bool) -> None:
    assert SupervisorClientError("x", status, code).sandbox_gone is gone


def test_the_client_knows_when_its_token_expired(tmp_path: Path) -> None:
    issuer = SupervisorTokenIssuer.load_or_create(tmp_path / "k.pem", "gw", 60)
    issued = time.time()
    client = SupervisorClient("http://127.0.0.1:9", "sb", issuer.mint("sb", now=issued))
    assert not client.token_expired(now=issued + 59)
    assert client.token_expired(now=issued + 60)
    assert SupervisorClient("http://127.0.0.1:9", "sb", "garbage").token_expired()
