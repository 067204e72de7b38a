"""Listening sockets and the answers given before a connection is served: shared by the
in-process proxy and the parent of a worker pool, which accept the same way."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from pathlib import Path

from .answers import ErrorCode, answer_bytes

log = logging.getLogger("grantbox.proxy")

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
