"""A sandbox's phase, derived from what the driver and the supervisor last reported.

Phase is computed on read from stored facts, so a supervisor that stops sending heartbeats
turns a sandbox to ``error`` without any timer having to fire. A command that finished is
told apart from a failure: exit status 0 is ``exited``, anything else is ``error`` with the
cause the supervisor reported (``cannot run /no/such/binary: No such file or directory``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from grantbox.drivers.protocol import DriverState


class Phase(StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    EXITED = "exited"
    ERROR = "error"
    DELETING = "deleting"


# Phases in which nothing runs in the sandbox any more: exec is refused at once.
STOPPED = frozenset({Phase.EXITED, Phase.ERROR, Phase.DELETING})


@dataclass(frozen=True, slots=True)
class SandboxFacts:
    """What the gateway knows about a sandbox's runtime at one moment."""

    deleting: bool
    driver_state: DriverState
    driver_message: str
    last_heartbeat: float | None
    supervisor_error: str = ""
    exit_code: int | None = None  # the sandbox's command, as its supervisor reported it
    exit_reason: str = ""


def exit_phase(code: int, reason: str) -> tuple[Phase, str]:
    """How the end of the sandbox's own command reads."""
    if code == 0:
        return Phase.EXITED, "the command exited with 0"
    how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
    return Phase.ERROR, f"the command {how}" + (f": {reason}" if reason else "")


def derive_phase(facts: SandboxFacts, now: float, stale_after: float) -> tuple[Phase, str]:
    """``(phase, reason)``: deleting wins, then the command's own end, then driver failure,
    then heartbeat freshness."""
    if facts.deleting:
        return Phase.DELETING, "delete requested"
    if facts.exit_code is not None:
        return exit_phase(facts.exit_code, facts.exit_reason)
    if facts.driver_state is DriverState.EXITED:
        return Phase.EXITED, facts.driver_message or "the supervisor exited with 0"
    if facts.driver_state is DriverState.FAILED:
        return Phase.ERROR, facts.driver_message or "the supervisor failed"
    if facts.supervisor_error:
        return Phase.ERROR, facts.supervisor_error
    if facts.last_heartbeat is None:
        return Phase.PROVISIONING, facts.driver_message or "waiting for the supervisor"
    age = now - facts.last_heartbeat
    if age > stale_after:
        return Phase.ERROR, (
            f"no supervisor heartbeat for {int(age)} s; `grantbox sandbox restart` starts it again"
        )
    if facts.driver_state is DriverState.PENDING:
        return Phase.PROVISIONING, facts.driver_message or "driver still starting"
    return Phase.READY, ""
