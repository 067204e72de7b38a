"""What the three demo workloads share about being a process: the listening socket, the
one-line logs, and the readiness line ``<name>: listening on <url>`` that tells whoever
started the process where it listens (the port may have been chosen by the kernel).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import sys
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; port 0 lets the kernel choose."""
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in {value!r}") from None
    if not parts.hostname or port is None:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return parts.hostname, port


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def setup_logging() -> None:
    """Plain lines on stdout, flushed per line so a supervisor can follow them live."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def loggable(text: str, limit: int = 200) -> str:
    """An untrusted string made safe for a one-line log: escaped and bounded."""
    escaped = text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def serve(app: ASGIApp, sock: socket.socket, name: str, parent_pid: int | None = None) -> None:
    """Run ``app`` on the bound socket until SIGINT/SIGTERM, or until the process that
    started it (``parent_pid``) is gone, so a killed demo leaves no server on its ports."""
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", server_header=False
    )
    server = uvicorn.Server(config)
    log = logging.getLogger(name)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.01)
        log.info("%s: listening on %s", name, base_url(sock))

    async def watch_parent(pid: int) -> None:
        """Stop once ``pid`` has exited: its pidfd turns readable then (Linux >= 5.3)."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            fd = -1
        if fd >= 0:
            gone = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_reader(fd, gone.set)
            try:
                await gone.wait()
            finally:
                loop.remove_reader(fd)
                os.close(fd)
        log.warning("%s: process %s that started us is gone; stopping", name, pid)
        server.should_exit = True

    async def main() -> None:
        tasks = [asyncio.create_task(announce())]
        if parent_pid is not None:
            tasks.append(asyncio.create_task(watch_parent(parent_pid)))
        try:
            await server.serve(sockets=[sock])
        finally:
            for task in tasks:
                task.cancel()

    asyncio.run(main())
