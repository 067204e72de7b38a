"""The compute-driver protocol: how the gateway starts and stops sandbox supervisors.

A driver receives a :class:`SandboxSpec` (everything a supervisor needs to find and
authenticate to the gateway) and reports :class:`DriverStatus` values. The gateway never
dials into a sandbox; drivers only start, stop and observe supervisors. Concrete drivers
(local processes, Kubernetes pods) live beside this module in :mod:`grantbox.drivers`, and
are handed to :func:`grantbox.gateway.create_app` or registered by name here.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class DriverState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    EXITED = "exited"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DriverStatus:
    state: DriverState
    message: str = ""


@dataclass(frozen=True, slots=True)
class RequestedLimits:
    """The sandbox policy's ``limits`` as the operator wrote them (None: not set).

    The supervisor enforces them on the agent wherever it runs; a driver that sizes what
    holds the supervisor (a pod) reads them too, and may refuse more than it allows.
    """

    processes: int | None = None
    memory_mib: int | None = None
    cpus: float | None = None


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What a driver needs to start one sandbox's supervisor."""

    sandbox_id: str
    name: str
    command: tuple[str, ...]
    gateway_url: str
    supervisor_token: str = field(repr=False)
    spiffe_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    limits: RequestedLimits = field(default_factory=RequestedLimits)


@runtime_checkable
class ComputeDriver(Protocol):
    """Start, stop and observe sandbox supervisors."""

    async def create(self, spec: SandboxSpec) -> None: ...

    async def delete(self, sandbox_id: str) -> None: ...

    async def status(self, sandbox_id: str) -> DriverStatus: ...

    def watch(self) -> AsyncIterator[tuple[str, DriverStatus]]: ...


KnownSandboxes = Callable[[], Awaitable[Collection[str]]]
"""The ids of the sandboxes the gateway still runs (not deleted, not being deleted)."""


@runtime_checkable
class Reconciling(Protocol):
    """A driver whose sandboxes outlive the gateway process (pods): the gateway has it
    remove what it runs for sandboxes the gateway no longer knows, at start and then
    periodically. ``known`` is asked only after the driver has listed what it runs, so a
    sandbox created meanwhile is never taken for a stray."""

    async def reconcile(self, known: KnownSandboxes) -> list[str]: ...


class DriverError(RuntimeError):
    """A driver could not carry out a request; the message is safe to show operators."""


class SandboxRefused(DriverError):
    """The driver will not run this sandbox as asked (say, above the operator's ceiling)
    and started nothing: the request itself must change, so the gateway refuses it."""


DriverFactory = Callable[[], ComputeDriver]

_REGISTRY: dict[str, DriverFactory] = {}

# Drivers shipped with grantbox, imported (and so registered) on first use so a plain
# ``gateway serve`` never loads a cluster client it does not need.
_BUILT_IN_MODULES = {"kubernetes": "grantbox.drivers.kubernetes"}


def register_driver(name: str, factory: DriverFactory) -> None:
    """Make a driver available to ``gateway serve --driver NAME``."""
    _REGISTRY[name] = factory


def driver_names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILT_IN_MODULES))


# Drivers that only run inside a command that also starts what they depend on.
_NOT_STANDALONE = {
    "local": (
        "the local driver runs inside `grantbox up`, which also starts the identity agent "
        "its sandboxes need; run `grantbox up` instead of `gateway serve --driver local`"
    ),
}


def make_driver(name: str) -> ComputeDriver:
    if name in _NOT_STANDALONE:
        raise DriverError(_NOT_STANDALONE[name])
    if name not in _REGISTRY and name in _BUILT_IN_MODULES:
        importlib.import_module(_BUILT_IN_MODULES[name])
    try:
        factory = _REGISTRY[name]
    except KeyError:
        known = ", ".join(driver_names()) or "none registered"
        raise DriverError(f"unknown compute driver {name!r} (known: {known})") from None
    return factory()


def sandbox_spiffe_path(sandbox_id: str) -> str:
    """The workload path under the trust domain: ``/grantbox/sandbox/<id>``."""
    return f"/grantbox/sandbox/{sandbox_id}"
