"""The real ``grantbox`` executable, run as a child process the way a user runs it.

Every run records stdout, stderr and the exit status; ``refused`` also checks the error
contract (DESIGN §3.7): exactly one ``error:`` line on stderr, never doubled, never a
traceback or a Python exception class name.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

GRANTBOX = str(Path(sys.executable).with_name("grantbox"))
EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]+(Error|Exception|Protocol|Timeout)\b")


@dataclass
class Grantbox:
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0

    def run(
        self,
        *args: str,
        input: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        completed = subprocess.run(
            [GRANTBOX, *args],
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True,
            env={**os.environ, **self.env, **(env or {})},
            timeout=timeout or self.timeout,
            check=False,
        )
        return subprocess.CompletedProcess(
            completed.args,
            completed.returncode,
            completed.stdout.decode(errors="replace"),
            completed.stderr.decode(errors="replace"),
        )

    def ok(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
        return result

    def refused(self, *args: str, code: int = 1, **kwargs: object) -> str:
        """Run a command that must fail; returns its one error line (without ``error: ``)."""
        result = self.run(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == code, f"{args}: exit {result.returncode}: {result.stderr}"
        assert_one_error_line(result.stderr)
        [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        return line.removeprefix("error: ")


def assert_one_error_line(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "error: error:" not in stderr.lower(), stderr
    assert "Traceback" not in stderr, stderr
    assert not EXCEPTION_NAME.search(errors[0]), stderr
