"""The control plane: HTTP API, storage, services, supervisor auth and the driver interface.

Public entry points: :func:`create_app`, :class:`GatewayServer`, :func:`running_gateway`,
the driver interface in :mod:`.drivers`, and :class:`SupervisorClient` for supervisors.

Names are imported on first use, so a supervisor that only needs :class:`SupervisorClient`
or a CLI command that only reads :mod:`.settings` does not load the web and database stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import create_app
    from .drivers import (
        ComputeDriver,
        DriverError,
        DriverState,
        DriverStatus,
        SandboxSpec,
        make_driver,
        register_driver,
    )
    from .phase import Phase
    from .server import GatewayServer, running_gateway
    from .settings import GatewaySettings
    from .supervisor_client import ExecRequestItem, SupervisorClient, SupervisorClientError

_EXPORTS = {
    "create_app": ".api",
    "ComputeDriver": ".drivers",
    "DriverError": ".drivers",
    "DriverState": ".drivers",
    "DriverStatus": ".drivers",
    "SandboxSpec": ".drivers",
    "make_driver": ".drivers",
    "register_driver": ".drivers",
    "Phase": ".phase",
    "GatewayServer": ".server",
    "running_gateway": ".server",
    "GatewaySettings": ".settings",
    "ExecRequestItem": ".supervisor_client",
    "SupervisorClient": ".supervisor_client",
    "SupervisorClientError": ".supervisor_client",
}

__all__ = [
    "ComputeDriver",
    "DriverError",
    "DriverState",
    "DriverStatus",
    "ExecRequestItem",
    "GatewayServer",
    "GatewaySettings",
    "Phase",
    "SandboxSpec",
    "SupervisorClient",
    "SupervisorClientError",
    "create_app",
    "make_driver",
    "register_driver",
    "running_gateway",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
