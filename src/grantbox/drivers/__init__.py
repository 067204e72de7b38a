"""Compute drivers: the protocol the gateway speaks, the local driver and the Kubernetes one.

A driver starts, stops and observes one supervisor per sandbox; it never dials into a
sandbox. Names are imported on first use so the gateway can load the protocol without the
local driver's identity-agent client or the Kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .local import LocalDriver, LocalDriverSettings
    from .protocol import (
        ComputeDriver,
        DriverError,
        DriverFactory,
        DriverState,
        DriverStatus,
        KnownSandboxes,
        Reconciling,
        RequestedLimits,
        SandboxRefused,
        SandboxSpec,
        driver_names,
        make_driver,
        register_driver,
        sandbox_spiffe_path,
    )

_EXPORTS = {
    "ComputeDriver": ".protocol",
    "DriverError": ".protocol",
    "DriverFactory": ".protocol",
    "DriverState": ".protocol",
    "DriverStatus": ".protocol",
    "KnownSandboxes": ".protocol",
    "Reconciling": ".protocol",
    "RequestedLimits": ".protocol",
    "SandboxRefused": ".protocol",
    "SandboxSpec": ".protocol",
    "driver_names": ".protocol",
    "make_driver": ".protocol",
    "register_driver": ".protocol",
    "sandbox_spiffe_path": ".protocol",
    "LocalDriver": ".local",
    "LocalDriverSettings": ".local",
}

__all__ = [
    "ComputeDriver",
    "DriverError",
    "DriverFactory",
    "DriverState",
    "DriverStatus",
    "KnownSandboxes",
    "LocalDriver",
    "LocalDriverSettings",
    "Reconciling",
    "RequestedLimits",
    "SandboxRefused",
    "SandboxSpec",
    "driver_names",
    "make_driver",
    "register_driver",
    "sandbox_spiffe_path",
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
