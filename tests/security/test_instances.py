"""DESIGN §3.5 #1 and #8 across instances: no grantbox socket of any instance on the host is
reachable from an agent. Two real `grantbox up` instances share a runtime directory (as two
instances under /run/grantbox do); the first one's agent hunts for the second one's sockets.

Two layers are checked apart: inside the fence nothing of /run exists at all, and even a
process of the agent's uid outside the fence cannot traverse the directories that hold the
sockets (0700, owned by the supervisors' user)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox.test_up import Up

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[tuple[Up, Up]]:
    runtime = Path("/run") / f"gbx-two-{uuid.uuid4().hex[:8]}"
    first = Up(tmp_path / "one", runtime)
    try:
        second = Up(tmp_path / "two", runtime)
        try:
            yield first, second
        finally:
            second.stop(signal.SIGTERM)
    finally:
        first.stop(signal.SIGTERM)
        shutil.rmtree(runtime, ignore_errors=True)


def _ready(up: Up, name: str) -> dict[str, object]:
    gw = up.cli()
    gw.ok("sandbox", "create", "--name", name, "--", "sleep", "600")
    deadline = time.monotonic() + 60
    while (view := gw.json("sandbox", "get", name))["phase"] != "ready":
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    return dict(view)


def test_no_socket_of_another_instance_is_reachable_from_an_agent(
    instances: tuple[Up, Up],
) -> None:
    first, second = instances
    mine = _ready(first, "mine")
    _ready(second, "theirs")
    sockets = sorted(str(p) for p in first.runtime.rglob("*.sock"))
    theirs = [s for s in sockets if f"up-{second.process.pid}" in s]
    assert any(s.endswith("agent.sock") for s in theirs), sockets
    assert any(s.endswith("admin.sock") for s in theirs), sockets

    probe = "; ".join(
        f"ls -d {os.path.dirname(s)} 2>/dev/null && echo SEEN;"
        f" curl -s --max-time 2 --unix-socket {s} http://x/ && echo CONNECTED"
        for s in sockets
    )
    probe += f"; ls -A /run /var/run {first.runtime} 2>&1 | grep -v 'No such' ; echo probed"
    result = first.cli().run("sandbox", "exec", "--name", "mine", "--", "sh", "-c", probe)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.stdout.strip() == "probed", result.stdout
    # Outside the fence, as the agent's own kernel uid: the directories do not let it in.
    uid = str(mine["agent_uid"])
    for socket_path in sockets:
        outside = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             "/usr/bin/python3", "-c",
             "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
             socket_path],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert outside.returncode != 0, socket_path
        assert "PermissionError" in outside.stderr, (socket_path, outside.stderr)
