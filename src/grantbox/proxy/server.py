"""The egress proxy: listeners, the connection cap, and the public API.

Each agent connection starts in the per-request relay; an admitted CONNECT is handed to the
tunnel adapter. The effective config can be replaced at any time: it is compiled once, and
every request decided after :meth:`EgressProxy.update` (the next one on a kept-alive
connection included) uses it.

Connections are accepted by the proxy's own loop so that the cap applies before any work:
past :attr:`EgressProxy.connection_cap` a connection gets a ``connection_limit_reached``
answer and is closed, and the descriptors the cap leaves free stay the process's own.
accept() failures are counted and logged at most once per interval, with how many were
not logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from grantbox.profiles import EffectiveConfig

from .context import ProxyContext
from .destinations import Resolver, SystemResolver
from .limits import Limits, connection_cap
from .listeners import (
    LOG_INTERVAL,
    Acceptor,
    Throttled,
    refuse_over_cap,
)
from .metrics import ProxyMetrics
from .policy import CompiledPolicy, binary_paths, compile_policy
from .programs import ProgramResolver
from .record import EventSink, Recorder
from .relay import AgentConnection, HttpRelay
from .sink import EventQueue
from .streams import SocketStream
from .tls import InterceptionCA, upstream_context
from .tokens import TokenSource
from .tunnel import serve_tunnel

_events_log = logging.getLogger("grantbox.proxy.ocsf")
log = logging.getLogger("grantbox.proxy")


def _log_lines(data: bytes) -> None:
    for line in data.decode("ascii").splitlines():
        _events_log.info("%s", line)


class EgressProxy:
    """The only door out of a sandbox.

    ``tokens`` obtains access tokens for grant bindings (the grants engine). ``resolver``
    defaults to system DNS answering ``*.localhost`` itself; ``upstream_ca_file`` adds a CA
    to the system roots for upstream TLS; ``events`` receives each OCSF event and must not
    block (default: a bounded :class:`EventQueue` writing to the ``grantbox.proxy.ocsf``
    logger); metrics go to ``registry`` (default: a private one, exposed as
    ``metrics.registry``). ``limits`` holds every timeout and bound; ``programs`` finds the
    program behind a connection for ``binaries`` entries (without one, such entries admit
    nothing). The interception CA is created here (a pool worker is handed its parent's as
    ``ca``); its private key never leaves the memory of this process and its workers.
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
        limits: Limits | None = None,
        programs: ProgramResolver | None = None,
        ca: InterceptionCA | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self._ca = ca or InterceptionCA(leaf_cache_size=self.limits.leaf_cache_size)
        self.metrics = ProxyMetrics(registry)
        self._owned_queue: EventQueue | None = None
        if events is None:
            self._owned_queue = EventQueue(
                _log_lines, self.limits.event_buffer, registry=self.metrics.registry
            )
            events = self._owned_queue
        self._programs = programs
        self._ctx = ProxyContext(
            policy=self._compile(config),
            tokens=tokens,
            resolver=resolver or SystemResolver(),
            ca=self._ca,
            upstream_tls=upstream_context(upstream_ca_file),
            metrics=self.metrics,
            recorder=Recorder(self.metrics, events),
            limits=self.limits,
            programs=programs,
        )
        tokens.replace_bindings(config.bindings)
        self.connection_cap = connection_cap(self.limits)
        self._connections: set[asyncio.Task[None]] = set()
        self._acceptor = Acceptor(self.admit, self.metrics.accept_errors)
        self._cap_warning = Throttled(LOG_INTERVAL)

    def __repr__(self) -> str:
        return f"EgressProxy(sandbox={self.config.sandbox_id!r}, tcp={self.tcp_address})"

    @property
    def config(self) -> EffectiveConfig:
        return self._ctx.policy.config

    @property
    def policy(self) -> CompiledPolicy:
        return self._ctx.policy

    @property
    def ca_cert_pem(self) -> bytes:
        return self._ca.cert_pem

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self._acceptor.tcp_address

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def update(self, config: EffectiveConfig) -> None:
        """New policy and bindings for every request decided from now on."""
        policy = self._compile(config)
        self._ctx.tokens.replace_bindings(config.bindings)
        self._ctx.policy = policy

    def _compile(self, config: EffectiveConfig) -> CompiledPolicy:
        paths = binary_paths(config)
        executables = {}
        if paths and self._programs is not None:
            executables = {path: self._programs.executable(path) for path in paths}
        policy = compile_policy(config, executables)
        for entry in policy.unenforceable:
            log.warning(
                "policy entry %s lists binaries none of which %s; it admits nothing",
                entry,
                "can be checked here" if self._programs is None else "exists in the sandbox",
            )
        return policy

    async def start(
        self,
        *,
        tcp: tuple[str, int] | None = None,
        unix: Path | None = None,
        sockets: Sequence[socket.socket] = (),
    ) -> None:
        self._acceptor.open(tcp=tcp, unix=unix, sockets=sockets)
        if self._owned_queue is not None:
            self._owned_queue.start()
        self._acceptor.start()

    async def stop(self) -> None:
        await self._acceptor.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._owned_queue is not None:
            await self._owned_queue.aclose()

    async def __aenter__(self) -> EgressProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def admit(self, sock: socket.socket) -> asyncio.Task[None] | None:
        """Serve an accepted agent connection (a proxy worker is handed its connections
        this way); over the cap it is answered ``connection_limit_reached`` and closed
        (None). The returned task ends when the connection does."""
        if len(self._connections) >= self.connection_cap:
            self.refuse(sock)
            return None
        task = asyncio.get_running_loop().create_task(self._serve_connection(sock))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        return task

    def refuse(self, sock: socket.socket) -> None:
        """Answer ``connection_limit_reached`` (counted, logged now and then) and close."""
        self.metrics.refused_connections.inc()
        self._cap_warning.warn(
            "agent connection refused: %d connections open (the cap)", self.connection_cap
        )
        refuse_over_cap(sock)

    async def _serve_connection(self, sock: socket.socket) -> None:
        agent = AgentConnection(_peer_name(sock), sock)
        self.metrics.active_connections.inc()
        client: SocketStream | None = None
        try:
            client = await SocketStream.accepted(sock)
            handover = await HttpRelay(self._ctx, client, agent).run()
            if handover is not None:
                await serve_tunnel(
                    self._ctx,
                    client,
                    agent,
                    handover.outcome,
                    handover.upstream,
                    handover.leftover,
                )
        except asyncio.CancelledError:
            raise
        except (OSError, ConnectionError) as exc:
            # An agent that resets or breaks its connection is not an error of ours; one
            # line at debug level, never a traceback (it could flood the log).
            log.debug("connection from %s ended: %r", agent.peer or "unix socket", exc)
        except Exception:
            log.exception("connection from %s failed", agent.peer or "unix socket")
        finally:
            self.metrics.active_connections.dec()
            if client is not None:
                await client.close()
            else:
                sock.close()


def _peer_name(sock: socket.socket) -> str:
    try:
        peer: Any = sock.getpeername()
    except OSError:
        return ""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return ""
