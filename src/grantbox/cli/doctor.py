"""``grantbox doctor``: what this machine lacks to run sandboxes, and how to fix each thing.

The facts are gathered first (:func:`gather`, the only I/O), then judged by a pure
function (:func:`diagnose`) so every verdict and its advice is testable with plain values.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from grantbox.gateway.settings import default_config_dir, default_state_dir

from .output import emit, output_option, say

USERNS_KNOBS = (
    "/proc/sys/kernel/unprivileged_userns_clone",
    "/proc/sys/user/max_user_namespaces",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
)


@dataclass(frozen=True, slots=True)
class Facts:
    python: tuple[int, int]
    root: bool
    userns_knobs: dict[str, str | None]
    isolation_problem: str | None  # None: a sandbox network could be built just now
    cgroup2: bool
    cgroup_controllers: tuple[str, ...]
    seccomp: bool
    lsm: tuple[str, ...]
    curl: str | None
    state_dir: str
    state_dir_mode: int | None  # None: does not exist yet


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _userns_blockers(knobs: dict[str, str | None]) -> list[str]:
    blockers = []
    if knobs.get(USERNS_KNOBS[0]) == "0":
        blockers.append("sysctl kernel.unprivileged_userns_clone=1")
    if knobs.get(USERNS_KNOBS[1]) == "0":
        blockers.append("sysctl user.max_user_namespaces=15000")
    if knobs.get(USERNS_KNOBS[2]) == "1":
        blockers.append("sysctl kernel.apparmor_restrict_unprivileged_userns=0")
    return blockers


def diagnose(facts: Facts) -> list[Finding]:
    """Every check with its verdict and, when it fails, the fix (pure)."""
    findings = [
        Finding(
            "python",
            facts.python >= (3, 11),
            f"Python {facts.python[0]}.{facts.python[1]}",
            "install Python 3.11 or newer",
        )
    ]
    blockers = _userns_blockers(facts.userns_knobs)
    if facts.root:
        findings.append(Finding("privileges", True, "running as root"))
    else:
        findings.append(
            Finding(
                "privileges",
                not blockers,
                "rootless: unprivileged user namespaces "
                + ("are switched off" if blockers else "are allowed"),
                "run as root, or as root allow them: " + "; ".join(blockers),
            )
        )
    findings.append(
        Finding(
            "namespaces",
            facts.isolation_problem is None,
            facts.isolation_problem or "a sandbox network namespace could be created",
            "see the line above; inside a container, give it CAP_SYS_ADMIN and CAP_NET_ADMIN "
            "(or run grantbox on the host)",
        )
    )
    wanted = ("memory", "pids", "cpu")
    missing = [c for c in wanted if c not in facts.cgroup_controllers]
    findings.append(
        Finding(
            "cgroups",
            facts.cgroup2 and not missing,
            (
                "cgroup v2 with " + ", ".join(wanted)
                if facts.cgroup2 and not missing
                else (
                    f"cgroup v2 lacks the {', '.join(missing)} controller(s)"
                    if facts.cgroup2
                    else "no cgroup v2 at /sys/fs/cgroup"
                )
            ),
            "boot with the unified cgroup hierarchy (systemd.unified_cgroup_hierarchy=1) "
            "and enable the controllers; without them sandbox memory/process limits are weaker",
            required=False,
        )
    )
    findings.append(
        Finding(
            "seccomp",
            facts.seccomp,
            "the kernel filters system calls" if facts.seccomp else "no seccomp in this kernel",
            "use a kernel built with CONFIG_SECCOMP_FILTER",
        )
    )
    findings.append(
        Finding(
            "landlock",
            "landlock" in facts.lsm,
            "Landlock is active" if "landlock" in facts.lsm else "Landlock is not active",
            "add landlock to the kernel's lsm= boot parameter (sandboxes still get a private "
            "filesystem view without it)",
            required=False,
        )
    )
    findings.append(
        Finding(
            "curl",
            facts.curl is not None,
            f"curl at {facts.curl}" if facts.curl else "curl is not installed",
            "apt-get install curl (the demo and the README's examples run curl in a sandbox)",
            required=False,
        )
    )
    mode = facts.state_dir_mode
    private = mode is None or not mode & 0o077
    findings.append(
        Finding(
            "state directory",
            private,
            f"{facts.state_dir} "
            + ("(created on first use)" if mode is None else f"(mode {mode:04o})"),
            f"chmod 700 {facts.state_dir} (it holds keys and every sandbox's logs)",
        )
    )
    return findings


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def gather() -> Facts:
    from grantbox.sandbox import isolation_problem

    state_dir = default_state_dir()
    try:
        mode: int | None = state_dir.stat().st_mode & 0o777
    except OSError:
        mode = None
    status = _read("/proc/self/status") or ""
    seccomp = any(line.startswith("Seccomp:") for line in status.splitlines())
    controllers = (_read("/sys/fs/cgroup/cgroup.controllers") or "").split()
    return Facts(
        python=(sys.version_info.major, sys.version_info.minor),
        root=os.geteuid() == 0,
        userns_knobs={path: _read(path) for path in USERNS_KNOBS},
        isolation_problem=isolation_problem(),
        cgroup2=Path("/sys/fs/cgroup/cgroup.controllers").exists(),
        cgroup_controllers=tuple(controllers),
        seccomp=seccomp,
        lsm=tuple((_read("/sys/kernel/security/lsm") or "").split(",")),
        curl=shutil.which("curl"),
        state_dir=str(state_dir),
        state_dir_mode=mode,
    )


@click.command()
@output_option
def doctor(fmt: str) -> None:
    """Check what this machine needs to run sandboxes; say how to fix what is missing.

    Exits 1 when something required is missing (optional things only warn).
    """
    findings = diagnose(gather())
    if fmt == "table":
        say(f"grantbox doctor on {platform.system()} {platform.release()}")
        for finding in findings:
            mark = "ok  " if finding.ok else ("FAIL" if finding.required else "warn")
            say(f"  {mark} {finding.check:<16} {finding.detail}")
            if not finding.ok:
                say(f"       {'':<16} fix: {finding.fix}")
        problems = [f for f in findings if not f.ok and f.required]
        say(
            f"{len(problems)} problem(s) to fix before `grantbox up`"
            if problems
            else f"ready: `grantbox up` can run here (config in {default_config_dir()})"
        )
    else:
        emit([asdict(f) for f in findings], fmt)
    raise SystemExit(1 if any(not f.ok and f.required for f in findings) else 0)
