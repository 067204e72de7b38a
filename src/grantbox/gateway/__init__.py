"""The control plane: HTTP API, storage, services and supervisor auth.

Public entry points: :func:`create_app`, :class:`GatewayServer`, :func:`running_gateway`.
Compute drivers live in :mod:`grantbox.drivers`; the supervisor's client of this API lives in
:mod:`grantbox.supervisor` (nothing below the gateway imports it).

Names are imported on first use, so a CLI command that only reads :mod:`.settings` does not
load the web and database stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import create_app
    from .phase import Phase
    from .server import GatewayServer, running_gateway
    from .settings import GatewaySettings

_EXPORTS = {
    "create_app": ".api",
    "Phase": ".phase",
    "GatewayServer": ".server",
    "running_gateway": ".server",
    "GatewaySettings": ".settings",
}

__all__ = [
    "GatewayServer",
    "GatewaySettings",
    "Phase",
    "create_app",
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
