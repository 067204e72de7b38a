"""The operator's commands against ``grantbox up`` with real sandboxes (root): exec with
stdin and a terminal, phases with their real causes, terminal neutralisation of what an
agent prints (#12), one ``up`` per state directory and sandboxes that come back with it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.grantbox_command import GRANTBOX, Grantbox
from tests.support.up_process import UpProcess

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

HOSTILE_PRINTF = r"title\033]0;pwned\007 clip\033]52;c;ZXZpbA==\007 erase\033[2K\rforged line\n"
HOSTILE = "title\x1b]0;pwned\x07 clip\x1b]52;c;ZXZpbA==\x07 erase\x1b[2K\rforged line"
MARKUP_PATH = "/a[conceal]SECRETX[/conceal]b[link=https://evil.example]clickme[/link]"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    running = UpProcess(tmp_path_factory.mktemp("up"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def box(up: UpProcess) -> str:
    up.gb.ok("sandbox", "create", "box", "--wait", "--", "sleep", "infinity")
    return "box"


def _phase(gb: Grantbox, name: str) -> dict[str, object]:
    view: dict[str, object] = json.loads(gb.ok("sandbox", "get", name, "-o", "json").stdout)
    return view


def _until_phase(
    gb: Grantbox, name: str, phases: set[str], seconds: float = 60
) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        view = _phase(gb, name)
        if view["phase"] in phases:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


def _on_a_terminal(args: list[str], env: dict[str, str], keys: list[bytes]) -> tuple[bytes, int]:
    """Run ``grantbox`` on a real pty (24x80), type ``keys`` one by one; its output and
    exit status."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its terminal, 24 rows by 80 columns
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.environ.update(env)
        os.execv(GRANTBOX, [GRANTBOX, *args])  # noqa: S606
    output = b""

    def read_for(seconds: float) -> None:
        nonlocal output
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                output += chunk

    read_for(3)
    for key in keys:
        os.write(fd, key)
        read_for(2)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        assert time.monotonic() < deadline, output
        read_for(0.5)
    os.close(fd)
    return output, os.waitstatus_to_exitcode(status)


# -- one up per state directory, and what it says about itself ----------------------------------


def test_a_second_up_on_the_same_state_directory_is_refused(up: UpProcess) -> None:
    recorded = (up.root / "config" / "gateway.json").read_text()
    error = up.gb.refused("up", timeout=60)
    assert error.startswith(
        f"another grantbox (pid {up.process.pid if up.process else 0}) is already running on "
        f"the state directory {up.root / 'state'}; stop it first"
    )
    assert (up.root / "config" / "gateway.json").read_text() == recorded
    assert up.gb.ok("sandbox", "list", "-o", "json").returncode == 0


def test_status_names_every_part(up: UpProcess) -> None:
    report = json.loads(up.gb.ok("status", "-o", "json").stdout)
    assert report["gateway"]["ready"] is True
    assert report["driver"] == "local"
    assert report["identity"]["trust_domain"] == "grantbox.local"
    assert report["identity"]["oidc_answers"] is True


# -- exec -----------------------------------------------------------------------------------


def test_exec_forwards_stdin_and_exits_with_the_commands_status(up: UpProcess, box: str) -> None:
    assert up.gb.ok("sandbox", "exec", "-n", box, "--", "cat", input="hi\n").stdout == "hi\n"
    failed = up.gb.run("sandbox", "exec", box, "--", "sh", "-c", "exit 7")
    assert failed.returncode == 7


def test_an_interactive_shell_runs_on_a_terminal_in_the_sandbox(up: UpProcess, box: str) -> None:
    output, status = _on_a_terminal(
        ["sandbox", "exec", "-it", box, "--", "sh"],
        up.env,
        [
            b"test -t 0 && test -t 1 && echo MARK-$((6*7)) && stty size\r",
            b"sleep 100\r",
            b"\x03",  # ^C reaches the sandbox's foreground process
            b"echo after-interrupt\r",
            b"exit 3\r",
        ],
    )
    text = output.decode(errors="replace")
    assert "MARK-42" in text and "24 80" in text
    assert "after-interrupt" in text
    assert status == 3


# -- phases with their causes ---------------------------------------------------------------


