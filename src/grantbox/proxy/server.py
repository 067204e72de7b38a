"""The egress proxy: listeners, connection bookkeeping, and the public API.

Each agent connection starts in the per-request relay; a CONNECT hands it to the tunnel
adapter. The effective config can be replaced at any time: every request decided after
:meth:`EgressProxy.update` (the next one on a kept-alive connection included) uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from grantbox.profiles import EffectiveConfig

from .context import EventSink, ProxyContext
from .destinations import Resolver, SystemResolver
from .events import NET_CLOSE, NET_OPEN, network_activity
from .metrics import ProxyMetrics
from .relay import ConnectRequested, HttpRelay
from .streams import SocketStream
from .tls import InterceptionCA, upstream_context
from .tokens import TokenSource
from .tunnel import serve_connect

_events_log = logging.getLogger("grantbox.proxy.ocsf")
log = logging.getLogger("grantbox.proxy")


def log_event(event: dict[str, Any]) -> None:
    """Default sink: one OCSF JSON line per event on the ``grantbox.proxy.ocsf`` logger."""
    _events_log.info("%s", json.dumps(event, separators=(",", ":"), sort_keys=True))


class EgressProxy:
    """The only door out of a sandbox.

    ``tokens`` obtains access tokens for grant bindings (the grants engine). ``resolver``
    defaults to system DNS answering ``*.localhost`` itself; ``upstream_ca_file`` adds a CA
    to the system roots for upstream TLS; ``events`` receives each OCSF event (default: the
    ``grantbox.proxy.ocsf`` logger); metrics go to ``registry`` (default: a private one,
    exposed as ``metrics.registry``). The interception CA is created here and its private
    key never leaves this process's memory.
    """

    def __init__(
        self,
        config: EffectiveConfig,
        tokens: TokenSource,
        *,
        resolver: Resolver | None = None,
        upstream_ca_file: Path | None = None,
        events: EventSink | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._ca = InterceptionCA()
        self.metrics = ProxyMetrics(registry)
        self._ctx = ProxyContext(
            config=config,
            tokens=tokens,
            resolver=resolver or SystemResolver(),
            ca=self._ca,
            upstream_tls=upstream_context(upstream_ca_file),
            metrics=self.metrics,
            sink=events or log_event,
        )
        tokens.replace_bindings(config.bindings)
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._tcp_address: tuple[str, int] | None = None

    def __repr__(self) -> str:
        return f"EgressProxy(sandbox={self._ctx.config.sandbox_id!r}, tcp={self._tcp_address})"

    @property
    def config(self) -> EffectiveConfig:
        return self._ctx.config

    @property
    def ca_cert_pem(self) -> bytes:
        return self._ca.cert_pem

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self._tcp_address

    def update(self, config: EffectiveConfig) -> None:
        """New policy and bindings for every request decided from now on."""
        self._ctx.tokens.replace_bindings(config.bindings)
        self._ctx.config = config

    async def start(
        self,
        *,
        tcp: tuple[str, int] | None = None,
        unix: Path | None = None,
        sockets: Sequence[socket.socket] = (),
    ) -> None:
        if tcp is None and unix is None and not sockets:
            raise ValueError("give at least one of tcp, unix or sockets")
        if tcp is not None:
            server = await asyncio.start_server(self._accept, tcp[0], tcp[1], limit=2**20)
            self._servers.append(server)
            bound = server.sockets[0].getsockname()
            self._tcp_address = (str(bound[0]), int(bound[1]))
        if unix is not None:
            self._servers.append(await asyncio.start_unix_server(self._accept, path=str(unix)))
        for sock in sockets:
            server = await asyncio.start_server(self._accept, sock=sock, limit=2**20)
            self._servers.append(server)
            if self._tcp_address is None and sock.family in (socket.AF_INET, socket.AF_INET6):
                bound = sock.getsockname()
                self._tcp_address = (str(bound[0]), int(bound[1]))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(BaseException):
                await task
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> EgressProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The work runs in its own task so that stop() can cancel it without cancelling the
        # task asyncio's server created (which would log the cancellation as an error).
        work = asyncio.create_task(self._serve_connection(reader, writer))
        self._connections.add(work)
        try:
            await work
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(work)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = _peer_name(writer)
        self.metrics.active_connections.inc()
        local = _address(writer.get_extra_info("sockname"))
        self._ctx.emit(
            network_activity(
                NET_OPEN, host=local[0], port=local[1], client=peer, message="agent connected"
            )
        )
        client = SocketStream(reader, writer)
        try:
            relay = HttpRelay(self._ctx, client, peer=peer)
            handover = await relay.run()
            if isinstance(handover, ConnectRequested):
                await serve_connect(self._ctx, client, handover.head, relay.leftover, peer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection from %s failed", peer or "unix socket")
        finally:
            self.metrics.active_connections.dec()
            self._ctx.emit(
                network_activity(
                    NET_CLOSE, host=local[0], port=local[1], client=peer, message="agent left"
                )
            )
            await client.close()


def _address(value: object) -> tuple[str, int]:
    """(host, port) of a TCP socket address, or (unix path, 0)."""
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return str(value or ""), 0


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return ""
