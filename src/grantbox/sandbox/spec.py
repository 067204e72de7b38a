"""What the in-sandbox stages need to build one sandboxed process: plain, serialisable data.

The supervisor builds a :class:`LaunchSpec`, hands it to the stage over a pipe (never on the
command line, which other host users can read), and the stage and init carry it out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

MAX_SPEC_BYTES = 256 * 1024
PRIVATE_TMP_SIZE = "256m"
PRIVATE_TMP = "/tmp"  # noqa: S108 - the sandbox's own tmpfs, never the host's
DEFAULT_CA_PATH = f"{PRIVATE_TMP}/.sandbox-ca-bundle.pem"
NOBODY = 65534


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """One process to run inside the fence.

    The agent's root holds the system directories plus ``read_only`` and ``read_write``
    host paths (see :mod:`.filesystem`); ``hidden`` directories that a policy path brings
    into view are covered by an empty read-only tmpfs; ``/tmp`` is always a fresh private
    tmpfs holding the CA bundle at ``ca_path``. ``uid``/``gid`` None means keep the current
    (namespace) identity, which is how rootless sandboxes without subordinate ids run.
    ``cgroup_procs`` are joined by the stage before anything forks; ``max_processes`` and
    ``max_memory_bytes`` become rlimits only where no cgroup bounds the sandbox.
    """

    argv: tuple[str, ...]
    env: dict[str, str]
    hidden: tuple[str, ...] = ()
    ca_pem: str = ""
    ca_path: str = DEFAULT_CA_PATH
    cwd: str = PRIVATE_TMP
    uid: int | None = NOBODY
    gid: int | None = NOBODY
    nested_user_namespace: bool = False
    read_only: tuple[str, ...] = ()
    read_write: tuple[str, ...] = ()
    landlock: str = "best_effort"
    cgroup_procs: tuple[str, ...] = ()
    max_processes: int | None = None
    max_memory_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("a sandboxed process needs a command")
        if not self.ca_path.startswith(PRIVATE_TMP + "/") or ".." in self.ca_path.split("/"):
            raise ValueError("ca_path must be a file inside the sandbox's private /tmp")
        if "/" in self.ca_path[len(PRIVATE_TMP) + 1 :]:
            raise ValueError("ca_path must be directly inside the sandbox's private /tmp")
        if self.landlock not in ("best_effort", "hard_requirement"):
            raise ValueError(f"unknown Landlock mode {self.landlock!r}")

    def __repr__(self) -> str:
        return (
            f"LaunchSpec(argv={list(self.argv)!r}, uid={self.uid!r}, "
            f"read_only={list(self.read_only)!r}, read_write={list(self.read_write)!r})"
        )

    def to_bytes(self) -> bytes:
        data = json.dumps(asdict(self)).encode()
        if len(data) > MAX_SPEC_BYTES:
            raise ValueError("launch spec is too large")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> LaunchSpec:
        raw = json.loads(data)
        for name in ("argv", "hidden", "read_only", "read_write", "cgroup_procs"):
            raw[name] = tuple(raw.get(name, ()))
        return cls(**raw)