def test_a_command_that_cannot_start_says_why_and_exec_fails_at_once(up: UpProcess) -> None:
    up.gb.ok("sandbox", "create", "nobin", "--", "/no/such/binary")
    view = _until_phase(up.gb, "nobin", {"error", "exited"})
    assert view["phase"] == "error"
    assert view["phase_reason"] == (
        "the command exited with 127: cannot run /no/such/binary: No such file or directory"
    )
    assert view["exit_code"] == 127
    started = time.monotonic()
    error = up.gb.refused("sandbox", "exec", "nobin", "--", "true")
    assert error.startswith("sandbox 'nobin' is not running (error: the command exited with 127")
    assert time.monotonic() - started < 20
    up.gb.ok("sandbox", "delete", "nobin")


def test_a_command_that_finished_is_exited_not_error(up: UpProcess) -> None:
    up.gb.ok("sandbox", "create", "done", "--", "true")
    view = _until_phase(up.gb, "done", {"error", "exited"})
    assert (view["phase"], view["phase_reason"], view["exit_code"]) == (
        "exited",
        "the command exited with 0",
        0,
    )
    restarted = up.gb.ok("sandbox", "restart", "done", "-o", "json")
    assert json.loads(restarted.stdout)["phase"] == "provisioning"
    assert _until_phase(up.gb, "done", {"error", "exited"})["phase"] == "exited"
    up.gb.ok("sandbox", "delete", "done")


# -- what the agent prints never drives the operator's terminal (#12) ------------------------


def test_escape_sequences_from_a_real_sandbox_are_shown_not_played(up: UpProcess) -> None:
    script = f"printf '{HOSTILE_PRINTF}'; sleep infinity"
    up.gb.ok("sandbox", "create", "loud", "--wait", "--", "sh", "-c", script)
    deadline = time.monotonic() + 30
    while "forged" not in (shown := up.gb.ok("sandbox", "logs", "loud").stdout):
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown
    assert "title\\x1b]0;pwned\\x07 clip\\x1b]52;c;ZXZpbA==\\x07 erase\\x1b[2K\\rforged" in shown
    assert up.gb.ok("sandbox", "logs", "loud", "--raw").stdout == HOSTILE + "\n"
    # exec: exact bytes into a pipe, escaped onto a terminal (no -t)
    piped = up.gb.ok("sandbox", "exec", "loud", "--", "printf", HOSTILE_PRINTF)
    assert piped.stdout == HOSTILE + "\n"
    on_tty, status = _on_a_terminal(
        ["sandbox", "exec", "loud", "--", "printf", HOSTILE_PRINTF], up.env, []
    )
    assert status == 0
    assert b"\x1b" not in on_tty and b"\x07" not in on_tty
    assert b"title\\x1b]0;pwned\\x07" in on_tty
    up.gb.ok("sandbox", "delete", "loud")


def test_a_hostile_url_in_an_event_is_printed_literally(up: UpProcess, box: str) -> None:
    url = f"http://evil.example{MARKUP_PATH}"
    up.gb.run("sandbox", "exec", box, "--", "curl", "-g", "-s", "-o", "/dev/null", url)
    deadline = time.monotonic() + 30
    while "evil.example" not in (events := up.gb.ok("sandbox", "events", box).stdout):
        assert time.monotonic() < deadline, events
        time.sleep(0.2)
    [line] = [line for line in events.splitlines() if "evil.example" in line]
    assert f"deny      GET {url}  reason=policy_denied" in line


# -- up restarted: its sandboxes come back ----------------------------------------------------


@pytest.mark.timeout(600)
def test_up_started_again_restarts_the_sandboxes_it_ran(tmp_path: Path) -> None:
    first = UpProcess(tmp_path)
    first.start()
    try:
        first.gb.ok("sandbox", "create", "keep", "--wait", "--", "sleep", "infinity")
    finally:
        printed = first.stop()
    assert "stopped; nothing left running" in printed
    assert not (tmp_path / "config" / "gateway.json").exists()
    assert first.gb.refused("sandbox", "list").startswith("no gateway configured")
    second = UpProcess(tmp_path)
    second.start()
    try:
        assert "starting again the 1 that ran before" in second.log.read_text()
        assert _until_phase(second.gb, "keep", {"ready", "error"})["phase"] == "ready"
        assert second.gb.ok("sandbox", "exec", "keep", "--", "echo", "back").stdout == "back\n"
    finally:
        second.stop()
