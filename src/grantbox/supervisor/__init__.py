"""The sandbox supervisor: one per sandbox, the only process that holds its secrets.

It owns its side of the control plane (:mod:`.gateway_client`), wires the egress proxy and
the grant engine, launches the agent through the fence (:mod:`grantbox.sandbox`) and ships
the agent's output and the proxy's events. It imports nothing of the gateway.

Names are imported on first use: a driver that only needs the client's error type must not
pay for the proxy, the grants engine and gRPC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .gateway_client import ExecRequestItem, SupervisorClient, SupervisorClientError
    from .launch import SupervisorOptions, agent_launch_spec
    from .outbox import Outbox
    from .runtime import Supervisor, run_supervisor

_EXPORTS = {
    "ExecRequestItem": ".gateway_client",
    "SupervisorClient": ".gateway_client",
    "SupervisorClientError": ".gateway_client",
    "Outbox": ".outbox",
    "Supervisor": ".runtime",
    "SupervisorOptions": ".launch",
    "agent_launch_spec": ".launch",
    "run_supervisor": ".runtime",
}

__all__ = [
    "ExecRequestItem",
    "Outbox",
    "Supervisor",
    "SupervisorClient",
    "SupervisorClientError",
    "SupervisorOptions",
    "agent_launch_spec",
    "run_supervisor",
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
