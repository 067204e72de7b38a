"""Pod → driver state, the mapping the gateway derives sandbox phases from (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grantbox.drivers.invocation import ORPHANED_EXIT_CODE, ORPHANED_MESSAGE
from grantbox.drivers.protocol import DriverState, DriverStatus

from .names import SUPERVISOR_CONTAINER

_MAX_MESSAGE = 300

# Waiting reasons after which a ``restartPolicy: Never`` pod will not start by itself.
_FATAL_WAITING = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
        "InvalidImageName",
        "RunContainerError",
    }
)


def _why(reason: str, message: object) -> str:
    return _short(f"{reason}: {message}" if message else reason)


def _short(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MAX_MESSAGE else flat[: _MAX_MESSAGE - 1] + "…"


def _supervisor_state(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or ():
        if status.get("name") == SUPERVISOR_CONTAINER:
            state: Mapping[str, Any] = status.get("state") or {}
            return state
    return {}


def orphaned(pod: Mapping[str, Any]) -> bool:
    """The pod's supervisor exited because the gateway no longer knows its sandbox (or its
    token expired unrenewed): nobody will ask to delete it, so the driver does."""
    terminated = _supervisor_state(pod).get("terminated") or {}
    return terminated.get("exitCode") == ORPHANED_EXIT_CODE


def _terminated_message(terminated: Mapping[str, Any]) -> str:
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or ""
    text = f"supervisor exited with code {code}"
    if reason:
        text += f" ({reason})"
    if terminated.get("message"):
        text += f": {terminated['message']}"
    return _short(text)


def pod_status(pod: Mapping[str, Any]) -> DriverStatus:
    """Map a Pod (as the API returns it) to the driver state the gateway derives phases from.

    Pending → PENDING (provisioning), Running → RUNNING (ready once the supervisor
    heartbeats), Succeeded → EXITED, Failed → FAILED (both shown as error), a pod being
    deleted or whose supervisor exited as orphaned → EXITED, anything else → UNKNOWN.
    """
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or ""
    state = _supervisor_state(pod)
    if metadata.get("deletionTimestamp"):
        return DriverStatus(DriverState.EXITED, "sandbox pod is being deleted")
    if orphaned(pod):
        return DriverStatus(DriverState.EXITED, ORPHANED_MESSAGE)
    if phase == "Pending":
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason in _FATAL_WAITING:
            return DriverStatus(DriverState.FAILED, _why(reason, waiting.get("message")))
        if reason:
            return DriverStatus(DriverState.PENDING, _why(reason, waiting.get("message")))
        for condition in status.get("conditions") or ():
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                why = condition.get("reason") or "not scheduled"
                return DriverStatus(DriverState.PENDING, _why(why, condition.get("message")))
        return DriverStatus(DriverState.PENDING, "pod is pending")
    if phase == "Running":
        terminated = state.get("terminated")
        if terminated:
            failed = terminated.get("exitCode") != 0
            return DriverStatus(
                DriverState.FAILED if failed else DriverState.EXITED,
                _terminated_message(terminated),
            )
        return DriverStatus(DriverState.RUNNING, "")
    if phase == "Succeeded":
        terminated = state.get("terminated") or {"exitCode": 0}
        return DriverStatus(DriverState.EXITED, _terminated_message(terminated))
    if phase == "Failed":
        terminated = state.get("terminated")
        if terminated:
            return DriverStatus(DriverState.FAILED, _terminated_message(terminated))
        reason = status.get("reason") or "pod failed"
        return DriverStatus(DriverState.FAILED, _why(reason, status.get("message")))
    return DriverStatus(DriverState.UNKNOWN, _short(f"pod phase {phase or 'unknown'}"))
