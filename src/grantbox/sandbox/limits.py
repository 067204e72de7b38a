"""Per-sandbox bounds on processes, memory and CPU: one cgroup per sandbox, or rlimits.

The supervisor makes one cgroup per sandbox below its own (so an outer limit still holds)
and every process it launches into the fence joins it first thing, before any fork: a fork
flood meets ``pids.max``, a memory hog meets the OOM killer inside the group, and the
supervisor, outside the group, keeps serving. cgroup v2 is used where its controllers are
available to us; otherwise the v1 hierarchies (the hybrid layout many hosts mount). Where
neither can be written (rootless without delegation), the agent gets rlimits instead:
``RLIMIT_NPROC`` (counted per kernel uid, which is the sandbox's own) and ``RLIMIT_DATA``;
CPU then stays unbounded, and the supervisor says so.

Groups are named ``grantbox-<sandbox>-<supervisor pid>``: one left behind by a supervisor
that was killed outright is empty and is removed by the next supervisor that starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DEFAULT_PROCESSES = 512
DEFAULT_MEMORY_MIB = 1024
DEFAULT_CPUS = 1.0
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1000
CONTROLLERS = ("pids", "memory", "cpu")
PREFIX = "grantbox-"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class Limits:
    processes: int = DEFAULT_PROCESSES
    memory_bytes: int = DEFAULT_MEMORY_MIB * 1024 * 1024
    cpus: float = DEFAULT_CPUS


def resolve(
    processes: int | None = None, memory_mib: int | None = None, cpus: float | None = None
) -> Limits:
    """The policy's overrides over the defaults (pure)."""
    return Limits(
        processes=DEFAULT_PROCESSES if processes is None else processes,
        memory_bytes=(DEFAULT_MEMORY_MIB if memory_mib is None else memory_mib) * 1024 * 1024,
        cpus=DEFAULT_CPUS if cpus is None else cpus,
    )


def v1_settings(limits: Limits) -> dict[str, list[tuple[str, str]]]:
    """Files to write per v1 controller, in order (pure)."""
    quota = max(MIN_CPU_QUOTA_US, round(limits.cpus * CPU_PERIOD_US))
    return {
        "pids": [("pids.max", str(limits.processes))],
        "memory": [
            ("memory.limit_in_bytes", str(limits.memory_bytes)),
            ("memory.memsw.limit_in_bytes", str(limits.memory_bytes)),
        ],
        "cpu": [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))],
    }


def v2_settings(limits: Limits) -> list[tuple[str, str]]:
    """Files to write in a v2 group, in order (pure)."""
    quota = max(MIN_CPU_QUOTA_US, round(limits.cpus * CPU_PERIOD_US))
    return [
        ("pids.max", str(limits.processes)),
        ("memory.max", str(limits.memory_bytes)),
        ("memory.swap.max", "0"),
        ("cpu.max", f"{quota} {CPU_PERIOD_US}"),
    ]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where this process's cgroups are: v1 directory per controller, and/or the v2 one."""

    v1: dict[str, str] = field(default_factory=dict)
    v2: str | None = None
    v2_controllers: frozenset[str] = frozenset()


def find_layout(mountinfo: str, proc_cgroup: str, v2_controllers: str = "") -> Layout:
    """Our cgroup directories from ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` (pure).

    ``v2_controllers`` is the content of ``cgroup.controllers`` of our v2 group's parent
    hierarchy root, if any.
    """
    own_v1: dict[str, str] = {}
    own_v2: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _id, names, path = parts
        if names == "":
            own_v2 = path
        for name in names.split(","):
            own_v1[name] = path
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        root, mountpoint = fields[3], fields[4]
        fstype, _source, options = line.split(" - ", 1)[1].split()[:3]
        if fstype == "cgroup":
            for name in CONTROLLERS:
                if name in options.split(",") and name in own_v1:
                    v1[name] = _join(mountpoint, root, own_v1[name])
        elif fstype == "cgroup2" and own_v2 is not None:
            v2 = _join(mountpoint, root, own_v2)
    return Layout(v1=v1, v2=v2, v2_controllers=frozenset(v2_controllers.split()))


