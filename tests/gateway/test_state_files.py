"""State files are private from creation, whatever creates them first (issue #12).

``gateway.db`` and its ``-wal``/``-shm`` were created 0644 and the state directory ended up
0755 (the identity keystore's ``mkdir(parents=True)`` made it before the gateway's 0700
mkdir), so a sandbox of another instance read every sandbox's logs and events. Each real
command is started on a fresh, not yet existing state directory under the usual umask and
every path below it is checked; a pre-loosened tree is repaired with a warning.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from grantbox.gateway.state_dir import (
    StateDirError,
    create_private_file,
    make_private_dir,
    secure_tree,
)
from grantbox.logformat import parse_line
from tests.support.gateway_server import GatewayCli

GRANTBOX = Path(sys.executable).with_name("grantbox")
READY_BOUND = 60.0


def loose_paths(root: Path) -> list[str]:
    """Every path at or under ``root`` that group or others can access."""
    found = []
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
            found.append(f"{path} {stat.S_IMODE(info.st_mode):04o}")
    return found


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


# -- the building blocks ----------------------------------------------------------------------


def test_every_missing_level_is_created_0700(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    make_private_dir(target)
    for path in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_existing_parents_are_left_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    make_private_dir(tmp_path / "state")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_a_new_file_is_0600_and_a_loose_one_is_repaired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = tmp_path / "fresh.db"
    create_private_file(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    loose = tmp_path / "loose.db"
    loose.write_text("x")
    loose.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="grantbox.gateway.state"):
        create_private_file(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert loose.read_text() == "x"
    assert any(str(loose) in r.getMessage() for r in caplog.records)


def test_secure_tree_repairs_with_a_warning_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "state"
    (root / "identity").mkdir(parents=True)
    root.chmod(0o755)
    (root / "identity").chmod(0o775)
    (root / "gateway.db").write_text("")
    (root / "gateway.db").chmod(0o644)
    (root / "ok").write_text("")
    (root / "ok").chmod(0o600)
    (root / "link").symlink_to("/etc/hostname")
    with caplog.at_level(logging.WARNING, logger="grantbox.gateway.state"):
        repaired = secure_tree(root)
    assert sorted(repaired) == sorted(
        [f"{root} was 0755", f"{root / 'identity'} was 0775", f"{root / 'gateway.db'} was 0644"]
    )
    assert loose_paths(root) == []
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3
    assert stat.S_IMODE(Path("/etc/hostname").stat().st_mode) & 0o004  # link not followed


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_loose_file_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    foreign = root / "gateway.db"
    foreign.write_text("")
    foreign.chmod(0o644)
    os.chown(foreign, 65534, 65534)
    with pytest.raises(StateDirError, match=r"belongs to uid 65534 .* \(chmod go-rwx\)"):
        secure_tree(root)


# -- the real commands ------------------------------------------------------------------------


@contextmanager
def running(args: list[str], env: dict[str, str], ready: str) -> Iterator[list[str]]:
    """Start ``grantbox ARGS`` and yield its output lines once ``ready`` was printed."""
    process = subprocess.Popen(
        [str(GRANTBOX), *args],
        env={"PATH": os.environ["PATH"], **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            lines.append(line)
            if ready in line:
                break
        else:
            raise AssertionError(f"{args[0]} did not start:\n" + "".join(lines))
        yield lines
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
        lines.append(rest)


def _dirs(tmp_path: Path) -> dict[str, str]:
    return {
        "GRANTBOX_STATE_DIR": str(tmp_path / "home" / "data" / "grantbox"),
        "GRANTBOX_CONFIG_DIR": str(tmp_path / "home" / "config" / "grantbox"),
    }


def _warnings(lines: list[str]) -> list[str]:
    records = [parse_line(line) for line in "".join(lines).splitlines()]
    return [str(r["message"]) for r in records if r and r["level"] == "warning"]


def test_gateway_serve_keeps_everything_private(tmp_path: Path) -> None:
    env = _dirs(tmp_path)
    with running(["gateway", "serve", "--listen", "127.0.0.1:0"], env, "gateway listening"):
        state = Path(env["GRANTBOX_STATE_DIR"])
        assert (state / "gateway.db").exists() and (state / "gateway.db-wal").exists()
        assert loose_paths(tmp_path / "home") == []


def test_gateway_serve_repairs_a_loosened_state_dir_with_a_warning(tmp_path: Path) -> None:
    env = _dirs(tmp_path)
    state = Path(env["GRANTBOX_STATE_DIR"])
    with running(["gateway", "serve", "--listen", "127.0.0.1:0"], env, "gateway listening"):
        pass
    state.chmod(0o755)
    (state / "gateway.db").chmod(0o644)
    with running(
        ["gateway", "serve", "--listen", "127.0.0.1:0"], env, "gateway listening"
    ) as lines:
        assert loose_paths(state) == []
    warnings = _warnings(lines)
    assert any(f"made {state} private" in w and "0755" in w for w in warnings), lines
    assert any(f"made {state / 'gateway.db'} private" in w for w in warnings), lines


def test_identity_serve_keeps_its_state_private(tmp_path: Path) -> None:
    state = tmp_path / "home" / "data" / "grantbox" / "identity"
    args = [
        "identity", "serve", "--socket-dir", str(tmp_path / "sockets"),
        "--trust-domain", "example.org", "--state-dir", str(state),
    ]  # fmt: skip
    with running(args, {}, "identity agent ready"):
        assert any(state.iterdir())
        assert loose_paths(tmp_path / "home") == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="grantbox up needs root or user namespaces here")
def test_grantbox_up_with_a_sandbox_keeps_the_state_dir_private(tmp_path: Path) -> None:
    env = {**_dirs(tmp_path), "GRANTBOX_RUNTIME_DIR": f"/run/gbx-state-{uuid.uuid4().hex[:8]}"}
    state = Path(env["GRANTBOX_STATE_DIR"])
    with running(["up", "--listen", "127.0.0.1:0"], env, "press Ctrl-C") as lines:
        port = re.search(r"gateway: http://127.0.0.1:(\d+)", "".join(lines))
        assert port is not None
        token = (Path(env["GRANTBOX_CONFIG_DIR"]) / "operator-token").read_text().strip()
        cli = GatewayCli(f"http://127.0.0.1:{port[1]}", token, tmp_path)
        cli.ok("sandbox", "create", "--name", "box", "--", "sleep", "30")
        deadline = time.monotonic() + READY_BOUND
        while not list(state.glob("sandboxes/*/supervisor.log")):
            assert time.monotonic() < deadline, "the sandbox's supervisor never started"
            time.sleep(0.1)
        assert (state / "identity").is_dir() and (state / "gateway.db-wal").exists()
        assert loose_paths(tmp_path / "home") == []
