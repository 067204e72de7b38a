"""The process side shared by the demo workloads: listen addresses, log-safe strings, and a
clean exit on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from workload_server import base_url, bind, loggable, parse_listen

from grantbox.demo import WorkloadProcess, find_example_dir


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:18080", ("127.0.0.1", 18080)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_addresses(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["127.0.0.1", ":80", "host:port", "h:70000", "", "[::1]"])
def test_bad_listen_addresses(value: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|port"):
        parse_listen(value)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_bound_socket_names_its_url(host: str) -> None:
    sock = bind(host, 0)
    try:
        port = sock.getsockname()[1]
        expected = f"http://[::1]:{port}" if host == "::1" else f"http://127.0.0.1:{port}"
        assert base_url(sock) == expected
    finally:
        sock.close()


@given(st.text(max_size=500))
def test_loggable_is_one_bounded_printable_line(text: str) -> None:
    line = loggable(text)
    assert len(line) <= 200
    assert line.isascii()
    assert all(ch.isprintable() for ch in line)


def test_a_workload_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    example = find_example_dir()
    process = WorkloadProcess(
        "alpha",
        [
            sys.executable,
            str(example / "service.py"),
            "--name",
            "alpha",
            "--listen",
            "127.0.0.1:0",
            "--issuer-jwks",
            "http://127.0.0.1:9/jwks",
        ],
        tmp_path / "alpha.log",
    )
    process.start()
    try:
        assert process.wait_ready(20).startswith("http://127.0.0.1:")
    finally:
        # uvicorn shuts down gracefully, then re-raises the signal: -SIGTERM, not -SIGKILL.
        assert process.stop() in (0, -signal.SIGTERM), process.log_tail()
    assert not process.running()


def test_a_workload_stops_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    """``grantbox demo`` killed with SIGKILL must not leave servers on the demo's ports."""
    example = find_example_dir()
    service = [sys.executable, str(example / "service.py"), "--name", "alpha", "--listen",
               "127.0.0.1:0", "--issuer-jwks", "http://127.0.0.1:9/jwks"]  # fmt: skip
    starter = (
        "import os, subprocess, sys, time\n"
        "argv = sys.argv[1:] + ['--parent-pid', str(os.getpid())]\n"
        "child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", starter, *service], stdout=subprocess.PIPE, text=True
    )
    assert launcher.stdout is not None
    child = int(launcher.stdout.readline())
    try:
        time.sleep(2)  # let the service start and watch its parent
        assert Path(f"/proc/{child}").exists()
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 20
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)  # reaped by init normally; harmless otherwise
            time.sleep(0.1)
        assert not Path(f"/proc/{child}").exists() or _is_zombie(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
