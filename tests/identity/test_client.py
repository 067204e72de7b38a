"""Our async client against the real agent, a late agent, no agent, and a Workload API that
answers with codes the spec says not to retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from grantbox.identity import IdentityDenied, IdentityUnavailable, JwtSvid, WorkloadIdentityClient
from grantbox.identity import workload_api as wapi
from grantbox.identity_agent import IdentityAgent
from tests.support.identity_agent import running_agent, short_socket_dir

from .conftest import AUDIENCE, SANDBOX_ID, SANDBOX_PATH, oidc_jwks, verify


async def test_fetches_a_verifiable_svid(oidc_agent: IdentityAgent) -> None:
    agent = oidc_agent
    async with WorkloadIdentityClient(f"unix://{agent.socket_path('s1')}") as client:
        before = time.time()
        svid = await client.fetch_jwt_svid(AUDIENCE)
        again = await client.fetch_jwt_svid("https://other.example")
    assert isinstance(svid, JwtSvid)
    assert svid.spiffe_id == SANDBOX_ID == again.spiffe_id
    assert before + 299 <= svid.expires_at <= time.time() + 300
    assert svid.token not in repr(svid) and svid.token not in repr(client)
    assert agent.oidc_url is not None
    assert verify(svid.token, await oidc_jwks(agent.oidc_url))["sub"] == SANDBOX_ID


async def test_socket_from_environment(
    agent: IdentityAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", f"unix:{agent.socket_path('s1')}")
    client = WorkloadIdentityClient()
    try:
        assert (await client.fetch_jwt_svid(AUDIENCE)).spiffe_id == SANDBOX_ID
    finally:
        await client.aclose()


async def test_no_socket_configured_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    client = WorkloadIdentityClient()
    with pytest.raises(IdentityUnavailable, match="SPIFFE_ENDPOINT_SOCKET") as info:
        await client.fetch_jwt_svid(AUDIENCE)
    assert info.value.reason == "workload_identity_unavailable"


async def test_closed_client_is_unavailable(agent: IdentityAgent) -> None:
    client = WorkloadIdentityClient(str(agent.socket_path("s1")))
    await client.fetch_jwt_svid(AUDIENCE)
    await client.aclose()
    with pytest.raises(IdentityUnavailable, match="closed"):
        await client.fetch_jwt_svid(AUDIENCE)


async def test_retries_through_an_agent_that_starts_two_seconds_late(tmp_path: Path) -> None:
    with short_socket_dir() as base:
        socket = base / "workloads" / "s1" / "agent.sock"
        client = WorkloadIdentityClient(str(socket), call_timeout=1.0, deadline=10.0)
        fetch = asyncio.create_task(client.fetch_jwt_svid(AUDIENCE))
        await asyncio.sleep(2.0)
        assert not fetch.done(), "the client gave up before the agent started"
        async with running_agent(tmp_path, socket_dir=base, workloads={"s1": SANDBOX_PATH}):
            svid = await asyncio.wait_for(fetch, 10)
        await client.aclose()
    assert svid.spiffe_id == SANDBOX_ID


async def test_gives_up_when_no_agent_appears(tmp_path: Path) -> None:
    client = WorkloadIdentityClient(str(tmp_path / "never.sock"), call_timeout=0.5, deadline=1.5)
    started = time.monotonic()
    with pytest.raises(IdentityUnavailable) as info:
        await client.fetch_jwt_svid(AUDIENCE)
    elapsed = time.monotonic() - started
    await client.aclose()
    assert info.value.reason == "workload_identity_unavailable"
    assert "UNAVAILABLE" in info.value.detail
    assert 1.0 <= elapsed < 10.0  # kept retrying, and stopped near its deadline


async def test_denied_caller_retries_then_reports_denied(
    agent: IdentityAgent, caplog: pytest.LogCaptureFixture
) -> None:
    socket = agent.add_workload("locked", "grantbox/locked", uids=[65534])
    client = WorkloadIdentityClient(str(socket), call_timeout=0.5, deadline=1.0)
    with (
        caplog.at_level(logging.WARNING, logger="grantbox"),
        pytest.raises(IdentityDenied) as info,
    ):
        await client.fetch_jwt_svid(AUDIENCE)
    await client.aclose()
    assert info.value.reason == "workload_identity_denied"
    denials = [r for r in caplog.records if r.getMessage() == "workload api call denied"]
    assert len(denials) >= 2, "PERMISSION_DENIED must be retried within the deadline"


class ScriptedWorkloadApi(wapi.WorkloadApiServicer):  # type: ignore[misc]
    """Stands in for a foreign Workload API implementation (not our agent)."""

    def __init__(self, code: grpc.StatusCode | None, svid: str = "") -> None:
        self.code = code
        self.svid = svid
        self.calls = 0

    async def FetchJWTSVID(self, request: Any, context: Any) -> Any:
        self.calls += 1
        if self.code is not None:
            await context.abort(self.code, "scripted answer eyJhbGciOiJIUzI1NiJ9.e30.sig")
        return wapi.JWTSVIDResponse(svids=[wapi.JWTSVID(spiffe_id="spiffe://td/x", svid=self.svid)])


@contextlib.asynccontextmanager
async def scripted_server(servicer: ScriptedWorkloadApi) -> AsyncIterator[str]:
    with short_socket_dir() as base:
        path = str(base / "api.sock")
        server = grpc.aio.server()
        wapi.add_servicer_to_server(servicer, server)
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        try:
            yield path
        finally:
            await server.stop(None)


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED])
async def test_no_retry_on_invalid_argument_or_unimplemented(code: grpc.StatusCode) -> None:
    servicer = ScriptedWorkloadApi(code)
    async with scripted_server(servicer) as path:
        client = WorkloadIdentityClient(path, call_timeout=1.0, deadline=5.0)
        with pytest.raises(IdentityUnavailable) as info:
            await client.fetch_jwt_svid(AUDIENCE)
        await client.aclose()
    assert servicer.calls == 1
    assert code.name in info.value.detail
    assert "eyJ" not in info.value.detail  # server text is sanitised


async def test_unavailable_is_retried_until_the_deadline() -> None:
    servicer = ScriptedWorkloadApi(grpc.StatusCode.UNAVAILABLE)
    async with scripted_server(servicer) as path:
        client = WorkloadIdentityClient(path, call_timeout=0.5, deadline=1.0)
        with pytest.raises(IdentityUnavailable):
            await client.fetch_jwt_svid(AUDIENCE)
        await client.aclose()
    assert servicer.calls >= 3


@pytest.mark.parametrize("svid", ["", "not-a-jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
async def test_unusable_svid_is_unavailable_and_not_echoed(svid: str) -> None:
    async with scripted_server(ScriptedWorkloadApi(None, svid=svid)) as path:
        client = WorkloadIdentityClient(path, call_timeout=1.0, deadline=2.0)
        with pytest.raises(IdentityUnavailable, match="unusable JWT-SVID") as info:
            await client.fetch_jwt_svid(AUDIENCE)
        await client.aclose()
    assert not svid or svid not in str(info.value)


async def test_per_call_timeout_bounds_a_hung_agent() -> None:
    class Hung(ScriptedWorkloadApi):
        async def FetchJWTSVID(self, request: Any, context: Any) -> Any:
            self.calls += 1
            await asyncio.sleep(30)

    servicer = Hung(None)
    async with scripted_server(servicer) as path:
        client = WorkloadIdentityClient(path, call_timeout=0.3, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(IdentityUnavailable, match="DEADLINE_EXCEEDED"):
            await client.fetch_jwt_svid(AUDIENCE)
        await client.aclose()
    assert time.monotonic() - started < 10
    assert servicer.calls >= 2


def test_invalid_configuration_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="unix socket"):
        WorkloadIdentityClient("tcp://127.0.0.1:8081")
    with pytest.raises(ValueError, match="positive"):
        WorkloadIdentityClient("/x.sock", deadline=0)


async def test_concurrent_fetches_share_the_relay(agent: IdentityAgent) -> None:
    clients = [WorkloadIdentityClient(str(agent.socket_path("s1"))) for _ in range(4)]
    try:
        svids = await asyncio.gather(
            *(clients[i % 4].fetch_jwt_svid(f"{AUDIENCE}/{i}") for i in range(40))
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert len(svids) == 40
    assert {s.spiffe_id for s in svids} == {SANDBOX_ID}
    assert len({s.token for s in svids}) == 40
