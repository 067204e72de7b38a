"""The command line's contract (DESIGN §3.7, #16): one human error line, exit 2 for usage,
never an exception class name; status, wait, version, completion; providers without
credentials; the demo and ``proxy run`` saying at start what is wrong."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from pathlib import Path

import yaml

from grantbox.gateway import GatewayServer
from tests.support.gateway_server import grant_profile
from tests.support.grantbox_command import GRANTBOX, Grantbox


def _write(path: Path, data: object) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_an_unreachable_or_malformed_gateway_is_one_human_line(tmp_path: Path) -> None:
    gb = Grantbox(env={"GRANTBOX_TOKEN": "t", "GRANTBOX_CONFIG_DIR": str(tmp_path)})
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = gb.refused("sandbox", "list", "--gateway", f"http://127.0.0.1:{port}")
    assert down == (
        f"cannot reach the gateway at http://127.0.0.1:{port}: connection refused; "
        "is `grantbox up` running? (`grantbox status` checks)"
    )
    for url in ("localhost:7443", "ftp://127.0.0.1:1"):
        error = gb.refused("sandbox", "list", env={"GRANTBOX_GATEWAY": url})
        assert error == (
            f"GRANTBOX_GATEWAY {url!r} is not a gateway URL: write it as http://HOST:PORT "
            "(or https://…)"
        )
    nothing = Grantbox(env={"GRANTBOX_CONFIG_DIR": str(tmp_path), "GRANTBOX_GATEWAY": ""})
    assert nothing.refused("provider", "list").startswith("no gateway configured")


def test_usage_mistakes_exit_2_with_one_line(tmp_path: Path) -> None:
    gb = Grantbox(env={"GRANTBOX_CONFIG_DIR": str(tmp_path)})
    assert gb.refused("sandbox", "list", "--bogus", code=2) == (
        "No such option '--bogus' (see `grantbox sandbox list --help`)"
    )
    assert gb.refused("frobnicate", code=2).startswith("No such command 'frobnicate'")
    assert "'-o'" in gb.refused("sandbox", "list", "-o", "xml", code=2)


def test_a_refused_profile_import_is_not_error_error(gb: Grantbox, tmp_path: Path) -> None:
    bad = grant_profile("alpha")
    bad["credentials"][0]["auth_style"] = "magic"  # type: ignore[index]
    error = gb.refused("profile", "import", "-f", _write(tmp_path / "bad.yaml", bad))
    assert "auth_style" in error
    assert json.loads(gb.ok("profile", "list", "-o", "json").stdout)[0]["id"] == "github"


def test_a_network_only_profile_makes_an_attachable_provider(gb: Grantbox, tmp_path: Path) -> None:
    profile = {"id": "mirror", "endpoints": [{"host": "pypi.org", "port": 443}]}
    gb.ok("profile", "lint", "-f", _write(tmp_path / "mirror.yaml", profile))
    gb.ok("profile", "import", "-f", str(tmp_path / "mirror.yaml"))
    created = json.loads(
        gb.ok("provider", "create", "net", "--type", "mirror", "-o", "json").stdout
    )
    assert (created["runtime_credentials"], created["credentials"]) == (False, [])
    also = gb.ok(
        "provider", "create", "net2", "--type", "mirror", "--runtime-credentials", "-o", "json"
    )
    assert json.loads(also.stdout)["runtime_credentials"] is True
    assert "known: none" in gb.refused(
        "provider", "create", "net3", "--type", "mirror", "--credential", "foo=bar"
    )
    gb.ok("sandbox", "create", "box", "--provider", "net")
    config = yaml.safe_load(gb.ok("sandbox", "config", "box").stdout)
    assert config["bindings"] == []
    assert any(e["host"] == "pypi.org" for p in config["policy"]["network"] for e in p["endpoints"])


def test_status_and_wait_report_the_gateway(gb: Grantbox, server: GatewayServer) -> None:
    report = json.loads(gb.ok("status", "-o", "json").stdout)
    assert report["gateway"]["ready"] is True and report["gateway"]["url"] == server.url
    assert report["driver"] == "" or report["driver"] is None or isinstance(report["driver"], str)
    assert report["sandboxes"]["ready"] == 0
    table = gb.ok("status").stdout
    assert table.startswith(f"gateway         {server.url}: ready")
    assert "ready at" in gb.ok("wait", "--timeout", "10").stderr


def test_status_and_wait_without_a_gateway_fail_clearly(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gb = Grantbox(env={"GRANTBOX_GATEWAY": f"http://127.0.0.1:{port}", "GRANTBOX_TOKEN": "t"})
    result = gb.run("status")
    assert result.returncode == 1
    assert "not answering (connection refused)" in result.stdout
    error = gb.refused("wait", "--timeout", "0.5")
    assert error.startswith("no gateway became ready within 0.5 s (last: http://127.0.0.1:")


def test_version_and_completion(tmp_path: Path) -> None:
    gb = Grantbox()
    assert gb.ok("version").stdout.startswith("grantbox ")
    versions = json.loads(gb.ok("version", "-o", "json").stdout)
    assert {"grantbox", "python", "fastapi"} <= set(versions)
    assert gb.ok("--version").stdout.startswith("grantbox, version ")
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")):
        script = gb.ok("completion", shell).stdout
        assert marker in script and "_GRANTBOX_COMPLETE" in script
    assert gb.refused("completion", "tcsh", code=2).startswith(
        "Invalid value for '{bash|zsh|fish}'"
    )


def test_proxy_run_warns_at_start_when_no_identity_socket_is_there(tmp_path: Path) -> None:
    profile = grant_profile("alpha", host="alpha.example")
    config = {"profiles": [profile], "providers": [{"name": "alpha", "profile": "alpha"}]}
    path = _write(tmp_path / "proxy.yaml", config)
    process = subprocess.Popen(
        [GRANTBOX, "proxy", "run", "--config", path, "--listen", "127.0.0.1:0",
         "--identity-socket", "/nonexistent/agent.sock"],
        env={**os.environ, "SPIFFE_ENDPOINT_SOCKET": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        lines = []
        deadline = time.monotonic() + 60
        while not any("listening on" in line for line in lines):
            assert time.monotonic() < deadline, lines
            ready, _, _ = select.select([process.stderr], [], [], 1)
            if ready:
                lines.append(process.stderr.readline())
    finally:
        process.terminate()
        process.wait(20)
    assert lines[0] == (
        "warning: Workload API socket /nonexistent/agent.sock does not exist; requests that "
        "need a token will be refused with token_grant_failed (workload_identity_unavailable) "
        "until it is there\n"
    )
