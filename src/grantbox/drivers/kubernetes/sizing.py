"""How big a sandbox pod is, and whether a sandbox may be that big (pure).

Inside the pod the supervisor bounds the agent with the sandbox policy's ``limits`` (a
cgroup where it may create one, else rlimits per process; CPU only with a cgroup), exactly
as on one host. The pod's ``resources`` bound the whole pod, supervisor included, and are
often the only bound the kernel enforces on the agent's total memory and CPU in a cluster
(containers rarely may create cgroups). So:

* a resource the sandbox's policy sets (``memory_mib``, ``cpus``) is reserved in full: the
  pod's request and limit are the sandbox's value plus the supervisor's share
  (:func:`supervisor_share`: :data:`SUPERVISOR_MEMORY_MIB` and :data:`SUPERVISOR_MILLICPU`,
  more for each proxy worker past the first), so the agent meets its own bound before the
  pod's, and the supervisor keeps room to tear it down;
* a resource it leaves unset takes the driver-wide ``GRANTBOX_K8S_{CPU,MEMORY}_{REQUEST,
  LIMIT}`` (none: the namespace's LimitRange, if any);
* ``processes`` has no pod resource: the supervisor alone enforces it.

An operator may set ceilings (``GRANTBOX_K8S_MAX_{MEMORY,CPU,PROCESSES}``): a sandbox whose
policy asks for more is refused at create, before anything starts. Ceilings bound what a
sandbox asks for; the supervisor's share comes on top.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from grantbox.drivers.protocol import RequestedLimits

from .config import KubernetesDriverConfig

SUPERVISOR_MEMORY_MIB = 256
"""Room for the supervisor (proxy, grant engine, shipping) beside the agent's memory."""
SUPERVISOR_MILLICPU = 250
"""CPU for the supervisor beside the agent's, in millicores."""
WORKER_MEMORY_MIB = 96
"""Room for each proxy worker process past the first (about 60 MiB resident when busy)."""
WORKER_MILLICPU = 500
"""CPU for each proxy worker process past the first: workers exist to use more than the
one core a single proxy process can, so a share that did not grow with them would cap
the pod's proxy at what one process does."""


def supervisor_share(proxy_workers: int) -> tuple[int, int]:
    """``(MiB, millicores)`` the supervisor needs beside the agent when its proxy runs in
    ``proxy_workers`` processes."""
    extra = max(0, proxy_workers - 1)
    return (
        SUPERVISOR_MEMORY_MIB + extra * WORKER_MEMORY_MIB,
        SUPERVISOR_MILLICPU + extra * WORKER_MILLICPU,
    )


def millicores(cpus: float) -> int:
    """``cpus`` in whole millicores, rounded up (0.0105 → 11): never less than asked."""
    return math.ceil(round(cpus * 1000, 6))


def pod_resources(
    limits: RequestedLimits, config: KubernetesDriverConfig
) -> dict[str, dict[str, str]]:
    """The supervisor container's ``resources``: requests and limits, memory in Mi, CPU in
    millicores where the sandbox sets them, the driver's defaults elsewhere."""
    chosen: dict[str, dict[str, str]] = {
        kind: dict(values) for kind, values in config.resources.items()
    }
    memory_share, cpu_share = supervisor_share(config.proxy_workers)
    own: dict[str, str] = {}
    if limits.memory_mib is not None:
        own["memory"] = f"{limits.memory_mib + memory_share}Mi"
    if limits.cpus is not None:
        own["cpu"] = f"{millicores(limits.cpus) + cpu_share}m"
    for resource, value in own.items():
        for kind in ("requests", "limits"):
            chosen.setdefault(kind, {})[resource] = value
    return {kind: values for kind, values in sorted(chosen.items()) if values}


def ceiling_problem(limits: RequestedLimits, config: KubernetesDriverConfig) -> str | None:
    """Why this cluster will not run a sandbox with these ``limits``, or None."""
    asked: Mapping[str, tuple[float | None, float | None, str]] = {
        "memory_mib": (limits.memory_mib, config.max_memory_mib, "MiB of memory"),
        "cpus": (limits.cpus, config.max_cpus, "CPUs"),
        "processes": (limits.processes, config.max_processes, "processes"),
    }
    for field, (value, ceiling, unit) in asked.items():
        if value is not None and ceiling is not None and value > ceiling:
            return (
                f"policy limits.{field} is {value:g}, above this cluster's ceiling of "
                f"{ceiling:g} {unit} per sandbox; ask for less, or have the operator raise "
                f"GRANTBOX_K8S_MAX_{_ENV[field]}"
            )
    return None


_ENV = {"memory_mib": "MEMORY", "cpus": "CPU", "processes": "PROCESSES"}
