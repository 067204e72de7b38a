"""Who is calling: kernel credentials for every Workload API connection.

grpcio does not expose SO_PEERCRED for unix sockets, so the agent accepts workload
connections itself. For each one it reads the caller's credentials, then relays the bytes to
the internal gRPC server (on a socket in a private 0700 directory) from an abstract address
the kernel assigns (autobind, so nobody can squat the names we would use). gRPC reports that
address as the call's peer (``unix-abstract:<name>``), and the servicer looks the caller up
by it. Only the agent's user can reach the internal socket at all; a connection the directory
does not know has no caller and is denied. An address is unregistered before its socket
closes, so a name can never be re-bound by someone else while it still maps to a caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from .registry import PeerCredentials

log = logging.getLogger(__name__)

_CRED = struct.Struct("3i")
_RELAY_CHUNK = 65536
MAX_CONNECTIONS_PER_WORKLOAD = 128
"""A workload needs one or two connections; the bound keeps a local user who can reach a
socket from exhausting the agent's file descriptors through it."""


@dataclass(frozen=True)
class Caller:
    workload: str
    credentials: PeerCredentials


def read_peer_credentials(sock: socket.socket) -> PeerCredentials:
    """SO_PEERCRED of a connected unix socket (Linux)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


class CallerDirectory:
    """Relay address → caller, for the connections currently being relayed."""

    def __init__(self) -> None:
        self._callers: dict[str, Caller] = {}

    def register(self, address: str, caller: Caller) -> None:
        self._callers[address] = caller

    def unregister(self, address: str) -> None:
        self._callers.pop(address, None)

    def lookup(self, grpc_peer: str) -> Caller | None:
        """The caller behind a gRPC peer string, or None for anything we did not relay."""
        kind, _, address = grpc_peer.partition(":")
        if kind != "unix-abstract":
            return None
        return self._callers.get(address)


def autobound_name(sock: socket.socket) -> str:
    """The abstract name of an autobound socket, as gRPC prints it after ``unix-abstract:``."""
    raw = sock.getsockname()
    if not isinstance(raw, bytes) or not raw.startswith(b"\0") or len(raw) < 2:
        raise OSError("unix socket autobind did not yield an abstract address")
    return raw[1:].decode("ascii")


async def connect_unix(sock: socket.socket, path: str, patience: float = 5.0) -> None:
    """Connect a non-blocking unix socket, waiting while the listener's backlog is full.

    A unix connect never goes "in progress": it succeeds or fails with EAGAIN. asyncio's
    ``sock_connect`` mistakes EAGAIN for progress and reports an unconnected socket as
    connected, so bursts of callers would be dropped; retry instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if loop.time() >= deadline:
                raise TimeoutError(f"{path} kept refusing connections (backlog full)") from None
            await asyncio.sleep(0.005)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(_RELAY_CHUNK):
        writer.write(data)
        await writer.drain()


def prepare_socket_dir(path: Path, mode: int, *, enforce_mode: bool) -> None:
    """Create (or re-use) a real directory, never following a planted symlink.

    ``mode`` is applied to a directory we create; an existing one keeps its mode unless
    ``enforce_mode`` (for directories the agent owns, such as ``DIR/NAME``).
    """
    try:
        path.mkdir(mode=mode, parents=True)
    except FileExistsError:
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise ValueError(f"{path} exists and is not a directory") from None
        if not enforce_mode:
            return
    os.chmod(path, mode)


def _socket_is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_listening_socket(path: Path, mode: int) -> socket.socket:
    """A listening unix socket at ``path`` with ``mode``.

    A stale socket file (left by a crash) is replaced; one that still answers belongs to a
    running agent, and taking it over would hand its callers to us, so that is an error.
    """
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            if _socket_is_live(path):
                raise OSError(f"{path} is in use by another process")
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, mode)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class AttestingListener:
    """One workload's socket: accepts, attests, relays to the internal gRPC server."""

    def __init__(self, workload: str, path: Path, backend: str, directory: CallerDirectory) -> None:
        self.workload = workload
        self.path = path
        self._backend = backend
        self._directory = directory
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._sock: socket.socket | None = None
        self._starting: asyncio.Task[None] | None = None

    def bind(self, mode: int = 0o666) -> None:
        """Create the socket now (connections queue in the backlog until serving starts)."""
        self._sock = bind_listening_socket(self.path, mode)

    def start_serving(self) -> asyncio.Task[None]:
        """Begin accepting on the bound socket; returns the task that attaches the server."""
        sock = self._sock
        if sock is None:
            raise RuntimeError("bind() first")

        async def attach() -> None:
            self._server = await asyncio.start_unix_server(self._accepted, sock=sock)

        self._starting = asyncio.get_running_loop().create_task(attach())
        return self._starting

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._relays) >= MAX_CONNECTIONS_PER_WORKLOAD:
            log.warning(
                "connection refused: too many", extra={"fields": {"workload": self.workload}}
            )
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._relays.add(task)
        address = ""
        upstream: asyncio.StreamWriter | None = None
        try:
            credentials = read_peer_credentials(writer.get_extra_info("socket"))
            out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                out.bind("")  # Linux autobind: a unique abstract address chosen by the kernel
                address = autobound_name(out)
                self._directory.register(address, Caller(self.workload, credentials))
                out.setblocking(False)
                await connect_unix(out, self._backend)
            except BaseException:
                out.close()
                raise
            up_reader, upstream = await asyncio.open_unix_connection(sock=out)
            await self._relay(reader, writer, up_reader, upstream)
        except (OSError, asyncio.IncompleteReadError) as exc:  # TimeoutError is an OSError
            log.debug("relay ended", extra={"fields": {"error": type(exc).__name__}})
        except asyncio.CancelledError:
            # The listener closed; this task is the connection's top level, so ending here
            # is the whole point (asyncio.streams would log a cancelled callback as an error).
            pass
        finally:
            if address:
                self._directory.unregister(address)
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            if task is not None:
                self._relays.discard(task)

    @staticmethod
    async def _relay(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> None:
        tasks = {
            asyncio.create_task(_pump(reader, upstream)),
            asyncio.create_task(_pump(up_reader, writer)),
        }
        try:
            # HTTP/2 never half-closes: when either side is done, the connection is done.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop accepting, drop every relayed connection, remove the socket file."""
        self.close_nowait()
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        relays = list(self._relays)
        for t in relays:
            t.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    def close_nowait(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._server is not None:
            self._server.close()
        for t in list(self._relays):
            t.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
