"""Give a user subordinate ids for one test: lines added to /etc/subuid and /etc/subgid
and the files put back exactly as they were (or removed, if they did not exist)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

FILES = (Path("/etc/subuid"), Path("/etc/subgid"))


def have_helpers() -> bool:
    return all(shutil.which(helper) for helper in ("newuidmap", "newgidmap"))


@contextlib.contextmanager
def subordinate_ids(user: str, start: int, count: int = 65536) -> Iterator[range]:
    saved = {path: path.read_bytes() if path.exists() else None for path in FILES}
    try:
        for path, before in saved.items():
            text = (before or b"").decode()
            if text and not text.endswith("\n"):
                text += "\n"
            path.write_text(f"{text}{user}:{start}:{count}\n")
            os.chmod(path, 0o644)
        yield range(start, start + count)
    finally:
        for path, before in saved.items():
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before)
