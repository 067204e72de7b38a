"""Listening sockets and the answers given before a connection is served: shared by the
in-process proxy and the parent of a worker pool, which accept the same way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import Counter

from .answers import ErrorCode, answer_bytes

log = logging.getLogger("grantbox.proxy")

# How long accepting pauses after accept() failed (out of descriptors, mostly).
ACCEPT_PAUSE = 0.1
# At most one log line per this many seconds for accept failures and cap refusals.
LOG_INTERVAL = 10.0

_OVER_CAP = answer_bytes(ErrorCode.CONNECTION_LIMIT_REACHED)


class Throttled:
    """A warning logged at most once per ``interval``, saying how many were held back."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last = -interval
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        suffix = f" ({held} more since the last report)" if held else ""
        log.warning(message + suffix, *args)


def tcp_listener(address: tuple[str, int]) -> socket.socket:
    infos = socket.getaddrinfo(
        address[0], address[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _canon, sockaddr = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(sockaddr)
        listener.listen(1024)
    except OSError:
        listener.close()
        raise
    return listener


def unix_listener(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(1024)
    except OSError:
        listener.close()
        raise
    return listener


def refuse_over_cap(sock: socket.socket) -> None:
    """Answer ``connection_limit_reached`` without waiting for anything, and close."""
    try:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError, InterruptedError):
            sock.recv(65536)  # what the agent sent already, so closing does not reset
        sock.send(_OVER_CAP)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()


class Acceptor:
    """A proxy's listeners, and one task per listener that accepts and hands each agent
    connection to ``take``. accept() failures (out of descriptors, mostly) are counted in
    ``errors``, pause accepting briefly instead of spinning, and are logged at most once per
    interval."""

    def __init__(self, take: Callable[[socket.socket], object], errors: Counter) -> None:
        self._take = take
        self._errors = errors
        self._listeners: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._unix_paths: list[Path] = []
        self._warning = Throttled(LOG_INTERVAL)
        self.tcp_address: tuple[str, int] | None = None

    def open(
        self,
        *,
        tcp: tuple[str, int] | None = None,
        unix: Path | None = None,
        sockets: Sequence[socket.socket] = (),
    ) -> None:
        """Bind what is asked (and take over ``sockets``); nothing is accepted yet."""
        if tcp is None and unix is None and not sockets:
            raise ValueError("give at least one of tcp, unix or sockets")
        listeners: list[socket.socket] = []
        try:
            if tcp is not None:
                listeners.append(tcp_listener(tcp))
            if unix is not None:
                listeners.append(unix_listener(unix))
                self._unix_paths.append(unix)
        except OSError:
            for listener in listeners:
                listener.close()
            raise
        listeners.extend(sockets)
        for listener in listeners:
            listener.setblocking(False)
            if self.tcp_address is None and listener.family in (socket.AF_INET, socket.AF_INET6):
                bound = listener.getsockname()
                self.tcp_address = (str(bound[0]), int(bound[1]))
        self._listeners.extend(listeners)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            self._tasks.append(loop.create_task(self._accept_loop(listener)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                path.unlink()
        self._unix_paths.clear()

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _address = await loop.sock_accept(listener)
            except OSError as exc:
                self._errors.inc()
                self._warning.warn("accepting an agent connection failed: %s", exc)
                await asyncio.sleep(ACCEPT_PAUSE)
                continue
            self._take(sock)
