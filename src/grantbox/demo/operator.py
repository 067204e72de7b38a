"""The demo acts like an operator at a shell: it runs ``grantbox`` commands as child
processes, so it proves the command line a user types, not an internal shortcut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class CommandFailed(Exception):
    """A ``grantbox`` command exited non-zero; the message is its one-line error."""

    def __init__(self, result: CommandResult) -> None:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.code}"
        super().__init__(f"`grantbox {' '.join(result.args)}` failed: {reason}")
        self.result = result


@dataclass(frozen=True)
class CommandResult:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str


def grantbox_command() -> list[str]:
    """``grantbox`` next to the running interpreter (a virtualenv), else via ``-m``-style."""
    script = os.path.join(os.path.dirname(sys.executable), "grantbox")
    if os.path.isfile(script):
        return [script]
    return [sys.executable, "-c", "from grantbox.cli import main; main()"]


class Operator:
    """Runs ``grantbox`` with a fixed environment (gateway URL, config directory…)."""

    def __init__(self, env: Mapping[str, str] | None = None, timeout: float = 120.0) -> None:
        self._env = {**os.environ, **(env or {})}
        self._timeout = timeout
        self.history: list[CommandResult] = []

    def run(self, *args: str, check: bool = True, timeout: float | None = None) -> CommandResult:
        completed = subprocess.run(
            [*grantbox_command(), *args],
            env=self._env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout or self._timeout,
            check=False,
        )
        result = CommandResult(
            tuple(args), completed.returncode, completed.stdout, completed.stderr
        )
        self.history.append(result)
        if check and result.code != 0:
            raise CommandFailed(result)
        return result

    def json(self, *args: str) -> Any:
        """Run a command with ``-o json`` (before any ``--``) and return its parsed output."""
        cut = args.index("--") if "--" in args else len(args)
        result = self.run(*args[:cut], "-o", "json", *args[cut:])
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise CommandFailed(
                CommandResult(result.args, result.code, result.stdout, "output is not JSON")
            ) from None

    def exec_in(self, sandbox: str, command: Sequence[str], timeout: float = 60.0) -> CommandResult:
        """``grantbox sandbox exec``; the result carries the command's own exit code."""
        return self.run(
            "sandbox", "exec", "--name", sandbox, "--timeout", f"{timeout:g}", "--", *command,
            check=False, timeout=timeout + 30,
        )  # fmt: skip
