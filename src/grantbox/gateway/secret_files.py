"""Small secret files (operator token, signing key, credentials key), created 0600 once.

Creation uses ``O_EXCL`` so two processes starting together never overwrite each other's
secret, and existing files with loose permissions are refused rather than trusted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from .state_dir import make_private_dir


class SecretFileError(RuntimeError):
    """A secret file exists but cannot be trusted or read."""


def _check_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretFileError(
            f"{path} is readable by other users (mode {mode:04o}); run chmod 600 on it"
        )


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """Return the file's bytes, creating it with ``make()`` and mode 0600 if absent."""
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _check_mode(path)
        data = path.read_bytes()
        if not data.strip():
            raise SecretFileError(f"{path} is empty; remove it to have it recreated") from None
        return data
    data = make()
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return data


def write_private(path: Path, data: bytes) -> None:
    """Replace a file atomically with mode 0600 content."""
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
