"""A sandbox's proxy worker processes, found through ``/proc`` (``--proxy-workers``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

WORKER_MODULE = b"grantbox.proxy.pool.worker"


def parent_of(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return int(data[data.rfind(b")") + 2 :].split()[1])


def proxy_workers_of(supervisor: int) -> list[int]:
    """The pool worker processes whose parent is ``supervisor``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if WORKER_MODULE in argv and parent_of(int(entry.name)) == supervisor:
                found.append(int(entry.name))
    return sorted(found)


def is_worker(pid: int) -> bool:
    """Whether ``pid`` is (still) a pool worker process (not a reused pid)."""
    try:
        return WORKER_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
