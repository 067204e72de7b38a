"""``grantbox demo``: its pure pieces, and the command itself run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from grantbox.cli import cli
from grantbox.demo import DemoPorts, find_example_dir
from grantbox.demo.embedded import DemoDirectories, read_up_output
from grantbox.demo.operator import grantbox_command
from grantbox.demo.run import profile_for_ports
from grantbox.profiles import (
    expand_bindings,
    has_errors,
    load_text,
    select_binding,
    validate_profile,
)

UP_OUTPUT = [
    "• isolation: namespaces available, running as root",
    "• identity agent: spiffe://grantbox.local, OIDC discovery at http://127.0.0.1:40123",
    "• gateway: http://127.0.0.1:41000 (state in /tmp/x/state)",
    "ready: the CLI finds this gateway via /tmp/x/config/gateway.json",
]


def test_up_output_is_read_for_identity_and_readiness() -> None:
    status = read_up_output(UP_OUTPUT)
    assert status.ready
    assert status.identity is not None
    assert (status.identity.trust_domain, status.identity.oidc_url) == (
        "grantbox.local",
        "http://127.0.0.1:40123",
    )
    assert not read_up_output(UP_OUTPUT[:3]).ready
    assert not read_up_output([UP_OUTPUT[0], UP_OUTPUT[3]]).ready  # ready without identity


def test_demo_directories_point_the_cli_at_the_demo_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRANTBOX_GATEWAY", "http://users-own:7443")
    monkeypatch.setenv("GRANTBOX_TOKEN", "users-own-token")
    env = DemoDirectories(tmp_path).environment()
    assert "GRANTBOX_GATEWAY" not in env and "GRANTBOX_TOKEN" not in env
    assert env["GRANTBOX_CONFIG_DIR"] == str(tmp_path / "config")
    assert env["GRANTBOX_STATE_DIR"] == str(tmp_path / "state")


def test_profile_moved_to_other_ports_still_validates_and_binds() -> None:
    original = yaml.safe_load((find_example_dir() / "provider-profile.yaml").read_text())
    ports = DemoPorts(28080, 28081, 28082)
    moved = profile_for_ports(original, ports, "http://127.0.0.1:28080")
    assert original["endpoints"][0]["port"] == 18081  # the original is not modified
    (loaded,) = load_text(yaml.safe_dump(moved), "moved.yaml").profiles
    assert not has_errors(validate_profile(loaded.profile))
    bindings = expand_bindings([("demo", loaded.profile)]).bindings
    for service in ("alpha", "beta"):
        binding = select_binding(bindings, f"{service}.localhost", ports.of(service), "/")
        assert binding is not None
        assert binding.audience == service
        assert binding.token_endpoint == "http://127.0.0.1:28080/token"
        assert binding.svid_audience == "http://127.0.0.1:28080"


@pytest.mark.parametrize("value", ["1,2", "a,b,c", "0,1,2", "1,2,70000"])
def test_bad_port_lists_are_refused(value: str) -> None:
    result = CliRunner().invoke(cli, ["demo", "--ports", value])
    assert result.exit_code == 2
    assert "ports" in result.output.lower() or "port" in result.output.lower()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    """The demo's work directory goes to ``tmp_path`` (via TMPDIR), so the test sees it."""
    return {**os.environ, "TMPDIR": str(tmp_path)}


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root here")


def children_of(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc/<pid>/task/*/children, recursively)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def wait_for_line(path: Path, text: str, process: subprocess.Popen[str], seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        output = path.read_text() if path.exists() else ""
        if text in output:
            return output
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} from grantbox demo:\n{path.read_text()[-4000:]}")


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(900)
@root_only
def test_demo_keep_passes_keeps_the_sandbox_and_stops_everything_on_ctrl_c(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    ports = free_ports(3)
    output = tmp_path / "demo.out"
    with output.open("w") as sink:
        process = subprocess.Popen(
            [*grantbox_command(), "demo", "--keep", "--ports", ",".join(map(str, ports))],
            env=demo_env, stdout=sink, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        text = wait_for_line(output, "Press Ctrl-C here to stop everything.", process, 500)
        assert "demo passed" not in text  # the verdict comes when it ends
        for service in ("alpha", "beta"):
            assert f"{service}: accepted request GET /hello from spiffe://grantbox.local/" in text
        assert "✗" not in text
        config_dir = re.search(r"export GRANTBOX_CONFIG_DIR=(\S+)", text)
        assert config_dir is not None
        env = {**demo_env, "GRANTBOX_CONFIG_DIR": config_dir.group(1)}
        listed = subprocess.run(
            [*grantbox_command(), "sandbox", "list", "-o", "json"],
            env=env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        assert [(s["name"], s["phase"]) for s in json.loads(listed.stdout)] == [("demo", "ready")]
        descendants = children_of(process.pid)
        assert descendants
        process.send_signal(signal.SIGINT)
        assert process.wait(180) == 0, output.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "demo passed" in output.read_text()
    time.sleep(1)
    assert [pid for pid in descendants if Path(f"/proc/{pid}").exists()] == []


@pytest.mark.root
@pytest.mark.timeout(300)
@root_only
def test_demo_command_fails_clearly_when_a_port_is_taken(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    ports = free_ports(3)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[1]))
        squatter.listen(1)
        result = subprocess.run(
            [*grantbox_command(), "demo", "--ports", ",".join(map(str, ports))],
            env=demo_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""  # nothing was started
    assert result.stderr == (
        f"error: the demo needs 127.0.0.1 port {ports[1]} (alpha), already in use; stop what "
        "listens there (`ss -ltnp` shows it) and run `grantbox demo` again\n"
    )
