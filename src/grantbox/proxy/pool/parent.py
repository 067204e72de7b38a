"""The egress proxy spread over worker processes, behind one set of listeners.

One Python process tops out at one core. :class:`ProxyPool` keeps what must be one - the
listeners and the connection cap, the grant engine (single-flight per binding, the identity
socket, the cache), the interception CA, the event record and the metrics - in the parent,
and runs the request path in ``workers`` child processes (:mod:`.worker`):

* the parent accepts each agent connection, applies the cap, and hands the descriptor to
  the worker with the fewest open connections (SCM_RIGHTS over a datagram socketpair);
  workers report connections that ended, so the cap counts every worker's;
* a worker asks the parent for a token on a miss and reuses it for at most a second
  (:mod:`.tokens`); a config update reaches every worker and drops those tokens;
* events come back in batches over a stream per worker and go to the parent's sink, so the
  record is one stream however many workers; metrics are summed (:mod:`.metrics`), log
  records re-logged by the parent;
* a worker that dies is replaced (with backoff); its connections are lost, its counters
  kept. Without a live worker a connection is answered ``connection_limit_reached``.

The interface is :class:`grantbox.proxy.EgressProxy`'s, so callers choose by a number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

import grantbox
from grantbox.grants import GrantError, GrantMisconfigured, TokenEndpointError
from grantbox.profiles import EffectiveConfig, GrantBinding

from ..limits import Limits, connection_cap
from ..listeners import LOG_INTERVAL, Acceptor, Throttled, refuse_over_cap
from ..metrics import ProxyMetrics
from ..programs import ProcPrograms
from ..record import EventSink
from ..sink import EventQueue
from ..tls import InterceptionCA
from ..tokens import TokenSource
from .metrics import PoolMetrics
from .wire import (
    HEADER,
    WireError,
    config_to_wire,
    error_to_wire,
    frame,
    frame_length,
    limits_to_wire,
    parse,
)

log = logging.getLogger("grantbox.proxy")

# A worker that has not said ready within this long is given up (and tried again).
READY_TIMEOUT = 60.0
# How long a stopping worker may take to write its last events before it is killed.
STOP_TIMEOUT = 10.0
# Restart backoff for a worker that died: doubling from the first to the last.
RESTART_FIRST, RESTART_LAST = 0.5, 30.0
# A worker that lived this long resets its slot's backoff.
RESTART_RESET = 60.0
# Config revisions whose bindings the parent still answers for (a worker may ask about a
# request it decided just before an update reached it).
REVISIONS_KEPT = 4
# Kernel buffer of each hand-off socket: descriptors waiting for a busy worker.
HANDOFF_BUFFER = 1 << 20


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    length = frame_length(await reader.readexactly(HEADER.size))
    return await reader.readexactly(length)


@dataclass(eq=False)
class _Slot:
    index: int
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    events_writer: asyncio.StreamWriter | None = None
    handoff: socket.socket | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ready: asyncio.Future[int] | None = None
    alive: bool = False
    open: int = 0
    revision: str = ""
    started: float = 0.0
    backoff: float = RESTART_FIRST

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class ProxyPool:
    """:class:`grantbox.proxy.EgressProxy` in ``workers`` processes (see the module).

    ``tokens`` is the parent's token source (the grant engine); ``resolve`` holds
    ``--resolve`` style ``HOST=IP`` overrides for the workers' resolvers; ``programs`` is
    recreated in each worker from its settings. ``own_registries`` are parent-side
    registries whose families the workers also report (an :class:`EventQueue`'s drop
    counter): they are summed with the workers' instead of being registered twice.
    ``encoded_events`` takes the workers' events as they arrive, JSON lines encoded by
    :func:`grantbox.proxy.sink.event_json` (an :class:`EventQueue` given as ``events`` is
    used so by itself); without it each line is parsed back into ``events``.
    """

    def __init__(
        self,
        config: EffectiveConfig,
        tokens: TokenSource,
        *,
        workers: int,
        resolve: Sequence[str] = (),
        upstream_ca_file: Path | None = None,
        events: EventSink | None = None,
        encoded_events: Callable[[bytes], None] | None = None,
        registry: CollectorRegistry | None = None,
        limits: Limits | None = None,
        programs: ProcPrograms | None = None,
        own_registries: Sequence[CollectorRegistry] = (),
    ) -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.limits = limits or Limits()
        self._ca = InterceptionCA(leaf_cache_size=self.limits.leaf_cache_size)
        self._tokens = tokens
        self._resolve = list(resolve)
        self._upstream_ca_file = upstream_ca_file
        self._programs = programs
        self._own = ProxyMetrics()  # the parent's own counts: refusals, accept errors
        own_queue_registry = CollectorRegistry()
        self._owned_queue: EventQueue | None = None
        if events is None:
            self._owned_queue = EventQueue(
                _log_lines, self.limits.event_buffer, registry=own_queue_registry
            )
            events = self._owned_queue
        self._events = events
        if encoded_events is None and isinstance(events, EventQueue):
            encoded_events = events.defer_encoded
        self._encoded_events = encoded_events
        self.collector = PoolMetrics(self._own.registry, own_queue_registry, *own_registries)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(self.collector)
        self._config = config
        self._bindings: OrderedDict[str, dict[str, GrantBinding]] = OrderedDict()
        self._remember(config)
        tokens.replace_bindings(config.bindings)
        self.connection_cap = connection_cap(self.limits)
        self._slots = [_Slot(index) for index in range(workers)]
        self._acceptor = Acceptor(self._dispatch, self._own.accept_errors)
        self._answers: set[asyncio.Task[None]] = set()
        self._restarts: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._cap_warning = Throttled(LOG_INTERVAL)
        self._updated = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"ProxyPool(sandbox={self.config.sandbox_id!r}, workers={len(self._slots)}, "
            f"tcp={self.tcp_address})"
        )

    # -- the EgressProxy surface -------------------------------------------------------
    @property
    def config(self) -> EffectiveConfig:
        return self._config

    @property
    def ca_cert_pem(self) -> bytes:
        return self._ca.cert_pem

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self._acceptor.tcp_address

    @property
    def open_connections(self) -> int:
        return sum(slot.open for slot in self._slots if slot.alive)

    @property
    def worker_pids(self) -> list[int]:
        return [slot.pid for slot in self._slots if slot.alive and slot.pid is not None]

    def update(self, config: EffectiveConfig) -> None:
        """New policy and bindings: the parent's engine at once, each worker as soon as it
        reads the message (:meth:`settled` waits for that)."""
        self._config = config
        self._remember(config)
        self._tokens.replace_bindings(config.bindings)
        message = frame({"t": "update", "config": config_to_wire(config)})
        self._updated.clear()
        for slot in self._slots:
            if slot.alive and slot.writer is not None:
                slot.writer.write(message)

    async def settled(self) -> None:
        """Return once every live worker applied the current config (callers bound the
        wait with a timeout)."""
        while not self._all_current():
            self._updated.clear()
            await self._updated.wait()

    def _all_current(self) -> bool:
        revision = self._config.revision
        return all(slot.revision == revision for slot in self._slots if slot.alive)

    def _remember(self, config: EffectiveConfig) -> None:
        self._bindings[config.revision] = {b.id: b for b in config.bindings}
        self._bindings.move_to_end(config.revision)
        while len(self._bindings) > REVISIONS_KEPT:
            self._bindings.popitem(last=False)

    async def start(
        self,
        *,
        tcp: tuple[str, int] | None = None,
        unix: Path | None = None,
        sockets: Sequence[socket.socket] = (),
    ) -> None:
        """Listen, start every worker and wait until each is ready."""
        self._acceptor.open(tcp=tcp, unix=unix, sockets=sockets)
        if self._owned_queue is not None:
            self._owned_queue.start()
        try:
            await asyncio.gather(*(self._spawn(slot) for slot in self._slots))
        except BaseException:
            await self.stop()
            raise
        self._acceptor.start()

    async def stop(self) -> None:
        self._stopping = True
        await self._acceptor.close()
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        await asyncio.gather(*(self._stop_worker(slot) for slot in self._slots))
        for task in list(self._answers):
            task.cancel()
        await asyncio.gather(*self._answers, return_exceptions=True)
        if self._owned_queue is not None:
            await self._owned_queue.aclose()

    async def __aenter__(self) -> ProxyPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- workers -----------------------------------------------------------------------
    def _hello(self) -> dict[str, Any]:
        key, cert = self._ca.issued()
        return {
            "t": "hello",
            "config": config_to_wire(self._config),
            "limits": limits_to_wire(self.limits),
            "ca": [key.decode("ascii"), cert.decode("ascii")],
            "resolve": self._resolve,
            "upstream_ca": str(self._upstream_ca_file) if self._upstream_ca_file else None,
            "programs": self._programs.settings() if self._programs is not None else None,
            "log_level": logging.getLogger().getEffectiveLevel(),
        }

    async def _spawn(self, slot: _Slot) -> None:
        control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        events, events_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        handoff, handoff_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        children = (control_child, events_child, handoff_child)
        try:
            handoff.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HANDOFF_BUFFER)
            fds = [child.fileno() for child in children]
            slot.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "grantbox.proxy.pool.worker",
                *map(str, fds),
                pass_fds=fds,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                env=_worker_environment(),
                # Terminal signals (^C) go to the parent, which stops its workers in order.
                start_new_session=True,
            )
        except BaseException:
            for sock in (control, events, handoff):
                sock.close()
            raise
        finally:
            for child in children:
                child.close()
        handoff.setblocking(False)
        slot.handoff = handoff
        reader, slot.writer = await asyncio.open_unix_connection(sock=control, limit=1 << 20)
        # The writer is kept: a collected StreamWriter closes its socket.
        events_reader, slot.events_writer = await asyncio.open_unix_connection(
            sock=events, limit=1 << 20
        )
        slot.ready = asyncio.get_running_loop().create_future()
        slot.revision = ""
        slot.open = 0
        hello = self._hello()
        slot.writer.write(frame(hello))
        slot.tasks = [
            asyncio.create_task(self._control(slot, reader)),
            asyncio.create_task(self._event_stream(slot, events_reader)),
        ]
        try:
            await asyncio.wait_for(asyncio.shield(slot.ready), READY_TIMEOUT)
        except (TimeoutError, ConnectionError, WireError) as exc:
            await self._stop_worker(slot)
            raise RuntimeError(
                f"proxy worker {slot.index} did not start: {exc or 'no answer'}"
            ) from exc
        slot.alive = True
        slot.revision = hello["config"]["config"]["revision"]
        slot.started = time.monotonic()
        if self._config.revision != slot.revision:  # an update came while it started
            slot.writer.write(frame({"t": "update", "config": config_to_wire(self._config)}))
        log.debug("proxy worker %d started (pid %s)", slot.index, slot.pid)

    async def _control(self, slot: _Slot, reader: asyncio.StreamReader) -> None:
        problem = ""
        try:
            while True:
                message = parse(await _read_frame(reader))
                kind = message["t"]
                if kind == "token":
                    task = asyncio.create_task(self._answer(slot, message))
                    self._answers.add(task)
                    task.add_done_callback(self._answers.discard)
                elif kind == "closed":
                    slot.open = max(0, slot.open - int(message.get("n", 0)))
                elif kind == "metrics":
                    self.collector.update(slot.index, list(message.get("families", [])))
                elif kind == "log":
                    _relog(slot.index, message)
                elif kind == "updated":
                    slot.revision = str(message.get("revision", ""))
                    self._updated.set()
                elif kind == "ready":
                    if slot.ready is not None and not slot.ready.done():
                        slot.ready.set_result(int(message.get("pid", 0)))
                else:
                    raise WireError(f"unexpected message {kind!r}")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            problem = ""  # the worker ended; its exit status says how
        except (WireError, KeyError, TypeError, ValueError) as exc:
            problem = f"broke the protocol ({exc})"
        if slot.ready is not None and not slot.ready.done():
            slot.ready.set_exception(ConnectionError("the worker ended before it was ready"))
        await self._lost(slot, problem)

    async def _answer(self, slot: _Slot, message: dict[str, Any]) -> None:
        ident = message.get("id")
        binding = self._bindings.get(str(message.get("revision")), {}).get(
            str(message.get("binding"))
        )
        reply: dict[str, Any] = {"t": "token", "id": ident}
        if binding is None:
            reply["error"] = error_to_wire(
                GrantMisconfigured("the binding is no longer attached (the config changed)")
            )
        else:
            try:
                token = await self._tokens.obtain(binding)
            except GrantError as error:
                reply["error"] = error_to_wire(error)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the pool is stopping
                # The engine was closed under the request (an orphaned sandbox): the worker
                # gets an answer rather than waiting on a question nobody will answer.
                reply["error"] = error_to_wire(GrantMisconfigured("the grant engine stopped"))
            except Exception:
                log.exception("token source failed for %s", binding.id)
                reply["error"] = error_to_wire(TokenEndpointError("token source failed"))
            else:
                expires = getattr(token, "expires_at", None)
                reply["value"] = token.value
                reply["remaining"] = (
                    float(expires) - time.monotonic() if isinstance(expires, int | float) else 0
                )
        if slot.alive and slot.writer is not None and not slot.writer.is_closing():
            slot.writer.write(frame(reply))

    async def _event_stream(self, slot: _Slot, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError):
            while True:
                self._deliver(await _read_frame(reader))

    def _deliver(self, lines: bytes) -> None:
        try:
            if self._encoded_events is not None:  # no parsing back and encoding again
                self._encoded_events(lines)
                return
            for line in lines.splitlines():
                if line:
                    self._events(orjson.loads(line))
        except Exception:  # a broken sink must not break the pool
            log.exception("OCSF event sink failed")

    async def _lost(self, slot: _Slot, problem: str) -> None:
        was_alive, slot.alive = slot.alive, False
        slot.open = 0
        self.collector.retire(slot.index)
        code = await self._reap(slot)
        if self._stopping or not was_alive:
            return
        lived = time.monotonic() - slot.started
        if lived > RESTART_RESET:
            slot.backoff = RESTART_FIRST
        log.error(
            "proxy worker %d (pid %s) %s; its connections are lost, another starts in %.1fs",
            slot.index,
            slot.pid,
            problem or f"exited with status {code}",
            slot.backoff,
        )
        task = asyncio.create_task(self._restart(slot))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, slot: _Slot) -> None:
        while not self._stopping:
            await asyncio.sleep(slot.backoff)
            slot.backoff = min(RESTART_LAST, slot.backoff * 2)
            try:
                await self._spawn(slot)
                return
            except (RuntimeError, OSError) as exc:
                log.error("%s; trying again in %.1fs", exc, slot.backoff)

    async def _reap(self, slot: _Slot) -> int | None:
        """Close the slot's channels and wait for its process (killed if it lingers)."""
        for writer in (slot.writer, slot.events_writer):
            if writer is not None:
                writer.close()
        if slot.handoff is not None:
            slot.handoff.close()
            slot.handoff = None
        process = slot.process
        if process is None:
            return None
        try:
            return await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return await process.wait()

    async def _stop_worker(self, slot: _Slot) -> None:
        """Ask the worker to stop, let it write its last events, then collect it."""
        current = asyncio.current_task()
        if slot.writer is not None and not slot.writer.is_closing():
            slot.writer.write(frame({"t": "stop"}))
        if slot.process is not None:
            try:
                await asyncio.wait_for(slot.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.kill()
        tasks = [task for task in slot.tasks if task is not current]
        _done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT) if tasks else ((), ())
        for task in pending:
            task.cancel()
        slot.alive = False
        await self._reap(slot)

    # -- connections -------------------------------------------------------------------
    def _dispatch(self, sock: socket.socket) -> None:
        """Hand the connection to the least busy worker that takes it, or refuse it."""
        if self.open_connections >= self.connection_cap:
            self._refuse(sock, f"{self.connection_cap} connections open (the cap)")
            return
        try:
            for slot in sorted((s for s in self._slots if s.alive), key=lambda s: s.open):
                assert slot.handoff is not None
                try:
                    socket.send_fds(slot.handoff, [b"c"], [sock.fileno()])
                except OSError:  # its queue is full, or it just died: try the next
                    continue
                slot.open += 1
                return
            self._refuse(sock, "no proxy worker could take it")
        finally:
            sock.close()

    def _refuse(self, sock: socket.socket, why: str) -> None:
        self._own.refused_connections.inc()
        self._cap_warning.warn("agent connection refused: %s", why)
        refuse_over_cap(sock)


def _worker_environment() -> dict[str, str]:
    """The parent's environment, with this grantbox importable first."""
    env = dict(os.environ)
    source = str(Path(grantbox.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


_events_log = logging.getLogger("grantbox.proxy.ocsf")


def _log_lines(data: bytes) -> None:
    for line in data.decode("ascii").splitlines():
        _events_log.info("%s", line)


def _relog(index: int, message: dict[str, Any]) -> None:
    text = str(message.get("message", ""))
    if message.get("exc"):
        text += "\n" + str(message["exc"]).rstrip()
    level = message.get("level")
    logging.getLogger(str(message.get("logger") or "grantbox.proxy")).log(
        level if isinstance(level, int) else logging.WARNING,
        "%s",
        text,
        extra={"proxy_worker": index},
    )
