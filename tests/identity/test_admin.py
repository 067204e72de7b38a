"""Adding and removing workloads at run time through the root-only admin socket."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import (
    AdminError,
    IdentityAgent,
    PeerCredentials,
    add_workload_remote,
    list_workloads_remote,
    remove_workload_remote,
)
from grantbox.identity_agent.admin import admin_allowed, handle_request
from tests.support.identity_agent import running_agent, short_socket_dir

from .conftest import AUDIENCE


def test_only_root_or_the_agent_user_administers() -> None:
    assert admin_allowed(PeerCredentials(pid=1, uid=0, gid=0), agent_uid=1000)
    assert admin_allowed(PeerCredentials(pid=1, uid=1000, gid=0), agent_uid=1000)
    assert not admin_allowed(PeerCredentials(pid=1, uid=1001, gid=0), agent_uid=1000)


def test_request_handling_on_an_agent(tmp_path: Path) -> None:
    agent = IdentityAgent(socket_dir=tmp_path / "s", trust_domain="example.org")
    added = handle_request(agent, b'{"op": "add", "name": "w1", "spiffe_path": "a/b", "uids": [7]}')
    assert added == {
        "ok": True,
        "workload": {
            "name": "w1",
            "spiffe_id": "spiffe://example.org/a/b",
            "socket": str(tmp_path / "s" / "w1" / "agent.sock"),
            "uids": [7],
        },
    }
    listed = handle_request(agent, b'{"op": "list"}')
    assert [w["name"] for w in listed["workloads"]] == ["w1"]
    assert handle_request(agent, b'{"op": "remove", "name": "w1"}') == {"ok": True}
    for bad in [
        b"not json",
        b'{"op": "explode"}',
        b'{"op": "add", "name": "../etc", "spiffe_path": "x"}',
        b'{"op": "add", "name": "w", "spiffe_path": "x", "uids": [-1]}',
        b'{"op": "add", "name": "w", "spiffe_path": "x", "extra": 1}',
        b'{"op": "remove", "name": "missing"}',
    ]:
        answer = handle_request(agent, bad)
        assert answer["ok"] is False and answer["error"], bad


async def test_remote_add_list_remove(tmp_path: Path) -> None:
    async with running_agent(tmp_path, admin=True) as agent:
        admin = agent.admin_socket
        assert admin is not None
        assert stat.S_IMODE(admin.stat().st_mode) == 0o600
        socket = await add_workload_remote(admin, "late", "grantbox/sandbox/late")
        assert socket == agent.socket_path("late") and socket.exists()
        client = WorkloadIdentityClient(str(socket), deadline=3.0)
        svid = await client.fetch_jwt_svid(AUDIENCE)
        await client.aclose()
        assert svid.spiffe_id == "spiffe://example.org/grantbox/sandbox/late"
        listed = await list_workloads_remote(admin)
        assert [(w["name"], w["uids"]) for w in listed] == [("late", None)]
        await remove_workload_remote(admin, "late")
        assert not socket.exists()
        with pytest.raises(AdminError, match="no workload"):
            await remove_workload_remote(admin, "late")
        with pytest.raises(AdminError, match="invalid workload name"):
            await add_workload_remote(admin, "../../etc", "x")
    with pytest.raises(AdminError, match="admin socket"):
        await list_workloads_remote(admin)


_CHILD = r"""
import os, socket, sys
os.setgroups([]); os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    s.sendall(b'{"op": "list"}\n')
    print(s.recv(4096).decode().strip())
except PermissionError:
    print("EACCES")
"""


async def _as_nobody(admin_socket: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(admin_socket), stdout=subprocess.PIPE
    )
    out, _ = await process.communicate()
    return out.decode().strip()


@pytest.mark.root
@pytest.mark.usefixtures("needs_root")
async def test_non_root_cannot_administer(tmp_path: Path) -> None:
    with short_socket_dir() as base:
        async with running_agent(tmp_path, socket_dir=base, admin=True) as agent:
            assert agent.admin_socket is not None
            assert await _as_nobody(agent.admin_socket) == "EACCES"  # file mode 0600
            # Even if the file mode were loosened, the kernel-reported uid is checked.
            agent.admin_socket.chmod(0o666)
            answer = json.loads(await _as_nobody(agent.admin_socket))
            assert answer == {"ok": False, "error": "permission denied"}
            assert agent.workloads() == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["op", "name", "spiffe_path", "uids", "x"]), children)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_any_request_gets_an_answer_never_an_exception(line: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        agent = IdentityAgent(socket_dir=Path(scratch) / "s", trust_domain="example.org")
        answer = handle_request(agent, line)
    assert isinstance(answer["ok"], bool)
    assert answer["ok"] or isinstance(answer["error"], str)
