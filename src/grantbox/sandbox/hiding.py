"""Which directories the agent must not see, and which ones we refuse to cover.

The sandbox init mounts an empty read-only tmpfs over each hidden directory. Covering a
shared system directory would break the agent (and hint at a misconfiguration: a socket or
state file should live in a dedicated subdirectory), so such paths are refused with a
reason instead of silently hidden. This is the one policy for every compute driver: the
local driver's state and socket directories and the Kubernetes pods' socket directory are
all checked here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from grantbox.identity import parse_socket_uri

# Directories whose children every program relies on: shadowing one would hide most of the
# system from the agent.
_TEMPORARY = ("/tmp", "/var/tmp")  # noqa: S108 (refused, never used)
SHARED_DIRECTORIES = frozenset(
    {
        "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media",
        "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/usr", "/usr/bin",
        "/usr/lib", "/usr/local", "/usr/local/bin", "/usr/sbin", "/usr/share", "/var",
        "/var/lib", "/var/log", "/var/run", *_TEMPORARY,
    }
)  # fmt: skip
# Kernel trees: nothing under them is a place for a socket or state, and the fence mounts its
# own /proc and /dev.
KERNEL_TREES = ("/proc/", "/sys/", "/dev/")


class HidingRefused(ValueError):
    """A directory cannot be hidden from the agent; the message says why."""


def shadow_problem(path: str) -> str | None:
    """Why ``path`` cannot be covered with an empty tmpfs, or None when it can."""
    if not path or "\x00" in path:
        return "path is empty or contains NUL"
    if not path.startswith("/"):
        return f"{path!r} is not absolute"
    normal = os.path.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal in SHARED_DIRECTORIES or (normal + "/").startswith(KERNEL_TREES):
        return (
            f"refusing to hide shared directory {normal}: it holds files every program "
            "needs; keep sockets and state in a dedicated subdirectory"
        )
    return None


def socket_directory(socket_uri: str) -> str:
    """The directory to hide for a Workload API socket (its parent directory)."""
    try:
        path = parse_socket_uri(socket_uri)
    except ValueError as exc:
        raise HidingRefused(f"identity socket cannot be hidden: {exc}") from None
    return os.path.dirname(path)


def hidden_directories(paths: Iterable[str]) -> tuple[str, ...]:
    """Normalise, check and deduplicate; a directory inside another hidden one is dropped.

    Raises :class:`HidingRefused` naming the first path that cannot be hidden.
    """
    normal: set[str] = set()
    for path in paths:
        problem = shadow_problem(path)
        if problem is not None:
            raise HidingRefused(problem)
        normal.add(os.path.normpath(path))
    ordered = sorted(normal, key=lambda p: (p.count("/"), p))
    kept: list[str] = []
    for path in ordered:
        if not any(path.startswith(parent + "/") for parent in kept):
            kept.append(path)
    return tuple(sorted(kept))
