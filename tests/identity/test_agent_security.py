"""Who gets an identity: the security header, per-workload sockets, SO_PEERCRED uids."""

from __future__ import annotations

import asyncio
import json
import os
import socket as socket_module
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from grantbox.identity import WorkloadIdentityClient
from grantbox.identity import workload_api as wapi
from grantbox.identity_agent import IdentityAgent
from grantbox.identity_agent.attestation import MAX_CONNECTIONS_PER_WORKLOAD, connect_unix
from tests.support.identity_agent import running_agent, short_socket_dir

from .conftest import AUDIENCE, SANDBOX_ID, call, fetch_token, status_of

NOBODY = 65534

REQUESTS = {
    "FetchJWTSVID": lambda: wapi.JWTSVIDRequest(audience=[AUDIENCE]),
    "FetchJWTBundles": lambda: wapi.JWTBundlesRequest(),
    "ValidateJWTSVID": lambda: wapi.ValidateJWTSVIDRequest(audience=AUDIENCE, svid="x.y.z"),
    "FetchX509SVID": lambda: wapi.X509SVIDRequest(),
    "FetchX509Bundles": lambda: wapi.X509BundlesRequest(),
}


@pytest.mark.parametrize("rpc", sorted(REQUESTS))
async def test_request_without_security_header_is_invalid_argument(
    agent: IdentityAgent, rpc: str
) -> None:
    socket = agent.socket_path("s1")
    assert await status_of(socket, rpc, REQUESTS[rpc](), metadata=None) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    wrong = (("workload.spiffe.io", "True"),)
    assert await status_of(socket, rpc, REQUESTS[rpc](), metadata=wrong) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_empty_audience_is_invalid_argument(agent: IdentityAgent) -> None:
    socket = agent.socket_path("s1")
    status = await status_of(socket, "FetchJWTSVID", wapi.JWTSVIDRequest())
    assert status == grpc.StatusCode.INVALID_ARGUMENT
    status = await status_of(socket, "ValidateJWTSVID", wapi.ValidateJWTSVIDRequest(svid="a"))
    assert status == grpc.StatusCode.INVALID_ARGUMENT


async def test_each_socket_hands_out_only_its_own_identity(agent: IdentityAgent) -> None:
    other = agent.add_workload("s2", "grantbox/sandbox/s2")
    mine = await call(agent.socket_path("s1"), "FetchJWTSVID", REQUESTS["FetchJWTSVID"]())
    theirs = await call(other, "FetchJWTSVID", REQUESTS["FetchJWTSVID"]())
    assert mine.svids[0].spiffe_id == SANDBOX_ID
    assert theirs.svids[0].spiffe_id == "spiffe://example.org/grantbox/sandbox/s2"
    # Asking s1's socket for s2's identity is refused.
    steal = wapi.JWTSVIDRequest(audience=[AUDIENCE], spiffe_id=theirs.svids[0].spiffe_id)
    status = await status_of(agent.socket_path("s1"), "FetchJWTSVID", steal)
    assert status == grpc.StatusCode.PERMISSION_DENIED
    own = wapi.JWTSVIDRequest(audience=[AUDIENCE], spiffe_id=SANDBOX_ID)
    assert (await call(agent.socket_path("s1"), "FetchJWTSVID", own)).svids[
        0
    ].spiffe_id == SANDBOX_ID


@pytest.mark.parametrize("rpc", sorted(REQUESTS))
async def test_uid_outside_the_allow_list_is_denied(agent: IdentityAgent, rpc: str) -> None:
    socket = agent.add_workload("locked", "grantbox/locked", uids=[NOBODY])  # we are not nobody
    assert os.geteuid() != NOBODY
    assert await status_of(socket, rpc, REQUESTS[rpc]()) == grpc.StatusCode.PERMISSION_DENIED
    allowed = agent.add_workload("mine", "grantbox/mine", uids=[os.geteuid()])
    assert (
        await status_of(allowed, "FetchJWTSVID", REQUESTS["FetchJWTSVID"]()) == grpc.StatusCode.OK
    )


