"""What a grantbox run could leave behind on this host, counted so tests can compare."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterable
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


def seconds_since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float | None:
    """When ``pid`` started, in seconds since boot (``/proc/PID/stat`` field 22)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rpartition(")")[2].split()[19])
        return ticks / os.sysconf("SC_CLK_TCK")
    return None


def namespace_holders(namespaces: Iterable[str], *, born_before: float | None = None) -> set[str]:
    """Which of ``namespaces`` (``net:[inode]``) any process still uses or holds an fd to.

    The kernel reuses a freed namespace's inode number, so on a busy host another program's
    fresh namespace can carry a number we saw; ``born_before`` (seconds since boot) counts
    only processes that already existed then, which every leftover of ours did.
    """
    wanted = set(namespaces)
    held: set[str] = set()
    for pid in _pids():
        if born_before is not None and (started_at(pid) or 0.0) > born_before:
            continue
        ns = net_namespace(pid)
        if ns in wanted:
            held.add(ns)
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target in wanted:
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
