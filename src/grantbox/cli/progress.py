"""A progress line on stderr while the CLI waits: rewritten in place on a terminal, one line
per change in a pipe or a log (so CI output stays readable)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .terminal import neutralise

_CLEAR_LINE = "\r\x1b[2K"


class Progress:
    def __init__(self, subject: str, stream: TextIO | None = None) -> None:
        self.subject = subject
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty()
        self._started = time.monotonic()
        self._last = ""

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def show(self, status: str) -> None:
        line = f"… {self.subject}: {neutralise(status)}"
        if self._live:
            elapsed = int(time.monotonic() - self._started)
            self._write(f"{_CLEAR_LINE}{line} ({elapsed} s)")
        elif line != self._last:
            self._write(line + "\n")
        self._last = line

    def clear(self) -> None:
        """Take the live line away (before an error line says what went wrong)."""
        if self._live:
            self._write(_CLEAR_LINE)

    def done(self, status: str) -> None:
        elapsed = time.monotonic() - self._started
        line = f"{self.subject}: {neutralise(status)} after {elapsed:.1f} s"
        self._write((_CLEAR_LINE if self._live else "") + line + "\n")
