"""`grantbox up` and a sandbox run by an unprivileged user, with user namespaces only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sandbox_residue import pids_mentioning
from tests.support.sandbox_rootless import NOBODY, as_nobody, system_python, unprivileged_python
from tests.support.subordinate_ids import have_helpers, subordinate_ids

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody"),
    pytest.mark.skipif(system_python() is None, reason="no system python of this version"),
]
CLI = "from grantbox.cli import main; main()"


@pytest.fixture
def home() -> Iterator[Path]:
    """Outside /tmp, so the hiding tmpfs (not the sandbox's private /tmp) is what is tested."""
    path = Path(tempfile.mkdtemp(prefix="gbx-rootless-", dir="/run"))
    os.chmod(path, 0o755)  # noqa: S103 - nobody must reach its own files
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def repos() -> Iterator[Path]:
    """Two operator-owned repositories outside $HOME, as the review's planted hook used."""
    base = Path(tempfile.mkdtemp(prefix="gbx-repos-", dir="/srv"))
    os.chmod(base, 0o755)  # noqa: S103 - the operator's repositories, readable as usual
    for name in ("listed", "unlisted"):
        hooks = base / name / ".git" / "hooks"
        hooks.mkdir(parents=True)
        for path in (base / name, base / name / ".git", hooks):
            os.chown(path, NOBODY, NOBODY)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "subids",
    [
        False,
        pytest.param(
            True, marks=pytest.mark.skipif(not have_helpers(), reason="no newuidmap (uidmap)")
        ),
    ],
    ids=["operator-uid", "subordinate-uid"],
)
def test_rootless_up_runs_a_fenced_sandbox_and_stops_clean(
    home: Path, repos: Path, subids: bool
) -> None:
    with contextlib.ExitStack() as stack:
        if subids:
            stack.enter_context(subordinate_ids("nobody", 4_000_000))
        _rootless_up(home, repos, subids)


def _rootless_up(home: Path, repos: Path, subids: bool) -> None:
    python = unprivileged_python(home / "py")
    user_dir = home / "user"
    user_dir.mkdir()
    os.chown(user_dir, NOBODY, NOBODY)
    env = {
        "PATH": f"{python.parent}:/usr/bin:/bin",
        "HOME": str(user_dir),
        "GRANTBOX_STATE_DIR": str(user_dir / "state"),
        "GRANTBOX_CONFIG_DIR": str(user_dir / "config"),
        "GRANTBOX_RUNTIME_DIR": str(user_dir / "runtime"),
    }
    up = subprocess.Popen(
        as_nobody([str(python), "-c", CLI, "up", "--listen", "127.0.0.1:0"]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd="/",
    )
    lines: list[str] = []
    try:
        assert up.stdout is not None
        for line in up.stdout:
            lines.append(line)
            if line.startswith("press Ctrl-C"):
                break
        text = "".join(lines)
        assert "rootless (user namespaces)" in text, text
        said = "subordinate ids of yours" if subids else "agents run as your uid"
        assert said in text, text
        port = re.search(r"gateway: http://127.0.0.1:(\d+)", text)
        assert port is not None, text

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                as_nobody([str(python), "-c", CLI, *args]),
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                cwd="/",
            )

        policy = user_dir / "policy.json"
        policy.write_text(json.dumps({"filesystem": {"read_write": [str(repos / "listed")]}}))
        os.chmod(policy, 0o644)
        created = cli(
            "sandbox", "create", "--name", "r1", "--policy", str(policy), "--", "sleep", "600"
        )
        assert created.returncode == 0, created.stderr
        deadline = time.monotonic() + 60
        while "ready" not in cli("sandbox", "get", "r1").stdout:
            assert time.monotonic() < deadline, cli("sandbox", "get", "r1").stdout
            time.sleep(0.2)
        token = user_dir / "config" / "operator-token"
        script = (
            f"id -u; ls -A {user_dir}; cat {token} && exit 10; umount {user_dir} && exit 11;"
            f" umount -l /proc && exit 12;"
            f" curl -sS --max-time 3 --noproxy '*' http://127.0.0.1:{port[1]}/ && exit 13;"
            " ip -o link | wc -l; ls /proc | grep -c '^[0-9]'"
        )
        result = cli("sandbox", "exec", "--name", "r1", "--", "sh", "-c", script)
        assert result.returncode == 0, (result.stdout, result.stderr)
        uid, links, processes = result.stdout.split()
        assert uid == ("1" if subids else "0") and links == "1"
        assert int(processes) <= 4
        assert "Couldn't connect" in result.stderr or "Failed to connect" in result.stderr
        plant = " ".join(
            f"echo 'cp $GRANTBOX_TOKEN /tmp' > {repos / name}/.git/hooks/post-commit;"
            for name in ("listed", "unlisted")
        )
        cli("sandbox", "exec", "--name", "r1", "--", "sh", "-c", plant)
        assert not (repos / "unlisted" / ".git" / "hooks" / "post-commit").exists()
        # As a subordinate uid the agent cannot write even where the policy shows the
        # operator's repository; as the operator's uid it can, where the policy says so.
        planted = (repos / "listed" / ".git" / "hooks" / "post-commit").exists()
        assert planted is (not subids)
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, "".join(lines) + out
    assert "stopped; nothing left running" in out
    assert pids_mentioning(str(user_dir)) == set()
    assert not (user_dir / "runtime").exists()
