"""``grantbox up`` as a real background process with its own state, config and runtime
directories, and the real ``grantbox`` command pointed at it (through what ``up`` records,
as a user's shell would find it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

from .grantbox_command import GRANTBOX, Grantbox

STOP_BOUND = 60.0


def up_environment(root: Path, runtime: Path) -> dict[str, str]:
    return {
        "GRANTBOX_STATE_DIR": str(root / "state"),
        "GRANTBOX_CONFIG_DIR": str(root / "config"),
        "GRANTBOX_RUNTIME_DIR": str(runtime),
        "GRANTBOX_LISTEN": "127.0.0.1:0",
        "GRANTBOX_GATEWAY": "",
        "GRANTBOX_TOKEN": "",
    }


class UpProcess:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = Path("/run") / f"gbx-op-{uuid.uuid4().hex[:8]}"
        self.env = up_environment(root, self.runtime)
        self.gb = Grantbox(env=self.env)
        self.log = root / "up.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [GRANTBOX, "up"],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        waited = self.gb.run("wait", "--timeout", "90")
        assert waited.returncode == 0, waited.stderr + self.log.read_text()

    def stop(self) -> str:
        """SIGTERM, as Ctrl-C would; returns what ``up`` printed."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_BOUND)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.runtime, ignore_errors=True)
        return self.log.read_text()
