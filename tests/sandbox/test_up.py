"""`grantbox up` in the foreground: readable progress, and nothing left behind when stopped."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from grantbox.cli import cli
from grantbox.cli.up import remove_stale_runtime
from tests.support.gateway_server import GatewayCli
from tests.support.sandbox_residue import (
    descendants,
    namespace_holders,
    net_namespace,
    new_mounts_of_ours,
    pids_mentioning,
    seconds_since_boot,
    snapshot,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
RUNS = 10
STOP_BOUND = 30.0


class Up:
    def __init__(self, root: Path, runtime: Path | None = None) -> None:
        self.root = root
        self.runtime = runtime or Path("/run") / f"gbx-up-{uuid.uuid4().hex[:8]}"
        env = {
            "PATH": os.environ["PATH"],
            "GRANTBOX_STATE_DIR": str(root / "state"),
            "GRANTBOX_CONFIG_DIR": str(root / "config"),
            "GRANTBOX_RUNTIME_DIR": str(self.runtime),
        }
        grantbox = Path(sys.executable).with_name("grantbox")
        self.process = subprocess.Popen(
            [str(grantbox), "up", "--listen", "127.0.0.1:0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("press Ctrl-C"):
                break
        else:
            raise AssertionError("grantbox up did not become ready:\n" + "".join(self.lines))
        text = "".join(self.lines)
        self.gateway_port = int(re.search(r"gateway: http://127.0.0.1:(\d+)", text)[1])  # type: ignore[index]
        self.oidc_port = int(re.search(r"OIDC discovery at http://127.0.0.1:(\d+)", text)[1])  # type: ignore[index]

    def cli(self) -> GatewayCli:
        token = (self.root / "config" / "operator-token").read_text().strip()
        return GatewayCli(f"http://127.0.0.1:{self.gateway_port}", token, self.root)

    def stop(self, signum: int) -> tuple[int, str]:
        self.process.send_signal(signum)
        out, _ = self.process.communicate(timeout=STOP_BOUND)
        return self.process.returncode, "".join(self.lines) + out


def _listening(port: int) -> bool:
    hex_port = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[1].endswith(hex_port):
                return True
    return False


def _wait_ready(gw: GatewayCli, name: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gw.json("sandbox", "get", name)["phase"] == "ready":
            return
        time.sleep(0.1)
    raise AssertionError(f"sandbox {name} not ready: {gw.run('sandbox', 'get', name).stdout}")


def _wait_fenced(marker: str, seconds: float = 20.0) -> set[int]:
    """Processes carrying ``marker`` that run in a network namespace other than ours."""
    host = net_namespace(os.getpid())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fenced = {p for p in pids_mentioning(marker) if net_namespace(p) not in (None, host)}
        if fenced:
            return fenced
        time.sleep(0.05)
    raise AssertionError("the sandbox's agent never ran in its own network namespace")


@pytest.mark.timeout(900)
def test_up_ten_times_leaves_nothing_behind(tmp_path: Path) -> None:
    watched = (str(tmp_path), "/run/gbx-up-")
    before = snapshot(watched)
    namespaces: dict[str, float] = {}  # a sandbox's namespace → when its instance stopped
    sandbox_pids: set[int] = set()
    for run in range(RUNS):
        up = Up(tmp_path)
        try:
            assert _listening(up.gateway_port)
            if run in (0, RUNS - 1):
                gw = up.cli()
                marker = f"agent-{uuid.uuid4().hex}"
                script = f"sleep 600; echo {marker}"
                gw.ok("sandbox", "create", "--name", f"s{run}", "--", "sh", "-c", script)
                _wait_ready(gw, f"s{run}")
                fenced = _wait_fenced(marker)
                sandbox_pids |= descendants(up.process.pid) | pids_mentioning(marker)
                seen = {ns for pid in fenced if (ns := net_namespace(pid))}
            signum = signal.SIGINT if run % 2 == 0 else signal.SIGTERM
            started = time.monotonic()
            code, output = up.stop(signum)
            if run in (0, RUNS - 1):
                namespaces |= dict.fromkeys(seen, seconds_since_boot())
        finally:
            if up.process.poll() is None:
                os.killpg(up.process.pid, signal.SIGKILL)
                up.process.wait()
                shutil.rmtree(up.runtime, ignore_errors=True)
        assert code == 0, output
        assert time.monotonic() - started < STOP_BOUND
        assert "stopped; nothing left running" in output
        assert not _listening(up.gateway_port) and not _listening(up.oidc_port)
        assert not up.runtime.exists()
    after = snapshot(watched)
    assert [pid for pid in sandbox_pids if Path(f"/proc/{pid}").exists()] == []
    for ns, stopped in namespaces.items():
        assert namespace_holders([ns], born_before=stopped) == set()
    assert after.unix_sockets == before.unix_sockets == frozenset()
    assert new_mounts_of_ours(before, after, watched) == []
    assert after.links == before.links
    assert pids_mentioning(str(tmp_path)) == set()


def test_up_refuses_a_bad_listen_address(tmp_path: Path) -> None:
    env = {"GRANTBOX_STATE_DIR": str(tmp_path / "state"), "GRANTBOX_RUNTIME_DIR": str(tmp_path)}
    result = CliRunner().invoke(cli, ["up", "--listen", "nonsense"], env=env)
    assert result.exit_code != 0
    assert result.stderr.strip().startswith("error:") and "HOST:PORT" in result.stderr
    assert not (tmp_path / "state").exists()


def test_stale_runtime_directories_of_dead_runs_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"up-{dead.pid}").mkdir()
    (tmp_path / f"up-{os.getpid()}").mkdir()
    (tmp_path / "other").mkdir()
    remove_stale_runtime(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", f"up-{os.getpid()}"]


@pytest.mark.timeout(300)
def test_killing_up_takes_every_sandbox_with_it(tmp_path: Path) -> None:
    up = Up(tmp_path)
    try:
        marker = f"agent-{uuid.uuid4().hex}"
        gw = up.cli()
        gw.ok("sandbox", "create", "--name", "k", "--", "sh", "-c", f"sleep 600; echo {marker}")
        _wait_ready(gw, "k")
        fenced = _wait_fenced(marker)
        supervisors = descendants(up.process.pid)
        os.killpg(up.process.pid, signal.SIGKILL)
        up.process.wait()
        deadline = time.monotonic() + 20

        def left() -> list[int]:
            alive = [p for p in supervisors | fenced if Path(f"/proc/{p}").exists()]
            return alive + sorted(pids_mentioning(marker))

        while left() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left() == []
    finally:
        if up.process.poll() is None:
            os.killpg(up.process.pid, signal.SIGKILL)
            up.process.wait()
        shutil.rmtree(up.runtime, ignore_errors=True)
