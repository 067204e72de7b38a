"""The supervisor token on disk: read once at start, replaced atomically when renewed.

The file lives in a directory the agent never sees; it is kept 0600 so other host users
cannot read it either, and replaced through a temporary file so a crash never leaves half
a token behind.
"""

from __future__ import annotations

import os
from pathlib import Path


def read_token(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def replace_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` with mode 0600, atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
