"""DESIGN §3.5 #1, #2 and #7, proven from inside a real sandbox with ordinary tools."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from grantbox.sandbox.hiding import socket_directory
from grantbox.sandbox.network import SandboxNetwork
from tests.support.identity_agent import running_agent
from tests.support.sandbox_run import SandboxRunner
from tests.support.token_endpoint import running_token_endpoint

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A socket directory outside /tmp, so the hiding tmpfs (not the private /tmp) is tested."""
    path = Path(tempfile.mkdtemp(prefix="gbx-test-", dir="/run"))
    os.chmod(path, 0o755)  # noqa: S103 - reachable by nobody unless hidden
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def identity_socket(tmp_path: Path, run_dir: Path) -> AsyncIterator[Path]:
    async with running_agent(tmp_path, socket_dir=run_dir) as agent:
        socket = agent.add_workload("s1", "grantbox/sandbox/s1")
        os.chmod(socket.parent, 0o755)  # noqa: S103 - prove the fence, not the permissions
        os.chmod(socket, 0o777)  # noqa: S103
        yield socket


@pytest.mark.parametrize("shown", [False, True], ids=["absent", "parent-shown"])
@pytest.mark.parametrize("as_root", [False, True], ids=["nobody", "namespace-root"])
async def test_identity_socket_cannot_be_read_or_listed(
    runner: SandboxRunner, identity_socket: Path, as_root: bool, shown: bool, run_dir: Path
) -> None:
    """Absent: the agent's root holds nothing of /run. Parent shown: a view that does
    include the socket's parent still covers the socket's directory with an empty tmpfs."""
    assert identity_socket.exists()
    hidden = socket_directory(f"unix://{identity_socket}")
    view = {"read_only": (str(run_dir),)} if shown else {}
    script = (
        f"ls -la {hidden}; ls {identity_socket} && exit 10; cat {identity_socket} && exit 11;"
        f" ls {hidden}/*/ 2>/dev/null && exit 12;"
        f" curl -s --unix-socket {identity_socket} http://x/ && exit 13;"
        f" touch {hidden}/x && exit 14; exit 0"
    )
    result = await runner.sh(script, hidden=[hidden], root=as_root, **view)
    assert result.code == 0, result
    assert identity_socket.name not in result.out
    assert "No such file" in result.err
    if shown:  # the directory is there, and empty: only "." and ".."
        assert [line.split()[-1] for line in result.out.splitlines()[1:]] == [".", ".."]


