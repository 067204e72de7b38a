"""The fence: how one sandboxed process is isolated on this host.

The agent runs in fresh mount, PID and network namespaces (plus a user namespace without
root). Its network namespace holds only ``lo`` and the proxy's listener, so the proxy is
its only way out; it sees its own ``/proc``, never the identity socket's or the
supervisor's directories, runs unprivileged and dies with its supervisor.

Names are imported lazily: the stage and the network helper start as fresh interpreters
for every sandboxed process and must not pay for importing gRPC or anything heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .environment import agent_environment, declared_variable_problem, is_internal_variable
    from .hiding import HidingRefused, hidden_directories, shadow_problem, socket_directory
    from .launcher import launch
    from .network import NetworkSetupFailed, SandboxNetwork, create_sandbox_network
    from .preflight import isolation_problem
    from .spec import LaunchSpec

_WHERE = {
    "agent_environment": "environment",
    "declared_variable_problem": "environment",
    "is_internal_variable": "environment",
    "HidingRefused": "hiding",
    "hidden_directories": "hiding",
    "shadow_problem": "hiding",
    "socket_directory": "hiding",
    "launch": "launcher",
    "NetworkSetupFailed": "network",
    "SandboxNetwork": "network",
    "create_sandbox_network": "network",
    "isolation_problem": "preflight",
    "LaunchSpec": "spec",
}

__all__ = [
    "HidingRefused",
    "LaunchSpec",
    "NetworkSetupFailed",
    "SandboxNetwork",
    "agent_environment",
    "create_sandbox_network",
    "declared_variable_problem",
    "hidden_directories",
    "is_internal_variable",
    "isolation_problem",
    "launch",
    "shadow_problem",
    "socket_directory",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'grantbox.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
