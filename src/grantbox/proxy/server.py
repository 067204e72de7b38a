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
import contextlib
import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from grantbox.profiles import EffectiveConfig

from .answers import ErrorCode, answer_bytes
from .context import ProxyContext
from .destinations import Resolver, SystemResolver
from .limits import Limits, connection_cap
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

# How long accepting pauses after accept() failed (out of descriptors, mostly).
ACCEPT_PAUSE = 0.1
# At most one log line per this many seconds for accept failures and cap refusals.
LOG_INTERVAL = 10.0

_OVER_CAP = answer_bytes(ErrorCode.CONNECTION_LIMIT_REACHED)


def _log_lines(data: bytes) -> None:
    for line in data.decode("ascii").splitlines():
        _events_log.info("%s", line)


class _Throttled:
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


class EgressProxy:
    """The only door out of a sandbox.

    ``tokens`` obtains access tokens for grant bindings (the grants engine). ``resolver``
    defaults to system DNS answering ``*.localhost`` itself; ``upstream_ca_file`` adds a CA
    to the system roots for upstream TLS; ``events`` receives each OCSF event and must not
    block (default: a bounded :class:`EventQueue` writing to the ``grantbox.proxy.ocsf``
    logger); metrics go to ``registry`` (default: a private one, exposed as
    ``metrics.registry``). ``limits`` holds every timeout and bound; ``programs`` finds the
    program behind a connection for ``binaries`` entries (without one, such entries admit
    nothing). The interception CA is created here and its private key never leaves this
    process's memory.
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
    ) -> None:
        self.limits = limits or Limits()
        self._ca = InterceptionCA(leaf_cache_size=self.limits.leaf_cache_size)
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
        self._listeners: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._tcp_address: tuple[str, int] | None = None
        self._unix_paths: list[Path] = []
        self._accept_warning = _Throttled(LOG_INTERVAL)
        self._cap_warning = _Throttled(LOG_INTERVAL)

    def __repr__(self) -> str:
        return f"EgressProxy(sandbox={self.config.sandbox_id!r}, tcp={self._tcp_address})"

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
        return self._tcp_address

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
        if tcp is None and unix is None and not sockets:
            raise ValueError("give at least one of tcp, unix or sockets")
        listeners: list[socket.socket] = []
        try:
            if tcp is not None:
                listeners.append(_tcp_listener(tcp))
            if unix is not None:
                listeners.append(_unix_listener(unix))
                self._unix_paths.append(unix)
        except OSError:
            for listener in listeners:
                listener.close()
            raise
        listeners.extend(sockets)
        for listener in listeners:
            listener.setblocking(False)
            if self._tcp_address is None and listener.family in (
                socket.AF_INET,
                socket.AF_INET6,
            ):
                bound = listener.getsockname()
                self._tcp_address = (str(bound[0]), int(bound[1]))
        if self._owned_queue is not None:
            self._owned_queue.start()
        loop = asyncio.get_running_loop()
        for listener in listeners:
            self._listeners.append(listener)
            self._acceptors.append(loop.create_task(self._accept_loop(listener)))

    async def stop(self) -> None:
        for task in self._acceptors:
            task.cancel()
        await asyncio.gather(*self._acceptors, return_exceptions=True)
        self._acceptors.clear()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                path.unlink()
        self._unix_paths.clear()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._owned_queue is not None:
            await self._owned_queue.aclose()

    async def __aenter__(self) -> EgressProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _address = await loop.sock_accept(listener)
            except OSError as exc:
                # Out of descriptors (EMFILE/ENFILE) or memory: pause instead of spinning,
                # and say so once in a while rather than a traceback per failure.
                self.metrics.accept_errors.inc()
                self._accept_warning.warn("accepting an agent connection failed: %s", exc)
                await asyncio.sleep(ACCEPT_PAUSE)
                continue
            if len(self._connections) >= self.connection_cap:
                self.metrics.refused_connections.inc()
                self._cap_warning.warn(
                    "agent connection refused: %d connections open (the cap)",
                    self.connection_cap,
                )
                _refuse_over_cap(sock)
                continue
            task = loop.create_task(self._serve_connection(sock))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

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


def _tcp_listener(address: tuple[str, int]) -> socket.socket:
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


def _unix_listener(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(1024)
    except OSError:
        listener.close()
        raise
    return listener


def _refuse_over_cap(sock: socket.socket) -> None:
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


def _peer_name(sock: socket.socket) -> str:
    try:
        peer: Any = sock.getpeername()
    except OSError:
        return ""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return ""
