"""A sandbox's phase, derived from what the driver and the supervisor last reported.

Phase is computed on read from stored facts, so a supervisor that stops sending heartbeats
turns a sandbox to ``error`` without any timer having to fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from grantbox.drivers.protocol import DriverState


class Phase(StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    ERROR = "error"
    DELETING = "deleting"


@dataclass(frozen=True, slots=True)
class SandboxFacts:
    """What the gateway knows about a sandbox's runtime at one moment."""

    deleting: bool
    driver_state: DriverState
    driver_message: str
    last_heartbeat: float | None
    supervisor_error: str = ""


def derive_phase(facts: SandboxFacts, now: float, stale_after: float) -> tuple[Phase, str]:
    """``(phase, reason)``: deleting wins, then driver failure, then heartbeat freshness."""
    if facts.deleting:
        return Phase.DELETING, "delete requested"
    if facts.driver_state in (DriverState.FAILED, DriverState.EXITED):
        detail = facts.driver_message or f"supervisor {facts.driver_state.value}"
        return Phase.ERROR, detail
    if facts.supervisor_error:
        return Phase.ERROR, facts.supervisor_error
    if facts.last_heartbeat is None:
        return Phase.PROVISIONING, facts.driver_message or "waiting for the supervisor"
    age = now - facts.last_heartbeat
    if age > stale_after:
        return Phase.ERROR, f"no supervisor heartbeat for {int(age)} s"
    if facts.driver_state is DriverState.PENDING:
        return Phase.PROVISIONING, facts.driver_message or "driver still starting"
    return Phase.READY, ""