async def test_direct_connection_to_the_internal_server_is_denied(agent: IdentityAgent) -> None:
    """Bypassing the attesting relay leaves the call without a caller: denied."""
    internal = agent._backend  # private on purpose; only this test reaches for it
    assert internal is not None
    assert stat.S_IMODE(Path(internal).parent.stat().st_mode) == 0o700
    status = await status_of(internal, "FetchJWTSVID", REQUESTS["FetchJWTSVID"]())
    assert status == grpc.StatusCode.PERMISSION_DENIED


async def test_removed_workload_loses_socket_and_identity(agent: IdentityAgent) -> None:
    socket = agent.add_workload("gone", "grantbox/gone")
    async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
        stub = wapi.WorkloadApiStub(channel)
        first = await stub.FetchJWTSVID(
            REQUESTS["FetchJWTSVID"](), metadata=wapi.SECURITY_METADATA, timeout=5
        )
        assert first.svids
        agent.remove_workload("gone")
        assert not socket.exists()
        assert not socket.parent.exists()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.FetchJWTSVID(
                REQUESTS["FetchJWTSVID"](), metadata=wapi.SECURITY_METADATA, timeout=2
            )
        assert info.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    with pytest.raises(KeyError):
        agent.remove_workload("gone")


async def test_socket_and_directory_modes(agent: IdentityAgent) -> None:
    socket = agent.socket_path("s1")
    assert stat.S_ISSOCK(socket.stat().st_mode)
    assert stat.S_IMODE(socket.stat().st_mode) == 0o666  # reach is decided by SO_PEERCRED
    assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o711  # nobody can list it
    assert stat.S_IMODE(agent.socket_dir.stat().st_mode) == 0o711
    # A workload only our own uid may use (every local sandbox's supervisor) is out of
    # every other user's reach: its directory cannot even be traversed.
    private = agent.add_workload("own", "own", uids=[os.geteuid()])
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700


async def test_stop_removes_every_socket(tmp_path: Path) -> None:
    with short_socket_dir() as base:
        async with running_agent(
            tmp_path, workloads={"a": "a", "b": "b"}, socket_dir=base, admin=True, oidc=True
        ) as running:
            internal = Path(str(running._backend))
            assert (base / "admin.sock").exists() and internal.exists()
            await fetch_token(running.socket_path("a"))
        assert list((base / "workloads").iterdir()) == []
        assert not (base / "admin.sock").exists()
        assert not internal.parent.exists()


_CHILD = r"""
import json, os, sys
import grpc
from grantbox.identity import workload_api as wapi

def attempt(path):
    channel = grpc.insecure_channel("unix:" + path)
    stub = wapi.WorkloadApiStub(channel)
    try:
        answer = stub.FetchJWTSVID(wapi.JWTSVIDRequest(audience=["a"]),
                                   metadata=wapi.SECURITY_METADATA, timeout=5)
        return {"code": "OK", "spiffe_id": answer.svids[0].spiffe_id}
    except grpc.RpcError as exc:
        return {"code": exc.code().name}
    finally:
        channel.close()

os.setgroups([])
os.setgid(65534)
os.setuid(65534)  # drop to nobody only after every import
print(json.dumps({"uid": os.getuid(), "results": [attempt(p) for p in sys.argv[1:]]}))
"""


