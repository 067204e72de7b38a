"""``grantbox identity serve`` as a real subprocess: serves, logs safely, shuts down cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import socket as socket_module
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from grantbox.cli.app import cli
from grantbox.cli.identity import parse_listen
from grantbox.identity import WorkloadIdentityClient
from grantbox.identity_agent import add_workload_remote
from tests.support.identity_agent import short_socket_dir

from .conftest import AUDIENCE, oidc_jwks, verify


async def _read_until(stream: asyncio.StreamReader, pattern: str, timeout: float = 60.0) -> str:
    seen: list[str] = []

    async def scan() -> str:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"output ended before {pattern!r}: {seen}")
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match.group(1)

    return await asyncio.wait_for(scan(), timeout)


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_serve_runs_and_shuts_down_cleanly(tmp_path: Path, stop_signal: int) -> None:
    with short_socket_dir() as base:
        sockets = base / "sockets"
        admin = base / "admin.sock"
        state = tmp_path / "state"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from grantbox.cli import main; main()",
            "identity", "serve",
            "--socket-dir", str(sockets),
            "--trust-domain", "example.org",
            "--workload", "s1=grantbox/sandbox/s1",
            "--oidc-listen", "127.0.0.1:0",
            "--state-dir", str(state),
            "--admin-socket", str(admin),
            "--svid-ttl", "60",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None and process.stderr is not None
            socket = await _read_until(process.stdout, r"workload s1: socket (\S+)")
            discovery = await _read_until(process.stdout, r"oidc discovery: (\S+)")
            assert socket == str(sockets / "s1" / "agent.sock")
            oidc_url = discovery.removesuffix("/.well-known/openid-configuration")
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", oidc_url)

            async with WorkloadIdentityClient(socket, deadline=5.0) as client:
                svid = await client.fetch_jwt_svid(AUDIENCE)
                late_socket = await add_workload_remote(admin, "late", "grantbox/sandbox/late")
                async with WorkloadIdentityClient(str(late_socket)) as late_client:
                    late = await late_client.fetch_jwt_svid(AUDIENCE)
            assert svid.spiffe_id == "spiffe://example.org/grantbox/sandbox/s1"
            assert late.spiffe_id == "spiffe://example.org/grantbox/sandbox/late"
            verify(svid.token, await oidc_jwks(oidc_url))
            key_file = next(state.iterdir())
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

            process.send_signal(stop_signal)
            out, err = await asyncio.wait_for(process.communicate(), 20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, err.decode()
        assert b"identity agent stopped" in out
        assert not Path(socket).exists() and not late_socket.exists() and not admin.exists()
        assert list(sockets.iterdir()) == []

    # Logs are JSON lines and never carry an SVID or key material.
    records = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    messages = {r["message"] for r in records}
    assert {"identity agent started", "jwt-svid issued", "identity agent stopped"} <= messages
    issued = [r for r in records if r["message"] == "jwt-svid issued"]
    assert issued[0]["spiffe_id"] == svid.spiffe_id
    text = err.decode() + out.decode()
    assert svid.token not in text and late.token not in text
    assert svid.token.split(".")[2] not in text
    assert "PRIVATE KEY" not in text and '"d":' not in text


def test_bad_arguments_fail_with_one_line() -> None:
    runner = CliRunner()
    for args in (
        ["--trust-domain", "bad domain!"],
        ["--trust-domain", "example.org", "--workload", "../x=y"],
        ["--trust-domain", "example.org", "--oidc-listen", "localhost"],
        ["--trust-domain", "example.org", "--issuer", "not-a-url"],
    ):
        result = runner.invoke(cli, ["identity", "serve", "--socket-dir", "/tmp/unused", *args])
        assert result.exit_code != 0, args
        assert result.output.splitlines()[-1].startswith("error: "), result.output


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    for bad in ("127.0.0.1", ":80", "h:x", "h:70000"):
        with pytest.raises(ValueError, match=r"HOST:PORT|port"):
            parse_listen(bad)


def test_startup_failure_is_one_line_and_leaves_no_sockets(tmp_path: Path) -> None:
    busy = socket_module.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    with busy, short_socket_dir() as base:
        result = CliRunner().invoke(
            cli,
            [
                "identity", "serve",
                "--socket-dir", str(base / "sockets"),
                "--trust-domain", "example.org",
                "--workload", "s1=grantbox/s1",
                "--oidc-listen", f"127.0.0.1:{port}",
            ],
        )  # fmt: skip
        assert result.exit_code == 1
        assert result.output.splitlines()[-1].startswith("error: identity agent failed:")
        assert list((base / "sockets").iterdir()) == []
    assert logging.getLogger("grantbox").propagate  # the command restored logging
