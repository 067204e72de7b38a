"""The isolation part of a sandbox policy: which host paths the agent sees, and its limits.

The sandbox builds the agent a root of its own (system directories read-only, a private
``/tmp``, ``/dev`` and ``/proc``); ``filesystem`` adds host paths to that view and nothing
else reaches it. Paths are checked here, as plain strings, so ``profile lint``, the gateway
and the supervisor refuse the same documents for the same reasons.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

# The sandbox builds these itself; a host copy would replace the private one.
BUILT_BY_SANDBOX = ("/proc", "/sys", "/dev", "/tmp")  # noqa: S108 - the sandbox's own
# Sockets and state of every grantbox instance (and of other services) live below these.
NEVER_SHOWN = ("/run", "/var/run")
# World-writable host places: shown, they would be shared between sandboxes and the host.
SHARED_WRITABLE = ("/var/tmp", "/run/lock", "/var/lock", "/dev/shm")  # noqa: S108
# Writable copies of these would let the agent change what every program runs.
SYSTEM_DIRECTORIES = (
    "/usr",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/var",
    "/home",
    "/root",
)
MAX_PATHS = 64


class LandlockMode(StrEnum):
    """``best_effort`` uses Landlock when the kernel has it; ``hard_requirement`` refuses
    to start a sandbox on a kernel without it."""

    BEST_EFFORT = "best_effort"
    HARD_REQUIREMENT = "hard_requirement"


class FilesystemPolicy(BaseModel):
    """Host paths added to the sandbox's minimal root."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    read_only: tuple[str, ...] = ()
    read_write: tuple[str, ...] = ()
    landlock: LandlockMode = LandlockMode.BEST_EFFORT


class LimitsPolicy(BaseModel):
    """Per-sandbox bounds; unset fields take the supervisor's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    processes: int | None = Field(default=None, strict=True)
    memory_mib: int | None = Field(default=None, strict=True)
    cpus: float | None = None


MIN_PROCESSES = 8
MAX_PROCESSES = 1_000_000
MIN_MEMORY_MIB = 32
MAX_MEMORY_MIB = 4 * 1024 * 1024
MIN_CPUS = 0.01
MAX_CPUS = 1024.0


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def path_syntax_problem(path: str) -> str | None:
    """Why ``path`` is not an absolute, normalised path, or None."""
    if not path:
        return "path is empty"
    if any(not ch.isprintable() for ch in path):
        return "path contains a control character"
    if not path.startswith("/"):
        return f"'{path}' is not absolute"
    parts = path.split("/")[1:]
    if ".." in parts:
        return f"'{path}' contains '..'"
    if path != "/" and ("" in parts or "." in parts):
        return f"'{path}' is not normalised (no '.', '//' or trailing '/')"
    return None


def filesystem_path_problem(path: str, *, writable: bool) -> str | None:
    """Why ``path`` may not be added to the agent's view (read-write when ``writable``)."""
    problem = path_syntax_problem(path)
    if problem is not None:
        return problem
    if path == "/":
        return "'/' would show the whole host; list the directories the agent needs"
    for root in BUILT_BY_SANDBOX:
        if _under(path, root):
            return f"{root} is the sandbox's own; it cannot come from the host"
    for root in SHARED_WRITABLE:
        if _under(path, root):
            return f"{root} is shared by every user of the host; the sandbox has its own /tmp"
    for root in NEVER_SHOWN:
        if path == root or _under(path, f"{root}/grantbox"):
            return f"'{path}' holds service sockets (grantbox's among them); never shown"
    if writable and path in SYSTEM_DIRECTORIES:
        return f"'{path}' is a system directory; it may only be read-only"
    return None


def filesystem_problems(policy: FilesystemPolicy) -> list[tuple[str, str]]:
    """``(field, reason)`` for every path that cannot be used, and for contradictions."""
    found: list[tuple[str, str]] = []
    if len(policy.read_only) + len(policy.read_write) > MAX_PATHS:
        found.append(("", f"at most {MAX_PATHS} paths in total"))
    for name, paths, writable in (
        ("read_only", policy.read_only, False),
        ("read_write", policy.read_write, True),
    ):
        seen: set[str] = set()
        for index, path in enumerate(paths):
            problem = filesystem_path_problem(path, writable=writable)
            if problem is None and path in seen:
                problem = f"'{path}' is listed twice"
            if problem is not None:
                found.append((f"{name}[{index}]", problem))
            seen.add(path)
    both = set(policy.read_only) & set(policy.read_write)
    for index, path in enumerate(policy.read_write):
        if path in both:
            found.append((f"read_write[{index}]", f"'{path}' is also listed read-only"))
    return found


def limits_problems(limits: LimitsPolicy) -> list[tuple[str, str]]:
    """``(field, reason)`` for every limit outside what a sandbox can run with."""
    found: list[tuple[str, str]] = []
    if limits.processes is not None and not MIN_PROCESSES <= limits.processes <= MAX_PROCESSES:
        found.append(("processes", f"must be between {MIN_PROCESSES} and {MAX_PROCESSES}"))
    if limits.memory_mib is not None and not MIN_MEMORY_MIB <= limits.memory_mib <= MAX_MEMORY_MIB:
        found.append(("memory_mib", f"must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}"))
    if limits.cpus is not None and not MIN_CPUS <= limits.cpus <= MAX_CPUS:
        found.append(("cpus", f"must be between {MIN_CPUS} and {MAX_CPUS:g}"))
    return found
