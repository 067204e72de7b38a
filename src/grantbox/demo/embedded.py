"""The embedded default for the demo: ``grantbox up`` as a child process with its own state,
config and runtime directories, so the demo never touches (or collides with) the user's own
gateway, and the CLI it runs finds the demo's gateway through ``GRANTBOX_CONFIG_DIR``.

``grantbox up`` reports where its identity agent publishes OIDC discovery
(``identity agent: spiffe://<td>, OIDC discovery at <url>``) and then ``ready: …``; the
demo reads both from its output.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .operator import grantbox_command
from .workloads import IdentitySettings, WorkloadError, last_line

_IDENTITY = re.compile(r"identity agent: spiffe://(?P<td>[^\s,]+), OIDC discovery at (?P<url>\S+)")
_READY = re.compile(r"^ready: ")
STOP_GRACE = 60.0  # up stops every sandbox before it exits


@dataclass(frozen=True)
class UpStatus:
    identity: IdentitySettings | None
    ready: bool


def read_up_output(lines: Sequence[str]) -> UpStatus:
    """What ``grantbox up`` has told so far."""
    identity = None
    ready = False
    for line in lines:
        match = _IDENTITY.search(line)
        if match:
            identity = IdentitySettings(oidc_url=match.group("url"), trust_domain=match.group("td"))
        if _READY.match(line):
            ready = True
    return UpStatus(identity, ready and identity is not None)


@dataclass(frozen=True)
class DemoDirectories:
    """Where the demo's own ``grantbox up`` keeps everything."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def environment(self) -> dict[str, str]:
        """For every ``grantbox`` the demo runs: this gateway, not one from the user's shell.

        The runtime (socket) directory stays ``grantbox up``'s default: it is short enough
        for unix socket paths, and each ``up`` keeps its sockets in its own subdirectory.
        """
        env = {
            k: v for k, v in os.environ.items() if k not in ("GRANTBOX_GATEWAY", "GRANTBOX_TOKEN")
        }
        env.update(GRANTBOX_STATE_DIR=str(self.state), GRANTBOX_CONFIG_DIR=str(self.config))
        return env


class EmbeddedDefault:
    """``grantbox up`` running as a child, its output in ``logs/up.log``; ``options`` are
    more of ``up``'s (the benchmark's ``--proxy-workers``)."""

    def __init__(
        self,
        directories: DemoDirectories,
        trust_domain: str = "grantbox.local",
        options: Sequence[str] = (),
    ) -> None:
        self.directories = directories
        self.trust_domain = trust_domain
        self.options = list(options)
        self.log_path = directories.logs / "up.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.identity: IdentitySettings | None = None

    def argv(self) -> list[str]:
        return [
            *grantbox_command(), "up", "--listen", "127.0.0.1:0",
            "--trust-domain", self.trust_domain, "--oidc-listen", "127.0.0.1:0",
            *self.options,
        ]  # fmt: skip

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def start(self, timeout: float = 120.0) -> IdentitySettings:
        self.directories.logs.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.directories.environment(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            status = read_up_output(self.log_lines())
            if status.ready and status.identity is not None:
                self.identity = status.identity
                return status.identity
            code = self._process.poll()
            if code is not None:
                raise WorkloadError(
                    f"grantbox up exited with status {code} ({last_line(self.log_lines())}):\n"
                    f"{self._tail()}"
                )
            if time.monotonic() > deadline:
                raise WorkloadError(f"grantbox up was not ready in {timeout:g}s:\n{self._tail()}")
            time.sleep(0.1)

    def _tail(self, count: int = 15) -> str:
        return "\n".join(self.log_lines()[-count:])

    def stop(self) -> int | None:
        """SIGTERM (up then stops its sandboxes, gateway and agent), SIGKILL as a last resort."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def wait(self) -> int:
        """Block until ``grantbox up`` exits (``--keep``: the user stops it with Ctrl-C)."""
        if self._process is None:
            raise WorkloadError("grantbox up was not started")
        return self._process.wait()


@contextlib.contextmanager
def running_embedded_default(directories: DemoDirectories) -> Iterator[EmbeddedDefault]:
    embedded = EmbeddedDefault(directories)
    try:
        embedded.start()
        yield embedded
    finally:
        embedded.stop()
