"""The bench's child processes: start, wait until they serve, measure their memory, stop.

Every server runs in its own session (process group) with its output in a log file of the
run directory, so a failure can name the server and quote its last lines. Waiting is
always bounded. Memory is the resident set of the whole process tree (squid's helpers,
nginx's worker), read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class ServiceFailed(RuntimeError):
    """A server did not start or did not become ready; the message says which and why."""


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick for port 0), and never one
    this run handed out before: the kernel may pick a closed port again, and two servers
    configured with one port collide (nginx refuses a duplicate listen)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The bench's environment without proxy variables: every client goes exactly where
    the bench points it, never through a proxy from the user's shell."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env.update(extra or {})
    return env


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found += [int(child) for child in text.split()]
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant alive now."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        todo += _children(current)
    return seen


def rss_kib(pids: Sequence[int]) -> int:
    """Sum of VmRSS over ``pids`` (processes that vanished count as 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time used so far by ``pids`` (every thread of each; processes
    that vanished count as 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The fields after the command name (which may hold spaces) in /proc/PID/stat.
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def parent_pid(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[1])


def find_processes(*words: str) -> list[int]:
    """PIDs whose command line holds every one of ``words`` as an argument."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if all(word in argv for word in words):
                found.append(int(entry.name))
    return found


class Service:
    """One server process of the bench."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = clean_environment(env)
        self.cwd = cwd
        self.stdout_path = stdout
        self.stop_signal = stop_signal
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        files: list[IO[bytes]] = [self.log.open("ab")]
        if self.stdout_path is not None:
            files.append(self.stdout_path.open("ab"))
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=files[-1],
                stderr=files[0],
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceFailed(f"{self.name}: cannot start {self.argv[0]}: {exc}") from None
        finally:
            for file in files:
                file.close()
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceFailed(f"{self.name} was not started")
        return self.process.pid

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no output)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServiceFailed(
                f"{self.name} exited with status {self.process.returncode}:\n{self.tail()}"
            )

    def wait_port(self, port: int, timeout: float = 30.0) -> None:
        """Until something accepts on ``127.0.0.1:port`` (and this process still runs)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                self._check_alive()
                return
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{self.name} did not listen on {port} in {timeout:g}s")
            time.sleep(0.1)

    def wait_output(self, pattern: str, timeout: float = 60.0, source: Path | None = None) -> str:
        """Until the log (or ``source``) has a line matching ``pattern``; returns group 1."""
        regex = re.compile(pattern)
        path = source or self.log
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError):
                for line in path.read_text(errors="replace").splitlines():
                    match = regex.search(line)
                    if match:
                        return match.group(1)
            self._check_alive()
            if time.monotonic() > deadline:
                raise ServiceFailed(
                    f"{self.name} did not report ready in {timeout:g}s:\n{self.tail()}"
                )
            time.sleep(0.1)

    def rss_kib(self) -> int:
        return rss_kib(process_tree(self.pid))

    def stop(self, grace: float = 15.0) -> int | None:
        """The stop signal, then SIGKILL for whatever of its process tree is left."""
        process = self.process
        if process is None:
            return None
        tree = process_tree(process.pid)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(self.stop_signal)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for pid in tree[1:]:  # helpers that outlived their parent, still in its group
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == process.pid:
                    os.kill(pid, signal.SIGKILL)
        return process.returncode


def run_tool(argv: list[str], timeout: float) -> str:
    """A load or setup tool to completion (bounded); its stdout, or one line saying why not."""
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=clean_environment(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ServiceFailed(f"{Path(argv[0]).name} did not finish in {timeout:g}s") from None
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip())[-300:]
        raise ServiceFailed(f"{Path(argv[0]).name} exited {result.returncode}: {detail}")
    return result.stdout
