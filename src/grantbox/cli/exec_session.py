"""``sandbox exec`` on the operator's side: stream the output, forward stdin, drive a tty.

The gateway answers the exec request with JSON lines (the exec id, output chunks, then the
exit). Input travels separately: a thread reads stdin and posts it chunk by chunk; a post
that finds the sandbox behind waits at the gateway and, after a while, is told to send the
same chunk again, so a fast producer is slowed to the command's pace instead of buffered.
With ``-t`` the local terminal is put in raw mode (restored on the way out) and window
size changes are forwarded, so an interactive shell behaves like one.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import os
import queue
import signal
import stat
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, BinaryIO, TextIO

from .client import GatewayCallError, GatewayClient
from .output import say
from .terminal import neutralise

DEFAULT_TIMEOUT = 300.0
INTERACTIVE_TIMEOUT = 86_400.0
READ_CHUNK = 64 * 1024
BUSY = 429


@dataclass(frozen=True, slots=True)
class ExecOptions:
    command: tuple[str, ...]
    stdin: bool
    tty: bool
    timeout: float
    raw: bool = False  # pass output to a terminal unescaped (always so with a tty)

    @classmethod
    def decide(
        cls,
        *,
        command: tuple[str, ...],
        interactive: bool,
        tty: bool,
        timeout: float | None,
        raw: bool = False,
        stdin_is_terminal: bool | None = None,
    ) -> ExecOptions:
        """Piped stdin is forwarded; a terminal's only with ``-i`` (else an exec typed at a
        prompt would swallow the keyboard). ``-t`` needs a terminal on stdin."""
        if stdin_is_terminal is None:
            stdin_is_terminal = _stdin_kind() == "terminal"
        if tty and not stdin_is_terminal:
            say("warning: -t ignored: stdin is not a terminal", err=True)
            tty = False
        forward = interactive or tty or _stdin_kind() == "data"
        limit = timeout or (INTERACTIVE_TIMEOUT if tty else DEFAULT_TIMEOUT)
        return cls(command, forward, tty, limit, raw)


def _stdin_fd() -> int | None:
    """The descriptor behind ``sys.stdin`` (None when it has none, e.g. in-process)."""
    try:
        return sys.stdin.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def _stdin_kind() -> str:
    """``terminal``, ``data`` (a pipe, file or socket: forward it), or ``none`` (closed,
    or a device such as /dev/null: nothing to forward)."""
    if sys.stdin is None:
        return "none"
    fd = _stdin_fd()
    if fd is None:
        return "data"  # an in-memory stdin (click's test runner): forward what it holds
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "none"
    if os.isatty(fd):
        return "terminal"
    if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
        return "data"
    return "none"


def _read_stdin() -> bytes:
    fd = _stdin_fd()
    if fd is not None:
        return os.read(fd, READ_CHUNK)  # unbuffered: a raw terminal's keys go at once
    reader = getattr(sys.stdin.buffer, "read1", sys.stdin.buffer.read)
    data: bytes = reader(READ_CHUNK)
    return data


class OutputSink:
    """Where one output stream goes. Into a pipe or file the bytes pass unchanged; onto a
    terminal (without ``-t``/``--raw``) control characters are shown escaped, keeping line
    breaks and tabs: the command is the agent's, and its bytes must not drive the terminal.
    """

    def __init__(self, binary: BinaryIO, *, escape: bool) -> None:
        self._binary = binary
        self._escape = escape
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @classmethod
    def for_stream(cls, stream: TextIO, options: ExecOptions) -> OutputSink:
        try:
            terminal = stream.isatty()
        except (OSError, ValueError):
            terminal = False
        return cls(stream.buffer, escape=terminal and not options.tty and not options.raw)

    def write(self, data: bytes) -> None:
        if self._escape:
            data = neutralise(self._decoder.decode(data), keep="\n\t").encode()
        self._binary.write(data)
        self._binary.flush()


def exit_status(code: int) -> int:
    """A shell's view of the command's end: signals as 128+N."""
    return 128 - code if code < 0 else code


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return 0, 0
    return size.lines, size.columns


class _InputPump:
    """Posts stdin to the exec, then its end; stops when the exec is gone."""

    def __init__(self, client: GatewayClient, path: str) -> None:
        self._client = client
        self._path = path
        self.resizes: queue.Queue[tuple[int, int] | None] = queue.Queue()

    def _post(self, body: dict[str, Any]) -> bool:
        while True:
            try:
                self._client.call("POST", f"{self._path}/input", body=body, timeout=60.0)
                return True
            except GatewayCallError as exc:
                if exc.status != BUSY:
                    return False  # the exec ended (404) or the gateway is gone

    def pump_stdin(self) -> None:
        while True:
            try:
                chunk = _read_stdin()
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                self._post({"eof": True})
                return
            if not self._post({"data": base64.b64encode(chunk).decode()}):
                return

    def pump_resizes(self) -> None:
        while (size := self.resizes.get()) is not None:
            with contextlib.suppress(GatewayCallError):
                rows, cols = size
                self._client.call("POST", f"{self._path}/resize", body={"rows": rows, "cols": cols})


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(0)
    try:
        tty.setraw(0)
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _start(target: Any) -> None:
    threading.Thread(target=target, daemon=True).start()


def _begin_input(pump: _InputPump, options: ExecOptions) -> Any:
    """Start forwarding stdin (and window sizes); returns the SIGWINCH handler replaced."""
    if options.stdin:
        _start(pump.pump_stdin)
    if not options.tty:
        return None
    _start(pump.pump_resizes)

    def on_winch(_sig: int, _frame: FrameType | None) -> None:
        pump.resizes.put(_terminal_size())

    return signal.signal(signal.SIGWINCH, on_winch)


def run_exec(client: GatewayClient, name: str, options: ExecOptions) -> int:
    """Run the exec to its end; returns the exit status to leave with."""
    rows, cols = _terminal_size() if options.tty else (0, 0)
    body = {
        "command": list(options.command),
        "timeout_seconds": options.timeout,
        "stdin": options.stdin,
        "tty": options.tty,
        "rows": rows,
        "cols": cols,
    }
    stdout = OutputSink.for_stream(sys.stdout, options)
    stderr = OutputSink.for_stream(sys.stderr, options)
    previous_winch: Any = None
    with client:
        try:
            with (
                client.stream(
                    "POST",
                    f"/sandboxes/{name}/exec",
                    body=body,
                    read_timeout=options.timeout + 60,
                ) as stream,
                _raw_terminal(options.tty),
            ):
                for item in stream.items:
                    if "exec_id" in item:
                        path = f"/sandboxes/{name}/exec/{item['exec_id']}"
                        previous_winch = _begin_input(_InputPump(client, path), options)
                    elif "data" in item:
                        target = stderr if item.get("stream") == "stderr" else stdout
                        target.write(base64.b64decode(item["data"]))
                    elif "exit_code" in item:
                        return exit_status(int(item["exit_code"]))
                    elif "error" in item:
                        raise GatewayCallError(f"exec in sandbox '{name}' failed: {item['error']}")
        except KeyboardInterrupt:
            return 130
        finally:
            if previous_winch is not None:
                signal.signal(signal.SIGWINCH, previous_winch)
    raise GatewayCallError("the gateway ended the exec stream without an exit status")
