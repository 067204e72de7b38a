"""The supervisor API over real HTTP: token binding, long-poll, heartbeat, exec relay."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grantbox.drivers import SandboxSpec
from grantbox.gateway import GatewayServer
from grantbox.gateway.auth import SupervisorTokenIssuer
from grantbox.proxy import event_json
from grantbox.supervisor import SupervisorClient, SupervisorClientError
from grantbox.supervisor.shipper import Shipper
from tests.support.gateway_driver import RecordingDriver
from tests.support.gateway_server import GatewayCli, gateway_settings, grant_profile, serving


@pytest.fixture
def boxes(gw: GatewayCli, driver: RecordingDriver) -> tuple[SandboxSpec, SandboxSpec]:
    gw.ok("profile", "import", "-f", gw.write("a.yaml", grant_profile("alpha", path="/a/**")))
    gw.ok("profile", "import", "-f", gw.write("b.yaml", grant_profile("beta", path="/b/**")))
    gw.ok("provider", "create", "--name", "pa", "--type", "alpha", "--runtime-credentials")
    gw.ok("provider", "create", "--name", "pb", "--type", "beta", "--runtime-credentials")
    gw.ok("sandbox", "create", "--name", "box-a", "--provider", "pa")
    gw.ok("sandbox", "create", "--name", "box-b", "--provider", "pb")
    a, b = driver.created
    return a, b


def _get(url: str, token: str, path: str) -> httpx.Response:
    return httpx.get(url + path, headers={"Authorization": f"Bearer {token}"})


def test_a_token_for_sandbox_a_cannot_touch_sandbox_b(
    server: GatewayServer, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    a, b = boxes
    own = _get(
        server.url, a.supervisor_token, f"/api/v1/supervisor/sandboxes/{a.sandbox_id}/config"
    )
    assert own.status_code == 200
    assert own.json()["sandbox_id"] == a.sandbox_id
    assert {x["provider"] for x in own.json()["bindings"]} == {"pa"}
    supervisor_routes = [
        (method.upper(), path)
        for path, operations in server.app.openapi()["paths"].items()
        for method in operations
        if path.startswith("/api/v1/supervisor/")
    ]
    assert len(supervisor_routes) == 10
    headers = {"Authorization": f"Bearer {a.supervisor_token}"}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        for method, path in supervisor_routes:
            assert "{sandbox_id}" in path, f"{path} is not bound to a sandbox"
            concrete = path.replace("{sandbox_id}", b.sandbox_id).replace("{exec_id}", "abc")
            response = client.request(method, concrete, params={"timeout": 0}, json={})
            assert response.status_code == 403, (method, concrete, response.text)
            assert response.json()["error"] == "forbidden"


def test_a_supervisor_token_cannot_call_any_operator_route(
    server: GatewayServer, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    a, _ = boxes
    operator_routes = [
        (method.upper(), path)
        for path, operations in server.app.openapi()["paths"].items()
        for method in operations
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/supervisor")
    ]
    assert len(operator_routes) >= 18
    headers = {"Authorization": f"Bearer {a.supervisor_token}"}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        for method, path in operator_routes:
            concrete = path.replace("{name}", "box-a").replace("{profile_id}", "alpha")
            concrete = concrete.replace("{provider}", "pa")
            response = client.request(method, concrete, json={})
            assert response.status_code == 403, (method, concrete, response.text)
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/api/v1/sandboxes").status_code == 401


def test_other_tokens_are_refused_on_supervisor_routes(
    server: GatewayServer, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    a, _ = boxes
    path = f"/api/v1/supervisor/sandboxes/{a.sandbox_id}/config"
    issuer = server.gateway.issuer
    foreign = SupervisorTokenIssuer(Ed25519PrivateKey.generate(), issuer.audience, 600)
    elsewhere = SupervisorTokenIssuer(server.gateway.issuer._key, "another-gateway", 600)
    claims = jwt.decode(a.supervisor_token, options={"verify_signature": False})
    unsigned = jwt.encode(claims, key="", algorithm="none")
    refused = {
        "operator token": server.operator_token,
        "expired": issuer.mint(a.sandbox_id, now=time.time() - 3600),
        "other key": foreign.mint(a.sandbox_id),
        "other audience": elsewhere.mint(a.sandbox_id),
        "alg none": unsigned,
        "garbage": "not.a.token",
    }
    for label, token in refused.items():
        response = _get(server.url, token, path)
        assert response.status_code == 401, label
        assert token not in response.text


def test_long_poll_returns_soon_after_a_change(
    gw: GatewayCli, server: GatewayServer, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    a, _ = boxes

    async def scenario() -> tuple[str, str, float]:
        async with SupervisorClient(a.gateway_url, a.sandbox_id, a.supervisor_token) as client:
            first = await client.config()
            unchanged = await client.config(wait=first.revision, wait_seconds=0.5)
            assert unchanged.revision == first.revision
            changed_at: list[float] = []

            def change() -> None:
                time.sleep(0.5)
                changed_at.append(time.monotonic())
                gw.ok("sandbox", "attach", "--name", "box-a", "--provider", "pb")

            thread = threading.Thread(target=change)
            thread.start()
            second = await client.config(wait=first.revision, wait_seconds=30)
            returned = time.monotonic()
            thread.join()
            return first.revision, second.revision, returned - changed_at[0]

    before, after, delay = asyncio.run(scenario())
    assert after != before
    assert after == gw.json("sandbox", "get", "box-a")["revision"]
    assert delay < 5, "the long-poll did not return within a generous bound of the change"


def test_renewed_tokens_work_and_are_written_0600(
    server: GatewayServer, boxes: tuple[SandboxSpec, SandboxSpec], tmp_path: Path
) -> None:
    a, _ = boxes
    token_file = tmp_path / "token"
    token_file.write_text(a.supervisor_token)
    os.chmod(token_file, 0o600)

    async def scenario() -> None:
        client = SupervisorClient.from_token_file(a.gateway_url, a.sandbox_id, token_file)
        async with client:
            assert a.supervisor_token not in repr(client)
            expires = await client.renew_token()
            assert expires >= client.token_expires_at
            beat = await client.heartbeat(applied_revision="r1")
            assert beat["phase"] == "ready"

    asyncio.run(scenario())
    renewed = token_file.read_text().strip()
    assert renewed != a.supervisor_token
    assert server.gateway.issuer.verify(renewed).sandbox_id == a.sandbox_id
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_events_already_encoded_are_stored_as_sent_beside_mapped_ones(
    server: GatewayServer, gw: GatewayCli, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    """A proxy worker's events travel as their encoded bytes (no parse and encode again in
    the supervisor); the gateway stores them exactly like events sent as mappings."""
    a, _ = boxes
    encoded = event_json({"kind": "http", "time": 1_700_000_000_000, "n": 1, "url": "\u00e9"})

    async def scenario() -> None:
        async with SupervisorClient(a.gateway_url, a.sandbox_id, a.supervisor_token) as client:
            assert await client.ship_events([encoded, {"kind": "http", "n": 2}]) == 2

    asyncio.run(scenario())
    lines = gw.ok("sandbox", "events", "box-a", "-o", "json").stdout.splitlines()
    stored = [json.loads(line) for line in lines]
    assert [(event["kind"], event["data"]["n"]) for event in stored] == [("http", 1), ("http", 2)]
    assert stored[0]["data"]["url"] == "\u00e9"


def test_an_encoded_event_broken_inside_is_dropped_alone_by_the_real_gateways_refusal(
    server: GatewayServer, gw: GatewayCli, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    """Encoded events are checked only for an object's shape: one broken inside makes the
    gateway refuse its batch, and the shipper splits the batch down to it and drops it."""
    a, _ = boxes

    async def scenario() -> Shipper:
        async with SupervisorClient(a.gateway_url, a.sandbox_id, a.supervisor_token) as client:
            shipper = Shipper({"events": client.ship_events, "logs": client.ship_logs})
            good = [event_json({"kind": "http", "n": n}) for n in range(4)]
            shipper.encoded_events(b"\n".join([*good[:2], b'{"kind": "http", "n": }', *good[2:]]))
            await shipper.ship_once()
            return shipper

    shipper = asyncio.run(scenario())
    assert shipper.refused_items["events"] == 1 and shipper.queued("events") == 0
    lines = gw.ok("sandbox", "events", "box-a", "-o", "json").stdout.splitlines()
    assert [json.loads(line)["data"]["n"] for line in lines] == [0, 1, 2, 3]


class _TestSupervisor:
    """Serves exec requests for one sandbox the way a supervisor does: real processes."""

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._loop()), daemon=True)

    def __enter__(self) -> _TestSupervisor:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _loop(self) -> None:
        spec = self.spec
        async with SupervisorClient(spec.gateway_url, spec.sandbox_id, spec.supervisor_token) as c:
            while not self._stop.is_set():
                request = await c.next_exec(wait_seconds=0.5)
                if request is None:
                    continue
                process = await asyncio.create_subprocess_exec(
                    *request.command,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await process.communicate()
                if out:
                    await c.exec_output(request.exec_id, "stdout", out)
                if err:
                    await c.exec_output(request.exec_id, "stderr", err)
                await c.exec_exit(request.exec_id, process.returncode or 0)


def test_exec_relays_output_and_exit_code_through_the_supervisor(
    gw: GatewayCli, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    a, _ = boxes
    with _TestSupervisor(a):
        result = gw.run(
            "sandbox", "exec", "--name", "box-a", "--", "sh", "-c", "echo out; echo err >&2; exit 7"
        )
        assert result.exit_code == 7
        assert result.stdout == "out\n"
        assert result.stderr == "err\n"
        ok = gw.run("sandbox", "exec", "--name", "box-a", "--", "printf", "%s", "done")
        assert (ok.exit_code, ok.stdout) == (0, "done")


def test_exec_output_for_another_sandboxs_exec_is_refused(
    server: GatewayServer, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    a, b = boxes

    async def scenario() -> int:
        request = server.gateway.relay.submit(a.sandbox_id, ("true",), 5)
        async with SupervisorClient(b.gateway_url, b.sandbox_id, b.supervisor_token) as client:
            with pytest.raises(SupervisorClientError) as refused:
                await client.exec_output(request.exec_id, "stdout", b"forged")
            return refused.value.status

    future = asyncio.run_coroutine_threadsafe(scenario(), _server_loop(server))
    assert future.result(10) == 404


def _server_loop(server: GatewayServer) -> asyncio.AbstractEventLoop:
    loop = server.gateway.feed._loop
    assert loop is not None
    return loop


@pytest.fixture
def quick_server(tmp_path: Path, driver: RecordingDriver) -> Iterator[GatewayServer]:
    with serving(gateway_settings(tmp_path / "quick", longpoll_max=1.0), driver) as running:
        yield running


def test_exec_without_a_supervisor_fails_with_one_line(
    quick_server: GatewayServer, tmp_path: Path
) -> None:
    gw = GatewayCli(quick_server.url, quick_server.operator_token, tmp_path)
    gw.ok("sandbox", "create", "--name", "box")
    error = gw.refused("sandbox", "exec", "--name", "box", "--", "true")
    assert "no supervisor picked the command up" in error


def test_a_poller_that_went_away_does_not_swallow_the_next_exec(
    gw: GatewayCli, boxes: tuple[SandboxSpec, SandboxSpec]
) -> None:
    a, _ = boxes
    # A supervisor long-polls for exec requests and dies mid-poll (its connection closes).
    with httpx.Client(timeout=0.3) as dying, pytest.raises(httpx.ReadTimeout):
        dying.get(
            f"{a.gateway_url}/api/v1/supervisor/sandboxes/{a.sandbox_id}/exec/next",
            params={"timeout": 20},
            headers={"Authorization": f"Bearer {a.supervisor_token}"},
        )
    time.sleep(1.0)  # the dead poll notices within one recheck slice
    # Its replacement must receive the next command; the dead handler must not take it.
    with _TestSupervisor(a):
        result = gw.run("sandbox", "exec", "--name", "box-a", "--", "printf", "%s", "alive")
    assert (result.exit_code, result.stdout) == (0, "alive")
