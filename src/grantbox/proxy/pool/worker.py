"""A pool worker: one process serving the agent connections its parent hands it.

Started by :class:`grantbox.proxy.pool.ProxyPool` as ``python -m
grantbox.proxy.pool.worker CONTROL EVENTS HANDOFF`` (three inherited descriptors). It runs
an ordinary :class:`grantbox.proxy.EgressProxy` without listeners: connections arrive as
descriptors, tokens come from the parent's engine (:class:`.tokens.ParentTokens`), OCSF
events go to the parent in batches, and its metrics and log records are sent up as well.
The worker never touches the identity socket. When the parent goes away (the control
channel ends) the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop
from prometheus_client import CollectorRegistry

from grantbox.grants import GrantMetrics

from ...heap import settle as settle_heap
from ..destinations import SystemResolver, parse_overrides
from ..limits import Limits
from ..programs import ProcPrograms, ProgramResolver
from ..server import EgressProxy
from ..sink import EventQueue
from ..tls import InterceptionCA
from .metrics import snapshot
from .tokens import ParentTokens
from .wire import (
    HEADER,
    WireError,
    config_from_wire,
    frame,
    frame_length,
    limits_from_wire,
    parse,
)

log = logging.getLogger("grantbox.proxy")

# How often the worker's metrics go to the parent.
METRICS_INTERVAL = 1.0
# Log records waiting to be sent past this many bytes are dropped (and counted).
LOG_BUFFER_LIMIT = 1024 * 1024
# Descriptors taken from the hand-off socket per wake-up.
HANDOFF_BATCH = 64


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any]:
    length = frame_length(await reader.readexactly(HEADER.size))
    return parse(await reader.readexactly(length))


class ParentChannel:
    """The control channel as the worker sees it: questions with answers, and news."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.dropped_logs = 0

    def send(self, message: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(frame(message))

    def send_log(self, message: dict[str, Any]) -> None:
        if self._writer.transport.get_write_buffer_size() > LOG_BUFFER_LIMIT:
            self.dropped_logs += 1
            return
        self.send(message)

    async def ask_token(self, revision: str, binding_id: str) -> dict[str, Any]:
        ident = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._pending[ident] = answer
        try:
            self.send({"t": "token", "id": ident, "revision": revision, "binding": binding_id})
            answered: dict[str, Any] = await answer
            return answered
        finally:
            self._pending.pop(ident, None)

    def answered(self, message: dict[str, Any]) -> None:
        waiter = self._pending.get(int(message.get("id", 0)))
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    def fail_pending(self) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_result(
                    {"error": {"reason": "grant_misconfigured", "detail": "the proxy is stopping"}}
                )

    async def receive(self) -> dict[str, Any]:
        return await read_message(self._reader)

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


class ForwardingHandler(logging.Handler):
    """Log records go to the parent, which logs them as its own (naming the worker)."""

    def __init__(self, channel: ParentChannel, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._channel = channel
        self._loop = loop
        self._thread = threading.get_ident()  # made on the loop's thread

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message: dict[str, Any] = {
                "t": "log",
                "level": record.levelno,
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                message["exc"] = "".join(traceback.format_exception(*record.exc_info))
            if threading.get_ident() == self._thread:
                self._channel.send_log(message)
            else:  # the event writer's thread, say
                self._loop.call_soon_threadsafe(self._channel.send_log, message)
        except Exception:  # logging must never break the proxy
            self.handleError(record)


class EventPipe:
    """Writes event batches (JSON lines) to the parent, framed; called in a writer thread,
    so a parent slow to read blocks that thread and the event queue drops, never a
    request."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock

    def __call__(self, data: bytes) -> None:
        self._sock.sendall(HEADER.pack(len(data)) + data)

    def close(self) -> None:
        self._sock.close()


class Worker:
    """The proxy of one worker process, built from the parent's ``hello``."""

    def __init__(
        self,
        channel: ParentChannel,
        handoff: socket.socket,
        events: socket.socket,
        hello: dict[str, Any],
    ) -> None:
        self._channel = channel
        self._handoff = handoff
        self.limits: Limits = limits_from_wire(hello["limits"])
        self.registry = CollectorRegistry()
        self.tokens = ParentTokens(channel.ask_token, metrics=GrantMetrics(self.registry))
        config = config_from_wire(hello["config"])
        self.tokens.use_revision(config.revision)
        key, cert = (part.encode("ascii") for part in hello["ca"])
        programs: ProgramResolver | None = None
        if hello.get("programs") is not None:
            settings = dict(hello["programs"])
            programs = ProcPrograms(
                sandbox_of=settings.get("sandbox_of"),
                launcher_depth=int(settings.get("launcher_depth", 2)),
                proc=Path(settings.get("proc", "/proc")),
            )
        upstream_ca = hello.get("upstream_ca")
        self._events_pipe = EventPipe(events)
        self.queue = EventQueue(self._events_pipe, self.limits.event_buffer, self.registry)
        self.proxy = EgressProxy(
            config,
            self.tokens,
            resolver=SystemResolver(parse_overrides(hello.get("resolve", ()))),
            upstream_ca_file=Path(upstream_ca) if upstream_ca else None,
            events=self.queue,
            registry=self.registry,
            limits=self.limits,
            programs=programs,
            ca=InterceptionCA(leaf_cache_size=self.limits.leaf_cache_size, issued=(key, cert)),
        )
        self._closed = 0
        self._flush_scheduled = False
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self.queue.start()
        self._handoff.setblocking(False)
        asyncio.get_running_loop().add_reader(self._handoff.fileno(), self._take_connections)

    def _take_connections(self) -> None:
        for _ in range(HANDOFF_BATCH):
            try:
                _data, fds, _flags, _address = socket.recv_fds(self._handoff, 16, 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._stopping.set()
                return
            if not fds and not _data:  # the parent closed its end
                self._stopping.set()
                return
            for fd in fds:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                task = self.proxy.admit(sock)
                if task is None:
                    self._ended()
                else:
                    task.add_done_callback(self._ended)

    def _ended(self, _task: object = None) -> None:
        """Tell the parent a connection is over (batched per loop turn)."""
        self._closed += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_closed)

    def _flush_closed(self) -> None:
        self._flush_scheduled = False
        if self._closed:
            self._channel.send({"t": "closed", "n": self._closed})
            self._closed = 0

    async def listen(self) -> None:
        """Carry out the parent's messages until it says stop or goes away."""
        try:
            while not self._stopping.is_set():
                message = await self._channel.receive()
                kind = message["t"]
                if kind == "token":
                    self._channel.answered(message)
                elif kind == "update":
                    config = config_from_wire(message["config"])
                    self.tokens.use_revision(config.revision)
                    self.proxy.update(config)
                    self._channel.send({"t": "updated", "revision": config.revision})
                elif kind == "stop":
                    return
                else:
                    raise WireError(f"unexpected message {kind!r}")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return  # the parent is gone

    async def report_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_INTERVAL)
            self.send_metrics()

    def send_metrics(self) -> None:
        self._channel.send({"t": "metrics", "families": snapshot(self.registry)})

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(self._handoff.fileno())
        self._handoff.close()
        self._channel.fail_pending()
        await self.proxy.stop()
        await self.queue.aclose()
        self._events_pipe.close()
        self._flush_closed()
        self.send_metrics()


async def serve(control: socket.socket, events: socket.socket, handoff: socket.socket) -> int:
    reader, writer = await asyncio.open_unix_connection(sock=control, limit=1 << 20)
    channel = ParentChannel(reader, writer)
    hello = await channel.receive()
    if hello.get("t") != "hello":
        raise WireError("the first message must be hello")
    root = logging.getLogger()
    root.handlers[:] = [ForwardingHandler(channel, asyncio.get_running_loop())]
    root.setLevel(int(hello.get("log_level", logging.INFO)))
    worker = Worker(channel, handoff, events, hello)
    worker.start()
    channel.send({"t": "ready", "pid": os.getpid()})
    reporter = asyncio.create_task(worker.report_metrics())
    try:
        await worker.listen()
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await worker.stop()
        await channel.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or not all(a.isdigit() for a in args):
        print(
            "usage: python -m grantbox.proxy.pool.worker CONTROL EVENTS HANDOFF "
            "(descriptors; started by grantbox, not by hand)",
            file=sys.stderr,
        )
        return 2
    control, events, handoff = (socket.socket(fileno=int(a)) for a in args)
    settle_heap()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(control, events, handoff))


if __name__ == "__main__":
    raise SystemExit(main())
