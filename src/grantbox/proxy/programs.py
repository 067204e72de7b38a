"""Which program opened an agent connection, found through ``/proc`` (binary-scoped policy).

The policy side is pure (:class:`grantbox.proxy.policy.Program`, matched by file identity
in the compiled policy); this module is the I/O at the edge. For a TCP connection it reads
the socket table of the agent's network namespace (``/proc/<pid>/net/tcp`` and ``tcp6`` of
any process in it), finds the socket whose local address is the connection's peer and
whose remote address is the proxy's listener, then the process holding that socket inode,
and reports the executables of that process and of every ancestor as ``(device, inode)``
(so symlinks are resolved by the kernel; argv is never read). For a unix-socket connection
the kernel names the peer process directly (``SO_PEERCRED``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from .policy import UNKNOWN_PROGRAM, FileId, Program

SO_PEERCRED_FORMAT = "3i"  # struct ucred: pid, uid, gid


class ProgramResolver(Protocol):
    """Finds who holds an agent connection, and what a ``binaries`` path names."""

    def identify(self, sock: socket.socket | None) -> Program: ...

    def executable(self, path: str) -> FileId | None: ...


def proc_address(address: str, port: int) -> tuple[str, ...]:
    """How ``/proc/net/tcp{,6}`` spells ``address:port``: each 32-bit word of the address in
    the host's byte order, in hex. An IPv4 address (or an IPv4-mapped IPv6 one) is also
    given in its mapped IPv6 form, since the socket may be either."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    forms = (
        [ip.packed]
        if ip.version == 6
        else [ip.packed, ipaddress.IPv6Address(f"::ffff:{ip}").packed]
    )
    order = "<" if sys.byteorder == "little" else ">"
    out = []
    for packed in forms:
        words = struct.unpack(f">{len(packed) // 4}I", packed)
        native = struct.pack(f"{order}{len(words)}I", *words)
        out.append(f"{native.hex().upper()}:{port:04X}")
    return tuple(out)


def socket_inode(
    tables: Iterator[str], local: tuple[str, ...], remote: tuple[str, ...]
) -> int | None:
    """The inode of the socket whose local address is one of ``local`` and whose remote
    address is one of ``remote`` in ``/proc/net/tcp``-format lines."""
    for line in tables:
        parts = line.split()
        if len(parts) < 10 or parts[1] not in local or parts[2] not in remote:
            continue
        inode = int(parts[9])
        if inode:
            return inode
    return None


class ProcPrograms:
    """The program behind a connection, from ``/proc``.

    ``sandbox_of`` is the supervisor's pid: the sandbox's processes are its descendants
    more than ``launcher_depth`` levels down (below each stage and sandbox init it starts,
    for the agent and for every exec); only they are considered, their network namespace's
    socket table is read, and ancestor chains stop below the launchers (a grantbox
    interpreter never counts as an agent's ancestor). Without it (``grantbox proxy run``)
    the proxy's own network namespace and every process up to pid 1 are used.

    ``binaries`` paths are resolved in this process's filesystem view: a sandbox sees the
    system directories of the host bind-mounted, so the identities agree; a file that is
    different inside the sandbox does not match, and is refused.
    """

    def __init__(
        self,
        *,
        sandbox_of: int | None = None,
        launcher_depth: int = 2,
        proc: Path = Path("/proc"),
    ) -> None:
        self._root = sandbox_of
        self._launcher_depth = launcher_depth
        self._proc = proc

    def settings(self) -> dict[str, Any]:
        """The arguments that make an equal resolver (in a proxy worker process)."""
        return {
            "sandbox_of": self._root,
            "launcher_depth": self._launcher_depth,
            "proc": str(self._proc),
        }

    def executable(self, path: str) -> FileId | None:
        try:
            info = os.stat(path)
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    def identify(self, sock: socket.socket | None) -> Program:
        if sock is None:
            return UNKNOWN_PROGRAM
        try:
            depths = self._depths()
            if sock.family == socket.AF_UNIX:
                pid = _peer_pid(sock)
                holders = [pid] if pid > 0 and self._inside(pid, depths) else []
            else:
                holders = self._holders(sock, depths)
            chains = [self._chain(pid, depths) for pid in holders]
        except OSError:
            return UNKNOWN_PROGRAM
        if not chains or not all(chains):
            return UNKNOWN_PROGRAM
        return Program(tuple(chains))

    def _depths(self) -> dict[int, int] | None:
        """How far below the supervisor each of its descendants is (None: standalone)."""
        if self._root is None:
            return None
        parents = {
            int(name): self._parent(int(name)) for name in os.listdir(self._proc) if name.isdigit()
        }
        depths = {self._root: 0}
        changed = True
        while changed:
            changed = False
            for pid, parent in parents.items():
                if pid not in depths and parent in depths:
                    depths[pid] = depths[parent] + 1
                    changed = True
        return depths

    def _inside(self, pid: int, depths: dict[int, int] | None) -> bool:
        return depths is None or depths.get(pid, 0) > self._launcher_depth

    def _holders(self, sock: socket.socket, depths: dict[int, int] | None) -> list[int]:
        peer_host, peer_port = sock.getpeername()[:2]
        own_host, own_port = sock.getsockname()[:2]
        local = proc_address(peer_host, peer_port)
        remote = proc_address(own_host, own_port)
        if depths is None:
            net = self._proc / "self" / "net"
            candidates = [int(n) for n in os.listdir(self._proc) if n.isdigit()]
        else:
            candidates = [pid for pid in depths if self._inside(pid, depths)]
            if not candidates:
                return []
            net = self._proc / str(candidates[0]) / "net"
        inode = None
        for name in ("tcp", "tcp6"):
            try:
                with open(net / name, encoding="ascii") as table:
                    inode = socket_inode(table, local, remote)
            except FileNotFoundError:
                continue
            if inode is not None:
                break
        if inode is None:
            return []
        wanted = f"socket:[{inode}]"
        return [pid for pid in candidates if self._holds(pid, wanted)]

    def _holds(self, pid: int, wanted: str) -> bool:
        fds = self._proc / str(pid) / "fd"
        try:
            names = os.listdir(fds)
        except OSError:
            return False
        for name in names:
            try:
                if os.readlink(fds / name) == wanted:
                    return True
            except OSError:
                continue
        return False

    def _parent(self, pid: int) -> int:
        try:
            with open(self._proc / str(pid) / "stat", "rb") as handle:
                data = handle.read()
        except OSError:
            return 0
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = data[data.rfind(b")") + 2 :].split()
        return int(fields[1]) if len(fields) > 1 else 0

    def _chain(self, pid: int, depths: dict[int, int] | None) -> frozenset[FileId]:
        """File identities of ``pid``'s executable and its ancestors' in the sandbox."""
        found: set[FileId] = set()
        seen: set[int] = set()
        holder = pid
        while pid > 1 and pid not in seen and self._inside(pid, depths):
            seen.add(pid)
            try:
                info = os.stat(self._proc / str(pid) / "exe")
            except OSError:
                if pid == holder:
                    return frozenset()  # the holder itself is gone or not ours to read
            else:
                found.add((info.st_dev, info.st_ino))
            pid = self._parent(pid)
        return frozenset(found)


def _peer_pid(sock: socket.socket) -> int:
    data = sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(SO_PEERCRED_FORMAT)
    )
    pid, _uid, _gid = struct.unpack(SO_PEERCRED_FORMAT, data)
    return int(pid)
