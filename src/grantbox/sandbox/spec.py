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

    ``hidden`` directories are covered by an empty read-only tmpfs; ``/tmp`` is always a
    fresh private tmpfs holding the CA bundle at ``ca_path``. ``uid``/``gid`` None means keep
    the current (namespace) identity, which is how rootless sandboxes run.
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

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("a sandboxed process needs a command")
        if not self.ca_path.startswith(PRIVATE_TMP + "/") or ".." in self.ca_path.split("/"):
            raise ValueError("ca_path must be a file inside the sandbox's private /tmp")

    def __repr__(self) -> str:
        return f"LaunchSpec(argv={list(self.argv)!r}, hidden={list(self.hidden)!r})"

    def to_bytes(self) -> bytes:
        data = json.dumps(asdict(self)).encode()
        if len(data) > MAX_SPEC_BYTES:
            raise ValueError("launch spec is too large")
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> LaunchSpec:
        raw = json.loads(data)
        raw["argv"] = tuple(raw["argv"])
        raw["hidden"] = tuple(raw["hidden"])
        return cls(**raw)
