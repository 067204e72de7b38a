"""The control plane: HTTP API, storage, services, supervisor auth and the driver interface.

Public entry points: :func:`create_app`, :class:`GatewayServer`, :func:`running_gateway`,
the driver interface in :mod:`.drivers`, and :class:`SupervisorClient` for supervisors.
"""

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
