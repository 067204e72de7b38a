"""One ``sandbox exec`` run inside the sandbox, carried to and from the gateway's relay.

Output is read in chunks and posted one at a time; when the operator reads slowly the
gateway holds a post (its buffer is bounded) or answers "busy", and the same chunk is sent
again. Meanwhile nothing more is read from the command's pipe, so the command blocks on its
own writes: a fast producer is slowed to the operator's pace and no buffer grows. Once the
operator is gone (the relay answers 404), the command is killed.

Input (when the operator sends any) is fetched with a long-poll and written to the
command's stdin, with ``drain`` as back-pressure. With a terminal the command runs on a
pseudo-terminal whose master the supervisor keeps: output and input both go through it and
window resizes are applied to it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import struct
import termios
from collections.abc import Awaitable, Callable

from .gateway_client import ExecRequestItem, SupervisorClient, SupervisorClientError

log = logging.getLogger("grantbox.supervisor.exec")

EXEC_TIMEOUT_CODE = 124
CANNOT_START_CODE = 126
CHUNK = 64 * 1024
INPUT_POLL_SECONDS = 25.0
BUSY = 429
GONE = 404
TRANSIENT_RETRIES = 5
FLUSH_SECONDS = 2.0

_Stdio = int | None
Starter = Callable[[_Stdio, _Stdio, _Stdio], Awaitable[asyncio.subprocess.Process]]


class OperatorGone(Exception):
    """The relay no longer knows this exec: nobody reads, so the command must stop."""


def set_window_size(fd: int, rows: int, cols: int) -> None:
    if rows > 0 and cols > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class ExecSession:
    def __init__(
        self,
        client: SupervisorClient,
        item: ExecRequestItem,
        start: Starter,
        before_exit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._item = item
        self._start = start
        self._before_exit = before_exit
        self._gone = asyncio.Event()

    async def run(self) -> None:
        item = self._item
        master: int | None = None
        try:
            if item.tty:
                master, slave = os.openpty()
                set_window_size(master, item.rows, item.cols)
                try:
                    process = await self._start(slave, slave, slave)
                finally:
                    os.close(slave)  # only the command holds it now: its end reads as EOF
            else:
                stdin = asyncio.subprocess.PIPE if item.stdin else asyncio.subprocess.DEVNULL
                process = await self._start(stdin, asyncio.subprocess.PIPE, asyncio.subprocess.PIPE)
        except (OSError, ValueError) as exc:
            if master is not None:
                os.close(master)
            await self._send_quietly("stderr", f"sandbox: cannot start: {exc}\n".encode())
            await self._exit(CANNOT_START_CODE)
            return
        try:
            await self._supervise(process, master)
        finally:
            if master is not None:
                os.close(master)

    async def _supervise(self, process: asyncio.subprocess.Process, master: int | None) -> None:
        item = self._item
        if master is not None:
            reader = await _pty_reader(os.dup(master))
            relays = [self._relay(reader, "stdout")]
        else:
            assert process.stdout is not None and process.stderr is not None
            relays = [self._relay(process.stdout, "stdout"), self._relay(process.stderr, "stderr")]
        output = asyncio.gather(*relays)
        feeder = (
            asyncio.create_task(self._feed(process, master)) if item.stdin or item.tty else None
        )
        waiter = asyncio.create_task(process.wait())
        gone = asyncio.create_task(self._gone.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, gone}, timeout=item.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            timed_out = not done
            if waiter not in done:
                _kill(process)
            code = await waiter
            await output  # what the command wrote before it ended
        except asyncio.CancelledError:
            _kill(process)
            await process.wait()
            raise
        finally:
            gone.cancel()
            output.cancel()
            if feeder is not None:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
        if not self._gone.is_set():  # else nobody is left to tell
            await self._exit(EXEC_TIMEOUT_CODE if timed_out else code)

    # -- output ---------------------------------------------------------------------------

    async def _relay(self, stream: asyncio.StreamReader, name: str) -> None:
        while not self._gone.is_set():
            try:
                chunk = await stream.read(CHUNK)
            except OSError:  # a pty whose last slave closed reads as EIO: that is its end
                return
            if not chunk:
                return
            try:
                await self._send(name, chunk)
            except OperatorGone:
                self._gone.set()
                return

    async def _send(self, name: str, chunk: bytes) -> None:
        """Deliver one chunk, however long the operator takes to make room for it."""
        failures = 0
        while True:
            try:
                await self._client.exec_output(self._item.exec_id, name, chunk)
                return
            except SupervisorClientError as exc:
                if exc.status == BUSY:
                    continue  # the gateway already waited for room; offer it again
                if exc.status == GONE:
                    raise OperatorGone from None
                failures += 1
                if failures > TRANSIENT_RETRIES:
                    log.warning("exec %s: output lost: %s", self._item.exec_id, exc)
                    raise OperatorGone from None
                await asyncio.sleep(0.2 * failures)

    async def _send_quietly(self, name: str, data: bytes) -> None:
        with contextlib.suppress(SupervisorClientError, OperatorGone):
            await self._send(name, data)

    async def _exit(self, code: int) -> None:
        if self._before_exit is not None:
            # What the command caused (the proxy's events) is on record before the
            # operator's exec returns, so `sandbox events` right after it shows it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._before_exit(), FLUSH_SECONDS)
        try:
            await self._client.exec_exit(self._item.exec_id, code)
        except SupervisorClientError as exc:
            log.warning("exec %s: exit report failed: %s", self._item.exec_id, exc)

    # -- input ----------------------------------------------------------------------------

    async def _feed(self, process: asyncio.subprocess.Process, master: int | None) -> None:
        """Copy the operator's input to the command until its end (or the exec's)."""
        loop = asyncio.get_running_loop()
        while not self._gone.is_set():
            try:
                items = await self._client.exec_input(self._item.exec_id, INPUT_POLL_SECONDS)
            except SupervisorClientError as exc:
                if exc.status == GONE:
                    return
                await asyncio.sleep(0.5)
                continue
            for entry in items:
                if "resize" in entry and master is not None:
                    rows, cols = (int(v) for v in entry["resize"][:2])
                    with contextlib.suppress(OSError):
                        set_window_size(master, rows, cols)
                elif "data" in entry:
                    data = base64.b64decode(str(entry["data"]))
                    if master is not None:
                        await loop.run_in_executor(None, _write_all, master, data)
                    elif not await _write(process, data):
                        return
                elif entry.get("eof") and master is None:
                    if process.stdin is not None:  # a terminal's end is the user's ^D
                        with contextlib.suppress(OSError):
                            process.stdin.close()
                    return


async def _write(process: asyncio.subprocess.Process, data: bytes) -> bool:
    """Write to the command's stdin; False once it stopped reading for good."""
    if process.stdin is None:
        return False
    try:
        process.stdin.write(data)
        await process.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            written = os.write(fd, data)
            data = data[written:]


async def _pty_reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK * 2)
    protocol = asyncio.StreamReaderProtocol(reader)
    await loop.connect_read_pipe(lambda: protocol, os.fdopen(fd, "rb", buffering=0))
    return reader


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()


async def run_exec(
    client: SupervisorClient,
    item: ExecRequestItem,
    start: Starter,
    before_exit: Callable[[], Awaitable[None]] | None = None,
) -> None:
    await ExecSession(client, item, start, before_exit).run()


__all__ = ["EXEC_TIMEOUT_CODE", "ExecSession", "OperatorGone", "Starter", "run_exec"]