@pytest.mark.root
@pytest.mark.usefixtures("needs_root")
async def test_kernel_uid_decides_in_a_dropped_privilege_process(agent: IdentityAgent) -> None:
    """A real process running as nobody: allowed where nobody is listed, denied elsewhere;
    a socket only root may use is not even reachable (its directory is root's, 0700)."""
    for_nobody = agent.add_workload("nobody", "grantbox/nobody", uids=[NOBODY])
    for_others = agent.add_workload("others", "grantbox/others", uids=[0, 4242])
    for_root = agent.add_workload("rootonly", "grantbox/rootonly", uids=[0])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        str(for_nobody),
        str(for_others),
        str(agent.socket_path("s1")),
        str(for_root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["uid"] == NOBODY
    assert report["results"] == [
        {"code": "OK", "spiffe_id": "spiffe://example.org/grantbox/nobody"},
        {"code": "PERMISSION_DENIED"},
        {"code": "OK", "spiffe_id": SANDBOX_ID},  # no allow-list: whoever reaches the socket
        {"code": "UNAVAILABLE"},  # connect() itself refused: EACCES on the directory
    ]


async def test_a_second_agent_cannot_take_over_live_sockets(tmp_path: Path) -> None:
    with short_socket_dir() as base:
        async with running_agent(tmp_path, socket_dir=base, workloads={"s1": "a"}) as first:
            with pytest.raises(OSError, match="in use"):
                async with running_agent(tmp_path / "b", socket_dir=base, workloads={"s1": "b"}):
                    pass
            response = await call(
                first.socket_path("s1"), "FetchJWTSVID", REQUESTS["FetchJWTSVID"]()
            )
            assert response.svids[0].spiffe_id == "spiffe://example.org/a"


async def test_stale_socket_from_a_crash_is_replaced(tmp_path: Path) -> None:
    with short_socket_dir() as base:
        stale = base / "workloads" / "s1" / "agent.sock"
        stale.parent.mkdir(parents=True)
        leftover = socket_module.socket(socket_module.AF_UNIX)
        leftover.bind(str(stale))
        leftover.close()  # the file stays, nobody listens: what a crash leaves behind
        async with running_agent(tmp_path, socket_dir=base, workloads={"s1": "a"}) as agent:
            assert await fetch_token(agent.socket_path("s1"))


async def test_an_existing_socket_dir_keeps_its_mode(tmp_path: Path) -> None:
    with short_socket_dir() as base:
        existing = base / "workloads"
        existing.mkdir(mode=0o711)
        existing.chmod(0o711)
        async with running_agent(tmp_path, socket_dir=base, workloads={"s1": "a"}) as agent:
            assert agent.socket_dir == existing
            assert stat.S_IMODE(existing.stat().st_mode) == 0o711
            assert stat.S_IMODE(agent.socket_path("s1").parent.stat().st_mode) == 0o711
        assert existing.is_dir()


async def test_a_symlinked_workload_dir_is_refused(tmp_path: Path) -> None:
    with short_socket_dir() as base:
        (base / "workloads").mkdir()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (base / "workloads" / "s1").symlink_to(elsewhere)
        with pytest.raises(ValueError, match="not a directory"):
            async with running_agent(tmp_path, socket_dir=base, workloads={"s1": "a"}):
                pass
        assert list(elsewhere.iterdir()) == []


async def test_failed_registration_leaves_no_trace(agent: IdentityAgent) -> None:
    blocker = agent.socket_dir / "blocked"
    blocker.write_text("a file where the workload directory would go")
    with pytest.raises(ValueError, match="not a directory"):
        agent.add_workload("blocked", "grantbox/blocked")
    assert "blocked" not in agent.workloads()
    assert "s1" in agent.workloads()


async def test_connections_per_workload_are_bounded(agent: IdentityAgent) -> None:
    """Past the bound, connections are closed at once; relayed ones hear the gRPC server."""
    path = str(agent.socket_path("s1"))
    loop = asyncio.get_running_loop()
    extra = 8
    held: list[socket_module.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS_PER_WORKLOAD + extra):
            s = socket_module.socket(socket_module.AF_UNIX)
            s.setblocking(False)
            await connect_unix(s, path)  # asyncio's sock_connect mishandles a full backlog
            held.append(s)
        first_bytes = await asyncio.gather(
            *(asyncio.wait_for(loop.sock_recv(s, 1), 10) for s in held), return_exceptions=True
        )
    finally:
        for s in held:
            s.close()
    refused = [b for b in first_bytes if b == b""]
    assert len(refused) == extra
    # Once the flood is gone (its relays wind down), the workload is served again.
    async with WorkloadIdentityClient(path, deadline=10.0) as client:
        assert (await client.fetch_jwt_svid(AUDIENCE)).spiffe_id == SANDBOX_ID
