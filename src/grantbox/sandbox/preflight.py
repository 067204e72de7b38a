"""Can this host build the fence? Say exactly what is missing when it cannot."""

from __future__ import annotations

import os
from pathlib import Path

from .network import NetworkSetupFailed, create_sandbox_network

_KNOBS = {
    "/proc/sys/kernel/unprivileged_userns_clone": "0",
    "/proc/sys/user/max_user_namespaces": "0",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1",
}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def rootless_blockers(values: dict[str, str | None]) -> list[str]:
    """Which kernel settings forbid unprivileged user namespaces (pure: values are given)."""
    blockers = []
    for path, blocking in _KNOBS.items():
        if values.get(path) == blocking:
            wanted = "1" if blocking == "0" and "clone" in path else None
            if path.endswith("max_user_namespaces"):
                wanted = "a positive number"
            elif path.endswith("apparmor_restrict_unprivileged_userns"):
                wanted = "0 (or an AppArmor profile allowing user namespaces)"
            blockers.append(f"{path} is {blocking}; it must be {wanted}")
    return blockers


def isolation_problem(port: int = 3128) -> str | None:
    """None when a sandbox network can be made here; else one line saying what is missing."""
    rootless = os.geteuid() != 0
    try:
        network = create_sandbox_network(port, rootless=rootless)
    except (NetworkSetupFailed, OSError) as exc:
        if not rootless:
            return f"cannot create network namespaces as root: {exc}"
        blockers = rootless_blockers({path: _read(path) for path in _KNOBS})
        detail = "; ".join(blockers) if blockers else str(exc)
        return (
            "grantbox needs root or unprivileged user namespaces to build sandboxes, and "
            f"neither is available: {detail}"
        )
    network.close()
    return None