def _join(mountpoint: str, root: str, own: str) -> str:
    relative = own[len(root) :] if root != "/" and own.startswith(root) else own
    return (mountpoint.rstrip("/") + "/" + relative.strip("/")).rstrip("/")


class CgroupUnavailable(RuntimeError):
    """No cgroup could be made for the sandbox; the message says why."""


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(parents: Iterable[str]) -> list[str]:
    """Remove empty groups left by supervisors that no longer run; return what was removed."""
    removed = []
    for parent in parents:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            owner = name.rsplit("-", 1)[-1]
            if not name.startswith(PREFIX) or not owner.isdigit() or _alive(int(owner)):
                continue
            with contextlib.suppress(OSError):
                os.rmdir(f"{parent}/{name}")
                removed.append(f"{parent}/{name}")
    return removed


@dataclass
class SandboxCgroup:
    """The group(s) of one sandbox; ``procs_files`` are what a launched process joins."""

    directories: tuple[str, ...]
    procs_files: tuple[str, ...]
    version: int

    @classmethod
    def create(cls, sandbox: str, limits: Limits, layout: Layout | None = None) -> SandboxCgroup:
        if not _NAME.fullmatch(sandbox):
            raise ValueError(f"sandbox name {sandbox!r} cannot name a cgroup")
        layout = layout or current_layout()
        name = f"{PREFIX}{sandbox}-{os.getpid()}"
        sweep([*layout.v1.values(), *([layout.v2] if layout.v2 else [])])
        if layout.v2 is not None and set(CONTROLLERS) <= layout.v2_controllers:
            with contextlib.suppress(OSError):
                return cls._create_v2(layout.v2, name, limits)
        if set(CONTROLLERS) <= set(layout.v1):
            return cls._create_v1(layout.v1, name, limits)
        raise CgroupUnavailable(
            "neither cgroup v2 (with pids, memory and cpu delegated to us) nor the v1 "
            "pids/memory/cpu hierarchies are available"
        )

    @classmethod
    def _create_v2(cls, parent: str, name: str, limits: Limits) -> SandboxCgroup:
        _write(f"{parent}/cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))
        directory = f"{parent}/{name}"
        os.mkdir(directory, 0o755)
        group = cls((directory,), (f"{directory}/cgroup.procs",), 2)
        try:
            for file, value in v2_settings(limits):
                if os.path.exists(f"{directory}/{file}"):
                    _write(f"{directory}/{file}", value)
        except OSError:
            group.remove()
            raise
        return group

    @classmethod
    def _create_v1(cls, parents: Mapping[str, str], name: str, limits: Limits) -> SandboxCgroup:
        made: list[str] = []
        group = cls((), (), 1)
        try:
            for controller, files in v1_settings(limits).items():
                directory = f"{parents[controller]}/{name}"
                os.mkdir(directory, 0o755)
                made.append(directory)
                group.directories = tuple(made)
                for file, value in files:
                    if os.path.exists(f"{directory}/{file}"):
                        _write(f"{directory}/{file}", value)
        except OSError as exc:
            group.remove()
            raise CgroupUnavailable(f"cannot set up cgroup v1 limits: {exc}") from None
        group.procs_files = tuple(f"{d}/cgroup.procs" for d in made)
        return group

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.procs_files:
            found.update(int(p) for p in _read(path).split() if p.isdigit())
        return found

    def remove(self, timeout: float = 5.0) -> bool:
        """Kill whatever is still inside, then remove the groups; False if one stayed."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        clean = True
        for directory in reversed(self.directories):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError:
                clean = False
        return clean


def current_layout() -> Layout:
    proc_cgroup = _read("/proc/self/cgroup")
    layout = find_layout(_read("/proc/self/mountinfo"), proc_cgroup)
    if layout.v2 is None:
        return layout
    root_controllers = _read(f"{layout.v2}/cgroup.controllers")
    return Layout(layout.v1, layout.v2, frozenset(root_controllers.split()))


def join(procs_files: Iterable[str]) -> None:
    """Move the calling process into the sandbox's group(s): first thing after start."""
    for path in procs_files:
        _write(path, "0")
