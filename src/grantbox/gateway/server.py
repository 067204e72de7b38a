"""Running the gateway under uvicorn: in the foreground, in a thread, or as a task.

The listening socket is bound before uvicorn starts, so port 0 yields a free loopback port
whose URL is known to drivers and tests before the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from grantbox.drivers.protocol import ComputeDriver

from .api import Gateway, create_app
from .secret_files import write_private
from .settings import GatewaySettings, parse_listen


def bind_listen(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it small JSON answers wait on delayed ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class GatewayServer:
    """One gateway app on one socket. ``start()``/``stop()`` run it in a thread."""

    def __init__(
        self,
        settings: GatewaySettings,
        driver: ComputeDriver | None = None,
        *,
        shutdown_grace: int | None = None,
        driver_name: str = "",
        resume_sandboxes: bool = False,
    ) -> None:
        self.settings = settings
        self.app: FastAPI = create_app(
            settings, driver, driver_name=driver_name, resume_sandboxes=resume_sandboxes
        )
        self.socket = bind_listen(settings.listen)
        self.url = url_of(self.socket)
        self.gateway.orchestrator.gateway_url = settings.advertise_url or self.url
        config = uvicorn.Config(
            self.app,
            # uvicorn's records go to the root logger, in the process's one log format.
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=shutdown_grace,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    @property
    def operator_token(self) -> str:
        return self.gateway.operator_token.value

    def write_client_config(self, extra: Mapping[str, Any] | None = None) -> None:
        """Tell CLI invocations on this machine where the gateway is (config dir, 0600).

        Written in one atomic step once the gateway serves, with the writer's pid, so a
        reader never sees a half-written file or an address that does not answer yet."""
        data = {
            "url": self.url,
            "token_file": str(self.settings.operator_token_path),
            "pid": os.getpid(),
            **(extra or {}),
        }
        write_private(self.settings.gateway_file_path, json.dumps(data).encode())

    def forget_client_config(self) -> None:
        """Remove the recorded address if it is still ours (on a clean stop), so the CLI
        says nothing runs instead of dialling a dead port."""
        path = self.settings.gateway_file_path
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(recorded, dict) and recorded.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                path.unlink()

    async def serve(self) -> None:
        await self._server.serve(sockets=[self.socket])

    def request_stop(self) -> None:
        self._server.should_exit = True

    def start(self, timeout: float = 20.0) -> None:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.serve()), name="grantbox-gateway", daemon=True
        )
        self._thread.start()
        waited = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            waited.wait(0.02)
        if not self._server.started:
            raise RuntimeError("the gateway did not start")

    def stop(self, timeout: float = 20.0) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self.socket.close()


@asynccontextmanager
async def running_gateway(
    settings: GatewaySettings, driver: ComputeDriver | None = None
) -> AsyncIterator[GatewayServer]:
    """Serve the gateway as a task of the current loop for the duration of the block."""
    server = GatewayServer(settings, driver)
    task = asyncio.create_task(server.serve())
    try:
        while not server._server.started:
            if task.done():
                await task
                raise RuntimeError("the gateway stopped during start-up")
            await asyncio.sleep(0.02)
        yield server
    finally:
        server.request_stop()
        await task
        server.socket.close()
