"""What the peer benchmark needs, installed by the bench itself and only when missing.

Debian packages (wrk, nginx, tinyproxy, squid-openssl, curl) come from apt, waiting for
the dpkg lock rather than failing when another install runs. mitmproxy comes from PyPI into
a scratch virtual environment under the git-ignored cache, pinned with every dependency
(``mitmproxy-constraints.txt``), so it never touches grantbox's own environment.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grantbox

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".bench-cache"
MITMPROXY_VERSION = "11.0.2"
MITMPROXY_VENV = CACHE / f"mitmproxy-{MITMPROXY_VERSION}"
CONSTRAINTS = Path(__file__).with_name("mitmproxy-constraints.txt")
# Debian package -> the program the bench runs from it.
DEBIAN = {
    "wrk": "wrk",
    "nginx": "nginx",
    "tinyproxy": "tinyproxy",
    "squid-openssl": "squid",
    "curl": "curl",
}
SBIN = ("/usr/sbin", "/sbin")


class SetupError(RuntimeError):
    """Something the bench needs is missing and cannot be installed here."""


def _path() -> str:
    """PATH with the sbin directories (nginx and squid live there; a user's PATH may not)."""
    return os.pathsep.join([os.environ.get("PATH", ""), *SBIN])


def program(name: str) -> str:
    """Full path of a program the bench runs."""
    found = shutil.which(name, path=_path())
    if found is None:
        raise SetupError(f"{name} is not installed")
    return found


def _installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and "install ok installed" in result.stdout


def ensure_debian_packages() -> None:
    """apt-get install what is missing (as root), else say exactly what to install."""
    if shutil.which("dpkg-query") is None:
        missing_programs = [p for p in DEBIAN.values() if shutil.which(p, path=_path()) is None]
        if missing_programs:
            raise SetupError(f"not a Debian system and missing: {' '.join(missing_programs)}")
        return
    missing = [package for package in DEBIAN if not _installed(package)]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SetupError(
            f"missing Debian packages: {' '.join(missing)} "
            f"(as root: apt-get install {' '.join(missing)})"
        )
    print(f"bench: installing {' '.join(missing)} from Debian", flush=True)
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q", "-y"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([*apt, "update"], [*apt, "install", "--no-install-recommends", *missing]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise SetupError(f"`{' '.join(argv)}` failed: {tail}")


def mitmdump() -> Path:
    """mitmdump from the scratch venv, created (and pinned) on first use."""
    binary = MITMPROXY_VENV / "bin" / "mitmdump"
    if binary.exists() and MITMPROXY_VERSION in _version_output([str(binary), "--version"]):
        return binary
    print(f"bench: installing mitmproxy {MITMPROXY_VERSION} into {MITMPROXY_VENV}", flush=True)
    CACHE.mkdir(exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(MITMPROXY_VENV)],
        [
            str(MITMPROXY_VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(CONSTRAINTS),
            f"mitmproxy=={MITMPROXY_VERSION}",
        ],
    ]
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise SetupError(f"installing mitmproxy failed: {tail}")
    return binary


def _version_output(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout + result.stderr


def _first(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    return match.group(1) if match else "?"


def versions(mitmdump_binary: Path) -> dict[str, str]:
    """One version string per program, for the report; grantbox's is the commit of the
    checkout its running code comes from (the interpreter's, not necessarily this one)."""
    git = ["git", "-C", str(Path(grantbox.__file__).resolve().parent)]
    commit = _version_output([*git, "rev-parse", "--short", "HEAD"]).strip() or "?"
    dirty = _version_output([*git, "status", "--porcelain", "--untracked-files=no"]).strip()
    return {
        "grantbox": commit + (" (with uncommitted changes)" if dirty else ""),
        "nginx": _first(r"nginx/(\S+)", _version_output([program("nginx"), "-v"])),
        "squid": _first(r"Version (\S+)", _version_output([program("squid"), "-v"])),
        "tinyproxy": _first(r"tinyproxy (\S+)", _version_output([program("tinyproxy"), "-v"])),
        "mitmproxy": _first(
            r"Mitmproxy: (\S+)", _version_output([str(mitmdump_binary), "--version"])
        ),
        "wrk": _first(r"wrk (\S+)", _version_output([program("wrk"), "-v"])),
        "curl": _first(r"curl (\S+)", _version_output([program("curl"), "-V"])),
    }


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    kernel: str
    memory_gib: float
    date: str

    def line(self) -> str:
        return (
            f"{self.cores} × {self.cpu}, {self.memory_gib:.0f} GiB, Linux {self.kernel}, "
            f"{self.date}"
        )


def machine() -> Machine:
    cpu = "unknown CPU"
    memory = 0.0
    try:
        cpu = _first(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        memory = int(_first(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())) / 2**20
    except (OSError, ValueError):
        pass
    return Machine(
        cpu=cpu.strip(),
        cores=os.cpu_count() or 0,
        kernel=platform.release(),
        memory_gib=memory,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
