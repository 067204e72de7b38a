"""Run grantbox as an unprivileged user (nobody) from a root test.

The project venv's interpreter lives under /root, which nobody cannot execute, so a tiny
venv is made from the system's interpreter of the same minor version that imports the
project venv's site-packages. Nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

NOBODY = 65534


def system_python() -> str | None:
    """A system interpreter with our minor version, or None."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{name}", f"/usr/local/bin/{name}"):
        if os.access(candidate, os.X_OK) and not candidate.startswith(sys.base_prefix):
            return candidate
    return None


def unprivileged_python(root: Path) -> Path:
    """``root/venv/bin/python`` that nobody can run and that sees our site-packages."""
    base = system_python()
    if base is None or shutil.which("setpriv") is None:
        raise RuntimeError("no system interpreter of this version, or no setpriv")
    venv = root / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    ours = sysconfig.get_paths()["purelib"]
    (venv / "lib" / version / "site-packages" / "project-venv.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
    )
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o555 if path.is_dir() else path.stat().st_mode | 0o444)
    return venv / "bin" / "python"


def as_nobody(argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