async def test_environment_shows_no_internal_variable(
    runner: SandboxRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock")
    monkeypatch.setenv("GRANTBOX_TOKEN", "operator-token")
    result = await runner.run(["env"])
    assert result.code == 0
    names = {line.split("=", 1)[0] for line in result.out.splitlines() if "=" in line}
    assert "HTTPS_PROXY" in names and "SSL_CERT_FILE" in names
    assert not [n for n in names if n.upper().startswith(("SPIFFE", "GRANTBOX"))], names
    assert "operator-token" not in result.out


async def _serve_once(network: SandboxNetwork) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nviaprxy")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, sock=network.listener)


async def test_only_egress_is_the_proxy_listener(runner: SandboxRunner, tmp_path: Path) -> None:
    host_service = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    host_port = host_service.sockets[0].getsockname()[1]
    proxy_side = await _serve_once(runner.network)
    async with (
        running_agent(tmp_path, oidc=True) as agent,
        running_token_endpoint(oidc_url=agent.oidc_url, trust_domain="example.org") as issuer,
        host_service,
        proxy_side,
    ):
        token_host, token_port = issuer.token_url.split("//")[1].split("/")[0].split(":")
        nameserver = "127.0.0.53"
        with contextlib.suppress(OSError):
            for line in Path("/etc/resolv.conf").read_text().splitlines():
                if line.startswith("nameserver"):
                    nameserver = line.split()[1]
                    break
        udp = (
            "import socket,sys\n"
            "q=bytes.fromhex('abcd01000001000000000000076578616d706c6503636f6d0000010001')\n"
            "ok=0\n"
            f"for ns in ({nameserver!r},'127.0.0.53','8.8.8.8'):\n"
            "  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1)\n"
            "  try:\n"
            "    s.sendto(q,(ns,53)); s.recvfrom(512); ok+=1\n"
            "  except OSError as e: print(ns, e)\n"
            "sys.exit(10 if ok else 0)\n"
        )
        script = (
            f"curl -sS --max-time 3 --noproxy '*' http://127.0.0.1:{host_port}/ && exit 10;"
            f" python3 -c \"import socket; socket.create_connection(('{token_host}',"
            f' {token_port}), timeout=3)" && exit 11 || echo raw-refused;'
            f" curl -sS --max-time 3 --noproxy '*' {issuer.token_url} && exit 12;"
            " curl -sS --max-time 3 --noproxy '*' http://93.184.215.14/ && exit 13;"
            " getent hosts example.com && exit 14;"
            f' python3 -c "{udp}" || exit 15;'
            " curl -sS --max-time 5 http://anything.example/ || exit 16"
        )
        result = await runner.sh(script)
    assert result.code == 0, result
    assert result.out.endswith("viaprxy"), result.out
    assert "raw-refused" in result.out and "ConnectionRefusedError" in result.err
    assert result.out.count("unreachable") + result.out.count("timed out") == 3
    assert "Couldn't connect" in result.err or "Failed to connect" in result.err


async def test_proc_shows_no_supervisor_process(runner: SandboxRunner) -> None:
    marker = f"supervisor-{uuid.uuid4().hex}"
    outside = subprocess.Popen(["sleep", "30", marker])
    try:
        result = await runner.sh(
            "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done; ls -d /proc/[0-9]*"
        )
    finally:
        outside.kill()
        outside.wait()
    assert result.code == 0
    assert marker not in result.out
    assert "pytest" not in result.out
    pids = [line for line in result.out.splitlines() if line.startswith("/proc/")]
    assert 2 <= len(pids) <= 5, pids


def _pids_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


async def test_agent_dies_with_its_supervisor() -> None:
    marker = f"agent-{uuid.uuid4().hex}"
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sandbox_holder", marker],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        before = _pids_with(marker)
        assert before, "the sandboxed agent should be running"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 2.0
        while _pids_with(marker) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _pids_with(marker) == []
    finally:
        holder.kill()
        holder.wait()


async def test_user_namespace_path_locks_the_hiding_mounts(
    rootless_runner: SandboxRunner, identity_socket: Path
) -> None:
    hidden = socket_directory(f"unix://{identity_socket}")
    script = (
        f"id -u; umount {hidden} && exit 10; umount -l {hidden} && exit 11;"
        f" umount -l /proc && exit 12; ls {identity_socket} && exit 13;"
        " cat /proc/1/environ && exit 14; ls /proc/1/root/ && exit 15;"
        " ip -o link | wc -l; exit 0"
    )
    result = await rootless_runner.sh(script, hidden=[hidden])
    assert result.code == 0, result
    assert result.out.split() == ["0", "1"], result.out
    assert "No such file" in result.err


async def test_missing_hidden_directory_refuses_to_start(runner: SandboxRunner) -> None:
    result = await runner.run(["true"], hidden=["/srv/grantbox-no-such-dir"])
    assert result.code == 125
    assert "hidden directory /srv/grantbox-no-such-dir does not exist" in result.err


async def test_shared_writable_places_and_ipc_are_private(runner: SandboxRunner) -> None:
    marker = f"host-{uuid.uuid4().hex}"
    for place in ("/dev/shm", "/var/tmp"):
        Path(place, marker).write_text("host file")
    try:
        result = await runner.sh(
            f"ls -A /tmp /var/tmp /dev/shm; ls /sys/class/net; touch /dev/shm/{marker}-in"
        )
    finally:
        for place in ("/dev/shm", "/var/tmp"):
            Path(place, marker).unlink()
    assert result.code == 0, result
    assert marker not in result.out
    assert not Path("/dev/shm", f"{marker}-in").exists()
    assert result.out.split()[-1] == "lo"
