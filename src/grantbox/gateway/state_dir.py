"""The state directory is the operator's alone: created private, checked at every start.

It holds the database (every sandbox's logs and events), the supervisor-token signing key,
the credentials key and the identity agent's keys, so nothing in it may be readable by
another user — not even for a moment after creation. ``Path.mkdir(parents=True)`` creates
missing parents with the default mode (0755 under the usual umask), which is how the state
directory once ended up world-readable; :func:`make_private_dir` creates every missing level
0700 instead. :func:`secure_tree` is the start-up check: it takes group/other bits off
anything the current user owns and refuses what it cannot fix.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("grantbox.gateway.state")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class StateDirError(RuntimeError):
    """A state path is accessible by others and cannot be made private."""


def make_private_dir(path: Path) -> None:
    """Create ``path`` and each missing parent with mode 0700 (existing ones are left)."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue
        # mkdir's mode is filtered by the umask; a stricter umask must not leave it unusable.
        os.chmod(directory, PRIVATE_DIR)


def create_private_file(path: Path) -> None:
    """Make sure ``path`` exists and is private: created 0600 (never briefly wider), or
    repaired with a warning when it already exists with a looser mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    os.close(fd)
    _secure_entry(path, [])


def secure_tree(root: Path) -> list[str]:
    """Create ``root`` private if missing; repair looser modes below it, with a warning each.

    Returns what was repaired (``"<path> was 0755"``). Raises :class:`StateDirError` for an
    accessible entry that belongs to another user, which only that user or root can fix.
    Symbolic links are neither followed nor changed.
    """
    make_private_dir(root)
    repaired: list[str] = []
    _secure_entry(root, repaired)
    for directory, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            _secure_entry(Path(directory) / name, repaired)
    return repaired


def _secure_entry(path: Path, repaired: list[str]) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return
    if info.st_uid != os.geteuid():
        raise StateDirError(
            f"{path} belongs to uid {info.st_uid} and is accessible by other users "
            f"(mode {mode:04o}); make it private (chmod go-rwx) or remove it"
        )
    os.chmod(path, mode & 0o700)
    repaired.append(f"{path} was {mode:04o}")
    log.warning(
        "made %s private: it was accessible by other users (mode %04o, now %04o)",
        path,
        mode,
        mode & 0o700,
    )
