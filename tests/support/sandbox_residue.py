"""What a grantbox run could leave behind on this host, counted so tests can compare."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def pids_mentioning(marker: str) -> set[int]:
    return {pid for pid in _pids() if marker in cmdline(pid)}


def descendants(root: int) -> set[int]:
    """Every live descendant of ``root`` (children lists of all its threads)."""
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    if int(child) not in found:
                        found.add(int(child))
                        todo.append(int(child))
    return found


def net_namespace(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/net")
    return None


def started_at(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), from /proc; None once it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    return None


def namespace_holders(namespaces: Iterable[str] | Mapping[str, float]) -> set[str]:
    """Which of ``namespaces`` (``net:[inode]``) any process still uses or holds an fd to.

    The kernel hands a freed namespace's inode number to the next new namespace, so on a
    busy host another program's sandbox can show up under a number we recorded. Given a
    mapping to the time each namespace's owner stopped, only processes started before then
    count for it: a later process cannot hold our namespace unless an older holder (which
    is counted) handed it over.
    """
    cutoff = dict(namespaces) if isinstance(namespaces, Mapping) else {}
    wanted = set(namespaces)
    held: set[str] = set()

    def counts(pid: int, ns: str) -> bool:
        if ns not in wanted:
            return False
        limit = cutoff.get(ns)
        return limit is None or (started_at(pid) or limit) < limit

    for pid in _pids():
        ns = net_namespace(pid)
        if ns is not None and counts(pid, ns):
            held.add(ns)
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if counts(pid, target):
                        held.add(target)
    return held


@dataclass(frozen=True)
class HostSnapshot:
    mounts: frozenset[str]
    links: frozenset[str]
    unix_sockets: frozenset[str]
    tcp_listeners: frozenset[str]


def snapshot(paths: Iterable[str]) -> HostSnapshot:
    """Mounts and link names of the host namespaces; unix sockets bound below ``paths``."""
    prefixes = tuple(paths)
    mounts = frozenset(Path("/proc/self/mountinfo").read_text().splitlines())
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    names = frozenset(line.split(":")[1].strip() for line in links.stdout.splitlines())
    unix = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[7].startswith(prefixes):
            unix.add(parts[7])
    listeners = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A":
                listeners.add(parts[1])
    return HostSnapshot(
        mounts=mounts,
        links=names,
        unix_sockets=frozenset(unix),
        tcp_listeners=frozenset(listeners),
    )


def new_mounts_of_ours(
    before: HostSnapshot, after: HostSnapshot, paths: Iterable[str]
) -> list[str]:
    """Mounts that appeared and could be ours: below ``paths``, or proc/tmpfs/nsfs mounts
    (a sandbox's would be one of those if it leaked into the host's mount namespace)."""
    marks = (*paths, " - proc ", " - tmpfs ", " - nsfs ")
    return sorted(line for line in after.mounts - before.mounts if any(m in line for m in marks))
