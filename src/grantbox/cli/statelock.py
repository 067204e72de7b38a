"""One control plane per state directory.

Two ``grantbox up`` on the same state directory would share one SQLite file and overwrite
each other's recorded address, leaving the CLI pointed at whichever stopped last. The
first one holds an exclusive ``flock`` on ``<state dir>/lock`` for its whole life (the
kernel drops it when the process dies, however it dies, so a crash never leaves a stale
lock); a second one is refused with the holder's pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from grantbox.gateway.state_dir import make_private_dir

LOCK_FILE = "lock"


class StateDirectoryBusy(Exception):
    """Another process holds the state directory; the message says which and what to do."""


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
        if text and text[0].isdigit():
            return f"pid {text[0]}"
    return "another process"


@contextlib.contextmanager
def holding_state_dir(state_dir: Path, what: str) -> Iterator[None]:
    """Hold the state directory for the duration of the block, or refuse at once."""
    make_private_dir(state_dir)
    # os.open's descriptors are not inherited: supervisors started later never hold it.
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateDirectoryBusy(
                f"another grantbox ({_holder(fd)}) is already running on the state directory "
                f"{state_dir}; stop it first, or give this one its own directory with "
                "GRANTBOX_STATE_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
